"""Settings: the ``[engine]`` table and one provider's resolved configuration.

Every setting has a type and a range (a :class:`Spec`), checked once when the
configuration loads; a bad value is a :class:`ConfigError` naming the table, the key, the
value (never a secret's) and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._builtins import check_verify
from ._models import ProviderInfo, RateLimit, Setting
from ._redact import MIN_SECRET_LENGTH, redact, register_secret
from .exceptions import ConfigError

__all__ = [
    "CORE_PROVIDER_SETTINGS",
    "EngineSettings",
    "ProviderRuntime",
    "Spec",
    "did_you_mean",
    "is_loopback",
]

_TYPES = frozenset({"int", "number", "bool", "str", "secret", "verify", "rate", "list", "any"})


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when *name* looks like a typo of a known name, else ``""``."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return redact(repr(value)) if isinstance(value, str) else repr(value)


@attrs.frozen
class Spec:
    """The type and range of one setting.

    :param type: ``int`` (a whole number), ``number`` (finite), ``bool``, ``str``,
        ``secret`` (a string that is not empty or blank; its value is never shown),
        ``verify`` (``true``, ``false`` or the path of an existing file), ``rate``
        (``"REQUESTS/SECONDS"``), ``list`` or ``any``.
    :param minimum: inclusive lower bound (``int``, ``number``).
    :param above: exclusive lower bound (``number``: ``above=0`` means "> 0").
    :param below: exclusive upper bound.
    :param nullable: ``None`` is allowed (it means "not set").
    """

    type: str = attrs.field(validator=attrs.validators.in_(_TYPES))
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] = ()
    nonempty: bool = False
    nullable: bool = False
    help: str = ""
    #: ``secret``: the shortest value taken (shorter ones could not be told from ordinary
    #: words, so redaction would not mask them, and are easy to guess).
    min_length: int = MIN_SECRET_LENGTH
    #: ``secret``: characters the value must not contain.
    forbidden: str = ""

    def describe(self) -> str:
        """What is allowed, as the end of "must be ..."."""
        if self.choices:
            return "one of " + ", ".join(_show(c) for c in self.choices)
        bounds = []
        if self.minimum is not None and self.maximum is not None:
            bounds.append(f"{self.minimum:g}..{self.maximum:g}")
        elif self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        elif self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.below is not None:
            bounds.append(f"< {self.below:g}")
        if self.type == "int":
            return "a number (whole" + "".join(", " + b for b in bounds) + ")"
        if self.type == "number":
            return "a number (finite" + "".join(", " + b for b in bounds) + ")"
        return {
            "bool": "true or false",
            "str": "a non-empty string" if self.nonempty else "a string",
            "secret": f"a string of at least {self.min_length} characters"
            + (
                f" without {' or '.join(repr(c) for c in self.forbidden)}" if self.forbidden else ""
            ),
            "verify": "true, false or the path of an existing CA bundle file",
            "rate": "'REQUESTS/SECONDS' (e.g. '100/60'; REQUESTS a whole number >= 1, "
            "SECONDS a finite number > 0)",
            "list": "a list",
            "any": "a value",
        }[self.type]

    def check(self, table: str, key: str, value: Any) -> Any:
        """*value* if it is allowed (ints become floats for ``number``), else
        :class:`ConfigError`."""
        if value is None and self.nullable:
            return None
        ok, result = self._accept(value)
        if not ok:
            if self.type == "secret":
                raise ConfigError(f"{table} {key} must be {self.describe()} (value not shown)")
            verb = "look like" if self.type == "rate" else "be"
            raise ConfigError(f"{table} {key} must {verb} {self.describe()}, not {_show(value)}")
        return result

    def _accept(self, value: Any) -> tuple[bool, Any]:
        t = self.type
        if t in ("int", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False, None
            if isinstance(value, float) and not math.isfinite(value):
                return False, None
            if t == "int" and isinstance(value, float):
                if not value.is_integer():
                    return False, None
                value = int(value)
            if self.minimum is not None and value < self.minimum:
                return False, None
            if self.maximum is not None and value > self.maximum:
                return False, None
            if self.above is not None and value <= self.above:
                return False, None
            if self.below is not None and value >= self.below:
                return False, None
            return True, float(value) if t == "number" else value
        if t == "bool":
            return isinstance(value, bool), value
        if t == "str":
            if not isinstance(value, str) or (self.nonempty and not value.strip()):
                return False, None
        elif t == "secret":
            ok = isinstance(value, str) and bool(value.strip())
            ok = ok and len(value) >= self.min_length and not set(self.forbidden) & set(value)
            return ok, value
        elif t == "verify":
            if isinstance(value, bool):
                return True, value
            if isinstance(value, str) and value.strip() and Path(value).is_file():
                return True, value
            return False, None
        elif t == "rate":
            return (True, value) if _parse_rate(value) is not None else (False, None)
        elif t == "list" and not isinstance(value, list | tuple):
            return False, None
        if self.choices and value not in self.choices:
            return False, None
        return True, value

    @classmethod
    def for_setting(cls, setting: Setting) -> Spec:
        """The spec of a plugin's :class:`Setting`: its declared ``type``, or one inferred
        from its default."""
        if setting.secret:
            return cls("secret", help=setting.help)
        t = setting.type
        if t is None:
            d = setting.default
            t = (
                "bool"
                if isinstance(d, bool)
                else "int"
                if isinstance(d, int)
                else "number"
                if isinstance(d, float)
                else "str"
                if isinstance(d, str)
                else "list"
                if isinstance(d, list | tuple)
                else "any"
            )
        return cls(
            t,
            minimum=setting.minimum,
            maximum=setting.maximum,
            choices=setting.choices,
            nonempty=setting.required,
            nullable=True,
            help=setting.help,
        )


def _parse_rate(value: Any) -> RateLimit | None:
    if not isinstance(value, str):
        return None
    n, sep, per = value.partition("/")
    try:
        requests, seconds = int(n.strip()), float(per.strip())
    except ValueError:
        return None
    if not sep or requests < 1 or not math.isfinite(seconds) or seconds <= 0:
        return None
    return RateLimit(requests, seconds)


def _checked_url(provider: str, key: str, url: str) -> Any:
    """``urlsplit(url)``, or :class:`ConfigError` for a URL that cannot be used: a malformed
    host (``https://[::1``) or a port outside 1..65535."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"provider {provider}: invalid {key} {redact(url)!r} ({exc})") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(
            f"provider {provider}: invalid {key} {redact(url)!r} (port must be 1..65535)"
        )
    return parts


_POSITIVE = Spec("number", above=0)
_NON_NEGATIVE = Spec("number", minimum=0)
_COUNT = Spec("int", minimum=1)


def _field(default: Any, spec: Spec) -> Any:
    def validate(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        spec.check("[engine]", attribute.name, value)

    return attrs.field(default=default, validator=validate, metadata={"spec": spec})


@attrs.frozen
class EngineSettings:
    """Budgets, waits and timeouts (the ``[engine]`` table of ``docrelay.toml``).

    Every field is checked for type and range (a :class:`ConfigError` otherwise); the
    ranges are listed in docs/configuration.md.
    """

    #: Budgeted send attempts per document revision (429s do not count), then ``failed``.
    max_attempts: int = _field(8, _COUNT)
    #: Seconds from a revision's first attempt after which it is ``failed``.
    max_age: float = _field(3 * 86400.0, _POSITIVE)
    #: In-process attempts per round (stamina), before deferring durably.
    inprocess_attempts: int = _field(3, _COUNT)
    #: Seconds one round may spend retrying in process.
    inprocess_timeout: float = _field(30.0, _POSITIVE)
    retry_wait_initial: float = _field(0.5, _NON_NEGATIVE)
    retry_wait_max: float = _field(5.0, _NON_NEGATIVE)
    retry_wait_jitter: float = _field(0.5, _NON_NEGATIVE)
    #: A Retry-After up to this many seconds is waited in process; longer ones are stored.
    retry_after_cap: float = _field(10.0, _NON_NEGATIVE)
    #: Durable backoff between rounds: initial * 2**(attempts-1), capped, jittered ±20%.
    deferral_initial: float = _field(30.0, _POSITIVE)
    deferral_max: float = _field(3600.0, _POSITIVE)
    poll_initial: float = _field(2.0, _POSITIVE)
    poll_max: float = _field(300.0, _POSITIVE)
    max_polls: int = _field(500, _COUNT)
    connect_timeout: float = _field(5.0, _POSITIVE)
    read_timeout: float = _field(30.0, _POSITIVE)
    #: Seconds one request may take in all (connect, headers and body together): a dripping
    #: answer resets the read timeout on every byte, this deadline it does not. Past it the
    #: outcome is ``unknown`` (the request may have taken effect).
    request_deadline: float = _field(60.0, _POSITIVE)
    #: The longest wait docrelay accepts from a provider (Retry-After) or its own backoff.
    max_wait: float = _field(86400.0, _POSITIVE)
    #: At least half a second: the lease keeper renews every third of it, and a shorter lease
    #: could run out between two beats while an answer comes in.
    lease_seconds: float = _field(120.0, Spec("number", minimum=0.5))
    #: How long a provider stays paused after a config error (``None``: until a requeue).
    pause_seconds: float | None = _field(900.0, Spec("number", minimum=0, nullable=True))
    batch_size: int = _field(8, Spec("int", minimum=1, maximum=10_000))
    held_recheck: float = _field(60.0, _POSITIVE)
    #: Seconds to wait for a webhook after ``accepted`` before asking a person to look.
    notification_timeout: float = _field(86400.0, _POSITIVE)
    #: Fraction of the provider's rate limit kept free for clock and network jitter.
    rate_margin: float = _field(0.02, Spec("number", minimum=0, below=1))
    #: Largest document accepted for a provider that declares no limit of its own (bytes).
    max_payload_bytes: int = _field(10 * 1024 * 1024, _COUNT)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EngineSettings:
        fields = {a.name: a for a in attrs.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            hint = did_you_mean(unknown[0], fields) if len(unknown) == 1 else ""
            raise ConfigError(f"unknown [engine] setting(s): {', '.join(unknown)}{hint}")
        values = {k: fields[k].metadata["spec"].check("[engine]", k, v) for k, v in data.items()}
        return cls(**values)


CORE_PROVIDER_SETTINGS: Mapping[str, Spec] = {
    "env": Spec("str", nonempty=True, nullable=True,
                help="environment name (one of the provider's environments)"),
    "base_url": Spec("str", nonempty=True, nullable=True, help="base URL (overrides env)"),
    "rate_limit": Spec("rate", nullable=True,
                       help="client-side limit as 'REQUESTS/SECONDS' (overrides the provider's)"),
    "rate_limit_scope": Spec("str", choices=("host", "credential"), nullable=True,
                             help="count the rate limit per 'host' or per 'credential'"),
    "connect_timeout": Spec("number", above=0, nullable=True, help="seconds to connect"),
    "read_timeout": Spec("number", above=0, nullable=True, help="seconds to wait for an answer"),
    "verify": Spec("verify", nullable=True,
                   help="TLS certificate verification: true, false or a CA bundle path"),
    "allow_insecure_http": Spec("bool", nullable=True,
                                help="allow plain http to hosts other than loopback"),
    "webhook_secret": Spec("secret", nullable=True, min_length=16, forbidden="/ ",
                           help="shared secret expected in the webhook URL path"),
    "max_payload_bytes": Spec("int", minimum=1, nullable=True,
                              help="refuse larger documents before sending"),
    "enabled": Spec("bool", nullable=True, help="false to keep the provider's documents queued"),
    "trace_context": Spec("bool", nullable=True,
                          help="send a W3C traceparent header (docrelay-otel); off by default: "
                          "a provider may refuse unknown headers"),
    "check_payload": Spec("bool", nullable=True,
                          help="refuse an empty payload, or one not in the provider's format, "
                          "at submit (false: store it; delivery rejects it)"),
}  # fmt: skip


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
        table = f"[providers.{name}]"
        # A plugin may declare a core key (a default of its own); the core's range still holds.
        specs = {s.name: Spec.for_setting(s) for s in info.settings}
        specs.update(CORE_PROVIDER_SETTINGS)
        unknown = sorted(set(raw) - set(specs))
        if unknown:
            hint = did_you_mean(unknown[0], specs) if len(unknown) == 1 else ""
            raise ConfigError(
                f"unknown setting(s) for provider {name}: {', '.join(unknown)}{hint} "
                f"(known: {', '.join(sorted(specs))})"
            )
        for s in info.settings:
            if s.required and raw.get(s.name, s.default) in (None, ""):
                raise ConfigError(f"provider {name} needs setting {s.name!r}: {s.help}".rstrip())
        checked = {k: specs[k].check(table, k, v) for k, v in raw.items()}
        settings: dict[str, Any] = {s.name: s.default for s in info.settings}
        settings.update(checked)
        for s in info.settings:
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
        parts = _checked_url(name, "base_url", str(base_url))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"provider {name}: invalid base_url {redact(str(base_url))!r}")
        insecure_ok = bool(settings.get("allow_insecure_http", False))
        hosts = {parts.hostname, *info.extra_hosts}
        for key, value in settings.items():
            if key == "base_url" or not isinstance(value, str):
                continue
            if value.startswith(("http://", "https://")):
                p = _checked_url(name, key, value)
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
        rate = _parse_rate(settings["rate_limit"]) if settings.get("rate_limit") else None
        rate = rate or info.rate_limit
        verify = check_verify(name, settings.get("verify"))
        max_payload = settings.get("max_payload_bytes")
        if max_payload is None:
            max_payload = info.max_payload_bytes or engine.max_payload_bytes
        secret = settings.get("webhook_secret")
        if secret:
            register_secret(str(secret))
        connect_timeout = settings.get("connect_timeout")
        read_timeout = settings.get("read_timeout")
        return cls(
            info=info,
            settings=settings,
            base_url=str(base_url),
            environment=env,
            rate=rate,
            connect_timeout=float(
                engine.connect_timeout if connect_timeout is None else connect_timeout
            ),
            read_timeout=float(engine.read_timeout if read_timeout is None else read_timeout),
            verify=True if verify is None else verify,
            allowed_hosts=frozenset(hosts),
            max_payload_bytes=int(max_payload),
            webhook_secret=str(secret) if secret else None,
        )

    @property
    def credential(self) -> str:
        """A non-secret id of the credential in use (rate limits and tokens are per credential)."""
        setting = self.info.credential_setting
        raw = str(self.settings.get(setting, "")) if setting else ""
        return hashlib.sha256(f"{self.info.name}\0{raw}".encode()).hexdigest()[:16]
