"""The typed values the store reads and writes: a :class:`Record` (a stored document with its
delivery state) and a :class:`Transition` (one change of that state, with typed fields)."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ._models import Attempt, DocState, Document, Outcome
from ._redact import redact, redact_any, redact_outcome
from .exceptions import StoreError

__all__ = ["KEEP", "Keep", "LeaseLost", "Record", "Transition"]


class LeaseLost(StoreError):
    """The worker no longer holds the document's lease (another worker took it over)."""


@attrs.frozen
class Record:
    """A document as stored, with its delivery state."""

    document: Document
    state: DocState = attrs.field(converter=DocState)
    key: str | None = None
    key_revision: str | None = None
    previous_key: str | None = None
    previous_state: str | None = None
    attempts: int = 0
    polls: int = 0
    failures: int = 0
    next_attempt_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    provider_ref: str | None = None
    provider_state: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    first_attempt_at: float | None = None

    @property
    def id(self) -> str:
        return self.document.id

    @property
    def provider(self) -> str:
        return self.document.provider


class Keep(enum.Enum):
    """The type of :data:`KEEP`."""

    KEEP = "keep"


#: A :class:`Transition` field left at ``KEEP`` leaves the stored value as it is.
KEEP = Keep.KEEP

#: What no text column takes: a NUL (PostgreSQL's text) and a lone surrogate (no UTF-8
#: encoder; JSON's ``"\\ud800"`` gives one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value: str) -> str:
    """*value* with the characters no store's text column takes replaced (U+FFFD): a
    provider's text (a message in a reason, a reference) must not make the write fail."""
    return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value


#: Transition fields that are document columns of the same name (``next_at`` aside).
_FIELDS = (
    "state",
    "reason",
    "outcome",
    "attempts",
    "polls",
    "failures",
    "first_attempt_at",
    "provider_ref",
    "provider_state",
    "key",
    "key_revision",
)


@attrs.frozen
class Transition:
    """One change of a document's delivery state, applied by :meth:`Store.apply` in one
    transaction together with its *attempt* (inserted or replaced in the history).

    Every field left at :data:`KEEP` leaves the stored value unchanged. The lease is released
    (``lease_owner`` and ``lease_until`` cleared) unless *release* is false: a transition
    that ends a round lets the document go; the intent and an in-process retry keep it."""

    state: DocState | Keep = KEEP
    reason: str | Keep | None = KEEP
    #: when the document is due next (``None``: never, until an operator or event moves it).
    next_at: float | Keep | None = KEEP
    outcome: Outcome | Keep | None = KEEP
    attempt: Attempt | None = None
    attempts: int | Keep = KEEP
    polls: int | Keep = KEEP
    failures: int | Keep = KEEP
    first_attempt_at: float | Keep | None = KEEP
    provider_ref: str | Keep | None = KEEP
    provider_state: Mapping[str, Any] | Keep = KEEP
    key: str | Keep | None = KEEP
    key_revision: str | Keep | None = KEEP
    release: bool = True

    def columns(self) -> dict[str, Any]:
        """The changed document columns as the store writes them (redacted, serialised)."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not KEEP:
                out[name] = value
        if self.next_at is not KEEP:
            out["next_attempt_at"] = self.next_at
        if self.release:
            out["lease_owner"] = None
            out["lease_until"] = None
        if "state" in out:
            out["state"] = DocState(out["state"]).value
        if out.get("reason"):
            out["reason"] = storable_text(redact(out["reason"]))
        if out.get("provider_ref"):
            out["provider_ref"] = storable_text(out["provider_ref"])
        if "outcome" in out:
            out["outcome"] = dump_outcome(out["outcome"])
        if "provider_state" in out:
            out["provider_state"] = json.dumps(redact_any(dict(out["provider_state"])))
        return out

    def applied(self, record: Record, now: float) -> Record:
        """*record* as it is stored after this transition (no read back from the store)."""
        changes: dict[str, Any] = {"updated_at": now}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not KEEP:
                changes[name] = value
        if self.next_at is not KEEP:
            changes["next_attempt_at"] = self.next_at
        if self.release:
            changes["lease_owner"] = changes["lease_until"] = None
        if changes.get("reason"):
            changes["reason"] = redact(changes["reason"])
        if changes.get("outcome") is not None:
            changes["outcome"] = redact_outcome(changes["outcome"])
        if "provider_state" in changes:
            changes["provider_state"] = redact_any(dict(changes["provider_state"]))
        return attrs.evolve(record, **changes)

    @classmethod
    def from_columns(cls, changes: Mapping[str, Any]) -> Transition:
        """A transition from column names (operators' repairs and tests); clearing
        ``lease_owner`` releases the lease."""
        known = set(_FIELDS) | {"next_attempt_at", "lease_owner", "lease_until"}
        bad = set(changes) - known
        if bad:
            raise ValueError(f"cannot update {sorted(bad)}")
        fields: dict[str, Any] = {k: v for k, v in changes.items() if k in _FIELDS}
        if "state" in fields:
            fields["state"] = DocState(fields["state"])
        if "next_attempt_at" in changes:
            fields["next_at"] = changes["next_attempt_at"]
        release = "lease_owner" in changes and changes["lease_owner"] is None
        return cls(release=release, **fields)


def dump_outcome(outcome: Outcome | None) -> str | None:
    return None if outcome is None else json.dumps(redact_outcome(outcome).to_dict())


def load_outcome(value: str | None) -> Outcome | None:
    return None if not value else Outcome.from_dict(json.loads(value))
