"""The eConnect part of ``docrelay demo``: realistic UBL documents against the sandbox."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from docrelay import DemoBatch, Document

if TYPE_CHECKING:
    from .sandbox import EConnectSandbox

__all__ = [
    "DEMO_FAULTS",
    "LOSE_ANSWER",
    "SAMPLES",
    "UNAVAILABLE_ONCE",
    "demo_batch",
    "sample",
    "sample_documents",
]

#: (document id, kind, sample file), in submission order.
SAMPLES: tuple[tuple[str, str, str], ...] = (
    ("econnect-INV-2024-0101", "invoice", "invoice-INV-2024-0101.xml"),
    ("econnect-INV-2024-0102", "invoice", "invoice-INV-2024-0102.xml"),
    ("econnect-INV-2024-0103", "invoice", "invoice-INV-2024-0103.xml"),
    ("econnect-INV-DRAFT-0104", "invoice", "invoice-without-number.xml"),
    ("econnect-PO-2024-0420", "order", "order-PO-2024-0420.xml"),
)

#: No count-based faults. Such a fault hits the next N faultable requests in order, whichever
#: document they carry: the engine retries a document in process before it takes the next,
#: so ``error*1`` and ``drop*1`` would both land on the first document, and ``docrelay demo``
#: delivers with several workers, so which document comes first is a race. The sandbox aims
#: the faults at one document each instead (options below), with the same answers the
#: ``error`` and ``drop`` faults give.
DEMO_FAULTS: tuple[str, ...] = ()
#: Sandbox option ``unavailable_once``: the first send of INV-2024-0101 is answered 503 before
#: anything is processed (as ``error*1:503``): retried in process, then delivered.
UNAVAILABLE_ONCE: tuple[str, ...] = ("INV-2024-0101",)
#: Sandbox option ``lose_answer``: the first send of INV-2024-0102 is processed and its answer
#: dropped (as ``drop*1``): unknown, then the resend with the same X-EConnect-DocumentId is
#: answered 409: duplicate, taken in once.
LOSE_ANSWER: tuple[str, ...] = ("INV-2024-0102",)


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


def demo_batch(sandbox: EConnectSandbox, webhook_url: str) -> DemoBatch:
    """The eConnect part of ``docrelay demo`` (``ProviderInfo.demo``): five UBL documents, a
    503 once on INV-2024-0101 (retried, delivered), a lost answer on INV-2024-0102 (unknown,
    then 409: duplicate, taken in once), a draft without a number (rejected 400 with
    eConnect's message and helpLink) and an order to purchaseOrder/send."""
    sandbox.config["unavailable_once"] = ",".join(UNAVAILABLE_ONCE)
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
    )
