"""What CI promises: with ``DOCRELAY_REQUIRE_PG=1`` (set by ``.ci/run``) a PostgreSQL server is
given and reachable, so the PostgreSQL tests can never be skipped silently there."""

from __future__ import annotations

import os

import pytest

REQUIRED = os.environ.get("DOCRELAY_REQUIRE_PG") == "1"


@pytest.mark.postgres
@pytest.mark.skipif(not REQUIRED, reason="DOCRELAY_REQUIRE_PG is not 1 (not in CI)")
def test_required_postgresql_is_reachable() -> None:
    """``DOCRELAY_TEST_PG_URL`` is set and the server answers a query."""
    import psycopg

    url = os.environ.get("DOCRELAY_TEST_PG_URL")
    assert url, "DOCRELAY_REQUIRE_PG=1 but DOCRELAY_TEST_PG_URL is not set"
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT 1").fetchone()

    assert row == (1,)
