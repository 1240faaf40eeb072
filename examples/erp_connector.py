"""Embedding docrelay in an existing ERP connector: a runnable example.

The "ERP" here is a SQLite table of sales orders with a ``status`` and an ``error_url``
column, the way Procuros asks connectors to track outgoing documents
(https://docs.procuros.io/en/api/v2/features-tracking-document-status):

- only orders with an empty status are picked up;
- 201 -> status ``TRANSMITTED``, 202 -> ``NO_ACTION``;
- 400/422 -> the status stays empty (the order goes again once corrected) and the portal
  link is stored in ``error_url``.

docrelay does the delivery (keys, retries, the state store); this connector only reads its
ERP, submits documents, and writes the answer back from an ``on_state_change`` hook. It also
shows how to mount docrelay's webhook receiver next to the ERP's own WSGI app.

docrelay's tables live in the ERP's own SQLite file (the store option ``shared``), and the
job hands the order to docrelay in the ERP's transaction (``Relay.submit(doc,
connection=erp)``, the transactional outbox): the order's ``QUEUED`` mark and docrelay's
document commit together, or neither does (a crash before the commit leaves the order open
and nothing to send).

Run it (the Procuros sandbox must be running: ``docrelay sandbox procuros``)::

    PROCUROS_API_TOKEN=procuros-sandbox-token python examples/erp_connector.py \
        --erp erp.db --procuros-url http://127.0.0.1:8702
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable
from typing import Any

import docrelay
from docrelay_procuros import erp_status

FINAL = {"delivered", "duplicate", "no_action", "rejected", "failed"}


class ErpWriteBack:
    """A middleware plugin (no ``provider_info``): it sees every state change."""

    def __init__(self, erp_path: str) -> None:
        self.erp_path = erp_path

    @docrelay.hookimpl
    def on_state_change(
        self, document: docrelay.Document, old: str, new: str, outcome: docrelay.Outcome | None
    ) -> None:
        if new not in FINAL or document.provider != "procuros":
            return
        status, error_url = erp_status(outcome)
        with sqlite3.connect(self.erp_path) as erp:
            erp.execute(
                "UPDATE sales_orders SET status = ?, error_url = ? WHERE number = ?",
                (status or "", error_url, document.metadata["document_number"]),
            )


def open_orders(erp: sqlite3.Connection) -> list[tuple[str, str]]:
    """The ERP's orders that still need sending (empty status)."""
    return list(
        erp.execute(
            "SELECT number, payload FROM sales_orders"
            " WHERE status IS NULL OR status = '' ORDER BY number"
        )
    )


def run_job(relay: docrelay.Relay, erp_path: str) -> list[docrelay.DocumentStatus]:
    """One run of the connector's outgoing job."""
    ids = []
    erp = sqlite3.connect(erp_path)
    try:
        for number, payload in open_orders(erp):
            doc = docrelay.Document(
                id=f"order-{number}",
                provider="procuros",
                kind="order",
                payload=payload.encode(),
                content_type="application/json",
                metadata={"document_number": number},
            )
            with erp:  # one ERP transaction: committed on leaving, rolled back on an error
                erp.execute(
                    "UPDATE sales_orders SET status = 'QUEUED', error_url = NULL WHERE number = ?",
                    (number,),
                )
                # A corrected order is a new revision of the same document.
                relay.submit(doc, connection=erp)
            ids.append(doc.id)
    finally:
        erp.close()
    relay.run_until_idle()
    return relay.statuses(ids=ids)


def erp_app(relay: docrelay.Relay) -> Callable[..., Iterable[bytes]]:
    """The ERP's own WSGI app with docrelay's webhook receiver mounted under /docrelay."""
    webhooks = relay.wsgi_app

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/docrelay/"):
            environ = {**environ, "PATH_INFO": path[len("/docrelay") :]}
            answer: Iterable[bytes] = webhooks(environ, start_response)
            return answer
        body = json.dumps({"erp": "hello"}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--erp", required=True, help="the ERP database (SQLite); docrelay's tables go there too"
    )
    parser.add_argument("--procuros-url", required=True, help="Procuros base URL")
    args = parser.parse_args(argv)
    token = os.environ.get("PROCUROS_API_TOKEN")
    if not token:
        print("set PROCUROS_API_TOKEN", file=sys.stderr)
        return 2
    with docrelay.Relay(
        store=f"sqlite:///{args.erp}",
        store_options={"shared": True},  # the ERP's file: its tables are left alone
        providers={"procuros": {"base_url": args.procuros_url, "api_token": token}},
        plugins=[ErpWriteBack(args.erp)],
    ) as relay:
        for s in run_job(relay, args.erp):
            print(f"{s.id}: {s.state.value}" + (f" ({s.error_url})" if s.error_url else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
