"""The eConnect send, as every side of ``benchmarks.compare`` speaks it.

docrelay sends through its ``econnect`` plugin; the peers (bare loop, hand-written loop, huey,
procrastinate) send the same request with ``requests``: a client-credentials token fetched
once (``POST /connect/token``), then per document ``POST
/api/v1/{partyId}/salesInvoice/send`` with the UBL invoice as the raw body,
``Content-Type: application/xml``, ``Accept: application/json``, the bearer token and an
``X-EConnect-DocumentId`` (a UUID derived from the document id, as docrelay's default key).
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

CLIENT_ID = "bench-client"
#: The client secret every side sends (docrelay registers it as a secret).
CLIENT_SECRET = "bench-client-secret-0123456789"  # noqa: S105 - a benchmark value
PARTY_ID = "NL:KVK:12345678"
SEND_PATH = "/api/v1/" + urllib.parse.quote(PARTY_ID, safe=":") + "/salesInvoice/send"
#: Namespace of the peers' document ids (docrelay derives its own key the same way).
KEY_NAMESPACE = uuid.UUID("6f1c3f5e-4d1e-4a43-9f3c-1f0c7d2b9a10")

_SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "plugins"
    / "econnect"
    / "src"
    / "docrelay_econnect"
    / "samples"
    / "invoice-INV-2024-0103.xml"
)
_TEMPLATE: bytes | None = None


@dataclass(frozen=True)
class Doc:
    """One document of a side: its id and its UBL invoice."""

    id: str
    payload: bytes


def invoice(number: str) -> bytes:
    """A PEPPOL BIS 3 invoice (the eConnect plugin's sample, about 4.7 KB) numbered *number*."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = _SAMPLE.read_bytes()
    return _TEMPLATE.replace(
        b"<cbc:ID>INV-2024-0103</cbc:ID>", b"<cbc:ID>%s</cbc:ID>" % number.encode(), 1
    )


def make_docs(prefix: str, n: int) -> list[Doc]:
    return [Doc(f"{prefix}-{i:06d}", invoice(f"INV-{prefix}-{i:06d}")) for i in range(n)]


def key_for(doc_id: str) -> str:
    return str(uuid.uuid5(KEY_NAMESPACE, doc_id))


def session(pool: int = 1) -> requests.Session:
    """The peers' client: ``trust_env = False`` as docrelay's own transport (no proxy, netrc
    or CA-bundle lookups in the environment on every request), one keep-alive connection."""
    s = requests.Session()
    s.trust_env = False
    adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    s.mount("http://", adapter)
    return s


def fetch_token(s: requests.Session, base_url: str) -> str:
    r = s.post(
        base_url + "/connect/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": "ap",
        },
        headers={"Accept": "application/json"},
        timeout=(5, 30),
    )
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


class TokenCache:
    """One token per process, fetched once (as docrelay caches it until shortly before expiry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: str | None = None

    def get(self, s: requests.Session, base_url: str) -> str:
        with self._lock:
            if self._token is None:
                self._token = fetch_token(s, base_url)
            return self._token


def send(
    s: requests.Session, base_url: str, token: str, key: str, body: bytes
) -> requests.Response:
    """POST one document; the body of the answer is read (as docrelay reads it)."""
    r = s.post(
        base_url + SEND_PATH,
        data=body,
        headers={
            "Content-Type": "application/xml",
            "Accept": "application/json",
            "X-EConnect-DocumentId": key,
            "Authorization": "Bearer " + token,
        },
        timeout=(5, 30),
    )
    r.content  # noqa: B018 - read the answer
    return r


class RetryableStatus(Exception):
    """A 5xx or 429 answer, worth another attempt."""


def send_checked(s: requests.Session, base_url: str, token: str, key: str, body: bytes) -> int:
    """:func:`send`, raising :class:`RetryableStatus` for an answer worth retrying; 200 and
    409 (the provider has it) are success, anything else is returned for the caller."""
    r = send(s, base_url, token, key, body)
    if r.status_code >= 500 or r.status_code == 429:
        raise RetryableStatus(r.status_code)
    return r.status_code


def provider_settings(base_url: str) -> dict[str, str]:
    """docrelay's ``[providers.econnect]`` settings for the reference server."""
    return {
        "base_url": base_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "party_id": PARTY_ID,
    }
