"""Notifications matched to the delivery round they answer, over HTTP with the AQI sandbox.

AQI keeps the transactionId when a document is sent again after ERROR_IN_FILE, so a second
rejection is byte-identical to the first. It must reject the new round; a true duplicate
delivery within one round must change nothing. And ``accepted`` is never counted as done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from docrelay import DocState, Relay
from docrelay._serve import WebhookServer
from docrelay.sandbox import Route, SandboxRequest, SandboxResponse
from docrelay_aqi import sample_document
from docrelay_aqi.sandbox import AqiSandbox

SECRET = "whsec-rounds-0b7e4c2a"
ENGINE = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "deferral_initial": 0.05,
          "held_recheck": 0.05}  # fmt: skip
DOCRELAY = Path(sys.executable).parent / "docrelay"


@pytest.fixture
def sandbox() -> Iterator[AqiSandbox]:
    sb = AqiSandbox(seed=5).start()
    yield sb
    sb.stop()


class Hooked:
    def __init__(self, tmp: Path, sandbox: AqiSandbox, register: bool = True, **relay: Any) -> None:
        self.sandbox = sandbox
        self.db = tmp / "rounds.db"
        store = relay.pop("store", f"sqlite:///{self.db}")
        self.relay = Relay(store, engine=ENGINE, providers={"aqi": {
            "base_url": sandbox.url, "subscription_key": "aqi-sandbox-key",
            "webhook_secret": SECRET}}, **relay)  # fmt: skip
        self.server = WebhookServer(self.relay.wsgi_app).__enter__()
        if register:
            sandbox.register_callback(f"{self.server.url}/aqi/{SECRET}")

    def until(self, check: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            self.relay.run_until_idle()
            time.sleep(0.02)

    def state(self, doc_id: str) -> DocState:
        return self.relay.status(doc_id).state

    def notes(self, doc_id: str) -> list[str]:
        return [a.outcome.kind.value for a in self.relay.history(doc_id)
                if a.action == "notification" and a.outcome]  # fmt: skip

    def delivered_notifications(self) -> int:
        return sum(1 for n in self.sandbox.notifications if 200 <= n["status"] < 300)

    def close(self) -> None:
        self.server.__exit__()
        self.relay.close()


@pytest.fixture
def hooked(tmp_path: Path, sandbox: AqiSandbox) -> Iterator[Hooked]:
    h = Hooked(tmp_path, sandbox)
    yield h
    h.close()


def test_second_rejection_after_requeue_rejects_again(hooked: Hooked) -> None:
    """send -> ERROR_IN_FILE -> requeue -> the same ERROR_IN_FILE (byte-identical, same
    transactionId): the document ends rejected again, not accepted for ever."""
    h = hooked
    h.relay.submit(sample_document("bad-1", "order", "order_error_in_file"))
    h.until(lambda: h.state("bad-1") == DocState.REJECTED and h.delivered_notifications() == 1)
    first = [n["payload"] for n in h.sandbox.notifications]
    key = h.relay.status("bad-1").key

    h.relay.requeue("bad-1")
    h.until(lambda: len(h.sandbox.notifications) == 2 and h.state("bad-1") != DocState.SENDING)
    h.until(lambda: h.state("bad-1") == DocState.REJECTED, timeout=10)

    second = [n["payload"] for n in h.sandbox.notifications][1:]
    assert json.dumps(second) == json.dumps(first), "AQI answers the resend identically"
    st = h.relay.status("bad-1")
    assert (st.state, st.key) == (DocState.REJECTED, key)
    assert [f.field for f in st.field_errors] == ["LINEITEMSTATUS", "BILLTOLANGUAGECODE"]
    assert h.notes("bad-1") == ["rejected", "rejected"]
    assert [a.action for a in h.relay.history("bad-1")].count("send") == 2


def test_duplicate_delivery_within_a_round_changes_nothing(tmp_path: Path) -> None:
    """AQI delivers every notification twice: one is applied per round, the copy is a
    duplicate; after a requeue the new round's answer is applied once again."""
    sb = AqiSandbox(seed=9, callback_duplicate=True).start()
    h = Hooked(tmp_path, sb)
    try:
        h.relay.submit(sample_document("bad-2", "order", "order_error_in_file"))
        h.until(lambda: h.state("bad-2") == DocState.REJECTED and h.delivered_notifications() == 2)
        assert h.notes("bad-2") == ["rejected"]
        h.relay.requeue("bad-2")
        h.until(lambda: h.delivered_notifications() == 4)
        h.until(lambda: h.state("bad-2") == DocState.REJECTED)
        assert h.notes("bad-2") == ["rejected", "rejected"]
        notes = h.relay.store.notifications("bad-2")
        assert len(notes) == 2, "one record per round; the copies were duplicates"
    finally:
        h.close()
        sb.stop()


def test_a_late_copy_before_the_resend_changes_nothing(hooked: Hooked) -> None:
    """A copy of round 1's rejection arriving after it was applied, even after the requeue
    but before the resend, belongs to round 1: a duplicate, not the new round's answer."""
    h = hooked
    h.relay.submit(sample_document("bad-3", "order", "order_error_in_file"))
    h.until(lambda: h.state("bad-3") == DocState.REJECTED and h.delivered_notifications() == 1)
    body = json.dumps(h.sandbox.notifications[0]["payload"]).encode()

    late = h.relay.ingest_notification("aqi", body, secret=SECRET)
    h.relay.requeue("bad-3")
    queued = h.relay.ingest_notification("aqi", body, secret=SECRET)

    assert (late.status, queued.status) == ("duplicate", "duplicate")
    assert h.state("bad-3") == DocState.QUEUED
    h.until(lambda: h.state("bad-3") == DocState.REJECTED and len(h.notes("bad-3")) == 2)


class _LostAnswerAqi(AqiSandbox):
    """AQI whose first order answer is lost, with its notifications sent when the test says
    (no timer): AQI's OK for the first request reaches the callback before the answer is
    lost (``ok_first``: the resend then finds the transactionId processed, and AQI answers
    it with an ERROR_IN_FILE "already been processed"), or is held until the resend is
    accepted (``resend_first``: the resend comes while AQI still validates, and is ignored).
    Whatever is held is sent by :meth:`release`."""

    def __init__(self, order: str) -> None:
        self.order, self.held, self.answers = order, list[Callable[[], None]](), 0
        super().__init__(seed=2, callback_delay=0.0)

    def routes(self) -> list[Route]:
        return [attrs.evolve(r, handler=self._first_answer_lost(r.handler))
                if r.method == "POST" and r.pattern.pattern.endswith("/orders$") else r
                for r in super().routes()]  # fmt: skip

    def _first_answer_lost(
        self, handler: Callable[[SandboxRequest], SandboxResponse]
    ) -> Callable[[SandboxRequest], SandboxResponse]:
        def handle(request: SandboxRequest) -> SandboxResponse:
            response = handler(request)
            self.answers += 1
            if self.answers == 1:
                if self.order == "ok_first":
                    self.release()  # the OK is taken by the callback before the loss
                self.drop_answer()
            return response

        return handle

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        self.held.append(fn)

    def release(self) -> None:
        held, self.held = self.held, []
        for fn in held:
            fn()


@pytest.mark.parametrize("order", ["ok_first", "resend_first"])
def test_answer_to_a_lost_response_applies_after_the_resend(tmp_path: Path, order: str) -> None:
    """The first send's response is lost (unknown) while AQI processes it and notifies OK;
    the resend with the same transactionId is the same round, so the OK applies: delivered
    with AQI's own answer, whichever of the OK and the resend comes first.

    AQI's next notification is sent right after the resend's ``accepted`` is committed and
    before the end of the send applies the waiting OK (from an ``on_change`` listener, in
    that gap): with ``ok_first`` it is the ERROR_IN_FILE "already been processed" of the
    resend. It came after the OK, so it must not overtake it: the waiting OK decides, and
    the later answer is already final (it used to apply first, the document ended
    ``duplicate`` and the OK was marked "not applicable")."""
    sb = _LostAnswerAqi(order).start()
    h = Hooked(tmp_path, sb)
    results: list[str] = []

    def in_the_gap(status: Any, old: str, new: str) -> None:
        if new == "accepted" and sb.held:
            sb.release()
            results.append(new)

    h.relay.on_change(in_the_gap)
    try:
        h.relay.submit(sample_document("lost-1", "order", "order"))
        h.until(lambda: h.state("lost-1") in (DocState.DELIVERED, DocState.DUPLICATE))
        sends = [a for a in h.relay.history("lost-1") if a.action == "send"]
        assert [a.outcome.kind.value for a in sends if a.outcome] == ["unknown", "accepted"]
        assert results == ["accepted"], "a notification was sent in the gap"
        st = h.relay.status("lost-1")
        assert st.state == DocState.DELIVERED, st
        assert h.notes("lost-1") == ["delivered"]
        notes = h.relay.store.notifications("lost-1")
        kinds = [(n["outcome"]["kind"], n["applied"]) for n in notes]
        if order == "ok_first":
            assert kinds == [("delivered", 1), ("duplicate", 2)]
            assert notes[1]["note"] == "already delivered"
        else:
            assert kinds == [("delivered", 1)]
    finally:
        h.close()
        sb.stop()


@pytest.mark.postgres
def test_rounds_and_the_unmatched_cap_on_postgresql(tmp_path: Path, sandbox: AqiSandbox) -> None:
    """The same on the PostgreSQL store: a second rejection after a requeue rejects again,
    and unmatched notifications are capped, oldest dropped first and counted."""
    import uuid

    import psycopg

    url = os.environ.get("DOCRELAY_TEST_PG_URL")
    if not url:
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    h = Hooked(tmp_path, sandbox, store=url, webhooks={"max_unmatched_per_provider": 3},
               store_options={"schema": schema, "heartbeat": False})  # fmt: skip
    try:
        h.relay.submit(sample_document("bad-pg", "order", "order_error_in_file"))
        h.until(lambda: h.state("bad-pg") == DocState.REJECTED)
        h.relay.requeue("bad-pg")
        h.until(lambda: h.state("bad-pg") == DocState.REJECTED and len(h.notes("bad-pg")) == 2)
        for i in range(7):
            note = {"type": "accounting/EDIErrorSent", "parameters": {"transactionId": f"x{i}",
                    "details": {"result": "OK"}}}  # fmt: skip
            r = h.relay.ingest_notification("aqi", json.dumps(note).encode(), secret=SECRET)
            assert r.status == "unknown_document"
        assert h.relay.notification_stats()["aqi"] == {"stored": 5, "unmatched": 3, "dropped": 4}
    finally:
        h.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCRELAY_")}
    return subprocess.run([str(DOCRELAY), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_accepted_is_not_done_and_overdue_needs_attention(
    tmp_path: Path, sandbox: AqiSandbox
) -> None:
    """`docrelay send` leaves an AQI order accepted (no notification yet): exit code 3, not
    success. Past [engine] notification_timeout, its reason says it needs attention and
    what to do, and `docrelay status` shows that reason."""
    cfg = tmp_path / "docrelay.toml"
    cfg.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "s.db"}"\n'
                   "[engine]\nnotification_timeout = 0.5\n"
                   f'[providers.aqi]\nbase_url = "{sandbox.url}"\n'
                   'subscription_key = "${AQI_KEY}"\n')  # fmt: skip
    order = tmp_path / "order-9.json"
    order.write_bytes(sample_document("order-9", "order", "order").payload)
    os.environ["AQI_KEY"] = "aqi-sandbox-key"
    try:
        doc = sample_document("order-9", "order", "order")
        meta = [f"--meta={k}={v}" for k, v in doc.metadata.items()]
        sent = _cli(["--config", str(cfg), "send", "--provider", "aqi", "--json", *meta,
                     str(order)], tmp_path)  # fmt: skip
        assert json.loads(sent.stdout)[0]["state"] == "accepted", sent.stdout
        assert sent.returncode == 3, "accepted is not done"
        waiting = _cli(["--config", str(cfg), "status", "order-9"], tmp_path)
        assert waiting.returncode == 3
        assert "waiting for the provider's notification" in waiting.stdout

        with Relay.from_config(_load(cfg)) as relay:
            deadline = time.monotonic() + 15
            while relay.status("order-9").next_attempt_at is not None:
                assert time.monotonic() < deadline
                time.sleep(0.1)
                relay.run_until_idle()
            st = relay.status("order-9")
        assert st.state == DocState.ACCEPTED
        assert st.reason is not None
        assert "needs attention" in st.reason
        assert "0.5 s" in st.reason
        assert "callback" in st.reason
        shown = _cli(["--config", str(cfg), "status", "order-9"], tmp_path)
        assert shown.returncode == 3
        assert "needs attention" in shown.stdout
    finally:
        del os.environ["AQI_KEY"]


def _load(cfg: Path) -> Any:
    from docrelay import load_config

    return load_config(cfg)
