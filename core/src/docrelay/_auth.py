"""The core's side of :mod:`docrelay.auth`: declared schemes turned into headers, and the
OAuth2 client-credentials fetch (cached and shared through ``ctx.token``)."""

from __future__ import annotations

import base64
import functools
import json
import math
import time
import urllib.parse
from typing import Any

from ._context import Context, Token, TransportFailure
from ._models import Outcome, OutcomeKind, retry_after_seconds
from .auth import ApiKeyHeader, BearerToken, OAuth2ClientCredentials
from .exceptions import OutcomeError

__all__ = ["declared_headers", "fetch_token", "schemes"]


def schemes(auth: object) -> tuple[object, ...]:
    """The declared schemes of ``ProviderInfo.auth`` (a legacy string declares none)."""
    if isinstance(auth, ApiKeyHeader | BearerToken | OAuth2ClientCredentials):
        return (auth,)
    if isinstance(auth, tuple):
        return auth
    return ()


def _refuse(ctx: Context, message: str, rule: str, status: int | None = None) -> OutcomeError:
    return OutcomeError(
        Outcome(
            kind=OutcomeKind.CONFIG_ERROR,
            status=status,
            message=f"{ctx.provider.name}: {message}",
            rule=f"docrelay:auth-{rule}",
        )
    )


def _value(ctx: Context, setting: str) -> str | None:
    value = ctx.setting(setting)
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    spec = ctx.provider.setting(setting)
    if spec is None or spec.secret:
        ctx.secret(text)
    return text


def _required(ctx: Context, setting: str) -> str:
    value = _value(ctx, setting)
    if value is None:
        raise _refuse(ctx, f"the setting {setting} is not set", "no-" + setting)
    return value


def declared_headers(ctx: Context) -> dict[str, str]:
    """The headers of every scheme ``ctx.provider.auth`` declares (``{}`` for none)."""
    headers: dict[str, str] = {}
    for scheme in schemes(ctx.provider.auth):
        if isinstance(scheme, ApiKeyHeader):
            value = _value(ctx, scheme.setting)
            if value is None and not scheme.optional:
                value = _required(ctx, scheme.setting)
            if value is not None:
                headers[scheme.header] = scheme.prefix + value
        elif isinstance(scheme, BearerToken):
            headers["Authorization"] = "Bearer " + _required(ctx, scheme.setting)
        elif isinstance(scheme, OAuth2ClientCredentials):
            client_id = _required(ctx, scheme.client_id_setting)
            token = ctx.token(client_id, functools.partial(fetch_token, scheme=scheme))
            headers["Authorization"] = "Bearer " + token
    return headers


def token_url(ctx: Context, scheme: OAuth2ClientCredentials) -> str:
    """Where the token is fetched (see :class:`~docrelay.auth.OAuth2ClientCredentials`)."""
    if scheme.token_url_setting and (explicit := ctx.setting(scheme.token_url_setting)):
        return str(explicit)
    environment = ctx.environment or _environment_of(ctx)
    if environment is not None and environment in scheme.token_urls:
        return scheme.token_urls[environment]
    if scheme.token_url:
        return scheme.token_url
    return ctx.url(scheme.token_path or "/oauth/token")


def _environment_of(ctx: Context) -> str | None:
    """The environment whose URL the configured ``base_url`` is (``None`` for another URL):
    a base URL written out is still that environment, and so is its identity server."""
    base = ctx.base_url.rstrip("/")
    return next((n for n, u in ctx.provider.environments.items() if u.rstrip("/") == base), None)


def fetch_token(ctx: Context, scheme: OAuth2ClientCredentials) -> Token:
    """POST the client credentials; raise :class:`OutcomeError` with the meaning of a
    failure (``retry`` unreachable or 5xx, ``throttled`` 429, ``config_error`` refused)."""
    client_id = _required(ctx, scheme.client_id_setting)
    secret = _required(ctx, scheme.client_secret_setting)
    fields: dict[str, Any] = {"grant_type": "client_credentials", **scheme.extra}
    for field, setting in scheme.extra_settings.items():
        if (value := ctx.setting(setting)) is not None:
            fields[field] = value
    scope = ctx.setting(scheme.scope_setting) if scheme.scope_setting else None
    if scope or scheme.scope:
        fields["scope"] = str(scope or scheme.scope)
    headers = {"Accept": "application/json"}
    if scheme.credentials == "basic":
        pair = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(secret)}"
        headers["Authorization"] = ctx.secret("Basic " + base64.b64encode(pair.encode()).decode())
    else:
        fields.update(client_id=client_id, client_secret=secret)
    if scheme.body == "json":
        body = json.dumps(fields).encode()
        headers["Content-Type"] = "application/json"
    else:
        body = urllib.parse.urlencode({k: str(v) for k, v in fields.items()}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        response = ctx.request("POST", token_url(ctx, scheme), body=body, headers=headers)
    except TransportFailure as exc:
        raise OutcomeError(
            Outcome(
                kind=OutcomeKind.RETRY,
                message=f"{ctx.provider.name}: token endpoint unreachable ({exc.error.kind})",
                rule="docrelay:auth-token-transport",
            )
        ) from None
    data = response.json()
    data = data if isinstance(data, dict) else {}
    value = data.get("access_token")
    if response.status == 200 and isinstance(value, str) and value:
        return Token.from_expires_in(ctx.secret(value), _lifetime(data, scheme))
    said = next(
        (str(data[k]) for k in ("error_description", "message", "error") if data.get(k)),
        f"HTTP {response.status}",
    )
    said = " ".join(said.split())[:300]
    wait = retry_after_seconds(response.header("Retry-After"), time.time())
    if response.status == 429:
        kind, rule = OutcomeKind.THROTTLED, "token-429"
    elif response.status >= 500:
        kind, rule = OutcomeKind.RETRY, "token-5xx"
    elif response.status == 200:
        raise _refuse(ctx, "token endpoint answered without an access_token", "token-malformed")
    else:
        raise _refuse(
            ctx, f"token endpoint refused the client credentials: {said}", "token-refused",
            response.status,
        )  # fmt: skip
    raise OutcomeError(
        Outcome(
            kind=kind,
            status=response.status,
            message=f"{ctx.provider.name}: token endpoint: {said}",
            wait=wait,
            rule="docrelay:auth-" + rule,
        )
    )


def _lifetime(data: dict[str, Any], scheme: OAuth2ClientCredentials) -> float:
    try:
        seconds = float(data.get("expires_in", scheme.expires_in))
    except (TypeError, ValueError):
        seconds = scheme.expires_in
    if math.isnan(seconds) or not 0 < seconds <= 366 * 86400:
        seconds = scheme.expires_in
    return max(1.0, seconds - scheme.margin) if seconds > 2 * scheme.margin else seconds
