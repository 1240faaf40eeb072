"""Settings: the ``[engine]`` table and one provider's resolved configuration."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._builtins import check_verify
from ._models import ProviderInfo, RateLimit
from ._redact import redact, register_secret
from .exceptions import ConfigError

__all__ = ["CORE_PROVIDER_SETTINGS", "EngineSettings", "ProviderRuntime", "is_loopback"]


@attrs.frozen
class EngineSettings:
    """Budgets, waits and timeouts (the ``[engine]`` table of ``docrelay.toml``)."""

    #: Budgeted send attempts per document revision (429s do not count), then ``failed``.
    max_attempts: int = 8
    #: Seconds from a revision's first attempt after which it is ``failed``.
    max_age: float = 3 * 86400.0
    #: In-process attempts per round (stamina), before deferring durably.
    inprocess_attempts: int = 3
    #: Seconds one round may spend retrying in process.
    inprocess_timeout: float = 30.0
    retry_wait_initial: float = 0.5
    retry_wait_max: float = 5.0
    retry_wait_jitter: float = 0.5
    #: A Retry-After up to this many seconds is waited in process; longer ones are stored.
    retry_after_cap: float = 10.0
    #: Durable backoff between rounds: initial * 2**(attempts-1), capped, jittered ±20%.
    deferral_initial: float = 30.0
    deferral_max: float = 3600.0
    poll_initial: float = 2.0
    poll_max: float = 300.0
    max_polls: int = 500
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Seconds one request may take in all (connect, headers and body together): a dripping
    #: answer resets the read timeout on every byte, this deadline it does not. Past it the
    #: outcome is ``unknown`` (the request may have taken effect).
    request_deadline: float = 60.0
    #: The longest wait docrelay accepts from a provider (Retry-After) or its own backoff.
    max_wait: float = 86400.0
    lease_seconds: float = 120.0
    #: How long a provider stays paused after a config error (``None``: until a requeue).
    pause_seconds: float | None = 900.0
    batch_size: int = 8
    held_recheck: float = 60.0
    #: Seconds to wait for a webhook after ``accepted`` before asking a person to look.
    notification_timeout: float = 86400.0
    #: Fraction of the provider's rate limit kept free for clock and network jitter.
    rate_margin: float = 0.02

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EngineSettings:
        names = {a.name: a for a in attrs.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"unknown [engine] setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for k, v in data.items():
            default = names[k].default
            if v is None and k == "pause_seconds":
                values[k] = None
            elif isinstance(default, bool) or not isinstance(v, int | float) or isinstance(v, bool):
                raise ConfigError(f"[engine] {k} must be a number, not {v!r}")
            else:
                values[k] = type(default)(v) if isinstance(default, int | float) else v
        return cls(**values)


CORE_PROVIDER_SETTINGS = {
    "env": "environment name (one of the provider's environments)",
    "base_url": "base URL (overrides env)",
    "rate_limit": "client-side limit as 'REQUESTS/SECONDS' (overrides the provider's)",
    "rate_limit_scope": "count the rate limit per 'host' or per 'credential'",
    "connect_timeout": "seconds to connect",
    "read_timeout": "seconds to wait for an answer",
    "verify": "TLS certificate verification: true, false or a CA bundle path",
    "allow_insecure_http": "allow plain http to hosts other than loopback",
    "webhook_secret": "shared secret expected in the webhook URL path",
    "max_payload_bytes": "refuse larger documents before sending",
    "enabled": "false to keep the provider's documents queued",
}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.define
class ProviderRuntime:
    """A provider as configured: info, resolved settings, base URL, limits."""

    info: ProviderInfo
    settings: Mapping[str, Any]
    base_url: str
    environment: str | None
    rate: RateLimit | None
    connect_timeout: float
    read_timeout: float
    verify: bool | str
    allowed_hosts: frozenset[str]
    max_payload_bytes: int | None
    webhook_secret: str | None = None

    @classmethod
    def build(
        cls, info: ProviderInfo, raw: Mapping[str, Any], engine: EngineSettings
    ) -> ProviderRuntime:
        name = info.name
        known = set(CORE_PROVIDER_SETTINGS) | {s.name for s in info.settings}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(
                f"unknown setting(s) for provider {name}: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(known))})"
            )
        settings: dict[str, Any] = {s.name: s.default for s in info.settings}
        settings.update(raw)
        for s in info.settings:
            if s.required and settings.get(s.name) in (None, ""):
                raise ConfigError(f"provider {name} needs setting {s.name!r}: {s.help}".rstrip())
            if s.secret and isinstance(settings.get(s.name), str):
                register_secret(settings[s.name])
        env = settings.get("env")
        base_url = settings.get("base_url")
        if not base_url:
            env = env or info.default_environment
            if env not in info.environments:
                raise ConfigError(
                    f"provider {name} has no environment {env!r} "
                    f"(known: {', '.join(info.environments) or 'none'}); set base_url"
                )
            base_url = info.environments[env]
        parts = urlsplit(str(base_url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"provider {name}: invalid base_url {redact(str(base_url))!r}")
        insecure_ok = bool(settings.get("allow_insecure_http", False))
        hosts = {parts.hostname, *info.extra_hosts}
        for key, value in settings.items():
            if key == "base_url" or not isinstance(value, str):
                continue
            if value.startswith(("http://", "https://")):
                p = urlsplit(value)
                if p.hostname:
                    hosts.add(p.hostname)
                    if p.scheme == "http" and not is_loopback(p.hostname) and not insecure_ok:
                        raise ConfigError(
                            f"provider {name}: {key} uses plain http to {p.hostname}; use https "
                            "or set allow_insecure_http = true"
                        )
        if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure_ok:
            raise ConfigError(
                f"provider {name}: plain http to {parts.hostname} is refused; use https or set "
                "allow_insecure_http = true"
            )
        rate = info.rate_limit
        if settings.get("rate_limit"):
            try:
                n, per = str(settings["rate_limit"]).split("/")
                rate = RateLimit(int(n), float(per))
            except ValueError:
                raise ConfigError(
                    f"provider {name}: rate_limit must look like '100/60', "
                    f"not {settings['rate_limit']!r}"
                ) from None
        if settings.get("rate_limit_scope") not in (None, "host", "credential"):
            raise ConfigError(f"provider {name}: rate_limit_scope must be 'host' or "
                              f"'credential', not {settings['rate_limit_scope']!r}")  # fmt: skip
        verify = check_verify(name, settings.get("verify", True))
        max_payload = settings.get("max_payload_bytes") or info.max_payload_bytes
        secret = settings.get("webhook_secret")
        if secret:
            register_secret(str(secret))
        return cls(
            info=info,
            settings=settings,
            base_url=str(base_url),
            environment=env,
            rate=rate,
            connect_timeout=float(settings.get("connect_timeout") or engine.connect_timeout),
            read_timeout=float(settings.get("read_timeout") or engine.read_timeout),
            verify=verify if isinstance(verify, bool | str) else True,
            allowed_hosts=frozenset(hosts),
            max_payload_bytes=int(max_payload) if max_payload else None,
            webhook_secret=str(secret) if secret else None,
        )

    @property
    def credential(self) -> str:
        """A non-secret id of the credential in use (rate limits and tokens are per credential)."""
        setting = self.info.credential_setting
        raw = str(self.settings.get(setting, "")) if setting else ""
        return hashlib.sha256(f"{self.info.name}\0{raw}".encode()).hexdigest()[:16]
