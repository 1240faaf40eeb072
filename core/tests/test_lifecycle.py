"""The lifecycle rules (pure functions, no store) and the typed transition."""

from __future__ import annotations

import pytest
from docrelay import DocState, Document
from docrelay._lifecycle import Admission, admit, requeue, submission_refusal
from docrelay._store import KEEP, Record, Transition
from docrelay.exceptions import DocumentError, NotFoundError


def _doc(payload: bytes = b"{}", provider: str = "acme") -> Document:
    return Document(id="d-1", provider=provider, payload=payload)


def _rec(state: DocState, **kw: object) -> Record:
    return Record(document=_doc(), state=state, key="K1", **kw)  # type: ignore[arg-type]


def test_a_new_document_is_queued_and_due_now() -> None:
    rec, how = admit(None, _doc(), 5.0)
    assert how is Admission.NEW
    assert (rec.state, rec.next_attempt_at, rec.created_at) == (DocState.QUEUED, 5.0, 5.0)


def test_the_same_revision_is_unchanged_and_a_correction_starts_a_round() -> None:
    old = _rec(DocState.REJECTED, attempts=3, polls=2)
    assert admit(old, _doc(), 9.0) == (old, Admission.UNCHANGED)
    rec, how = admit(old, _doc(b'{"n": 2}'), 9.0)
    assert how is Admission.REVISION
    assert (rec.state, rec.key, rec.previous_key, rec.previous_state) == (
        DocState.QUEUED,
        None,
        "K1",
        "rejected",
    )
    assert (rec.attempts, rec.polls, rec.next_attempt_at) == (0, 0, 9.0)


@pytest.mark.parametrize(
    "state", [DocState.DELIVERED, DocState.SENDING, DocState.ACCEPTED, DocState.UNKNOWN]
)
def test_a_correction_is_refused_while_settled_or_at_the_provider(state: DocState) -> None:
    assert submission_refusal(_rec(state), _doc(b"changed")) is not None
    with pytest.raises(DocumentError):
        admit(_rec(state), _doc(b"changed"), 1.0)


def test_another_provider_is_refused() -> None:
    with pytest.raises(DocumentError, match="already stored for provider"):
        admit(_rec(DocState.QUEUED), _doc(provider="other"), 1.0)


def test_requeue_rules() -> None:
    with pytest.raises(NotFoundError):
        requeue(None, "d-1", 1.0)
    with pytest.raises(DocumentError, match="never sent again"):
        requeue(_rec(DocState.DUPLICATE), "d-1", 1.0)
    with pytest.raises(DocumentError, match="right now"):
        requeue(_rec(DocState.FAILED, lease_owner="w", lease_until=10.0), "d-1", 1.0)
    assert requeue(_rec(DocState.ACCEPTED), "d-1", 1.0).state == DocState.ACCEPTED
    t = requeue(_rec(DocState.UNKNOWN), "d-1", 1.0)
    assert (t.state, t.attempts, t.next_at, t.first_attempt_at) == (DocState.QUEUED, 0, 1.0, None)


def test_a_transition_releases_the_lease_unless_told_and_keeps_what_it_does_not_name() -> None:
    rec = _rec(DocState.SENDING, lease_owner="w", lease_until=9.0, reason="in flight")
    done = Transition(state=DocState.DELIVERED, next_at=None).applied(rec, 5.0)
    assert (done.lease_owner, done.lease_until, done.reason, done.key) == (
        None,
        None,
        "in flight",
        "K1",
    )
    kept = Transition(attempts=2, release=False).applied(rec, 5.0)
    assert (kept.lease_owner, kept.attempts, kept.state) == ("w", 2, DocState.SENDING)
    assert Transition(release=False).columns() == {}
    assert Transition().columns() == {"lease_owner": None, "lease_until": None}
    assert Transition().state is KEEP


def test_column_names_are_checked() -> None:
    with pytest.raises(ValueError, match="cannot update"):
        Transition.from_columns({"payload": b"x"})
    t = Transition.from_columns({"state": "failed", "next_attempt_at": None, "lease_owner": None})
    assert (t.state, t.next_at, t.release) == (DocState.FAILED, None, True)
