"""A SQLite store of schema version 1 opened by this docrelay (schema version 2): upgraded in
place, in one transaction, its documents delivered with their payloads; and a docrelay of
version 1 still running on the file (it does not read the version again) cannot read a
document any more: the row's payload column is renamed, so its statements fail ("no such
column") instead of reading the empty row payload of a document kept apart and sending it.

The version 1 schema and SELECT list below are frozen copies of what docrelay wrote then
(``git show 555593e:core/src/docrelay/_store/schema.py`` and ``.../sql.py``): they must not
follow the current schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmeSandbox
from docrelay import Document, Relay
from docrelay._store import SCHEMA_VERSION, open_store
from docrelay.exceptions import StoreError

MakeRelay = Callable[..., Relay]

T0 = 1_700_000_000.0

#: The documents table of schema version 1 (with its indexes), as docrelay created it.
V1_DOCUMENTS = [
    """CREATE TABLE IF NOT EXISTS documents (
        id TEXT PRIMARY KEY, provider TEXT NOT NULL, kind TEXT NOT NULL,
        content_type TEXT NOT NULL, metadata TEXT NOT NULL, payload BLOB NOT NULL,
        revision TEXT NOT NULL, state TEXT NOT NULL, key TEXT, key_revision TEXT,
        previous_key TEXT, previous_state TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
        lease_owner TEXT, lease_until REAL, outcome TEXT, reason TEXT, provider_ref TEXT,
        provider_state TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
        updated_at REAL NOT NULL, first_attempt_at REAL)""",
    "CREATE INDEX IF NOT EXISTS documents_due ON documents (next_attempt_at)"
    " WHERE next_attempt_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS documents_key ON documents (provider, key)",
    "CREATE INDEX IF NOT EXISTS documents_prev_key ON documents (provider, previous_key)",
    "CREATE INDEX IF NOT EXISTS documents_ref ON documents (provider, provider_ref)",
    "CREATE INDEX IF NOT EXISTS documents_state ON documents (state, provider)",
    "CREATE INDEX IF NOT EXISTS documents_kind ON documents (provider, kind)",
]

#: The rest of schema version 1.
V1_OTHERS = [
    "CREATE TABLE IF NOT EXISTS docrelay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS attempts (
        doc_id TEXT NOT NULL, number INTEGER NOT NULL, revision TEXT NOT NULL,
        key TEXT, action TEXT NOT NULL, started_at REAL NOT NULL, request TEXT,
        status INTEGER, outcome TEXT, duration REAL, PRIMARY KEY (doc_id, number))""",
    """CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT, provider TEXT NOT NULL, digest TEXT NOT NULL,
        doc_id TEXT, key TEXT, provider_ref TEXT, outcome TEXT, body BLOB,
        received_at REAL NOT NULL, applied INTEGER NOT NULL DEFAULT 0, note TEXT)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS notifications_digest ON notifications (provider, digest)",
    "CREATE INDEX IF NOT EXISTS notifications_doc ON notifications (doc_id)",
    """CREATE TABLE IF NOT EXISTS provider_pauses (
        provider TEXT PRIMARY KEY, reason TEXT NOT NULL, since REAL NOT NULL, until REAL)""",
    "CREATE TABLE IF NOT EXISTS rate_buckets (bucket TEXT PRIMARY KEY, next_slot REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS docrelay_tokens (credential TEXT PRIMARY KEY,"
    " value TEXT NOT NULL, expires_at REAL NOT NULL, saved_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS token_fetches (credential TEXT PRIMARY KEY,"
    " owner TEXT NOT NULL, until REAL NOT NULL)",
]

#: Version 1's DOC_COLUMNS: the SELECT list of every read of a document (get, select, find,
#: and the RETURNING of a claim).
V1_DOC_COLUMNS = (
    "id, provider, kind, content_type, metadata, payload, revision, state, key, key_revision,"
    " previous_key, previous_state, attempts, polls, failures, next_attempt_at, lease_owner,"
    " lease_until, outcome, reason, provider_ref, provider_state, created_at, updated_at,"
    " first_attempt_at"
)
V1_SELECT = f"SELECT {V1_DOC_COLUMNS} FROM documents WHERE id = ?"
V1_CLAIM = (
    "UPDATE documents SET lease_owner = ?, lease_until = ?, next_attempt_at = ?"
    f" WHERE id = ? RETURNING {V1_DOC_COLUMNS}"
)
V1_INSERT = (
    "INSERT INTO documents (id, provider, kind, content_type, metadata, payload, revision,"
    " state, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?,"
    " 'queued', ?, ?, ?)"
)

#: What SQLite says to a statement naming the old column (a read, a write).
NO_PAYLOAD = r"no such column: payload|no column named payload"


def doc(doc_id: str, payload: bytes) -> Document:
    return Document(
        id=doc_id, provider="acme", payload=payload, kind="document",
        content_type="application/json",
    )  # fmt: skip


def v1_store(path: Path, documents: list[Document]) -> None:
    """A store file as docrelay of schema version 1 left it, with *documents* queued."""
    conn = sqlite3.connect(path)
    for stmt in V1_OTHERS + V1_DOCUMENTS:
        conn.execute(stmt)
    conn.execute("INSERT INTO docrelay_meta VALUES ('app', 'docrelay'), ('schema_version', '1')")
    for d in documents:
        conn.execute(V1_INSERT, (d.id, d.provider, d.kind, d.content_type, d.payload,
                                 d.revision, T0, T0, T0))  # fmt: skip
    conn.commit()
    conn.close()


def columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {str(r[1]) for r in conn.execute("PRAGMA table_info(documents)")}
    finally:
        conn.close()


def version(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        [(v,)] = conn.execute("SELECT value FROM docrelay_meta WHERE key = 'schema_version'")
        return str(v)
    finally:
        conn.close()


def test_a_version_1_store_is_upgraded_and_old_and_new_documents_deliver_their_payloads(
    tmp_path: Path, make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    path = tmp_path / "v1.db"
    old = [doc(f"old-{i}", b'{"amount": %d, "from": "v1"}' % (10 + i)) for i in range(3)]
    v1_store(path, old)

    relay = make_relay(sandbox, store=f"sqlite:///{path}")
    assert version(path) == str(SCHEMA_VERSION)
    cols = columns(path)
    assert "row_payload" in cols
    assert "payload" not in cols
    new = [doc(f"new-{i}", b'{"amount": %d, "from": "v2"}' % (20 + i)) for i in range(2)]
    relay.submit(new[0])
    relay.submit_many([new[1]])
    relay.run_until_idle()

    for d in old + new:
        assert relay.status(d.id).state.value == "delivered", d.id
    bodies = sorted(e["body"] for e in acme.effects(sandbox))
    assert bodies == sorted(d.payload.decode() for d in old + new)
    relay.close()

    # Opened again (a second process, a restart): nothing more to do, nothing changed.
    again = open_store(f"sqlite:///{path}")
    assert {r.id: r.document.payload for r in again.select()} == {
        d.id: d.payload for d in old + new
    }
    again.close()
    assert columns(path) == cols
    assert version(path) == str(SCHEMA_VERSION)


def test_the_upgrade_is_one_transaction(tmp_path: Path) -> None:
    """An upgrade that fails half-way leaves the version 1 store as it was (its column not
    renamed, its version 1), and a later opening upgrades it."""
    path = tmp_path / "v1.db"
    v1_store(path, [doc("old-1", b'{"amount": 1}')])
    conn = sqlite3.connect(path)
    # The new version is written after the rename: that write made to fail.
    conn.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE ON docrelay_meta"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="refused by the test"):
        open_store(f"sqlite:///{path}")
    assert "payload" in columns(path)
    assert "row_payload" not in columns(path)
    assert version(path) == "1"

    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    assert store.get("old-1").document.payload == b'{"amount": 1}'  # type: ignore[union-attr]
    store.close()
    assert "row_payload" in columns(path)


@pytest.mark.parametrize("kind", ["upgraded", "new"])
def test_a_version_1_process_cannot_read_a_document_of_a_version_2_store(
    tmp_path: Path, kind: str
) -> None:
    """The statements a version 1 docrelay runs to read (get, claim) or write a document
    fail on an upgraded store and on a new one, so it never reads the empty row payload of
    a document whose payload is kept apart."""
    path = tmp_path / "s.db"
    if kind == "upgraded":
        v1_store(path, [doc("old-1", b'{"amount": 1}')])
    store = open_store(f"sqlite:///{path}")
    d = doc("new-1", b'{"amount": 2}')
    store.submit(d, T0)
    store.close()

    conn = sqlite3.connect(path)
    try:
        for sql, params in (
            (V1_SELECT, (d.id,)),
            (V1_CLAIM, ("v1-worker", T0 + 30, T0 + 30, d.id)),
            (V1_INSERT, ("x", "acme", "document", "application/json", b"{}", "r", T0, T0, T0)),
        ):
            with pytest.raises(sqlite3.OperationalError, match=NO_PAYLOAD):
                conn.execute(sql, params)
        [(owner,)] = conn.execute("SELECT lease_owner FROM documents WHERE id = ?", (d.id,))
    finally:
        conn.close()
    assert owner is None


def test_a_version_1_process_running_across_the_upgrade_fails_closed(tmp_path: Path) -> None:
    """A version 1 process that read documents before the upgrade (its prepared statements
    cached on its connection) fails on its next read after it, instead of claiming a
    document stored by version 2."""
    path = tmp_path / "v1.db"
    v1_store(path, [doc("old-1", b'{"amount": 1}')])
    running = sqlite3.connect(path, isolation_level=None)
    assert running.execute(V1_SELECT, ("old-1",)).fetchone() is not None

    store = open_store(f"sqlite:///{path}")  # the operator's new docrelay: upgrades the file
    d = doc("new-1", b'{"amount": 2}')
    store.submit(d, T0)
    try:
        with pytest.raises(sqlite3.OperationalError, match=NO_PAYLOAD):
            running.execute(V1_SELECT, (d.id,))
        with pytest.raises(sqlite3.OperationalError, match=NO_PAYLOAD):
            running.execute(V1_CLAIM, ("v1-worker", T0 + 30, T0 + 30, d.id))
    finally:
        running.close()
    claimed = store.claim("v2-worker", T0 + 1, 30, 5)
    assert {r.id: r.document.payload for r in claimed} == {
        "old-1": b'{"amount": 1}',
        "new-1": d.payload,
    }
    store.close()


def test_the_outbox_writes_documents_into_an_upgraded_store_that_the_relay_delivers(
    tmp_path: Path, make_relay: MakeRelay, sandbox: AcmeSandbox, acme: Any
) -> None:
    """``submit(connection=...)`` on the application's own sqlite3 connection writes the
    payload in the renamed row column; the relay delivers it."""
    path = tmp_path / "v1.db"
    v1_store(path, [doc("old-1", b'{"amount": 1}')])
    relay = make_relay(sandbox, store=f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        relay.submit(doc("erp-1", b'{"amount": 2, "erp": true}'), connection=conn)
        conn.commit()
        relay.run_until_idle()
        assert relay.status("erp-1").state.value == "delivered"
    finally:
        conn.close()
    assert sorted(e["body"] for e in acme.effects(sandbox)) == [
        '{"amount": 1}',
        '{"amount": 2, "erp": true}',
    ]
