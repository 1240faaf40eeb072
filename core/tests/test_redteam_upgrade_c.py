"""Red team C: the schema 2 upgrade of a ``shared`` SQLite file (docrelay's tables in
another application's file)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from docrelay._store import open_store

from .test_store_upgrade import doc, v1_store


@pytest.mark.xfail(
    strict=True,
    reason="SQLite's ALTER TABLE RENAME COLUMN rewrites the other application's views and "
    "triggers over documents.payload to row_payload, so they keep working and silently read "
    "the empty row payload of every document stored by version 2 (kept in payloads): the "
    "guard fails closed for a version 1 docrelay only. Refusing the upgrade (or naming the "
    "views and triggers in the error) while another schema object names documents.payload "
    "is a decision for the lead",
)
def test_an_application_view_over_the_row_payload_does_not_silently_read_it_empty(
    tmp_path: Path,
) -> None:
    """A version 1 shared file where the ERP has a view over docrelay's documents that reads
    the payload. The upgrade renames the column and SQLite rewrites the view to read
    row_payload: after it, the view answers 0 bytes for a document stored by version 2,
    instead of failing (as a version 1 docrelay does) or the upgrade refusing the file."""
    path = tmp_path / "erp.db"
    v1_store(path, [doc("old-1", b'{"amount": 1}')])
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE erp_orders (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute("CREATE VIEW erp_doc_sizes AS SELECT id, length(payload) AS n FROM documents")
    conn.commit()
    conn.close()
    try:
        store = open_store(f"sqlite:///{path}", shared=True)
    except Exception:
        return
    try:
        store.submit(doc("new-1", b'{"amount": 22}'), 1.0)
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        sizes = dict(conn.execute("SELECT id, n FROM erp_doc_sizes"))
    except sqlite3.Error:
        return  # failing closed is the other
    finally:
        conn.close()
    assert sizes == {"old-1": 13, "new-1": 14}
