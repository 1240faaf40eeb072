"""The token endpoint of an environment is chosen also when its base URL is written out."""

from __future__ import annotations

from typing import Any

import pytest
from docrelay import Context, ProviderInfo, Setting
from docrelay._auth import token_url
from docrelay.auth import OAuth2ClientCredentials

SCHEME = OAuth2ClientCredentials(
    token_urls={"prod": "https://id.p.example/token"}, token_path="/connect/token"
)
INFO = ProviderInfo(
    name="p",
    environments={"prod": "https://api.p.example", "sandbox": "http://127.0.0.1:9"},
    default_environment="prod",
    auth=SCHEME,
    settings=(Setting("token_url"),),
)


def _ctx(base_url: str, environment: str | None, **settings: Any) -> Context:
    return Context(provider=INFO, settings=settings, base_url=base_url,
                   environment=environment, services=None)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("base_url", "environment", "settings", "expected"),
    [
        ("https://api.p.example", "prod", {}, "https://id.p.example/token"),
        ("https://api.p.example", None, {}, "https://id.p.example/token"),
        ("https://api.p.example/", None, {}, "https://id.p.example/token"),
        ("https://proxy.example", None, {}, "https://proxy.example/connect/token"),
        ("http://127.0.0.1:9", None, {}, "http://127.0.0.1:9/connect/token"),
        (
            "https://api.p.example",
            None,
            {"token_url": "https://t.example/t"},
            "https://t.example/t",
        ),
    ],
)
def test_token_url_of_a_written_out_environment_url(
    base_url: str, environment: str | None, settings: dict[str, Any], expected: str
) -> None:
    assert token_url(_ctx(base_url, environment, **settings), SCHEME) == expected
