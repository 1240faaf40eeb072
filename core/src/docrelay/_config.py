"""``docrelay.toml``: store, engine, plugins and providers; secrets by ``${ENV}`` reference."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ._redact import register_secret
from .exceptions import ConfigError

__all__ = ["DEFAULT_CONFIG", "Config", "load_config"]

DEFAULT_CONFIG = "docrelay.toml"
DEFAULT_STORE = "sqlite:///docrelay.db"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP = {"store", "engine", "plugins", "providers", "webhooks"}


@attrs.frozen
class Config:
    """A parsed configuration. ``providers`` holds resolved values; ``references`` tells
    which provider settings came from ``${ENV}`` references (the only way to give secrets)."""

    path: Path | None = None
    store_url: str = DEFAULT_STORE
    store_options: Mapping[str, Any] = attrs.field(factory=dict)
    engine: Mapping[str, Any] = attrs.field(factory=dict)
    providers: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    references: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    plugins_enabled: tuple[str, ...] | None = None
    plugins_disabled: tuple[str, ...] = ()
    webhooks_host: str = "127.0.0.1"
    webhooks_port: int = 8080
    #: The whole ``[webhooks]`` table (limits: see :class:`docrelay.WebhookSettings`).
    webhooks: Mapping[str, Any] = attrs.field(factory=dict)

    def with_provider(self, name: str, **settings: Any) -> Config:
        providers = {k: dict(v) for k, v in self.providers.items()}
        providers.setdefault(name, {}).update(settings)
        return attrs.evolve(self, providers=providers)


def _expand(value: Any, where: str, environ: Mapping[str, str]) -> tuple[Any, bool]:
    """Resolve ``${VAR}`` references; returns the value and whether it used one."""
    if not isinstance(value, str):
        return value, False
    used = False

    def sub(m: re.Match[str]) -> str:
        nonlocal used
        used = True
        name = m.group(1)
        if name not in environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        resolved = environ[name]
        register_secret(resolved)
        return resolved

    return _REF.sub(sub, value), used


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read *path*, or ``./docrelay.toml`` when it exists, else the defaults."""
    env = os.environ if environ is None else environ
    explicit = path is not None
    p = Path(path) if path is not None else Path(DEFAULT_CONFIG)
    if not p.exists():
        if explicit:
            raise ConfigError(f"config file {str(p)!r} not found")
        return Config()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(f"{p}: unknown section(s): {', '.join(sorted(unknown))}")

    def table(name: str) -> dict[str, Any]:
        v = data.get(name, {})
        if not isinstance(v, dict):
            raise ConfigError(f"{p}: [{name}] must be a table")
        return v

    store = table("store")
    url, _ = _expand(store.pop("url", DEFAULT_STORE), f"{p}: [store] url", env)
    if not isinstance(url, str):
        raise ConfigError(f"{p}: [store] url must be a string")
    plugins = table("plugins")
    bad = set(plugins) - {"enabled", "disabled"}
    if bad:
        raise ConfigError(f"{p}: unknown [plugins] key(s): {', '.join(sorted(bad))}")
    enabled = plugins.get("enabled")
    disabled = plugins.get("disabled", [])
    for k, v in (("enabled", enabled), ("disabled", disabled)):
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigError(f"{p}: [plugins] {k} must be a list of names")
    providers: dict[str, dict[str, Any]] = {}
    references: dict[str, frozenset[str]] = {}
    for name, settings in table("providers").items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{p}: [providers.{name}] must be a table")
        resolved, refs = {}, set()
        for k, v in settings.items():
            resolved[k], used = _expand(v, f"{p}: [providers.{name}] {k}", env)
            if used:
                refs.add(k)
        providers[name] = resolved
        references[name] = frozenset(refs)
    webhooks = table("webhooks")
    return Config(
        path=p,
        store_url=url,
        store_options=store,
        engine=table("engine"),
        providers=providers,
        references=references,
        plugins_enabled=tuple(enabled) if enabled is not None else None,
        plugins_disabled=tuple(disabled),
        webhooks_host=str(webhooks.get("host", "127.0.0.1")),
        webhooks_port=int(webhooks.get("port", 8080)),
        webhooks=webhooks,
    )
