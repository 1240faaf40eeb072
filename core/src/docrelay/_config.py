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
from ._settings import EngineSettings, Spec, did_you_mean
from .exceptions import ConfigError

__all__ = ["DEFAULT_CONFIG", "Config", "load_config"]

DEFAULT_CONFIG = "docrelay.toml"
DEFAULT_STORE = "sqlite:///docrelay.db"
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP = {"store", "engine", "plugins", "providers", "webhooks"}

#: ``[webhooks]``: where ``docrelay webhooks`` listens.
WEBHOOK_SETTINGS: Mapping[str, Spec] = {
    "host": Spec("str", nonempty=True, help="interface to listen on"),
    "port": Spec("int", minimum=1, maximum=65535, help="TCP port"),
    # The receiver's limits (docrelay.WebhookSettings checks them again when built).
    "max_body_bytes": Spec("int", minimum=1, help="largest body taken (bytes)"),
    "max_unmatched_body_bytes": Spec("int", minimum=1,
                                     help="largest body taken for no known document (bytes)"),
    "stored_unmatched_body_bytes": Spec("int", minimum=1,
                                        help="bytes of an unmatched body that are stored"),
    "max_unmatched_per_provider": Spec("int", minimum=1,
                                       help="unmatched notifications kept per provider"),
    "max_settled_per_document": Spec("int", minimum=1,
                                     help="settled notifications kept per document"),
    "rate_limit": Spec("rate", help="requests per source address, as 'BURST/SECONDS'"),
    "rate_limit_sources": Spec("int", minimum=1, help="source addresses remembered"),
    "trusted_proxy": Spec("str", help="the reverse proxy's address (X-Forwarded-For)"),
    "metrics": Spec("bool", help="serve GET /metrics on the receiver (default: off)"),
}  # fmt: skip
#: ``[store]`` options besides ``url``, per backend.
STORE_SETTINGS: Mapping[str, Mapping[str, Spec]] = {
    "sqlite": {
        "synchronous": Spec("str", choices=("OFF", "NORMAL", "FULL", "EXTRA", "off", "normal",
                                            "full", "extra")),
        "timeout": Spec("number", above=0),
        "lock_timeout": Spec("number", above=0),
        "dead_owner_check": Spec("number", minimum=0),
        "token_fetch_lease": Spec("number", above=0),
        "shared": Spec("bool"),
    },
    "postgresql": {
        "schema": Spec("str", nonempty=True),
        "pool_size": Spec("int", minimum=1, maximum=1000),
        "connect_timeout": Spec("number", above=0),
        "heartbeat": Spec("number", minimum=0),
        "max_hold": Spec("number", above=0),
        "idle_transaction_timeout": Spec("number", minimum=0),
        "lock_timeout": Spec("number", above=0),
        "dead_owner_check": Spec("number", minimum=0),
        "application_name": Spec("str", nonempty=True),
    },
}  # fmt: skip


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
    #: Per provider, why it cannot be used yet: a ``${VAR}`` reference to an unset variable.
    #: Resolved when the provider is used (:meth:`docrelay.Relay.require`), so commands that
    #: only read the store work without the secrets of every provider.
    unresolved: Mapping[str, str] = attrs.field(factory=dict)

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
    """Read *path*, else ``$DOCRELAY_CONFIG``, else ``./docrelay.toml`` when it exists, else
    the defaults. A provider setting that refers to an unset variable does not fail here: the
    provider is :attr:`Config.unresolved` until the variable is set."""
    env = os.environ if environ is None else environ
    if path is None and env.get("DOCRELAY_CONFIG"):
        path = env["DOCRELAY_CONFIG"]
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
    url = beside(p, url)
    store_options = _store_options(p, url, store)
    engine = table("engine")
    try:
        EngineSettings.from_mapping(engine)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    plugins = table("plugins")
    bad = set(plugins) - {"enabled", "disabled"}
    if bad:
        raise ConfigError(f"{p}: unknown [plugins] key(s): {', '.join(sorted(bad))}")
    enabled = plugins.get("enabled")
    disabled = plugins.get("disabled", [])
    for k, v in (("enabled", enabled), ("disabled", disabled)):
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise ConfigError(f"{p}: [plugins] {k} must be a list of names")
        check_plugin_names(f"{p}: [plugins] {k}", v or ())
    providers: dict[str, dict[str, Any]] = {}
    references: dict[str, frozenset[str]] = {}
    unresolved: dict[str, str] = {}
    for name, settings in table("providers").items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{p}: [providers.{name}] must be a table")
        resolved, refs = {}, set()
        for k, v in settings.items():
            try:
                resolved[k], used = _expand(v, f"{p}: [providers.{name}] {k}", env)
            except ConfigError as exc:
                unresolved.setdefault(name, str(exc))
                resolved[k], used = None, True
            if used:
                refs.add(k)
        providers[name] = resolved
        references[name] = frozenset(refs)
    webhooks = table("webhooks")
    strange = sorted(set(webhooks) - set(WEBHOOK_SETTINGS))
    if strange:
        hint = did_you_mean(strange[0], WEBHOOK_SETTINGS)
        raise ConfigError(
            f"{p}: unknown [webhooks] key(s): {', '.join(strange)}{hint} "
            f"(known: {', '.join(WEBHOOK_SETTINGS)})"
        )
    for k, v in webhooks.items():
        WEBHOOK_SETTINGS[k].check(f"{p}: [webhooks]", k, v)
    return Config(
        path=p,
        store_url=url,
        store_options=store_options,
        engine=engine,
        providers=providers,
        references=references,
        plugins_enabled=tuple(enabled) if enabled is not None else None,
        plugins_disabled=tuple(disabled),
        webhooks_host=str(webhooks.get("host", "127.0.0.1")),
        webhooks_port=int(webhooks.get("port", 8080)),
        webhooks=webhooks,
        unresolved=unresolved,
    )


def beside(config: Path, url: str) -> str:
    """*url* with a relative SQLite path made absolute against the folder of the *config*
    file that names it (the default ``sqlite:///docrelay.db`` too): ``DOCRELAY_CONFIG=/etc/
    docrelay/docrelay.toml docrelay run`` opens ``/etc/docrelay/docrelay.db`` from whatever
    directory it starts in, never an empty store where it stands. Other URLs as given."""
    if not url.startswith("sqlite://"):
        return url
    path = url.removeprefix("sqlite://")
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url  # the store refuses the first two in one line itself
    return f"sqlite:///{Path(os.path.abspath(config)).parent / path}"


def _store_options(p: Path, url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``[store]`` options checked against the backend *url* names."""
    backend = "sqlite" if url.startswith("sqlite:") else "postgresql"
    if not url.startswith(("sqlite:", "postgresql:", "postgres:")):
        return dict(options)  # open_store refuses the URL itself, in one line
    specs = STORE_SETTINGS[backend]
    unknown = sorted(set(options) - set(specs))
    if unknown:
        hint = did_you_mean(unknown[0], specs)
        raise ConfigError(
            f"{p}: unknown [store] option(s) for {backend}: {', '.join(unknown)}{hint} "
            f"(known: url, {', '.join(sorted(specs))})"
        )
    return {k: specs[k].check(f"{p}: [store]", k, v) for k, v in options.items()}


def installed_plugin_names() -> frozenset[str]:
    """Names ``[plugins]`` lists may use: every ``docrelay.plugins`` entry point."""
    from importlib.metadata import entry_points

    from ._host import BUILTINS, ENTRY_POINT_GROUP

    return frozenset({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | {BUILTINS})


def check_plugin_names(where: str, names: Any) -> None:
    """Refuse a name in an allow- or block-list that no installed plugin has."""
    if not names:
        return
    known = installed_plugin_names()
    for name in names:
        if not name.strip():
            raise ConfigError(f"{where}: an empty plugin name")
        if name not in known:
            raise ConfigError(
                f"{where}: unknown plugin {name!r}{did_you_mean(name, known)} "
                f"(installed: {', '.join(sorted(known - {'docrelay.builtins'})) or 'none'})"
            )
