"""What every part of the engine may use, typed once: the attributes an :class:`Engine` has and
the steps its parts (:mod:`._batch`, :mod:`._delivery`, :mod:`._followup`) call on each other.
Each step is defined in the module its comment names; :class:`~docrelay._engine.Engine`
inherits all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from ._context import Context
from ._host import PluginHost, ProviderHooks
from ._leases import LeaseKeeper
from ._limits import RateLimiter, TokenCache
from ._models import Attempt, DocState, HttpRequest, HttpResponse, Outcome, TransportError
from ._round import _BuiltRequests, _Exchange, _Pending, _Prepared
from ._settings import EngineSettings, ProviderRuntime
from ._store import Record, Store, Transition
from ._transport import Transport

__all__ = ["EngineParts"]


class EngineParts(Protocol):
    """The engine's shared surface, as a protocol that its parts subclass: the attributes set by
    ``Engine.__init__`` and the steps each part calls on another (bodies in the named module)."""

    host: PluginHost
    store: Store
    providers: dict[str, ProviderRuntime]
    settings: EngineSettings
    clock: Callable[[], float]
    tokens: TokenCache
    limiter: RateLimiter
    transport: Transport
    leases: LeaseKeeper
    owner_prefix: str
    listeners: list[Callable[[Record, str, str], None]]
    unavailable: dict[str, str]
    built: _BuiltRequests
    _local: threading.local

    def _apply_pending(self, rec: Record) -> Record: ...  # defined in _followup.py

    def _build(
        self,
        record: Record,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        key: str,
        number: int,
        first_attempt_at: float | None,
    ) -> _Prepared | tuple[Outcome, Attempt, bool]: ...  # defined in _delivery.py

    def _changed(
        self, rec: Record, old: str, new: str, outcome: Outcome | None
    ) -> None: ...  # defined in _engine.py

    def _defer(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        outcome: Outcome,
        attempt: Attempt | None,
        target: DocState,
        base: Transition | None = None,
    ) -> Record: ...  # defined in _delivery.py

    def _deliver(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        plan: _Prepared | None = None,
    ) -> Record: ...  # defined in _delivery.py

    def _ensure_key(
        self, record: Record, ctx: Context, hooks: ProviderHooks
    ) -> str: ...  # defined in _delivery.py

    def _fail(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        outcome: Outcome | None,
        why: str,
        attempt: Attempt | None = None,
        base: Transition | None = None,
        next_step: str | None = None,
    ) -> Record: ...  # defined in _delivery.py

    def _finish(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
        outcome: Outcome,
        attempt: Attempt | None,
    ) -> Record: ...  # defined in _delivery.py

    def _flush(self, pending: list[_Pending]) -> None: ...  # defined in _batch.py

    def _groupable(
        self, rt: ProviderRuntime, hooks: ProviderHooks
    ) -> bool: ...  # defined in _batch.py

    def _observe(
        self,
        hooks: ProviderHooks,
        ctx: Context,
        outcome: Outcome | None,
        purpose: str,
        attempt: int | None = None,
    ) -> None: ...  # defined in _engine.py

    def _on_failure(
        self, rec: Record, ctx: Context, hooks: ProviderHooks, outcome: Outcome
    ) -> None: ...  # defined in _engine.py

    def _poll(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
    ) -> Record: ...  # defined in _followup.py

    def _prepare_batch(
        self, records: list[Record], owner: str
    ) -> dict[str, _Prepared]: ...  # defined in _batch.py

    def _release(
        self, record: Record, owner: str, reason: str | None, delay: float | None = None
    ) -> None: ...  # defined in _engine.py

    def _rescue(self, record: Record, t: Transition) -> None: ...  # defined in _engine.py

    def _resolve_unknown(
        self,
        record: Record,
        owner: str,
        ctx: Context,
        hooks: ProviderHooks,
        rt: ProviderRuntime,
    ) -> Record | None: ...  # defined in _followup.py

    def _set(
        self,
        record: Record,
        owner: str | None,
        t: Transition,
        *,
        expect_state: str | None = None,
        quiet: bool = False,
    ) -> Record: ...  # defined in _engine.py

    def _unsend(
        self, record: Record, owner: str, plan: _Prepared | None
    ) -> None: ...  # defined in _batch.py

    def context(
        self, rt: ProviderRuntime, record: Record | None = None
    ) -> Context: ...  # defined in _engine.py

    def http(
        self,
        rt: ProviderRuntime,
        request: HttpRequest,
        lease: tuple[str, str] | None = None,
        *,
        exchanges: list[_Exchange] | None = None,
        purpose: str = "send",
        scrub: bool = False,
    ) -> tuple[HttpResponse | None, TransportError | None]: ...  # defined in _engine.py

    def runtime(self, provider: str) -> ProviderRuntime: ...  # defined in _engine.py
