"""The one public shape of a stored document: :class:`DocumentStatus`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._models import FINAL_STATES, DocState, FieldError, Outcome

if TYPE_CHECKING:
    from ._store import Record

__all__ = ["DocumentStatus"]


@attrs.frozen
class DocumentStatus:
    """Where a document is, and why: the one public shape of a stored document (what
    :meth:`docrelay.Relay.status` returns, ``docrelay status`` shows and ``ctx.find_documents``
    finds)."""

    id: str
    provider: str
    kind: str
    state: DocState = attrs.field(converter=DocState)
    revision: str = ""
    key: str | None = None
    attempts: int = 0
    outcome: Outcome | None = None
    reason: str | None = None
    provider_ref: str | None = None
    next_attempt_at: float | None = None
    updated_at: float = 0.0
    #: What the plugin keeps about the document at the provider (``ctx`` lookups use it).
    provider_state: Mapping[str, Any] = attrs.field(factory=dict)
    metadata: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_record(cls, rec: Record) -> DocumentStatus:
        return cls(
            id=rec.id,
            provider=rec.provider,
            kind=rec.document.kind,
            state=rec.state,
            revision=rec.document.revision,
            key=rec.key,
            attempts=rec.attempts,
            outcome=rec.outcome,
            reason=rec.reason,
            provider_ref=rec.provider_ref,
            next_attempt_at=rec.next_attempt_at,
            updated_at=rec.updated_at,
            provider_state=dict(rec.provider_state),
            metadata=dict(rec.document.metadata),
        )

    @property
    def error_url(self) -> str | None:
        return self.outcome.error_url if self.outcome else None

    @property
    def field_errors(self) -> tuple[FieldError, ...]:
        return self.outcome.field_errors if self.outcome else ()

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "kind": self.kind,
            "state": self.state.value,
            "revision": self.revision,
            "key": self.key,
            "attempts": self.attempts,
            "outcome": self.outcome.to_dict() if self.outcome else None,
            "reason": self.reason,
            "provider_ref": self.provider_ref,
            "next_attempt_at": self.next_attempt_at,
            "updated_at": self.updated_at,
        }
