"""A minimal provider for the benchmarks: posts a document to the reference server.

It implements every per-document hook a real provider uses on the send path (key, request,
headers with a secret, classification, failure and state-change hooks), plus a middleware
plugin (an ERP write-back stand-in) that sees every state change.
"""

from __future__ import annotations

import json
from typing import Any

from docrelay import hookimpl
from docrelay._context import Context
from docrelay._models import (
    Document,
    HttpRequest,
    HttpResponse,
    Outcome,
    OutcomeKind,
    ProviderInfo,
    Setting,
    TransportError,
)

#: The bearer token both sides send (a secret setting: docrelay redacts it everywhere).
API_KEY = "bench-api-key-0123456789"


class BenchProvider:
    """Provider ``bench``: ``POST /documents`` with ``Idempotency-Key``; 200 delivered, 409
    duplicate, 503 retry (anything else: the generic classifier)."""

    __name__ = "docrelay_bench"

    def __init__(self) -> None:
        self.failures = 0

    @hookimpl
    def provider_info(self) -> ProviderInfo:
        return ProviderInfo(
            name="bench",
            title="Benchmark reference provider",
            environments={"local": "http://127.0.0.1:9"},
            default_environment="local",
            auth="api_key",
            idempotency="key",
            settings=(Setting("api_key", required=True, secret=True, help="bearer token"),),
            credential_setting="api_key",
        )

    @hookimpl
    def build_request(self, document: Document, ctx: Context) -> HttpRequest:
        return HttpRequest(
            "POST",
            "/documents",
            body=document.payload,
            headers={"Content-Type": document.content_type},
        )

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        headers = {"Authorization": "Bearer " + str(ctx.settings["api_key"])}
        if ctx.key:
            headers["Idempotency-Key"] = ctx.key
        return headers

    @hookimpl
    def classify_response(
        self, response: HttpResponse | None, error: TransportError | None, ctx: Context
    ) -> Outcome | None:
        if response is None:
            return None
        if response.status == 200:
            data = response.json() or {}
            return Outcome(
                kind=OutcomeKind.DELIVERED,
                status=200,
                provider_ref=str(data.get("id")),
                rule="bench:200",
            )
        if response.status == 409:
            return Outcome(kind=OutcomeKind.DUPLICATE, status=409, rule="bench:409")
        if response.status == 503:
            return Outcome(
                kind=OutcomeKind.RETRY, status=503, message="unavailable", rule="bench:503"
            )
        return None

    @hookimpl
    def on_failure(self, document: Document, outcome: Outcome, ctx: Context) -> None:
        self.failures += 1


class WriteBack:
    """Middleware: counts state changes, as an ERP write-back plugin would record them."""

    __name__ = "docrelay_bench_writeback"

    def __init__(self) -> None:
        self.changes: dict[str, int] = {}

    @hookimpl
    def on_state_change(self, document: Document, old: str, new: str, outcome: Any) -> None:
        self.changes[new] = self.changes.get(new, 0) + 1

    @hookimpl
    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        return {"X-Trace": "bench"}


def payload(i: int, size: int = 2048) -> bytes:
    """A JSON document of about *size* bytes."""
    head = json.dumps({"number": f"INV-{i:08d}", "amount": i % 997, "lines": ""})
    return (head[:-2] + "x" * max(0, size - len(head)) + '"}').encode()
