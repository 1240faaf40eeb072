"""Bad settings and bad documents through the library: ``load_config``, ``Relay.from_config``,
``Relay.submit`` and ``Relay.submit_many``.

A bad value in ``docrelay.toml`` raises :class:`ConfigError` (from ``load_config`` for the
tables it can check alone, from ``Relay.from_config`` for provider settings, which need the
plugin's declarations) before any store is opened. A document the provider cannot take
raises :class:`DocumentError` and is not stored; ``submit_many`` stores all or nothing (the
store is read after to prove it, on SQLite and, with ``DOCRELAY_TEST_PG_URL``, PostgreSQL),
and the good documents are then delivered to the Procuros sandbox over real HTTP.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docrelay import Document, Relay, load_config
from docrelay.exceptions import ConfigError, DocumentError
from docrelay_procuros.sandbox import ProcurosSandbox

PG_URL = os.environ.get("DOCRELAY_TEST_PG_URL", "")
PLUGINS = Path(__file__).parents[1] / "plugins"
ORDER = (PLUGINS / "procuros/src/docrelay_procuros/samples/order.json").read_bytes()
INVOICE = (
    PLUGINS / "econnect/src/docrelay_econnect/samples/invoice-INV-2024-0101.xml"
).read_bytes()
ENVIRON = {"API_SECRET": "settings-api-secret-3c9", "BLANK": " \t", "PROCUROS_TOKEN":
           "procuros-sandbox-token"}  # fmt: skip


@pytest.fixture(scope="module")
def procuros() -> Iterator[ProcurosSandbox]:
    sb = ProcurosSandbox()
    sb.start()
    yield sb
    sb.stop()


def write(tmp: Path, body: str) -> Path:
    p = tmp / "docrelay.toml"
    p.write_text(f'[store]\nurl = "sqlite:///{tmp / "store.db"}"\n{body}\n')
    return p


# -- load_config: the tables it checks on its own ------------------------------------------------

LOAD_CASES = {
    "batch_size = 0": ("[engine]\nbatch_size = 0", "[engine] batch_size"),
    "read_timeout = nan": ("[engine]\nread_timeout = nan", "[engine] read_timeout"),
    "read_timeout = -inf": ("[engine]\nread_timeout = -inf", "[engine] read_timeout"),
    "max_attempts = -1": ("[engine]\nmax_attempts = -1", "[engine] max_attempts"),
    "lease_seconds = 0": ("[engine]\nlease_seconds = 0", "[engine] lease_seconds"),
    "max_polls = true": ("[engine]\nmax_polls = true", "[engine] max_polls"),
    "typo in [engine]": ("[engine]\nbatchsize = 4", "did you mean 'batch_size'"),
    "port 99999": ("[webhooks]\nport = 99999", "[webhooks] port"),
    "port 1.5": ("[webhooks]\nport = 1.5", "[webhooks] port"),
    "host 5": ("[webhooks]\nhost = 5", "[webhooks] host"),
    "[webhooks] prot": ("[webhooks]\nprot = 8080", "did you mean 'port'"),
    "[webhooks] metrics 1": ("[webhooks]\nmetrics = 1", "[webhooks] metrics"),
    "[webhooks] metrics 'yes'": ('[webhooks]\nmetrics = "yes"', "[webhooks] metrics"),
    "[store] timeout 0": ("timeout = 0", "[store] timeout"),
    "[store] synchronous": ('synchronous = "sometimes"', "[store] synchronous"),
    "[store] pool_size for sqlite": ("pool_size = 4", "[store] option"),
    "disabled nosuch": ('[plugins]\ndisabled = ["nosuch"]', "unknown plugin 'nosuch'"),
    "enabled typo": ('[plugins]\nenabled = ["siesmrt"]', "did you mean 'siesmart'"),
    "enabled empty name": ('[plugins]\nenabled = [""]', "empty plugin name"),
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_load_config_refuses(tmp_path: Path, case: str) -> None:
    body, needle = LOAD_CASES[case]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body), environ=ENVIRON)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "store.db").exists()


def test_a_relative_sqlite_path_follows_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative SQLite path in ``[store] url`` (and the default one) is taken from the
    folder of the file that names it, whatever the working directory and however the file
    was named (--config with a relative path, DOCRELAY_CONFIG); other URLs stay as given."""
    etc, other = tmp_path / "etc", tmp_path / "other"
    etc.mkdir()
    other.mkdir()
    monkeypatch.chdir(other)
    cases = {
        'url = "sqlite:///state/d.db"': f"sqlite:///{etc / 'state/d.db'}",
        'url = "sqlite://d.db"': f"sqlite:///{etc / 'd.db'}",
        "": f"sqlite:///{etc / 'docrelay.db'}",
        f'url = "sqlite:///{tmp_path / "abs.db"}"': f"sqlite:///{tmp_path / 'abs.db'}",
        'url = "${STORE}"': f"sqlite:///{etc / 'env.db'}",
        'url = "postgresql://u:p@127.0.0.1:9/db"': "postgresql://u:p@127.0.0.1:9/db",
    }
    for line, expected in cases.items():
        (etc / "docrelay.toml").write_text(f"[store]\n{line}\n")
        given = load_config("../etc/docrelay.toml", environ={"STORE": "sqlite:///env.db"})
        by_env = load_config(environ={"DOCRELAY_CONFIG": str(etc / "docrelay.toml"),
                                      "STORE": "sqlite:///env.db"})  # fmt: skip
        assert (given.store_url, by_env.store_url) == (expected, expected), line
    assert load_config(environ={}).store_url == "sqlite:///docrelay.db"  # no file: as given
    assert not list(other.iterdir())


# -- Relay.from_config: provider settings, checked against the plugin's declarations -------------

PROVIDER = """
[providers.procuros]
base_url = "http://127.0.0.1:9"
api_token = "${PROCUROS_TOKEN}"
"""
FROM_CONFIG_CASES = {
    "read_timeout = 0": ("read_timeout = 0", "[providers.procuros] read_timeout"),
    "connect_timeout = inf": ("connect_timeout = inf", "[providers.procuros] connect_timeout"),
    "verify = 5": ("verify = 5", "[providers.procuros] verify"),
    "verify = missing file": ('verify = "/nonexistent/ca.pem"', "[providers.procuros] verify"),
    "enabled = 'no'": ('enabled = "no"', "[providers.procuros] enabled"),
    "enabled = 0": ("enabled = 0", "[providers.procuros] enabled"),
    "max_payload_bytes = -5": ("max_payload_bytes = -5", "[providers.procuros] max_payload"),
    "rate_limit = '5/-1'": ('rate_limit = "5/-1"', "[providers.procuros] rate_limit"),
    "report_errors = 1": ("report_errors = 1", "[providers.procuros] report_errors"),
    "duplicate_message = []": ("duplicate_message = []", "[providers.procuros] duplicate_mess"),
    "blank webhook_secret": ('webhook_secret = "${BLANK}"', "[providers.procuros] webhook_secret"),
    "typo": ('api_tokn = "${API_SECRET}"', "did you mean 'api_token'"),
}


@pytest.mark.parametrize("case", list(FROM_CONFIG_CASES))
def test_from_config_refuses(tmp_path: Path, case: str) -> None:
    line, needle = FROM_CONFIG_CASES[case]
    config = load_config(write(tmp_path, PROVIDER + line), environ=ENVIRON)
    with pytest.raises(ConfigError) as info:
        Relay.from_config(config)
    message = str(info.value)
    assert needle in message
    assert ENVIRON["API_SECRET"] not in message
    assert not (tmp_path / "store.db").exists()


def test_blank_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, PROVIDER.replace("${PROCUROS_TOKEN}", "${BLANK}")), environ=ENVIRON
    )
    with pytest.raises(ConfigError, match=r"\[providers.procuros\] api_token") as info:
        Relay.from_config(config)
    assert "value not shown" in str(info.value)
    assert not (tmp_path / "store.db").exists()


# -- documents -----------------------------------------------------------------------------------


def _relay(url: str, procuros: ProcurosSandbox, **store_options: Any) -> Relay:
    return Relay(
        url,
        providers={"procuros": {"base_url": procuros.url, "api_token": "procuros-sandbox-token"},
                   "econnect": {"base_url": "http://127.0.0.1:9", "client_id": "c",
                                "client_secret": "econnect-secret-in-test", "party_id": "p"}},
        engine={"max_payload_bytes": 4000, "inprocess_attempts": 1},
        store_options=store_options,
    )  # fmt: skip


def order(n: int, payload: bytes | None = None) -> Document:
    # A fresh nonce each time: the sandbox recognises a payload it already has (duplicate).
    nonce = f'{{"_n": "{n}-{uuid.uuid4().hex}", '.encode()
    body = payload if payload is not None else ORDER.replace(b"{", nonce, 1)
    return Document(id=f"ord-{n}", provider="procuros", kind="order", payload=body,
                    content_type="application/json")  # fmt: skip


BAD_DOCUMENTS = {
    "empty": (order(1, b""), "is empty"),
    "blank": (order(1, b"\n  \n"), "is empty"),
    "not JSON": (order(1, b"<Order/>"), "not JSON"),
    "truncated JSON": (order(1, ORDER[:100]), "not JSON"),
    "over the engine's limit": (order(1, b'{"x": "' + b"y" * 5000 + b'"}'), "limit of 4000"),
    "not XML for econnect": (
        Document(id="inv-1", provider="econnect", kind="invoice", payload=b'{"no": "xml"}'),
        "not XML",
    ),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", {}
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests did not run: DOCRELAY_TEST_PG_URL not set")
    import psycopg

    schema = f"settings_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PG_URL, {"schema": schema, "heartbeat": False}
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("case", list(BAD_DOCUMENTS))
def test_submit_refuses_a_bad_document(
    store_url: tuple[str, dict[str, Any]], case: str, procuros: ProcurosSandbox
) -> None:
    document, needle = BAD_DOCUMENTS[case]
    with _relay(store_url[0], procuros, **store_url[1]) as relay:
        with pytest.raises(DocumentError, match=needle):
            relay.submit(document)
        assert relay.statuses() == []


@pytest.mark.parametrize("bad", ["not JSON", "empty", "over the engine's limit", "stored", "twice"])
def test_submit_many_is_all_or_nothing(
    store_url: tuple[str, dict[str, Any]], bad: str, procuros: ProcurosSandbox
) -> None:
    """A bad document in the middle of a batch: none of the batch is stored (read back from
    the store), what was there before is untouched, and the good ones go through after."""
    url, options = store_url
    with _relay(url, procuros, **options) as relay:
        relay.submit(order(0))
        before = [(s.id, s.revision, s.state.value) for s in relay.statuses()]
        middle = {
            "stored": order(0),
            "twice": order(1),
        }.get(bad) or Document(id="ord-bad", provider="procuros", kind="order",
                               payload=BAD_DOCUMENTS[bad][0].payload)  # fmt: skip
        batch = [order(1), order(2), middle, order(3)]
        with pytest.raises(DocumentError):
            relay.submit_many(batch)
        assert [(s.id, s.revision, s.state.value) for s in relay.statuses()] == before
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.removeprefix("sqlite:///"))
            try:
                assert [r[0] for r in conn.execute("SELECT id FROM documents")] == ["ord-0"]
                assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
            finally:
                conn.close()
        sent = len(procuros.requests)
        assert relay.submit_many([order(1), order(2), order(3)]) == 3
        relay.run_until_idle()
        states = {s.id: s.state.value for s in relay.statuses()}
        assert states == dict.fromkeys(["ord-0", "ord-1", "ord-2", "ord-3"], "delivered")
        assert len(procuros.requests) > sent


def test_check_payload_false_leaves_the_refusal_to_delivery(
    tmp_path: Path, procuros: ProcurosSandbox
) -> None:
    """``check_payload = false``: a payload that is not JSON is stored, rejected at delivery
    without a request, and reported to Procuros (``POST /v2/errors``, as its docs ask)."""
    reported = len(procuros.reported_errors)
    relay = Relay(
        f"sqlite:///{tmp_path / 'store.db'}",
        providers={"procuros": {"base_url": procuros.url, "api_token": "procuros-sandbox-token",
                                "check_payload": False}},
    )  # fmt: skip
    with relay:
        relay.submit(order(7, b"<Order/>"))
        relay.run_until_idle()
        status = relay.status("ord-7")
    assert status.state.value == "rejected"
    assert status.outcome is not None
    assert "not a JSON object" in (status.outcome.message or "")
    assert len(procuros.reported_errors) == reported + 1


@pytest.mark.parametrize(
    ("provider", "lines", "needle"),
    [
        ("ebh", 'producer_id = "p"\nprovider_key = "${API_SECRET}"\npoll_interval = "soon"',
         "[providers.ebh] poll_interval must be a number"),
        ("ebh", 'producer_id = "p"\nprovider_key = "${API_SECRET}"\npoll_interval = -1',
         "[providers.ebh] poll_interval"),
        ("ebh", 'producer_id = "p"\nprovider_key = "${API_SECRET}"\nurl_style = 2',
         "[providers.ebh] url_style must be one of 'new', 'old'"),
        ("econnect", 'client_id = "c"\nclient_secret = "${API_SECRET}"\nparty_id = "p"\n'
         "token_url = 5", "[providers.econnect] token_url must be a string"),
        ("siesmart", 'client_id = "c"\nclient_secret = "${API_SECRET}"\ntoken_url = true',
         "[providers.siesmart] token_url must be a string"),
        ("aqi", 'subscription_key = "${API_SECRET}"\nreturn_waits_for_invoice = "yes"',
         "[providers.aqi] return_waits_for_invoice must be true or false"),
    ],
)  # fmt: skip
def test_plugin_settings_are_typed(tmp_path: Path, provider: str, lines: str, needle: str) -> None:
    """Every plugin's settings: a declared type (defaults of None) or the default's type."""
    body = f'[providers.{provider}]\nbase_url = "http://127.0.0.1:9"\n{lines}'
    config = load_config(write(tmp_path, body), environ=ENVIRON)
    with pytest.raises(ConfigError) as info:
        Relay.from_config(config)
    assert needle in str(info.value)
    assert ENVIRON["API_SECRET"] not in str(info.value)
    assert not (tmp_path / "store.db").exists()
