"""A local imitation of the template provider: a real HTTP server on 127.0.0.1.

Routes:

- ``POST /v1/documents``: takes a document. Needs ``X-Api-Key`` (the ``api_key`` option) and
  an ``Idempotency-Key`` header. A key it has seen before is answered ``409`` with the first
  document's id, and nothing happens twice: exactly one effect is recorded per key. A JSON body
  must be an object with a non-empty ``"number"``, else ``422`` with field errors and a link
  to the error in the provider's portal (``errorUrl``).
- ``GET /v1/documents/{id}``: the document as the provider stores it.

Options (``docrelay sandbox template --option KEY=VALUE``): ``api_key`` (default
``sandbox-key``) and ``max_payload`` (bytes, default 1 MB; larger bodies get ``413``). Faults
(``--fault``) come from :class:`docrelay.sandbox.Sandbox`.
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar

from docrelay.sandbox import Route, Sandbox, SandboxRequest, SandboxResponse

__all__ = ["TemplateSandbox"]


class TemplateSandbox(Sandbox):
    """The template provider's sandbox (deduplicates on ``Idempotency-Key``)."""

    name: ClassVar[str] = "template"
    credential_headers = Sandbox.credential_headers | {"x-api-key"}
    options: ClassVar[Mapping[str, Any]] = {"api_key": "sandbox-key", "max_payload": 1_000_000}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Documents taken in, by idempotency key.
        self.documents: dict[str, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)

    def routes(self) -> list[Route]:
        return [
            Route("POST", re.compile(r"^/v1/documents$"), self._post_document),
            Route("GET", re.compile(r"^/v1/documents/(?P<id>[A-Za-z0-9-]+)$"), self._get_document),
        ]

    def reset(self) -> None:
        with self.lock:
            self.documents.clear()
        super().reset()

    def error_response(
        self, status: int, request: SandboxRequest, detail: str | None = None
    ) -> SandboxResponse:
        return SandboxResponse.json(
            status,
            {"message": detail or "temporarily unavailable"},
            {"X-Request-Id": uuid.uuid4().hex},
        )

    def throttle_response(
        self, request: SandboxRequest, headers: Mapping[str, str]
    ) -> SandboxResponse:
        return SandboxResponse.json(429, {"message": "rate limit exceeded"}, headers)

    # -- routes ---------------------------------------------------------------------------------

    def _authorized(self, request: SandboxRequest) -> bool:
        given = request.header("X-Api-Key") or ""
        return hmac.compare_digest(given.encode(), str(self.config["api_key"]).encode())

    def _post_document(self, request: SandboxRequest) -> SandboxResponse:
        if not self._authorized(request):
            return SandboxResponse.json(401, {"message": "missing or invalid API key"})
        key = (request.header("Idempotency-Key") or "").strip()
        if not key:
            return self._invalid(
                "Idempotency-Key", "the Idempotency-Key header is required", status=400
            )
        if len(request.body) > int(self.config["max_payload"]):
            return SandboxResponse.json(
                413, {"message": f"payload larger than {self.config['max_payload']} bytes"}
            )
        content_type = (request.header("Content-Type") or "").split(";")[0].strip()
        if not request.body:
            return self._invalid("body", "the document is empty")
        if content_type == "application/json":
            try:
                data = json.loads(request.body)
            except ValueError:
                return self._invalid("body", "not valid JSON", status=400)
            if not isinstance(data, dict) or not str(data.get("number") or "").strip():
                return self._invalid("number", "a document number is required")
        with self.lock:
            duplicate = self.duplicate_of(request, key)
            if duplicate is not None:
                return duplicate
            doc_id = str(uuid.uuid4())
            self.idempotency.remember(key, doc_id)
            self.documents[key] = {
                "id": doc_id,
                "status": "received",
                "content_type": content_type,
                "size": len(request.body),
            }
            self.record_effect("document", key, id=doc_id, size=len(request.body))
        return SandboxResponse.json(
            201, {"id": doc_id, "status": "received"}, {"X-Request-Id": uuid.uuid4().hex}
        )

    def duplicate_response(
        self, request: SandboxRequest, key: Hashable, first: Any
    ) -> SandboxResponse:
        return SandboxResponse.json(409, {"message": "document already received", "id": first})

    def _get_document(self, request: SandboxRequest) -> SandboxResponse:
        if not self._authorized(request):
            return SandboxResponse.json(401, {"message": "missing or invalid API key"})
        with self.lock:
            for doc in self.documents.values():
                if doc["id"] == request.params["id"]:
                    return SandboxResponse.json(200, doc)
        return SandboxResponse.json(404, {"message": "no such document"})

    def _invalid(self, field: str, message: str, status: int = 422) -> SandboxResponse:
        """A rejection as the provider documents it: field errors and a portal link."""
        return SandboxResponse.json(
            status,
            {
                "message": "the document is invalid",
                "errors": [{"field": field, "message": message}],
                "errorUrl": f"{self.url}/portal/errors/{uuid.uuid4()}",
            },
        )
