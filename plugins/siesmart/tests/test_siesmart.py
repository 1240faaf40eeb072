"""End to end through docrelay's Relay against the SieSmart sandbox on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docrelay
import docrelay_siesmart as plugin
import pytest
import requests
from docrelay import ConfigError, DocState, Document, OutcomeKind
from docrelay.sandbox import TokenIssuer
from docrelay_siesmart.sandbox import SieSmartSandbox

Relay: Any = getattr(docrelay, "Relay", None)
if Relay is None:  # pragma: no cover - until the core exports it
    from docrelay._relay import Relay

FAST = {
    "retry_wait_initial": 0.01,
    "retry_wait_max": 0.05,
    "retry_wait_jitter": 0.0,
    "deferral_initial": 0.05,
    "deferral_max": 0.1,
    "read_timeout": 2.0,
    "pause_seconds": 0.0,
    "held_recheck": 0.05,
}

PROPOSAL = {
    "officeId": "OFF-DE-1001",
    "salesContactId": "SC-DE-0417",
    "label": "Kessler excavator",
    "customer": {"companyName": "Kessler GmbH"},
    "assets": [{"iacCode": "IAC-2210", "description": "Crawler excavator"}],
    "calculation": {"termMonths": 48},
}
DECISION = {
    "commentToRiskAnalyst": "Long-standing customer",
    "siemensMayContactCustomer": True,
    "siemensMayRequestCreditData": True,
    "prelease": False,
}


@pytest.fixture(scope="module")
def server() -> Iterator[SieSmartSandbox]:
    sb = SieSmartSandbox()
    sb.start()
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def sandbox(server: SieSmartSandbox) -> SieSmartSandbox:
    server.config.update(SieSmartSandbox.options)
    server.set_faults([])
    server.reset()
    return server


def make_relay(tmp_path: Path, sb: SieSmartSandbox, **settings: Any) -> Any:
    cfg = {
        "base_url": sb.url,
        "client_id": sb.config["client_id"],
        "client_secret": sb.config["client_secret"],
        "rate_limit": "1000/1",  # the provider's 100/60 spaces sends 0.6 s apart
        **settings,
    }
    return Relay(store="sqlite:///" + str(tmp_path / "d.db"), providers={"siesmart": cfg},
                 engine=FAST)  # fmt: skip


@pytest.fixture
def relay(tmp_path: Path, sandbox: SieSmartSandbox) -> Iterator[Any]:
    r = make_relay(tmp_path, sandbox)
    try:
        yield r
    finally:
        r.close()


def doc(doc_id: str, kind: str, payload: Any, **metadata: str) -> Document:
    return Document(
        id=doc_id,
        provider="siesmart",
        kind=kind,
        content_type="application/json",
        payload=json.dumps(payload).encode(),
        metadata=metadata,
    )


def kinds(relay: Any, doc_id: str) -> list[str]:
    return [a.outcome.kind.value for a in relay.history(doc_id) if a.outcome is not None]


def effects(sb: SieSmartSandbox, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in sb.effects if kind is None or e["kind"] == kind]


def test_create_update_decision_in_order(relay: Any, sandbox: SieSmartSandbox) -> None:
    """Update and decision submitted first wait (held) for the proposal; each business
    effect happens once; every modifying call carries the current ETag."""
    relay.submit(doc("upd", "proposal_update", {"label": "renamed"}, proposal="prop"))
    relay.submit(doc("dec", "decision", DECISION, proposal="prop", after="upd"))
    relay.run_until_idle()
    assert relay.status("upd").state == DocState.HELD
    assert "waiting for proposal document prop" in relay.status("upd").reason
    relay.submit(doc("prop", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("prop").provider_ref
    for d in ("prop", "upd", "dec"):
        st = relay.status(d)
        assert st.state == DocState.DELIVERED, (d, st.reason)
        assert st.provider_ref == pid
    assert relay.status("dec").outcome.provider_status == "PENDING"
    assert [(e["kind"], e["key"]) for e in sandbox.effects] == [
        ("proposal_created", pid),
        ("proposal_updated", pid),
        ("decision_submitted", pid),
    ]
    modifying = [
        r
        for r in sandbox.requests
        if r["method"] in ("PUT", "POST") and r["path"].startswith("/proposals")
    ]
    assert "If-Match" not in modifying[0]["headers"]
    assert all(r["status"] == 200 for r in modifying)
    assert all(r["headers"].get("If-Match") for r in modifying[1:])
    assert relay.status("dec").provider_state["etag"] == sandbox.etags[pid]
    assert relay.status("prop").outcome.trace_id


def test_throttled_then_delivered(relay: Any, sandbox: SieSmartSandbox) -> None:
    """A 429 with Retry-After: 1 is waited out, then the proposal is created once."""
    sandbox.set_faults(["throttle*1:1"])
    relay.submit(doc("p1", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    assert relay.status("p1").state == DocState.DELIVERED
    assert kinds(relay, "p1") == ["throttled", "delivered"]
    throttled = relay.history("p1")[0].outcome
    assert throttled.wait == 1.0
    assert throttled.message == "TOO_MANY_REQUESTS: The request rate limit has been reached"
    assert throttled.trace_id
    assert len(effects(sandbox, "proposal_created")) == 1


@pytest.fixture
def overwriting(tmp_path: Path, sandbox: SieSmartSandbox) -> Iterator[Any]:
    r = make_relay(tmp_path, sandbox, on_conflict="overwrite")
    try:
        yield r
    finally:
        r.close()


def test_stale_etag_refreshed_then_delivered(overwriting: Any, sandbox: SieSmartSandbox) -> None:
    """on_conflict = "overwrite": a concurrent edit is re-read and overwritten."""
    relay = overwriting
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    sandbox.schedule_concurrent_edits(1)
    relay.submit(doc("u", "proposal_update", {"label": "after edit"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.DELIVERED, st.reason
    assert kinds(relay, "u") == ["stale", "delivered"]
    assert relay.history("u")[0].outcome.status == 412
    assert len(effects(sandbox, "proposal_updated")) == 1


def test_stale_twice_is_rejected_with_provider_words(
    overwriting: Any, sandbox: SieSmartSandbox
) -> None:
    """One re-read per round: a second 412 in a row ends the round rejected."""
    relay = overwriting
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    sandbox.schedule_concurrent_edits(2)
    relay.submit(doc("u", "proposal_update", {"label": "x"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.REJECTED
    assert st.outcome.status == 412
    assert "does not match the current version of the proposal" in st.outcome.message
    assert st.outcome.trace_id
    assert effects(sandbox, "proposal_updated") == []


def test_dropped_create_is_reconciled_not_duplicated(relay: Any, sandbox: SieSmartSandbox) -> None:
    """The create took effect but the answer was lost: the label search finds it."""
    sandbox.set_faults(["drop*1"])
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    st = relay.status("p")
    assert st.state == DocState.DELIVERED, st.reason
    assert len(effects(sandbox, "proposal_created")) == 1
    pid = effects(sandbox)[0]["key"]
    assert st.provider_ref == pid
    assert st.provider_state["etag"] == sandbox.etags[pid]
    assert kinds(relay, "p") == ["unknown", "delivered"]
    assert relay.history("p")[-1].action == "reconcile"


def test_late_answer_is_reconciled_not_duplicated(relay: Any, sandbox: SieSmartSandbox) -> None:
    """The answer comes after docrelay's read timeout (2 s): the create had taken effect,
    the label search finds it."""
    sandbox.set_faults(["slow*1:2.5"])
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=15)
    st = relay.status("p")
    assert st.state == DocState.DELIVERED, st.reason
    assert kinds(relay, "p") == ["unknown", "delivered"]
    assert len(effects(sandbox, "proposal_created")) == 1


def test_lost_create_is_sent_again_after_reconcile(relay: Any, sandbox: SieSmartSandbox) -> None:
    """The connection broke before SieSmart handled the create: the search finds nothing
    (reconcile says retry), the create is sent again, exactly one proposal exists."""
    sandbox.lose_requests(1)
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    st = relay.status("p")
    assert st.state == DocState.DELIVERED, st.reason
    assert kinds(relay, "p") == ["unknown", "retry", "delivered"]
    assert [a.action for a in relay.history("p")] == ["send", "reconcile", "send"]
    assert relay.history("p")[1].outcome.rule == "siesmart:reconcile-not-found"
    assert len(effects(sandbox, "proposal_created")) == 1
    assert st.provider_ref == effects(sandbox)[0]["key"]


def test_dropped_update_is_reconciled(relay: Any, sandbox: SieSmartSandbox) -> None:
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    sandbox.set_faults(["drop*1"])
    relay.submit(doc("u", "proposal_update", {"specialConditionText": "48 -> 54"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    assert relay.status("u").state == DocState.DELIVERED
    assert len(effects(sandbox, "proposal_updated")) == 1


def test_expired_token_is_refreshed_once(relay: Any, sandbox: SieSmartSandbox) -> None:
    relay.submit(doc("p1", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    sandbox.tokens = TokenIssuer(86400)  # the provider forgets every token it issued
    relay.submit(doc("p2", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    assert relay.status("p2").state == DocState.DELIVERED
    assert kinds(relay, "p2") == ["reauth", "delivered"]
    assert sandbox.tokens.issued == 1


def test_token_endpoint_429_is_throttled_not_retry(relay: Any, sandbox: SieSmartSandbox) -> None:
    """Seed 002: 429 is "The request rate limit has been reached", and the block lifts by
    itself once the rate drops. At the token endpoint too that is ``throttled`` (waited out
    without spending the attempt budget), not ``retry`` as the plugin's own fetch said."""
    sandbox.config["token_error"] = 429
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_idle()
    st = relay.status("p")
    assert st.outcome.kind == OutcomeKind.THROTTLED, st.outcome
    assert st.outcome.status == 429
    assert st.attempts == 0
    assert effects(sandbox) == []
    sandbox.config["token_error"] = 0
    relay.run_until_settled(timeout=10)
    assert relay.status("p").state == DocState.DELIVERED
    assert set(kinds(relay, "p")) == {"throttled", "delivered"}
    assert len(effects(sandbox, "proposal_created")) == 1


def test_wrong_secret_is_config_error_without_leaking(
    tmp_path: Path, sandbox: SieSmartSandbox
) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    relay = make_relay(tmp_path, sandbox, client_secret=secret)
    try:
        relay.submit(doc("p", "proposal", PROPOSAL))
        relay.run_until_settled(timeout=10)
        st = relay.status("p")
        assert st.state == DocState.FAILED
        assert st.outcome.kind == OutcomeKind.CONFIG_ERROR
        assert "Unauthorized" in st.outcome.message
        dumped = json.dumps(st.to_dict()) + repr(relay.history("p"))
        assert secret not in dumped
        assert effects(sandbox) == []
    finally:
        relay.close()


def test_forbidden_is_config_error(relay: Any, sandbox: SieSmartSandbox) -> None:
    sandbox.config["read_only"] = True
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    st = relay.status("p")
    assert st.state == DocState.FAILED
    assert st.outcome.status == 403
    assert "not authorized for your token" in st.outcome.message


def test_invalid_proposal_is_rejected_with_field_errors(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    bad = {k: v for k, v in PROPOSAL.items() if k != "salesContactId"}
    bad["assets"] = [{"description": "no IAC code"}]
    relay.submit(doc("p", "proposal", bad))
    relay.run_until_settled(timeout=10)
    st = relay.status("p")
    assert st.state == DocState.REJECTED
    assert st.outcome.status == 422
    assert {fe.field for fe in st.field_errors} == {"salesContactId", "assets[0].iacCode"}
    assert effects(sandbox) == []


def test_decision_preconditions_rejected(relay: Any, sandbox: SieSmartSandbox) -> None:
    relay.submit(doc("p", "proposal", {"officeId": "OFF-GB-2001"}))
    relay.submit(doc("d", "decision", DECISION, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("d")
    assert st.state == DocState.REJECTED
    assert {fe.rule for fe in st.field_errors} == {
        "CUSTOMER_MISSING",
        "ASSETS_MISSING",
        "CALCULATION_MISSING",
    }


def test_server_error_then_delivered(relay: Any, sandbox: SieSmartSandbox) -> None:
    sandbox.set_faults(["error*2:503"])
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    assert relay.status("p").state == DocState.DELIVERED
    assert kinds(relay, "p") == ["retry", "retry", "delivered"]
    assert len(effects(sandbox)) == 1


def test_client_side_limiter_keeps_under_the_provider_limit(
    tmp_path: Path, sandbox: SieSmartSandbox
) -> None:
    """With the limit configured through the generic rate_limit setting the sandbox never
    answers 429; without it the same batch meets the provider's limit."""
    sandbox.config.update(rate_limit=6, rate_window=1.0)
    sandbox.reset()
    relay = make_relay(tmp_path, sandbox, rate_limit="5/1")
    try:
        for i in range(8):
            relay.submit(doc(f"p{i}", "proposal", PROPOSAL))
        relay.run_until_settled(timeout=15)
        assert all(relay.status(f"p{i}").state == DocState.DELIVERED for i in range(8))
        assert [r["status"] for r in sandbox.requests].count(429) == 0
        assert len(effects(sandbox)) == 8
    finally:
        relay.close()
    sandbox.reset()
    (tmp_path / "b").mkdir()
    relay = make_relay(tmp_path / "b", sandbox)
    try:
        for i in range(8):
            relay.submit(doc(f"q{i}", "proposal", PROPOSAL))
        relay.run_until_settled(timeout=15)
        assert [r["status"] for r in sandbox.requests].count(429) >= 1
        assert all(relay.status(f"q{i}").state == DocState.DELIVERED for i in range(8))
        assert len(effects(sandbox)) == 8
    finally:
        relay.close()


def test_demo_batch_delivers_with_the_promised_detours(
    tmp_path: Path, sandbox: SieSmartSandbox
) -> None:
    batch = plugin.demo_batch(sandbox=sandbox, webhook_url="http://127.0.0.1:9/hooks")
    sandbox.set_faults(list(batch.faults))
    relay = Relay(
        store="sqlite:///" + str(tmp_path / "demo.db"),
        providers={"siesmart": {**batch.settings, "rate_limit": "1000/1"}},
        engine=FAST,
    )
    try:
        for d in batch.documents:
            relay.submit(d)
        relay.run_until_settled(timeout=15)
        for d in batch.documents:
            assert relay.status(d.id).state == DocState.DELIVERED, relay.status(d.id).reason
        assert kinds(relay, "siesmart-demo-proposal-1") == ["throttled", "delivered"]
        assert kinds(relay, "siesmart-demo-update-1") == ["stale", "delivered"]
        assert [e["kind"] for e in sandbox.effects].count("proposal_created") == 2
        assert [e["kind"] for e in sandbox.effects].count("decision_submitted") == 1
    finally:
        relay.close()


# -- conflicts after a 412 (seed 002: If-Match prevents mid-air collisions) ------------------


def _touch_over_http(sb: SieSmartSandbox, pid: str) -> str:
    """A third party edits the proposal at SieSmart (new ETag)."""
    r = requests.post(f"{sb.url}/_sandbox/touch/{pid}", timeout=5)
    assert r.status_code == 200
    return str(r.headers["ETag"])


def test_foreign_edit_after_docrelays_version_is_rejected_not_overwritten(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """Someone changed the proposal at SieSmart after the version docrelay last saw: the
    412 is not retried with the fresh ETag (that would overwrite the edit); the update ends
    rejected, naming the version docrelay knew, and the proposal keeps the other edit."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    known = relay.status("p").provider_state["etag"]
    label = sandbox.proposals[pid]["label"]
    theirs = _touch_over_http(sandbox, pid)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.REJECTED, st.reason
    assert st.outcome.message == (
        f"proposal {pid} changed at SieSmart since {known}: review and resubmit"
    )
    assert st.outcome.rule == "siesmart:changed-at-siesmart"
    assert kinds(relay, "u") == ["stale", "rejected"]
    assert [a.action for a in relay.history("u")] == ["send", "refresh"]
    assert sandbox.proposals[pid]["label"] == label
    assert sandbox.proposals[pid]["specialConditionText"] == "(edited)"
    assert sandbox.etags[pid] == theirs
    assert effects(sandbox, "proposal_updated") == []
    puts = [r for r in sandbox.requests if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [412]


def test_edit_meeting_the_request_in_flight_is_rejected(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """A sales rep's edit lands just before docrelay's update: rejected, not overwritten."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    label = sandbox.proposals[pid]["label"]
    r = requests.post(f"{sandbox.url}/_sandbox/concurrent-edits", json={"count": 1}, timeout=5)
    assert r.status_code == 200
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.REJECTED, st.reason
    assert "changed at SieSmart since" in st.outcome.message
    assert sandbox.proposals[pid]["label"] == label
    assert effects(sandbox, "proposal_updated") == []


def test_on_conflict_overwrite_resends_and_overwrites(
    tmp_path: Path, sandbox: SieSmartSandbox
) -> None:
    """on_conflict = "overwrite": re-read, resend with the fresh ETag, the edit is gone."""
    relay = make_relay(tmp_path, sandbox, on_conflict="overwrite")
    try:
        relay.submit(doc("p", "proposal", PROPOSAL))
        relay.run_until_settled(timeout=10)
        pid = relay.status("p").provider_ref
        theirs = _touch_over_http(sandbox, pid)
        relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
        relay.run_until_settled(timeout=10)
        st = relay.status("u")
        assert st.state == DocState.DELIVERED, st.reason
        assert kinds(relay, "u") == ["stale", "delivered"]
        assert sandbox.proposals[pid]["label"] == "ours"
        puts = [r for r in sandbox.requests if r["method"] == "PUT"]
        assert [r["status"] for r in puts] == [412, 200]
        assert puts[1]["headers"]["If-Match"] == theirs
        assert len(effects(sandbox, "proposal_updated")) == 1
    finally:
        relay.close()


def test_on_conflict_bad_value_is_a_config_error(tmp_path: Path, sandbox: SieSmartSandbox) -> None:
    """A value outside 'reject'/'overwrite' is refused when the configuration loads, before
    anything is sent (not at the first 412, pausing the provider mid-run)."""
    with pytest.raises(ConfigError, match="on_conflict must be one of 'reject', 'overwrite'"):
        make_relay(tmp_path, sandbox, on_conflict="merge")
    assert effects(sandbox) == []


def test_missing_if_match_without_foreign_change_is_retried(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """The If-Match got lost on the way (412 "header is missing") but nobody changed the
    proposal: the version is still the one docrelay knew, so it resends with it."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    known = relay.status("p").provider_state["etag"]
    r = requests.post(f"{sandbox.url}/_sandbox/drop-if-match", json={"count": 1}, timeout=5)
    assert r.status_code == 200
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.DELIVERED, st.reason
    assert kinds(relay, "u") == ["stale", "delivered"]
    assert "'If-Match' header is missing" in relay.history("u")[0].outcome.message
    puts = [r for r in sandbox.requests if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [412, 200]
    assert puts[1]["headers"]["If-Match"] == known
    assert sandbox.proposals[pid]["label"] == "ours"
    assert len(effects(sandbox, "proposal_updated")) == 1


def test_no_known_version_retries_with_the_fresh_etag(relay: Any, sandbox: SieSmartSandbox) -> None:
    """The proposal was created outside docrelay (metadata proposal_id): docrelay never knew
    a version, reads one, and a 412 on the way is retried with the fresh ETag."""
    created = requests.post(
        f"{sandbox.url}/proposals",
        json=PROPOSAL,
        headers={"Authorization": f"Bearer {_sandbox_token(sandbox)}"},
        timeout=5,
    )
    pid = created.json()["id"]
    sandbox.schedule_concurrent_edits(1)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal_id=pid))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.DELIVERED, st.reason
    assert kinds(relay, "u") == ["stale", "delivered"]
    assert sandbox.proposals[pid]["label"] == "ours"


def test_resubmitted_revision_after_conflict_is_sent_against_the_reviewed_version(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """After "review and resubmit" the corrected revision goes out with the version docrelay
    read at the conflict (the one the operator reviewed): delivered without another 412."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    theirs = _touch_over_http(sandbox, pid)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    assert relay.status("u").state == DocState.REJECTED
    relay.submit(doc("u", "proposal_update", {"label": "ours, reviewed"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.DELIVERED, st.reason
    puts = [r for r in sandbox.requests if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [412, 200]
    assert puts[1]["headers"]["If-Match"] == theirs
    assert sandbox.proposals[pid]["label"] == "ours, reviewed"
    assert sandbox.proposals[pid]["specialConditionText"] == "(edited)"


def test_other_documents_do_not_adopt_the_conflicting_version(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """A decision about the proposal after the conflict meets the same foreign edit: it is
    rejected too instead of being submitted on a version nobody reviewed."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    _touch_over_http(sandbox, pid)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    relay.submit(doc("d", "decision", DECISION, proposal="p"))
    relay.run_until_settled(timeout=10)
    assert relay.status("u").state == DocState.REJECTED
    st = relay.status("d")
    assert st.state == DocState.REJECTED, st.reason
    assert "changed at SieSmart since" in st.outcome.message
    assert effects(sandbox, "decision_submitted") == []


def _sandbox_token(sb: SieSmartSandbox) -> str:
    r = requests.post(
        f"{sb.url}/oauth/token",
        json={
            "audience": sb.config["audience"],
            "grant_type": "client_credentials",
            "client_id": sb.config["client_id"],
            "client_secret": sb.config["client_secret"],
        },
        timeout=5,
    )
    return str(r.json()["access_token"])


def test_lost_update_then_foreign_edit_is_rejected_at_reconcile(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """The update was lost before SieSmart handled it, then someone edited the proposal:
    the look-up after the ambiguous outcome finds neither our change nor docrelay's version,
    so the update is not resent over the other edit."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    known = relay.status("p").provider_state["etag"]
    sandbox.lose_requests(1)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_idle()
    assert relay.status("u").state == DocState.UNKNOWN
    _touch_over_http(sandbox, pid)
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.REJECTED, st.reason
    assert st.outcome.message == (
        f"proposal {pid} changed at SieSmart since {known}: review and resubmit"
    )
    assert relay.history("u")[-1].action == "reconcile"
    assert sandbox.proposals[pid]["label"] != "ours"
    assert effects(sandbox, "proposal_updated") == []


def test_lost_update_without_foreign_edit_is_sent_again(
    relay: Any, sandbox: SieSmartSandbox
) -> None:
    """Lost before SieSmart handled it, nobody else changed the proposal: sent again."""
    relay.submit(doc("p", "proposal", PROPOSAL))
    relay.run_until_settled(timeout=10)
    pid = relay.status("p").provider_ref
    sandbox.lose_requests(1)
    relay.submit(doc("u", "proposal_update", {"label": "ours"}, proposal="p"))
    relay.run_until_settled(timeout=10)
    st = relay.status("u")
    assert st.state == DocState.DELIVERED, st.reason
    assert sandbox.proposals[pid]["label"] == "ours"
    assert len(effects(sandbox, "proposal_updated")) == 1
