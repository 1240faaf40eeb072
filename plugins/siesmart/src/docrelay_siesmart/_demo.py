"""The provider's part of ``docrelay demo``: the samples in ``samples/``."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from docrelay import DemoBatch, Document
from docrelay.sandbox import Sandbox

from ._classify import NAME
from .sandbox import SieSmartSandbox

__all__ = ["demo_batch"]

_DOCUMENTS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("siesmart-demo-proposal-1", "proposal", "proposal-excavator.json", {}),
    ("siesmart-demo-proposal-2", "proposal", "proposal-ct-scanner-gb.json", {}),
    (
        "siesmart-demo-update-1",
        "proposal_update",
        "update-excavator-calculation.json",
        {"proposal": "siesmart-demo-proposal-1"},
    ),
    (
        "siesmart-demo-decision-1",
        "decision",
        "decision-excavator.json",
        {"proposal": "siesmart-demo-proposal-1", "after": "siesmart-demo-update-1"},
    ),
)


def demo_batch(sandbox: Sandbox, webhook_url: str) -> DemoBatch:
    """Two proposals, an update whose If-Match is lost on the way (412 -> re-read: nobody
    changed the proposal -> resent -> delivered), and a decision; the first API request is
    throttled (429 with Retry-After: 1)."""
    cfg: Mapping[str, Any] = getattr(sandbox, "config", {})
    settings = {
        "base_url": sandbox.url,
        "client_id": cfg.get("client_id", SieSmartSandbox.options["client_id"]),
        "client_secret": cfg.get("client_secret", SieSmartSandbox.options["client_secret"]),
    }
    samples = files(__package__ or "docrelay_siesmart").joinpath("samples")
    docs = tuple(
        Document(
            id=doc_id,
            provider=NAME,
            kind=kind,
            content_type="application/json",
            payload=samples.joinpath(sample).read_bytes(),
            metadata=metadata,
        )
        for doc_id, kind, sample, metadata in _DOCUMENTS
    )
    if isinstance(sandbox, SieSmartSandbox):
        # The first modifying call (the update) loses its If-Match on the way (a proxy).
        sandbox.drop_if_match(1)
    # DemoBatch's attrs converters (tuple) confuse mypy: pass the fields as a mapping.
    fields: dict[str, Any] = {"settings": settings, "documents": docs, "faults": ("throttle*1:1",)}
    return DemoBatch(**fields)
