"""The eConnect part of ``docrelay demo``: realistic UBL documents against the sandbox."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from docrelay import DemoBatch, Document

if TYPE_CHECKING:
    from .sandbox import EConnectSandbox

__all__ = ["DEMO_FAULTS", "SAMPLES", "batch", "sample", "sample_documents"]

#: (document id, kind, sample file), in submission order.
SAMPLES: tuple[tuple[str, str, str], ...] = (
    ("econnect-INV-2024-0101", "invoice", "invoice-INV-2024-0101.xml"),
    ("econnect-INV-2024-0102", "invoice", "invoice-INV-2024-0102.xml"),
    ("econnect-INV-2024-0103", "invoice", "invoice-INV-2024-0103.xml"),
    ("econnect-PO-2024-0420", "order", "order-PO-2024-0420.xml"),
)

#: Count-based faults hit the next N *faultable* requests in order (the token endpoint is not
#: faultable). ``error`` is rolled before the request is processed, ``drop`` after, so on the
#: first send ``error*1`` answers 500 (INV-0101: retried, then delivered) and the first request
#: that gets through is processed and its answer dropped (INV-0102: unknown, then the resend
#: with the same X-EConnect-DocumentId answers 409: duplicate). INV-0103 and the order go
#: straight through.
DEMO_FAULTS: tuple[str, ...] = ("error*1:503", "drop*1")

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
