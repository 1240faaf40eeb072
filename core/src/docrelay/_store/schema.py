"""The schema of a docrelay store (shared by SQLite and PostgreSQL) and its versioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..exceptions import SchemaTooNewError, StoreError

__all__ = [
    "APP_ID",
    "SCHEMA_VERSION",
    "additive_tables",
    "init_schema",
    "limit_tables",
    "payload_tables",
    "tables",
]

#: The schema version this docrelay writes. A store with a newer version is refused.
#: 2: payloads kept apart (the ``payloads`` table), so a state change does not rewrite them;
#: a version 1 store is upgraded in place (its documents keep their payload in their row).
#: On SQLite the row's payload column is renamed ``row_payload`` with it (in the upgrade's
#: transaction), so a version 1 process still running on the file fails on its next read
#: or write of a document instead of reading the empty row payload of a newer document.
SCHEMA_VERSION = 2
APP_ID = "docrelay"


def tables(b: str, r: str, serial_pk: str, payload: str = "payload") -> list[str]:
    """The schema: documents, attempts, notifications, pauses and the shared limits
    (*b*: the blob type, *r*: the real type, *serial_pk*: an auto-numbered key, *payload*:
    the name of the payload column of a document's row)."""
    return [
        "CREATE TABLE IF NOT EXISTS docrelay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS documents (
            id TEXT PRIMARY KEY, provider TEXT NOT NULL, kind TEXT NOT NULL,
            content_type TEXT NOT NULL, metadata TEXT NOT NULL, {payload} {b} NOT NULL,
            revision TEXT NOT NULL, state TEXT NOT NULL, key TEXT, key_revision TEXT,
            previous_key TEXT, previous_state TEXT,
            attempts INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0, next_attempt_at {r},
            lease_owner TEXT, lease_until {r}, outcome TEXT, reason TEXT, provider_ref TEXT,
            provider_state TEXT NOT NULL DEFAULT '{{}}', created_at {r} NOT NULL,
            updated_at {r} NOT NULL, first_attempt_at {r})""",
        "CREATE INDEX IF NOT EXISTS documents_due ON documents (next_attempt_at)"
        " WHERE next_attempt_at IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS documents_key ON documents (provider, key)",
        "CREATE INDEX IF NOT EXISTS documents_prev_key ON documents (provider, previous_key)",
        "CREATE INDEX IF NOT EXISTS documents_ref ON documents (provider, provider_ref)",
        "CREATE INDEX IF NOT EXISTS documents_state ON documents (state, provider)",
        "CREATE INDEX IF NOT EXISTS documents_kind ON documents (provider, kind)",
        f"""CREATE TABLE IF NOT EXISTS attempts (
            doc_id TEXT NOT NULL, number INTEGER NOT NULL, revision TEXT NOT NULL,
            key TEXT, action TEXT NOT NULL, started_at {r} NOT NULL, request TEXT,
            status INTEGER, outcome TEXT, duration {r}, PRIMARY KEY (doc_id, number))""",
        f"""CREATE TABLE IF NOT EXISTS notifications (
            id {serial_pk}, provider TEXT NOT NULL, digest TEXT NOT NULL,
            doc_id TEXT, key TEXT, provider_ref TEXT, outcome TEXT, body {b},
            received_at {r} NOT NULL, applied INTEGER NOT NULL DEFAULT 0, note TEXT)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS notifications_digest"
        " ON notifications (provider, digest)",
        "CREATE INDEX IF NOT EXISTS notifications_doc ON notifications (doc_id)",
        f"""CREATE TABLE IF NOT EXISTS provider_pauses (
            provider TEXT PRIMARY KEY, reason TEXT NOT NULL, since {r} NOT NULL,
            until {r})""",
        *limit_tables(r),
        *payload_tables(b),
    ]


def payload_tables(b: str) -> list[str]:
    """Where a store that keeps payloads apart from their document's row keeps them
    (SQLite: an UPDATE rewrites the whole row, so a 5 KB payload in it is written again at
    every state change). A payload counts only for the revision stored with it: a document
    whose revision was changed by a writer that keeps payloads in the row (the outbox) is
    read from its row. Additive: created on opening an older store."""
    return [
        f"CREATE TABLE IF NOT EXISTS payloads (id TEXT PRIMARY KEY, revision TEXT NOT NULL,"
        f" payload {b} NOT NULL)",
    ]


def additive_tables(b: str, r: str) -> list[str]:
    """The statements run on opening an existing store of this or an older version."""
    return [*limit_tables(r), *payload_tables(b)]


def limit_tables(r: str) -> list[str]:
    """The tables of the shared limits: rate slots, tokens (encrypted by the engine, see
    :class:`~docrelay._limits.TokenCache`) and token-fetch leases. Additive: created on
    opening a store of this schema version that lacks them."""
    return [
        f"CREATE TABLE IF NOT EXISTS rate_buckets (bucket TEXT PRIMARY KEY,"
        f" next_slot {r} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS docrelay_tokens (credential TEXT PRIMARY KEY,"
        f" value TEXT NOT NULL, expires_at {r} NOT NULL, saved_at {r} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS token_fetches (credential TEXT PRIMARY KEY,"
        f" owner TEXT NOT NULL, until {r} NOT NULL)",
    ]


def init_schema(
    cur: Any,
    tables_now: set[str],
    ph: str,
    where: str,
    statements: list[str],
    limits: list[str],
    upgrade: Callable[[Any, int], None] | None = None,
) -> None:
    """Create the schema in an empty database, or check the version of an existing docrelay
    store (refusing a foreign one or a newer one), bring it to this version (*upgrade*:
    the store's own changes, given the cursor and the version found; idempotent) and add
    the additive tables, all in the caller's transaction on *cur*.
    *tables_now*: the tables there are; *ph*: the driver's placeholder; *where*: the store's
    name for messages (without secrets)."""
    meta: dict[str, str] = {}
    if "docrelay_meta" in tables_now:
        cur.execute("SELECT key, value FROM docrelay_meta")
        meta = {k: v for k, v in cur.fetchall()}
    if not meta:
        if tables_now - {"docrelay_meta"}:
            raise StoreError(
                f"{where}: not a docrelay store (it has other tables); refusing to touch it"
            )
        for stmt in statements:
            cur.execute(stmt)
        cur.execute(
            f"INSERT INTO docrelay_meta (key, value) VALUES ({ph}, {ph}), ({ph}, {ph})",
            ("app", APP_ID, "schema_version", str(SCHEMA_VERSION)),
        )
        return
    if meta.get("app") != APP_ID:
        raise StoreError(f"{where}: not a docrelay store")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{where}: store schema version {version} is newer than this docrelay knows "
            f"({SCHEMA_VERSION}); upgrade docrelay"
        )
    if upgrade is not None:
        upgrade(cur, version)
    if version < SCHEMA_VERSION:
        cur.execute(
            f"UPDATE docrelay_meta SET value = {ph} WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION),),
        )
    for stmt in limits:
        cur.execute(stmt)
