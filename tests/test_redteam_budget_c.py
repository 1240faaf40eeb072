"""Red team C: the send budget of a round (``inprocess_attempts``, + 1 after a token
refresh, + 1 after a re-read) when the round's ``inprocess_timeout`` ends it first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from acme_testprovider import AcmePlugin, AcmeSandbox
from docrelay import DocState, Document, Relay, hookimpl
from docrelay.sandbox import SandboxRequest, SandboxResponse

CREDS = {"client_id": "acme-client", "client_secret": "acme-secret-value"}
FAST = {"retry_wait_initial": 0.01, "retry_wait_max": 0.02, "retry_wait_jitter": 0.0,
        "deferral_initial": 5.0, "deferral_max": 5.0, "poll_initial": 0.01}  # fmt: skip


class Scripted(AcmeSandbox):
    """Acme answering its POSTs by a script: "503", "slow401" (a 401 after 0.4 s), else
    the real answer."""

    def __init__(self, script: list[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.script = list(script)

    def _post(self, req: SandboxRequest) -> SandboxResponse:
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow401":
            time.sleep(0.4)
            return SandboxResponse.json(401, {"message": "invalid or expired token"})
        if step == "slow412":
            time.sleep(0.4)
            return SandboxResponse.json(412, {"message": "precondition failed"})
        if step == "503":
            return SandboxResponse.json(503, {"message": "busy"})
        return super()._post(req)


@pytest.mark.parametrize("script", [["slow401"], ["503", "slow401"]])
def test_a_401_whose_resend_does_not_fit_the_round_is_retried_not_failed(
    tmp_path: Path, script: list[str]
) -> None:
    """A 401 (an expired token) that comes after the round's inprocess_timeout (0.3 s): the
    token is invalidated and the resend asked for, but stamina's context has no time left.
    The round ended with the 401 as "still refused after a token refresh": the document
    failed (config error) though no refreshed token was ever sent. It must wait for a
    retry (no refresh was refused), the provider not paused."""
    sbx = Scripted(script)
    sbx.start()
    try:
        relay = Relay(f"sqlite:///{tmp_path / 'd.db'}",
                      providers={"acme": {"base_url": sbx.url, **CREDS}},
                      engine={**FAST, "inprocess_attempts": 3, "inprocess_timeout": 0.3},
                      plugins=[AcmePlugin()], autoload=False)  # fmt: skip
        try:
            relay.submit(Document(id="inv-1", provider="acme", payload=b'{"amount": 1}',
                                  content_type="application/json"))  # fmt: skip
            relay.run_until_idle()
            st = relay.status("inv-1")
            assert st.state == DocState.RETRY_WAIT, (st.state, st.outcome)
            assert not relay.paused()
        finally:
            relay.close()
    finally:
        sbx.stop()


class Rereading(AcmePlugin):
    """Acme whose re-read after a 412 finds the resource fresh (resend with it)."""

    @hookimpl
    def refresh_resource(self, document: Document, ctx: Any) -> bool:
        return True


def test_a_412_whose_resend_after_the_re_read_does_not_fit_is_retried_not_rejected(
    tmp_path: Path,
) -> None:
    """A 412 after the round's inprocess_timeout, the re-read fresh: the resend did not
    fit, and the round ended "still stale after re-reading the resource": rejected, though
    the re-read version was never sent. It must wait for a retry."""
    sbx = Scripted(["slow412"])
    sbx.start()
    try:
        relay = Relay(f"sqlite:///{tmp_path / 'd.db'}",
                      providers={"acme": {"base_url": sbx.url, **CREDS}},
                      engine={**FAST, "inprocess_attempts": 3, "inprocess_timeout": 0.3},
                      plugins=[Rereading()], autoload=False)  # fmt: skip
        try:
            relay.submit(Document(id="inv-1", provider="acme", payload=b'{"amount": 1}',
                                  content_type="application/json"))  # fmt: skip
            relay.run_until_idle()
            st = relay.status("inv-1")
            assert st.state == DocState.RETRY_WAIT, (st.state, st.outcome)
        finally:
            relay.close()
    finally:
        sbx.stop()
