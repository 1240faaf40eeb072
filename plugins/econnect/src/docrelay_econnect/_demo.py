"""The eConnect part of ``docrelay demo``: realistic UBL documents against the sandbox."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from docrelay import DemoBatch, Document

if TYPE_CHECKING:
    from .sandbox import EConnectSandbox

__all__ = ["DEMO_FAULTS", "LOSE_ANSWER", "SAMPLES", "batch", "sample", "sample_documents"]

#: (document id, kind, sample file), in submission order.
SAMPLES: tuple[tuple[str, str, str], ...] = (
    ("econnect-INV-2024-0101", "invoice", "invoice-INV-2024-0101.xml"),
    ("econnect-INV-2024-0102", "invoice", "invoice-INV-2024-0102.xml"),
    ("econnect-INV-2024-0103", "invoice", "invoice-INV-2024-0103.xml"),
    ("econnect-PO-2024-0420", "order", "order-PO-2024-0420.xml"),
)

#: How the sandbox rolls faults decides what each document shows. A count-based fault hits
#: the next N *faultable* requests in order (the token endpoint is not faultable), and the
#: engine retries a document in process before it moves to the next one. So the faults given
#: here all land on the first document: ``error*1:503`` answers its first send 503 before
#: anything is processed, and its in-process retry is delivered (INV-0101: retried, then
#: delivered). A ``drop*1`` here would hit that same retry, so the lost answer is asked of the
#: sandbox per document instead (:data:`LOSE_ANSWER`): the first send of INV-0102 is
#: processed and its answer dropped (a ``drop*1`` fault the sandbox adds at that moment):
#: unknown, then the resend with the same X-EConnect-DocumentId answers 409: duplicate.
#: INV-0103 and the order go straight through.
DEMO_FAULTS: tuple[str, ...] = ("error*1:503",)
#: Document numbers whose first send loses its answer (sandbox option ``lose_answer``).
LOSE_ANSWER: tuple[str, ...] = ("INV-2024-0102",)

DEMO_EXPECT: tuple[str, ...] = (
    "INV-2024-0101: 503, retried, then delivered",
    "INV-2024-0102: answer dropped (unknown), resent with the same document id: 409 duplicate",
    "INV-2024-0103: delivered",
    "PO-2024-0420: order delivered",
)


def sample(name: str) -> bytes:
    """The bytes of one bundled sample document."""
    return resources.files(__package__).joinpath("samples", name).read_bytes()


def sample_documents(provider: str = "econnect") -> tuple[Document, ...]:
    return tuple(
        Document(
            id=doc_id,
            provider=provider,
            payload=sample(filename),
            kind=kind,
            content_type="application/xml",
        )
        for doc_id, kind, filename in SAMPLES
    )


def batch(sandbox: EConnectSandbox) -> DemoBatch:
    sandbox.config["lose_answer"] = ",".join(LOSE_ANSWER)
    parties = sorted(sandbox.parties)
    return DemoBatch(
        settings={
            "base_url": sandbox.url,
            "client_id": sandbox.config["client_id"],
            "client_secret": sandbox.config["client_secret"],
            "party_id": parties[0] if parties else "NL:KVK:12345678",
        },
        documents=sample_documents(),
        faults=DEMO_FAULTS,
        expect=DEMO_EXPECT,
    )
