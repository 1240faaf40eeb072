"""Unit level: the typed spec behind every setting (tables of values, no I/O)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import pytest
from docrelay import ProviderInfo, Setting
from docrelay._settings import CORE_PROVIDER_SETTINGS, EngineSettings, ProviderRuntime, Spec
from docrelay.exceptions import ConfigError


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (Spec("int", minimum=1), 3, 3),
        (Spec("int", minimum=1), 3.0, 3),
        (Spec("number", above=0), 2, 2.0),
        (Spec("number", minimum=0), 0, 0.0),
        (Spec("bool"), False, False),
        (Spec("str"), "", ""),
        (Spec("secret"), " s3cret ", " s3cret "),
        (Spec("verify"), True, True),
        (Spec("rate"), "100/60", "100/60"),
        (Spec("str", choices=("a", "b")), "b", "b"),
        (Spec("number", above=0, nullable=True), None, None),
        (Spec("list"), [1, 2], [1, 2]),
    ],
)
def test_spec_accepts(spec: Spec, value: Any, expected: Any) -> None:
    got = spec.check("[t]", "k", value)
    assert (expected, type(expected)) == (got, type(got))


@pytest.mark.parametrize(
    ("spec", "value", "needle"),
    [
        (Spec("int", minimum=1), 0, "whole, >= 1"),
        (Spec("int", minimum=1), 2.5, "whole"),
        (Spec("int", minimum=1), True, "not true"),
        (Spec("int", minimum=1, maximum=65535), 99999, "1..65535"),
        (Spec("number", above=0), 0, "> 0"),
        (Spec("number", above=0), -1.0, "> 0"),
        (Spec("number", above=0), math.nan, "finite"),
        (Spec("number", above=0), math.inf, "finite"),
        (Spec("number", above=0), "5", "a number"),
        (Spec("number", minimum=0, below=1), 1.0, "< 1"),
        (Spec("bool"), "no", "true or false"),
        (Spec("bool"), 0, "true or false"),
        (Spec("str", nonempty=True), "  ", "non-empty"),
        (Spec("str"), 5, "a string"),
        (Spec("verify"), 5, "existing CA bundle file"),
        (Spec("verify"), "/no/such/bundle.pem", "existing CA bundle file"),
        (Spec("rate"), "0/60", "REQUESTS/SECONDS"),
        (Spec("rate"), "5/0", "REQUESTS/SECONDS"),
        (Spec("rate"), "5/nan", "REQUESTS/SECONDS"),
        (Spec("rate"), "fast", "REQUESTS/SECONDS"),
        (Spec("str", choices=("a", "b")), "c", "one of 'a', 'b'"),
        (Spec("list"), "a,b", "a list"),
    ],
)
def test_spec_refuses(spec: Spec, value: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        spec.check("[t]", "k", value)
    assert str(info.value).startswith("[t] k must ")
    assert needle in str(info.value)


def test_a_secret_value_is_never_shown() -> None:
    with pytest.raises(ConfigError) as info:
        Spec("secret").check("[providers.x]", "token", "   ")
    assert "value not shown" in str(info.value)
    assert "'   '" not in str(info.value)


def test_verify_accepts_an_existing_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Spec("verify").check("[t]", "verify", str(ca)) == str(ca)
    with pytest.raises(ConfigError):
        Spec("verify").check("[t]", "verify", str(tmp_path))  # a directory is not a file


@pytest.mark.parametrize(
    ("setting", "good", "bad"),
    [
        (Setting("a", default=True), False, "false"),
        (Setting("a", default=3), 4, 4.5),
        (Setting("a", default=1.5), 2, "2"),
        (Setting("a", default="x"), "y", 1),
        (Setting("a", default=("x",)), ["y"], "y"),
        (Setting("a", type="number", minimum=1), 1.5, 0.5),
        (Setting("a", choices=("new", "old"), default="new"), "old", "older"),
        (Setting("a", secret=True), "tok-12", "tok"),
        (Setting("a", required=True, default="x"), "y", " "),
    ],
)
def test_plugin_setting_types_are_declared_or_inferred(
    setting: Setting, good: Any, bad: Any
) -> None:
    spec = Spec.for_setting(setting)
    assert spec.check("[providers.p]", "a", good) == good
    with pytest.raises(ConfigError, match=r"\[providers.p\] a must"):
        spec.check("[providers.p]", "a", bad)


def test_a_setting_type_outside_the_vocabulary_is_a_plugin_bug() -> None:
    with pytest.raises(ValueError, match="type"):
        Setting("a", type="float")


def test_engine_settings_are_checked_however_they_are_made() -> None:
    """Direct construction and evolve are checked like the TOML table."""
    with pytest.raises(ConfigError, match=r"\[engine\] batch_size"):
        EngineSettings(batch_size=0)
    with pytest.raises(ConfigError, match=r"\[engine\] read_timeout"):
        attrs.evolve(EngineSettings(), read_timeout=math.inf)
    with pytest.raises(ConfigError, match="did you mean 'lease_seconds'"):
        EngineSettings.from_mapping({"lease_second": 10})
    assert EngineSettings.from_mapping({"read_timeout": 1}).read_timeout == 1.0


INFO = ProviderInfo(
    name="p",
    title="P",
    environments={"sandbox": "http://127.0.0.1:9"},
    default_environment="sandbox",
    settings=(
        Setting("mode", default="a", choices=("a", "b")),
        Setting("max_payload_bytes", default=5000),
        Setting("token", secret=True, required=True),
    ),
)


def test_runtime_checks_plugin_and_core_keys() -> None:
    rt = ProviderRuntime.build(INFO, {"token": "token-1", "mode": "b"}, EngineSettings())
    assert (rt.settings["mode"], rt.max_payload_bytes) == ("b", 5000)
    # A plugin that declares a core key keeps the core's range.
    with pytest.raises(ConfigError, match=r"\[providers.p\] max_payload_bytes"):
        ProviderRuntime.build(INFO, {"token": "token-1", "max_payload_bytes": 0}, EngineSettings())
    with pytest.raises(ConfigError, match=r"\[providers.p\] mode must be one of"):
        ProviderRuntime.build(INFO, {"token": "token-1", "mode": "c"}, EngineSettings())
    with pytest.raises(ConfigError, match="needs setting 'token'"):
        ProviderRuntime.build(INFO, {}, EngineSettings())


def test_the_engine_limit_applies_when_the_provider_declares_none() -> None:
    info = attrs.evolve(INFO, settings=(Setting("token", secret=True),))
    rt = ProviderRuntime.build(info, {}, EngineSettings(max_payload_bytes=1234))
    assert rt.max_payload_bytes == 1234


def test_every_core_provider_setting_has_help() -> None:
    assert all(spec.help for spec in CORE_PROVIDER_SETTINGS.values())
