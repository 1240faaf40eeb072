"""The lifecycle rules of a stored document, as pure functions: what a submission does to a
known document, and what a requeue does. The store applies their answers in one transaction;
it decides nothing itself."""

from __future__ import annotations

import enum

import attrs

from ._models import DocState, Document
from ._records import Record, Transition
from .exceptions import DocumentError, NotFoundError

__all__ = ["Admission", "admit", "requeue", "submission_refusal"]

#: States a document never leaves (never sent again, never replaced).
_SETTLED = (DocState.DELIVERED, DocState.DUPLICATE, DocState.NO_ACTION)
#: States in which the provider may have (or has) the current revision.
_AT_PROVIDER = (DocState.SENDING, DocState.ACCEPTED, DocState.UNKNOWN)


class Admission(enum.Enum):
    """What a submission does: store a new document, nothing, or a corrected revision."""

    NEW = "new"
    UNCHANGED = "unchanged"
    REVISION = "revision"


def submission_refusal(existing: Record | None, document: Document) -> str | None:
    """Why *document* may not be stored over *existing* (``None`` when it may)."""
    if existing is None:
        return None
    if existing.provider != document.provider:
        return f"document {document.id!r} is already stored for provider {existing.provider!r}"
    if existing.document.revision == document.revision:
        return None
    if existing.state in _SETTLED:
        return (
            f"document {document.id!r} was already {existing.state.value}; a changed document "
            "needs a new id"
        )
    if existing.state in _AT_PROVIDER:
        return (
            f"document {document.id!r} is {existing.state.value} at the provider; submit a "
            "correction once it has an answer"
        )
    return None


def admit(existing: Record | None, document: Document, now: float) -> tuple[Record, Admission]:
    """The record *document* makes over *existing*, and how; raises :class:`DocumentError`
    when it is refused. A corrected revision starts a new round: queued, no key (the old one
    is kept as ``previous_key``), counters reset, due now."""
    if existing is None:
        rec = Record(
            document=document,
            state=DocState.QUEUED,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        return rec, Admission.NEW
    refusal = submission_refusal(existing, document)
    if refusal is not None:
        raise DocumentError(refusal)
    if existing.document.revision == document.revision:
        return existing, Admission.UNCHANGED
    rec = attrs.evolve(
        existing,
        document=document,
        state=DocState.QUEUED,
        previous_key=existing.key or existing.previous_key,
        previous_state=existing.state.value,
        key=None,
        key_revision=None,
        attempts=0,
        polls=0,
        next_attempt_at=now,
        lease_owner=None,
        lease_until=None,
        reason=f"new revision after {existing.state.value}",
        first_attempt_at=None,
        updated_at=now,
    )
    return rec, Admission.REVISION


def requeue(record: Record | None, doc_id: str, now: float) -> Transition:
    """The transition an operator's requeue makes; raises :class:`DocumentError` when the
    document may not be sent again (settled, or being delivered right now).

    An accepted document keeps waiting for its validation (polled again now). Everything else
    starts a fresh round with the same key: for an ``unknown`` document that is the operator's
    decision to resend."""
    if record is None:
        raise NotFoundError(f"no document {doc_id!r}")
    if record.state in _SETTLED:
        raise DocumentError(f"document {doc_id!r} is {record.state.value}: it is never sent again")
    if record.lease_owner and record.lease_until and record.lease_until > now:
        raise DocumentError(f"document {doc_id!r} is being delivered right now")
    state = DocState.ACCEPTED if record.state == DocState.ACCEPTED else DocState.QUEUED
    return Transition(
        state=state,
        attempts=0,
        polls=0,
        next_at=now,
        reason="requeued by an operator",
        first_attempt_at=None,
    )
