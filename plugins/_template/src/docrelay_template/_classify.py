"""The classifier: a pure function from an answer to an outcome, tested as a table.

It never raises, whatever the body. ``POST /v1/documents`` answers:

- 200, 201 ``{"id", "status"}``: delivered (the id kept as the provider reference)
- 409 ``{"message", "id"}``: duplicate (this revision was received before)
- 400, 413, 422 ``{"message", "errors": [{"field", "message"}], "errorUrl"}``: rejected
- anything else (401, 403, 429 with ``Retry-After``, 5xx) and no answer at all: docrelay's
  generic classification, which also keeps the ``X-Request-Id`` and the ``Retry-After`` wait
"""

from __future__ import annotations

from typing import Any

from docrelay import HttpResponse, Outcome, OutcomeKind
from docrelay.helpers import body_text, field_errors, scalar_text

__all__ = ["NAME", "classify"]

#: The provider id: the entry point's name, ``Document.provider``, ``[providers.template]``.
NAME = "template"


def classify(response: HttpResponse) -> Outcome | None:
    """The outcome of one answer; ``None`` leaves it to the generic classification."""
    raw = response.json()
    body: dict[str, Any] = raw if isinstance(raw, dict) else {}
    message = scalar_text(body.get("message")) or body_text(response)
    rule = f"{NAME}:{response.status}"
    if response.status in (200, 201):
        ref = scalar_text(body.get("id"))
        return Outcome(kind=OutcomeKind.DELIVERED, provider_ref=ref, rule=rule)
    if response.status == 409:
        ref = scalar_text(body.get("id"))
        return Outcome(kind=OutcomeKind.DUPLICATE, message=message, provider_ref=ref, rule=rule)
    if response.status in (400, 413, 422):
        return Outcome(kind=OutcomeKind.REJECTED, message=message, rule=rule,
                       field_errors=field_errors(body.get("errors")),
                       error_url=scalar_text(body.get("errorUrl")))  # fmt: skip
    return None
