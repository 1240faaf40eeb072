"""Declarative provider authentication: what a provider plugin puts in ``ProviderInfo.auth``.

The core turns the declaration into headers on every send (and on ``ctx.request(...,
auth=True)``), registers every secret and token for redaction, fetches, caches, shares
(encrypted in the store) and refreshes OAuth2 tokens, and retries a ``401`` once with a new
token. A provider whose auth fits none of these implements the ``auth_headers`` hook instead.

>>> from docrelay.auth import ApiKeyHeader, BearerToken, OAuth2ClientCredentials
>>> ApiKeyHeader("X-Api-Key", setting="api_key").header
'X-Api-Key'
>>> OAuth2ClientCredentials(token_path="/connect/token", scope="ap").body
'form'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["ApiKeyHeader", "Auth", "BearerToken", "OAuth2ClientCredentials"]


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class ApiKeyHeader:
    """A header whose value is a setting: ``X-Api-Key: <api_key>``.

    :param header: the header's name.
    :param setting: the setting that holds the value (declare it ``secret=True`` when it is
        one: its value is then redacted everywhere).
    :param prefix: text before the value (``"Bearer "``...).
    :param optional: leave the header out when the setting is empty (else a ``config_error``).
    """

    header: str
    setting: str
    prefix: str = ""
    optional: bool = False


@attrs.frozen
class BearerToken:
    """``Authorization: Bearer <setting>``: a static API token from a setting."""

    setting: str


@attrs.frozen
class OAuth2ClientCredentials:
    """An OAuth2 client-credentials token, sent as ``Authorization: Bearer <token>``.

    The token endpoint is, first found: the setting *token_url_setting*; the entry of
    *token_urls* for the configured environment (or the environment whose URL the ``base_url``
    setting is); *token_url*; *token_path* on the base URL.
    A host other than the base URL's must be in ``ProviderInfo.extra_hosts``.

    :param body: ``"form"`` (``application/x-www-form-urlencoded``) or ``"json"``.
    :param credentials: ``"body"`` (client id and secret in the body) or ``"basic"``
        (HTTP basic auth).
    :param scope: the scope sent (``scope_setting``, when set, overrides it).
    :param extra: more body fields (an Auth0 ``audience``); ``extra_settings`` maps body
        fields to settings (``{"audience": "audience"}``).
    :param expires_in: the lifetime assumed when the endpoint gives none.
    :param margin: seconds before expiry at which the token is fetched anew.
    """

    token_url: str | None = None
    token_path: str | None = None
    token_urls: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    token_url_setting: str | None = "token_url"  # noqa: S105 - a setting name
    client_id_setting: str = "client_id"
    client_secret_setting: str = "client_secret"  # noqa: S105 - a setting name
    scope: str | None = None
    scope_setting: str | None = None
    body: str = attrs.field(default="form", validator=attrs.validators.in_({"form", "json"}))
    credentials: str = attrs.field(
        default="body", validator=attrs.validators.in_({"body", "basic"})
    )
    extra: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    extra_settings: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    expires_in: float = 3600.0
    margin: float = 60.0


#: One declared scheme; ``ProviderInfo.auth`` takes one or a tuple of them (all applied).
Auth = ApiKeyHeader | BearerToken | OAuth2ClientCredentials
