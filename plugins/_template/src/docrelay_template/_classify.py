"""The classifier: a pure function from an answer to an outcome, tested as a table.

It never raises, whatever the body. ``POST /v1/documents`` answers:

- 200, 201 ``{"id", "status"}``: delivered (the id kept as the provider reference)
- 409 ``{"message", "id"}``: duplicate (this revision was received before)
- 400, 413, 422 ``{"message", "errors": [{"field", "message"}], "errorUrl"}``: rejected
- 401, 403: config_error (key or permissions); 429: throttled (``Retry-After``)
- 5xx: retry (``Retry-After`` kept); anything else: docrelay's generic classifier
- no answer: unknown if the request may have arrived (``error.sent``), else retry
"""

from __future__ import annotations

from typing import Any

from docrelay import HttpResponse, Outcome, OutcomeKind, TransportError
from docrelay.helpers import field_errors, retry_after_seconds, scalar_text, transport_outcome

__all__ = ["NAME", "classify"]

#: The provider id: the entry point's name, ``Document.provider``, ``[providers.template]``.
NAME = "template"


def classify(response: HttpResponse | None, error: TransportError | None) -> Outcome | None:
    """The outcome of one answer; ``None`` leaves it to the generic classifier."""
    if error is not None:
        return transport_outcome(error, NAME)
    if response is None:
        return None
    status = response.status
    raw = response.json()
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = scalar_text(body.get("message")) or (None if body else response.text(300) or None)

    def outcome(kind: OutcomeKind, **extra: Any) -> Outcome:
        return Outcome(kind=kind, status=status, message=message, rule=f"{NAME}:{status}",
                       request_id=response.header("X-Request-Id"), **extra)  # fmt: skip

    if status in (200, 201):
        return outcome(OutcomeKind.DELIVERED, provider_ref=scalar_text(body.get("id")))
    if status == 409:
        return outcome(OutcomeKind.DUPLICATE, provider_ref=scalar_text(body.get("id")))
    if status in (400, 413, 422):
        return outcome(OutcomeKind.REJECTED, field_errors=field_errors(body.get("errors")),
                       error_url=scalar_text(body.get("errorUrl")))  # fmt: skip
    if status in (401, 403):
        return outcome(OutcomeKind.CONFIG_ERROR)
    wait = retry_after_seconds(response.header("Retry-After"))
    if status == 429:
        return outcome(OutcomeKind.THROTTLED, wait=wait)
    if 500 <= status <= 599:
        return outcome(OutcomeKind.RETRY, wait=wait)
    return None
