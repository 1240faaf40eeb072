"""The fault suite's kit: the sending worker, the five sandboxes, the batch and the judge.

Run as a script, this is the *sending process* of tests/test_fault_suite.py: it builds a
:class:`docrelay.Relay` from environment variables and delivers until it is told to stop
(SIGTERM) or killed (SIGKILL)::

    DOCRELAY_FAULT_STORE      store URL (sqlite:///...)
    DOCRELAY_FAULT_PROVIDERS  provider settings, JSON {name: {setting: value}}
    DOCRELAY_FAULT_ENGINE     engine settings, JSON
    DOCRELAY_FAULT_WORKERS    delivery threads (default 4)

Imported (tests/conftest.py loads it by path, the tests use ``--import-mode=importlib``), it
gives the tests the five provider sandboxes with faults, a mixed batch built from each
plugin's samples, and :func:`judge`, which decides from the sandboxes' own records and the
store, not from docrelay's opinion of itself.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

PROVIDERS = ("econnect", "procuros", "siesmart", "ebh", "aqi")

#: The faults of the issue, all at once (``token-ttl`` only where tokens exist).
COMMON_FAULTS = (
    "error@0.2",
    "drop@0.05",
    "throttle@0.01:1",
    "throttle@0.01:none",
    "slow@0.02:3",
)
TOKEN_FAULTS = ("token-ttl:2",)

#: Engine settings of the fault run: real waits scaled down, a read timeout shorter than the
#: slow fault's 3 s, short leases so a killed sender's documents come back quickly.
ENGINE: dict[str, Any] = {
    "max_attempts": 12,
    "inprocess_attempts": 3,
    "inprocess_timeout": 10.0,
    "retry_wait_initial": 0.05,
    "retry_wait_max": 0.3,
    "retry_wait_jitter": 0.05,
    "retry_after_cap": 2.0,
    "deferral_initial": 0.3,
    "deferral_max": 3.0,
    "poll_initial": 0.1,
    "poll_max": 0.5,
    "held_recheck": 0.5,
    "lease_seconds": 6.0,
    "connect_timeout": 1.0,
    "read_timeout": 1.0,
    "notification_timeout": 3600.0,
    "pause_seconds": 5.0,
    "batch_size": 4,
}

FINAL_OK = {"delivered", "duplicate", "no_action"}
FINAL = FINAL_OK | {"rejected", "failed"}
PENDING = {"queued", "sending", "retry_wait", "unknown", "accepted", "held"}

#: Known secret values (the sandboxes are configured to accept exactly these).
SECRETS = {
    "econnect_client_secret": "ec-client-secret-7f3a9d2b41",
    "econnect_subscription_key": "ec-subscription-key-5c81e0",
    "procuros_api_token": "procuros-token-93be71c04d",
    "siesmart_client_secret": "siesmart-client-secret-2a6f4e",
    "ebh_provider_key": "ebh-provider-key-d1c07b95",
    "aqi_subscription_key": "aqi-subscription-key-8e4f21",
}


# ---------------------------------------------------------------------------------------------
# sandboxes and settings
# ---------------------------------------------------------------------------------------------


def start_sandboxes(
    seed: int | None = None,
    faults: bool = True,
    extra: Sequence[str] = (),
    siesmart_limit: tuple[int, float] | None = None,
) -> dict[str, Any]:
    """The five sandboxes on free loopback ports, with the known secrets and, when *faults*,
    the issue's faults switched on (and the *extra* ones). *siesmart_limit* (requests,
    seconds) makes the SieSmart sandbox enforce a rate limit, as SieSmart does."""
    from docrelay_aqi.sandbox import AqiSandbox
    from docrelay_ebh.sandbox import EbhSandbox
    from docrelay_econnect.sandbox import EConnectSandbox
    from docrelay_procuros._demo import INACTIVE_BUYER, UNKNOWN_SUPPLIER
    from docrelay_procuros.sandbox import ProcurosSandbox
    from docrelay_siesmart.sandbox import SieSmartSandbox

    def fl(tokens: bool) -> list[str]:
        if not faults:
            return []
        return [*COMMON_FAULTS, *(TOKEN_FAULTS if tokens else ()), *extra]

    def sd(i: int) -> int | None:
        return None if seed is None else seed * 10 + i

    sbs: dict[str, Any] = {
        "econnect": EConnectSandbox(
            faults=fl(True),
            seed=sd(1),
            client_id="fault-client",
            client_secret=SECRETS["econnect_client_secret"],
            require_subscription_key=True,
            subscription_key=SECRETS["econnect_subscription_key"],
            delivery_delay=0.0,
        ),
        "procuros": ProcurosSandbox(
            faults=fl(False),
            seed=sd(2),
            api_token=SECRETS["procuros_api_token"],
            inactive_receivers=(INACTIVE_BUYER,),
            unknown_parties=(UNKNOWN_SUPPLIER,),
        ),
        "siesmart": SieSmartSandbox(
            faults=fl(True),
            seed=sd(3),
            client_id="fault-siesmart-client",
            client_secret=SECRETS["siesmart_client_secret"],
            rate_limit=siesmart_limit[0] if siesmart_limit else 1_000_000,
            rate_window=siesmart_limit[1] if siesmart_limit else 1,
        ),
        "ebh": EbhSandbox(
            faults=fl(False),
            seed=sd(4),
            provider_keys=(SECRETS["ebh_provider_key"],),
            polls_until_done=1,
        ),
        "aqi": AqiSandbox(
            faults=fl(False),
            seed=sd(5),
            subscription_key=SECRETS["aqi_subscription_key"],
            callback_delay=0.02,
        ),
    }
    for sb in sbs.values():
        sb.start()
    return sbs


def provider_settings(
    sbs: Mapping[str, Any], siesmart_limit: tuple[int, float] | None = None
) -> dict[str, dict[str, Any]]:
    return {
        "econnect": {
            "base_url": sbs["econnect"].url,
            "client_id": "fault-client",
            "client_secret": SECRETS["econnect_client_secret"],
            "subscription_key": SECRETS["econnect_subscription_key"],
            "party_id": "NL:KVK:12345678",
        },
        "procuros": {"base_url": sbs["procuros"].url, "api_token": SECRETS["procuros_api_token"]},
        "siesmart": {
            "base_url": sbs["siesmart"].url,
            "client_id": "fault-siesmart-client",
            "client_secret": SECRETS["siesmart_client_secret"],
            "rate_limit": f"{siesmart_limit[0]}/{siesmart_limit[1]:g}"
            if siesmart_limit
            else "1000/1",
        },
        "ebh": {
            "base_url": sbs["ebh"].url,
            "producer_id": "FAULT-FIRM-01",
            "provider_key": SECRETS["ebh_provider_key"],
            "username": "fault-robot",
        },
        "aqi": {
            "base_url": sbs["aqi"].url,
            "subscription_key": SECRETS["aqi_subscription_key"],
            "business_code": "1000",
        },
    }


def issued_tokens(sbs: Mapping[str, Any]) -> list[str]:
    """Every bearer token the eConnect and SieSmart sandboxes handed out (TokenIssuer)."""
    out: list[str] = []
    for name in ("econnect", "siesmart"):
        out.extend(sbs[name].tokens.issued_tokens())
    return out


def faults_injected(sbs: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    return {name: dict(sb.faults_injected) for name, sb in sbs.items()}


def limit_429s(sbs: Mapping[str, Any]) -> dict[str, int]:
    """429 answers a sandbox gave because its rate limit was reached (not injected ones)."""
    return {
        name: sum(1 for r in list(sb.requests) if r["status"] == 429 and not r.get("fault"))
        for name, sb in sbs.items()
    }


# ---------------------------------------------------------------------------------------------
# the batch
# ---------------------------------------------------------------------------------------------


def _sample(package: str, name: str) -> bytes:
    from importlib import resources

    return resources.files(package).joinpath("samples", name).read_bytes()


def build_documents(n: int, prefix: str = "f") -> list[Any]:
    """*n* documents across the five providers, each distinct (ids, numbers, labels), with a
    few that the providers must reject and a few procuros copies it must call duplicates.

    Shares: eConnect 25 %, Procuros 20 %, SieSmart 20 %, EBH 15 %, AQI 20 % (orders, and an
    invoice for every fourth order, which waits for its order)."""
    from docrelay import Document
    from docrelay_aqi import sample_document as aqi_document

    inv = _sample("docrelay_econnect", "invoice-INV-2024-0101.xml").decode()
    draft = _sample("docrelay_econnect", "invoice-without-number.xml")
    po = _sample("docrelay_econnect", "order-PO-2024-0420.xml").decode()
    p_order = json.loads(_sample("docrelay_procuros", "order.json"))
    p_invoice = json.loads(_sample("docrelay_procuros", "invoice.json"))
    p_bad = _sample("docrelay_procuros", "order-unknown-supplier.json")
    s_prop = json.loads(_sample("docrelay_siesmart", "proposal-excavator.json"))
    s_gb = json.loads(_sample("docrelay_siesmart", "proposal-ct-scanner-gb.json"))
    ubf = _sample("docrelay_ebh", "ubf_invoice_ok.xml").decode()
    ubf_bad = _sample("docrelay_ebh", "ubf_invoice_bad_currency.xml").decode()
    esf = _sample("docrelay_ebh", "esf_invoice_ok.xml").decode()

    docs: list[Any] = []
    i = 0
    while len(docs) < n:
        i += 1
        slot = i % 20
        did = f"{prefix}{i:06d}"
        if slot < 5:  # eConnect
            if i % 41 == 0:
                docs.append(Document(id=f"ec-{did}", provider="econnect", kind="invoice",
                                     payload=draft, content_type="application/xml"))  # fmt: skip
            elif i % 7 == 0:
                body = po.replace("<cbc:ID>PO-2024-0420</cbc:ID>", f"<cbc:ID>PO-{did}</cbc:ID>", 1)
                docs.append(
                    Document(id=f"ec-{did}", provider="econnect", kind="order",
                             payload=body.encode(), content_type="application/xml")
                )  # fmt: skip
            else:
                body = inv.replace(
                    "<cbc:ID>INV-2024-0101</cbc:ID>", f"<cbc:ID>INV-{did}</cbc:ID>", 1
                )
                docs.append(
                    Document(id=f"ec-{did}", provider="econnect", kind="invoice",
                             payload=body.encode(), content_type="application/xml")
                )  # fmt: skip
        elif slot < 9:  # Procuros
            if i % 43 == 0:
                docs.append(Document(id=f"pr-{did}", provider="procuros", kind="order",
                                     payload=p_bad, content_type="application/json",
                                     metadata={"document_number": f"BAD-{did}"}))  # fmt: skip
                continue
            if i % 11 == 0:
                data = json.loads(json.dumps(p_invoice))
                data["content"]["header"]["invoiceIdentifier"] = f"RE-{did}"
                kind, number = "invoice", f"RE-{did}"
            else:
                data = json.loads(json.dumps(p_order))
                data["header"]["orderIdentifier"] = f"PO-{did}"
                kind, number = "order", f"PO-{did}"
            payload = json.dumps(data).encode()
            docs.append(Document(id=f"pr-{did}", provider="procuros", kind=kind, payload=payload,
                                 content_type="application/json",
                                 metadata={"document_number": number}))  # fmt: skip
            if i % 29 == 0 and len(docs) < n:  # the ERP exports the same order twice
                docs.append(Document(id=f"pr-{did}-copy", provider="procuros", kind=kind,
                                     payload=payload, content_type="application/json",
                                     metadata={"document_number": number}))  # fmt: skip
        elif slot < 13:  # SieSmart
            data = json.loads(json.dumps(s_gb if i % 3 == 0 else s_prop))
            data["label"] = f"fault run proposal {did}"
            if i % 37 == 0:
                data.pop("officeId", None)  # 422: officeId is required
            docs.append(Document(id=f"ss-{did}", provider="siesmart", kind="proposal",
                                 payload=json.dumps(data).encode(),
                                 content_type="application/json"))  # fmt: skip
        elif slot < 16:  # EBH
            if i % 5 == 0:
                body = esf.replace("<id>INV-2024-0119</id>", f"<id>ESF-{did}</id>", 1)
                meta = {"invoice_type": "ESF"}
            elif i % 31 == 0:
                body = ubf_bad.replace("INV-2024-0118", f"UBF-{did}")
                meta = {"invoice_type": "MultipleInvoiceUBF"}
            else:
                body = ubf.replace("INV-2024-0117", f"UBF-{did}")
                meta = {"invoice_type": "MultipleInvoiceUBF"}
            docs.append(Document(id=f"eb-{did}", provider="ebh", kind="invoice",
                                 payload=body.encode(), content_type="application/xml",
                                 metadata=meta))  # fmt: skip
        else:  # AQI
            ref = f"OF{i:08d}"
            if i % 23 == 0:
                docs.append(aqi_document(f"aq-{did}", "order", "order_error_in_file",
                                         orderReference=ref))  # fmt: skip
                continue
            docs.append(aqi_document(f"aq-{did}", "order", "order", orderReference=ref))
            if i % 4 == 0 and len(docs) < n:
                docs.append(aqi_document(f"aq-{did}-inv", "invoice", "invoice", order_ref=ref,
                                         invoiceReference=f"IF{i:08d}"))  # fmt: skip
    return docs[:n]


# ---------------------------------------------------------------------------------------------
# the judge
# ---------------------------------------------------------------------------------------------


def _store_rows(db: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        docs = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM documents")}
        attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in conn.execute("SELECT * FROM attempts ORDER BY doc_id, number"):
            attempts[r["doc_id"]].append(dict(r))
    finally:
        conn.close()
    return docs, attempts


def _kind(outcome: str | None) -> str | None:
    return json.loads(outcome)["kind"] if outcome else None


def judge(
    db: Path,
    submitted: Sequence[Any],
    sbs: Mapping[str, Any],
    max_attempts: int,
    kills: int = 0,
) -> dict[str, Any]:
    """Check the run against the sandboxes' records and the store; returns figures and a list
    of ``problems`` (empty when every guarantee held)."""
    rows, attempts = _store_rows(db)
    problems: list[str] = []
    by_id = {d.id: d for d in submitted}
    states = Counter(r["state"] for r in rows.values())

    # none lost
    lost = sorted(set(by_id) - set(rows))
    problems += [f"lost: {i} was submitted but is not in the store" for i in lost[:20]]

    # every document ends with an honest answer
    for doc_id, r in rows.items():
        state, outcome = r["state"], json.loads(r["outcome"]) if r["outcome"] else None
        if state in FINAL_OK:
            continue
        if state == "rejected":
            if not outcome or not (outcome.get("message") or outcome.get("field_errors")):
                problems.append(f"{doc_id}: rejected without the provider's reasons: {outcome}")
        elif state in PENDING:
            if not r["reason"] or r["next_attempt_at"] is None:
                problems.append(f"{doc_id}: pending ({state}) without a reason and a next time")
        else:
            problems.append(f"{doc_id}: ended {state}: {r['reason']}")

    # attempts within the budget (throttled, reauth and stale answers are not budgeted)
    budgeted_max = 0
    interrupted = 0
    concurrent = 0
    for doc_id, atts in attempts.items():
        sends = [a for a in atts if a["action"] == "send"]
        counted = [
            a for a in sends if _kind(a["outcome"]) not in (None, "throttled", "reauth", "stale")
        ]
        interrupted += sum(1 for a in sends if a["outcome"] is None)
        budgeted_max = max(budgeted_max, len(counted))
        if len(counted) > max_attempts:
            problems.append(
                f"{doc_id}: {len(counted)} budgeted sends > max_attempts {max_attempts}"
            )
        if doc_id in rows and rows[doc_id]["attempts"] > max_attempts:
            problems.append(f"{doc_id}: attempts column {rows[doc_id]['attempts']} over budget")
        # Two live workers never send one document at the same time: no two sends overlap.
        spans = sorted(
            (a["started_at"], a["started_at"] + a["duration"])
            for a in sends
            if a["duration"] is not None and a["outcome"] is not None
        )
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end - 0.001:
                concurrent += 1
                problems.append(f"{doc_id}: two sends at the same time ({start:.3f} < {end:.3f})")

    def sends_of(doc_id: str) -> int:
        return sum(1 for a in attempts.get(doc_id, ()) if a["action"] == "send")

    effects = {name: [dict(e) for e in list(sb.effects)] for name, sb in sbs.items()}
    twice: list[str] = []
    missing: list[str] = []
    stray: list[str] = []

    def expect_once(name: str, doc_id: str, n: int) -> None:
        state = rows[doc_id]["state"] if doc_id in rows else None
        if state in FINAL_OK:
            if n > 1:
                twice.append(f"{name} {doc_id}: business effect {n} times")
            elif n == 0:
                missing.append(f"{name} {doc_id}: {state} but the provider has no record of it")
        elif state == "rejected" and n:
            # AQI and EBH record nothing for rejected work; the others validate before recording
            twice.append(f"{name} {doc_id}: rejected, yet the provider took it in {n} times")

    # eConnect: one invoice_received/order_received per X-EConnect-DocumentId (the key)
    ec = Counter(e["key"] for e in effects.get("econnect", ()) if e["kind"].endswith("_received"))
    ec_docs = [d for d in submitted if d.provider == "econnect"]
    keys = {rows[d.id]["key"]: d.id for d in ec_docs if d.id in rows and rows[d.id]["key"]}
    for d in ec_docs:
        if d.id in rows:
            expect_once("econnect", d.id, ec.get(rows[d.id]["key"], 0))
    stray += [f"econnect effect for unknown key {k}" for k in ec if k not in keys]
    # ... and no request left without its intent stored first (invariant 2, provider side)
    sent = Counter(
        next((v for k, v in r["headers"].items() if k.lower() == "x-econnect-documentid"), None)
        for r in list(sbs["econnect"].requests)
        if r["method"] == "POST" and r["path"].endswith("/send")
    )
    for k, n in sent.items():
        if k in keys and n > sends_of(keys[k]):
            problems.append(f"econnect {keys[k]}: {n} requests but {sends_of(keys[k])} recorded")

    # Procuros: one transaction_received per document number (copies are duplicates)
    pr = Counter(e["document_number"] for e in effects.get("procuros", ()))
    numbers: dict[str, list[str]] = defaultdict(list)
    for d in submitted:
        if d.provider == "procuros":
            numbers[d.metadata.get("document_number", d.id)].append(d.id)
    for number, ids in numbers.items():
        n = pr.get(number, 0)
        ok = [i for i in ids if i in rows and rows[i]["state"] in FINAL_OK]
        if ok and n != 1:
            (twice if n > 1 else missing).append(f"procuros {number} ({ids}): {n} transactions")
        if not ok and n:
            twice.append(f"procuros {number}: rejected, yet {n} transactions")
    stray += [f"procuros effect for unknown number {k}" for k in pr if k not in numbers]

    # SieSmart: one proposal_created per docrelay label (derived from the key)
    ss = Counter(
        e.get("label") for e in effects.get("siesmart", ()) if e["kind"] == "proposal_created"
    )
    labels = {}
    for d in submitted:
        if d.provider == "siesmart" and d.id in rows:
            label = json.loads(rows[d.id]["provider_state"] or "{}").get("label")
            labels[label] = d.id
            expect_once("siesmart", d.id, ss.get(label, 0) if label else 0)
    stray += [f"siesmart proposal with unknown label {k}" for k in ss if k not in labels]

    # EBH has no idempotency: a lost answer makes a second validation request, by design
    # (plugins/ebh/README.md). Counted apart: at least one per document that got an answer,
    # never more than the sends docrelay recorded for it.
    eb = Counter(e["body_sha256"] for e in effects.get("ebh", ()))
    ebh_extra = 0
    ebh_hashes = set()
    for d in submitted:
        if d.provider != "ebh" or d.id not in rows:
            continue
        h = hashlib.sha256(d.payload).hexdigest()
        ebh_hashes.add(h)
        n = eb.get(h, 0)
        if rows[d.id]["state"] in FINAL_OK | {"rejected"} and n == 0:
            missing.append(f"ebh {d.id}: {rows[d.id]['state']} without a validation request")
        if n > sends_of(d.id):
            problems.append(f"ebh {d.id}: {n} validation requests, {sends_of(d.id)} sends recorded")
        ebh_extra += max(0, n - 1)
    stray += [f"ebh validation of an unknown body {k[:12]}" for k in eb if k not in ebh_hashes]

    # AQI: one request_processed per transactionId (the key) that ended OK
    aq = Counter(e["key"] for e in effects.get("aqi", ()))
    aqi_keys = {}
    for d in submitted:
        if d.provider == "aqi" and d.id in rows:
            aqi_keys[rows[d.id]["key"]] = d.id
            expect_once("aqi", d.id, aq.get(rows[d.id]["key"], 0))
    stray += [f"aqi effect for unknown transaction {k}" for k in aq if k not in aqi_keys]
    sent = Counter(
        next((v for k, v in r["headers"].items() if k.lower() == "x-request-id"), None)
        for r in list(sbs["aqi"].requests)
        if r["method"] == "POST" and "/accounting/" in r["path"]
    )
    for k, n in sent.items():
        if k in aqi_keys and n > sends_of(aqi_keys[k]):
            problems.append(f"aqi {aqi_keys[k]}: {n} requests but {sends_of(aqi_keys[k])} recorded")

    problems += twice + missing + stray
    return {
        "documents": len(submitted),
        "stored": len(rows),
        "states": dict(sorted(states.items())),
        "lost": len(lost),
        "processed_twice": len(twice),
        "missing_effects": len(missing),
        "stray_effects": len(stray),
        "ebh_extra_validations": ebh_extra,
        "interrupted_sends": interrupted,
        "concurrent_sends": concurrent,
        "max_budgeted_sends": budgeted_max,
        "kills": kills,
        "faults_injected": faults_injected(sbs),
        "effects": {k: len(v) for k, v in effects.items()},
        "problems": problems,
    }


def secret_values(sbs: Mapping[str, Any]) -> list[str]:
    return [*SECRETS.values(), *issued_tokens(sbs)]


def find_secrets(texts: Iterable[str | bytes], secrets: Sequence[str]) -> list[str]:
    """Which secrets occur in any of *texts* (a secret itself is never returned, only a hint)."""
    hits = []
    for t in texts:
        for s in secrets:
            if (s.encode() if isinstance(t, bytes) else s) in t:
                hits.append(f"{s[:4]}... in {t[:80]!r}")
    return hits


# ---------------------------------------------------------------------------------------------
# the worker
# ---------------------------------------------------------------------------------------------


def main() -> None:
    from docrelay import Relay

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("stamina").setLevel(logging.ERROR)
    relay = Relay(
        os.environ["DOCRELAY_FAULT_STORE"],
        providers=json.loads(os.environ["DOCRELAY_FAULT_PROVIDERS"]),
        engine=json.loads(os.environ["DOCRELAY_FAULT_ENGINE"]),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("worker ready", flush=True)
    relay.run_forever(workers=int(os.environ.get("DOCRELAY_FAULT_WORKERS", "4")), stop=stop,
                      idle_sleep=0.1)  # fmt: skip
    relay.close()


if __name__ == "__main__":
    main()
