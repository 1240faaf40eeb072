"""The Procuros response classifier: a pure function, a table of rules.

The rules follow the Procuros documentation "Tracking document status" (seed 001), the error
handling page and the OpenAPI description of ``POST /v2/transactions``:

=======  ==========================================  =============  ==================
status   body                                        outcome        ERP status
=======  ==========================================  =============  ==================
201      ``{procurosTransactionId}``                 delivered      ``TRANSMITTED``
202      ``{message}``                               no_action      ``NO_ACTION``
2xx      (undocumented)                              delivered      ``TRANSMITTED``
400      ``{message: "Payload already received"}``   duplicate      none (unconfirmed)
400      ``{message, errorUrl}``                     rejected       empty (``None``)
422      ``{message, errors, errorUrl}``             rejected       empty (``None``)
4xx/5xx  ``{message, errorUrl}`` / ``{message}``     generic        empty
=======  ==========================================  =============  ==================

Every other 4xx and 5xx keeps docrelay's generic meaning (401/403/404 ``config_error``, 429
``throttled``, 5xx ``retry``...), in Procuros' words: its message (or a short excerpt of a
body that is not JSON, such as a proxy's HTML page), its portal link and its field errors.
Redirects and transport errors are left to docrelay's generic classification, which also
fills in the status, the ``Retry-After`` wait and the ``X-Request-Id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs
from docrelay import FieldError, HttpResponse, Outcome, OutcomeKind
from docrelay.helpers import field_errors as listed_errors
from docrelay.helpers import generic_outcome

__all__ = ["DEFAULT_DUPLICATE_MESSAGE", "NO_ACTION", "TRANSMITTED", "classify", "field_errors"]

#: The 400 message by which Procuros says it already has this payload (providers.md §8).
DEFAULT_DUPLICATE_MESSAGE: Final = "Payload already received"
#: ERP status values from "Tracking document status".
TRANSMITTED: Final = "TRANSMITTED"
NO_ACTION: Final = "NO_ACTION"

_MAX_MESSAGE = 1000
_MAX_FIELD_ERRORS = 200


def _text(value: Any, limit: int = _MAX_MESSAGE) -> str | None:
    return value.strip()[:limit] or None if isinstance(value, str) else None


def _message(response: HttpResponse, body: Mapping[str, Any]) -> str | None:
    if body:
        return _text(body.get("message"))
    # Not JSON (an HTML error page from a proxy, a truncated body): keep a short excerpt.
    text = "".join(ch if ch.isprintable() else " " for ch in response.text(300))
    return " ".join(text.split())[:300] or None


def field_errors(errors: Any) -> tuple[FieldError, ...]:
    """The ``errors`` map (``{"buyer": ["Could not resolve party..."]}``), one per message;
    a list in the usual shapes is read by :func:`docrelay.helpers.field_errors`."""
    if not isinstance(errors, Mapping):
        return listed_errors(errors)[:_MAX_FIELD_ERRORS]
    out: list[FieldError] = []
    for field, messages in errors.items():
        for m in messages if isinstance(messages, list | tuple) else [messages]:
            if m is not None:
                out.append(FieldError(field=str(field), message=str(m)[:_MAX_MESSAGE]))
    return tuple(out[:_MAX_FIELD_ERRORS])


def classify(
    response: HttpResponse,
    *,
    duplicate_message: str = DEFAULT_DUPLICATE_MESSAGE,
    duplicate_status: str | None = None,
) -> Outcome | None:
    """Classify one answer to ``POST /v2/transactions``; ``None`` leaves it to docrelay."""
    raw = response.json()
    body: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    status = response.status
    said: dict[str, Any] = {
        "message": _message(response, body),
        "error_url": _text(body.get("errorUrl"), 2000),
    }
    if 200 <= status < 300 and status != 202:
        # 201; any other 2xx is undocumented for sending, the transaction was taken in all
        # the same (an assumption of the README).
        ref = _text(body.get("procurosTransactionId"), 200)
        rule = "procuros:201-transmitted" if status == 201 else "procuros:2xx-undocumented"
        return Outcome(
            OutcomeKind.DELIVERED, provider_ref=ref, provider_status=TRANSMITTED, rule=rule, **said
        )
    if status == 202:
        return Outcome(
            OutcomeKind.NO_ACTION, provider_status=NO_ACTION, rule="procuros:202-no-action", **said
        )
    wanted = duplicate_message.strip().casefold()
    if status == 400 and wanted and (said["message"] or "").casefold().startswith(wanted):
        return Outcome(
            OutcomeKind.DUPLICATE,
            provider_status=duplicate_status,
            rule="procuros:400-payload-already-received",
            **said,
        )
    errors = field_errors(body.get("errors"))
    if status in (400, 422):
        rule = "procuros:400-bad-request" if status == 400 else "procuros:422-validation"
        return Outcome(OutcomeKind.REJECTED, field_errors=errors, rule=rule, **said)
    if status < 400:
        return None
    # The generic meaning of the status, in Procuros' words.
    generic = generic_outcome(response)
    if generic.kind is not OutcomeKind.REJECTED:
        errors = ()
    return attrs.evolve(
        generic,
        message=said["message"] or generic.message,
        error_url=said["error_url"],
        field_errors=errors,
    )
