"""Red team C: the cap on settled notifications per document under two writers at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from docrelay import Outcome, OutcomeKind
from docrelay._store import Store

from .test_store_contract import T0, Backend, backend, doc  # noqa: F401


def test_two_writers_past_the_cap_count_only_the_notifications_they_dropped(
    backend: Backend,  # noqa: F811
) -> None:
    """Two processes record a settled notification of one document at the cap at once. On
    PostgreSQL (read committed) both count cap + 1 and both delete the same oldest one: the
    second DELETE finds it gone and deletes nothing, yet counted one drop. The dropped count
    must be the rows deleted (here: one)."""
    one, two = backend.open(), backend.open()
    try:
        one.submit(doc(1), T0)
        ok = Outcome(kind=OutcomeKind.DELIVERED, message="validated")

        def note(s: Store, i: int) -> None:
            s.record_notification("acme", f"d{i}", "doc-1", "K", None, ok, b"{}", T0 + i,
                                  max_per_document=2, not_applied="already delivered")  # fmt: skip

        note(one, 0)
        note(one, 1)
        deleted, go = threading.Event(), threading.Event()
        real = one._drop_settled  # type: ignore[attr-defined]

        def held(cur: Any, *a: Any) -> None:
            real(cur, *a)
            deleted.set()  # one's DELETE is done, its transaction still open
            go.wait(10)

        one._drop_settled = held  # type: ignore[attr-defined]
        errors: list[BaseException] = []

        def run(s: Store, i: int) -> None:
            try:
                note(s, i)
            except BaseException as exc:
                errors.append(exc)

        t1 = threading.Thread(target=run, args=(one, 2))
        t1.start()
        assert deleted.wait(10)
        t2 = threading.Thread(target=run, args=(two, 3))
        t2.start()
        time.sleep(0.5)  # two has counted and waits on the row lock of one's DELETE (PG)
        go.set()
        t1.join(10)
        t2.join(10)
        assert not errors, errors
        kept = len(one.notifications("doc-1"))
        dropped = one.notification_stats()["acme"]["dropped"]
        assert dropped == 4 - kept, (kept, dropped)
    finally:
        one.close()
        two.close()
