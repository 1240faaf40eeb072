"""The plugin host: discovery, selection, isolation, and per-provider hook calling."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from . import _builtins, _classify, hookspecs
from ._context import Context
from ._models import (
    HOOK_API,
    SUPPORTED_HOOK_APIS,
    DemoBatch,
    DocState,
    Document,
    HttpRequest,
    HttpResponse,
    Notification,
    Outcome,
    ProviderInfo,
    TransportError,
)
from .exceptions import UnknownProviderError
from .hookspecs import MIDDLEWARE_HOOKS, PROJECT

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "PROVIDER_HOOKS",
    "PluginHost",
    "PluginStatus",
    "ProviderHooks",
]

log = logging.getLogger("docrelay.plugins")

ENTRY_POINT_GROUP = "docrelay.plugins"
BUILTINS = "docrelay.builtins"
#: Plugins that cannot be blocked.
ESSENTIAL_PLUGINS = (BUILTINS,)
#: Every hook the hookspecs declare (the source of :class:`ProviderHooks`' callers).
HOOK_NAMES = tuple(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, PROJECT + "_spec")
)
#: Hooks called only on the document's provider plugin (and the built-ins).
PROVIDER_HOOKS = tuple(n for n in HOOK_NAMES if n not in MIDDLEWARE_HOOKS | {"provider_info"})


@attrs.frozen
class PluginStatus:
    """One line of ``docrelay plugins``."""

    name: str
    distribution: str | None
    version: str | None
    kind: str  # "provider", "middleware", "builtin"
    status: str  # "loaded", "disabled", "blocked", "error"
    error: str | None = None
    provider: str | None = None
    hook_api: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _split_names(value: str | None) -> set[str]:
    return {n.strip() for n in (value or "").split(",") if n.strip()}


class PluginHost:
    """Owns one pluggy manager (no global state): loads plugins, isolates broken ones.

    :param enabled: allow-list of plugin names (``None``: all installed plugins).
    :param disabled: block-list of plugin names; ``DOCRELAY_DISABLED_PLUGINS`` (comma-
        separated) adds to it. ``DOCRELAY_DISABLE_PLUGIN_AUTOLOAD=1`` turns off entry points.
    :param plugins: extra plugin objects (modules or instances) to register, e.g. an ERP
        connector's write-back middleware.
    """

    def __init__(
        self,
        *,
        autoload: bool = True,
        enabled: Iterable[str] | None = None,
        disabled: Iterable[str] = (),
        plugins: Sequence[object] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._statuses: list[PluginStatus] = []
        self._providers: dict[str, ProviderInfo] = {}
        self._provider_plugins: dict[str, object] = {}
        self._hooks: dict[str, ProviderHooks] = {}
        self._broken: set[str] = set()
        #: bumped whenever the registered plugins change: a :class:`ProviderHooks` resolves
        #: its hook implementations again at its next call
        self._generation = 0
        #: pluggy's own call loop (replaced when someone monitors the hook calls)
        self._plain_hookexec = self.pm._inner_hookexec
        self.pm.register(_builtins, name=BUILTINS)
        self._statuses.append(
            PluginStatus(
                BUILTINS, "docrelay", _version("docrelay"), "builtin", "loaded", hook_api=HOOK_API
            )
        )
        blocked = set(disabled) | _split_names(env.get("DOCRELAY_DISABLED_PLUGINS"))
        for name in blocked:
            if name in ESSENTIAL_PLUGINS:
                from .exceptions import ConfigError

                raise ConfigError(f"plugin {name} cannot be disabled")
        allow = set(enabled) if enabled is not None else None
        if autoload and env.get("DOCRELAY_DISABLE_PLUGIN_AUTOLOAD", "") in ("", "0", "false"):
            for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                dist = ep.dist.name if ep.dist is not None else None
                version = ep.dist.version if ep.dist is not None else None
                if ep.name in blocked:
                    self._statuses.append(PluginStatus(ep.name, dist, version, "?", "blocked"))
                    continue
                if allow is not None and ep.name not in allow:
                    self._statuses.append(PluginStatus(ep.name, dist, version, "?", "disabled"))
                    continue
                self._load_entry_point(ep, dist, version)
        for i, obj in enumerate(plugins):
            name = getattr(obj, "__name__", None) or f"{type(obj).__name__}-{i}"
            self._register(obj, name, None, None)

    # -- loading --------------------------------------------------------------------------------

    def _load_entry_point(self, ep: EntryPoint, dist: str | None, version: str | None) -> None:
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
            self._fail(ep.name, dist, version, f"import failed: {type(exc).__name__}: {exc}")
            return
        self._register(obj, ep.name, dist, version)

    def _fail(self, name: str, dist: str | None, version: str | None, error: str) -> None:
        log.warning("plugin %s (%s) left out: %s", name, dist or "?", error)
        self._statuses.append(PluginStatus(name, dist, version, "?", "error", error=error))

    def _register(self, obj: object, name: str, dist: str | None, version: str | None) -> None:
        if self.pm.has_plugin(name) or self.pm.is_registered(obj):
            self._fail(name, dist, version, "registered twice")
            return
        self._generation += 1
        try:
            self.pm.register(obj, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            self._fail(name, dist, version, f"invalid: {exc}")
            return
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(obj)
            self._fail(name, dist, version, _unknown_hooks(obj, exc))
            return
        info: ProviderInfo | None = None
        impl = getattr(obj, "provider_info", None)
        if impl is not None and hasattr(impl, PROJECT + "_impl"):
            try:
                info = impl()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the host
                self.pm.unregister(obj)
                self._fail(name, dist, version, f"provider_info failed: {exc}")
                return
            if not isinstance(info, ProviderInfo):
                self.pm.unregister(obj)
                self._fail(name, dist, version, "provider_info did not return a ProviderInfo")
                return
            if info.name in self._providers:
                self.pm.unregister(obj)
                self._fail(name, dist, version, f"provider {info.name!r} is already provided")
                return
        api = info.hook_api if info is not None else getattr(obj, "DOCRELAY_HOOK_API", 1)
        if api not in SUPPORTED_HOOK_APIS:
            self.pm.unregister(obj)
            supported = ", ".join(str(v) for v in sorted(SUPPORTED_HOOK_APIS))
            self._fail(
                name,
                dist,
                version,
                f"written for docrelay hook API {api!r}, this docrelay speaks {supported} "
                "(install a docrelay or plugin version that match)",
            )
            return
        if info is not None:
            self._providers[info.name] = info
            self._provider_plugins[info.name] = obj
        self._statuses.append(
            PluginStatus(
                name,
                dist,
                version,
                "provider" if info else "middleware",
                "loaded",
                provider=info.name if info else None,
                hook_api=api,
            )
        )

    # -- queries --------------------------------------------------------------------------------

    def statuses(self) -> list[PluginStatus]:
        return [
            attrs.evolve(s, status="error", error="disabled after an exception")
            if s.name in self._broken
            else s
            for s in self._statuses
        ]

    @property
    def providers(self) -> Mapping[str, ProviderInfo]:
        return dict(self._providers)

    def provider(self, name: str) -> ProviderInfo:
        try:
            return self._providers[name]
        except KeyError:
            known = ", ".join(sorted(self._providers)) or "none installed"
            raise UnknownProviderError(f"unknown provider {name!r} (known: {known})") from None

    def hooks(self, provider: str) -> ProviderHooks:
        """The typed hook facade for *provider* (cached)."""
        h = self._hooks.get(provider)
        if h is None:
            self.provider(provider)
            h = self._hooks[provider] = ProviderHooks(self, provider)
        return h

    def disable(self, plugin: object) -> None:
        """Unregister a plugin that raised where it must not (reported by ``plugins``)."""
        name = self.pm.get_name(plugin)
        if name is None or name in ESSENTIAL_PLUGINS:
            return
        log.error("plugin %s disabled after an exception", name)
        self._broken.add(name)
        self.pm.unregister(plugin)
        self._generation += 1
        self._hooks.clear()

    def middleware_hook(self, name: str) -> Callable[..., list[Any]]:
        """Call a middleware hook on every non-provider plugin (notifications without doc)."""
        caller = self.pm.subset_hook_caller(name, list(self._provider_plugins.values()))
        return self._isolated(caller, provider_plugin=None)

    def _isolated(
        self, caller: pluggy.HookCaller, provider_plugin: object | None
    ) -> Callable[..., list[Any]]:
        """Call each implementation on its own: a middleware plugin that raises is reported
        and disabled; the provider's own plugin's exceptions propagate. The implementations
        are resolved here, once (a :class:`ProviderHooks` resolves them again after a plugin
        is disabled)."""
        impls = [
            (impl, impl.function, tuple(impl.argnames), impl.plugin is provider_plugin
             or impl.plugin_name == BUILTINS)
            for impl in reversed(caller.get_hookimpls())
        ]  # fmt: skip
        hook = caller.name

        def call(**kwargs: Any) -> list[Any]:
            results = []
            for impl, function, argnames, trusted in impls:
                args = [kwargs[a] for a in argnames]
                if trusted:
                    res = function(*args)
                else:
                    try:
                        res = function(*args)
                    except Exception:
                        log.exception("plugin %s raised in %s", impl.plugin_name, hook)
                        self.disable(impl.plugin)
                        continue
                if res is not None:
                    results.append(res)
            return results

        return call


def _direct(host: PluginHost, caller: pluggy.HookCaller) -> Callable[..., Any]:
    """*caller* with its implementations resolved once: the plugins' functions called in
    pluggy's order and with its result rules (``firstresult``: the first result that is not
    ``None``), without pluggy's per-call dispatch. Hooks with wrappers, and a manager that
    monitors its calls, keep pluggy's own path."""
    impls = caller.get_hookimpls()
    spec = caller.spec
    if (
        spec is None
        or spec.kwargdefaults
        or any(i.hookwrapper or i.wrapper for i in impls)
        or host.pm._inner_hookexec is not host._plain_hookexec  # the calls are monitored
    ):
        return caller
    order = tuple((i.function, tuple(i.argnames)) for i in reversed(impls))
    if spec.opts.get("firstresult", False):

        def first(**kwargs: Any) -> Any:
            for function, argnames in order:
                res = function(*[kwargs[a] for a in argnames])
                if res is not None:
                    return res
            return None

        return first

    def every(**kwargs: Any) -> list[Any]:
        results = []
        for function, argnames in order:
            res = function(*[kwargs[a] for a in argnames])
            if res is not None:
                results.append(res)
        return results

    return every


class ProviderHooks:
    """Typed facade: one method per hook, called only on this provider's plugin (plus the
    built-ins and, for the :data:`~docrelay.hookspecs.MIDDLEWARE_HOOKS`, every middleware
    plugin). The callers are derived from the hookspecs."""

    def __init__(self, host: PluginHost, provider: str) -> None:
        self.host = host
        self.provider = provider
        self.info = host._providers[provider]
        self.plugin = host._provider_plugins[provider]
        self._callers: dict[str, Callable[..., Any]] = {}
        self._implements: dict[str, bool] = {}
        self._generation = -1
        self._resolve()

    def _resolve(self) -> None:
        """The callers of every hook, resolved once (again when the host's plugins changed)."""
        host = self.host
        self._generation = host._generation
        others = [p for n, p in host._provider_plugins.items() if n != self.provider]
        callers: dict[str, Callable[..., Any]] = {}
        for name in PROVIDER_HOOKS:
            callers[name] = _direct(host, host.pm.subset_hook_caller(name, others))
        for name in MIDDLEWARE_HOOKS:
            callers[name] = host._isolated(
                host.pm.subset_hook_caller(name, others), provider_plugin=self.plugin
            )
        self._callers = callers

    def _c(self, name: str) -> Callable[..., Any]:
        if self._generation != self.host._generation:
            self._resolve()
        return self._callers[name]

    def implements(self, hook: str) -> bool:
        """Whether the provider's own plugin implements *hook*."""
        known = self._implements.get(hook)
        if known is None:
            impl = getattr(self.plugin, hook, None)
            known = self._implements[hook] = impl is not None and hasattr(impl, PROJECT + "_impl")
        return known

    def hold(self, document: Document, ctx: Context) -> str | None:
        result: str | None = self._c("hold")(document=document, ctx=ctx)
        return result

    def idempotency_key(self, document: Document, ctx: Context) -> str:
        result: str = self._c("idempotency_key")(document=document, ctx=ctx)
        return result

    def build_request(self, document: Document, ctx: Context) -> HttpRequest | None:
        result: HttpRequest | None = self._c("build_request")(document=document, ctx=ctx)
        return result

    def auth_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        """The ``auth_headers`` hook's headers when the provider implements it, else the
        headers of the schemes ``ProviderInfo.auth`` declares."""
        from ._auth import declared_headers

        if self.implements("auth_headers"):
            result = self._c("auth_headers")(request=request, ctx=ctx)
            return dict(result or {})
        return declared_headers(ctx)

    def prepare_headers(self, request: HttpRequest, ctx: Context) -> dict[str, str]:
        merged: dict[str, str] = {}
        for headers in self._c("prepare_headers")(request=request, ctx=ctx):
            merged.update(headers)
        return merged

    def classify_response(
        self,
        response: HttpResponse | None,
        error: TransportError | None,
        ctx: Context,
        document: Document | None = None,
    ) -> Outcome:
        """The provider's classifier, then the generic classification (never raises)."""

        def call() -> object:
            return self._c("classify_response")(
                response=response, error=error, ctx=ctx, document=document or ctx.document
            )

        return _classify.classify(call, response, error, self.info)

    def refresh_resource(self, document: Document, ctx: Context) -> bool | None:
        result: bool | None = self._c("refresh_resource")(document=document, ctx=ctx)
        return result

    def reconcile(self, document: Document, ctx: Context) -> Outcome | None:
        result: Outcome | None = self._c("reconcile")(document=document, ctx=ctx)
        return result

    def poll_status(self, document: Document, ctx: Context) -> Outcome | None:
        result: Outcome | None = self._c("poll_status")(document=document, ctx=ctx)
        return result

    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], ctx: Context
    ) -> Notification | None:
        result: Notification | None = self._c("parse_notification")(
            body=body, headers=headers, ctx=ctx
        )
        return result

    def provider_sandbox(self) -> type[Any] | None:
        """``ProviderInfo.sandbox``, else the deprecated ``provider_sandbox`` hook."""
        if self.info.sandbox_ref is not None:
            declared: type[Any] | None = _loaded(lambda: self.info.sandbox)
            return declared
        result: type[Any] | None = self._c("provider_sandbox")()
        return result

    def demo_batch(self, sandbox: Any, webhook_url: str) -> DemoBatch | None:
        """``ProviderInfo.demo``, else the deprecated ``demo_batch`` hook."""
        if self.info.demo_ref is not None:
            declared: DemoBatch | None = _loaded(lambda: self.info.demo)(sandbox, webhook_url)
            return declared
        result: DemoBatch | None = self._c("demo_batch")(sandbox=sandbox, webhook_url=webhook_url)
        return result

    def on_failure(self, document: Document, outcome: Outcome, ctx: Context) -> None:
        self._c("on_failure")(document=document, outcome=outcome, ctx=ctx)

    def on_state_change(
        self,
        document: Document,
        old: str,
        new: str,
        outcome: Outcome | None,
        ctx: Context | None = None,
    ) -> None:
        self._c("on_state_change")(
            document=document, old=DocState(old), new=DocState(new), outcome=outcome, ctx=ctx
        )

    def on_exchange(self, **kwargs: Any) -> None:
        """Tell every observer about one HTTP exchange (:func:`~docrelay.hookspecs.on_exchange`)."""
        self._c("on_exchange")(**kwargs)


def _loaded(resolve: Callable[[], Any]) -> Any:
    """A ``ProviderInfo`` reference's object; one that does not import is a config error."""
    try:
        return resolve()
    except ImportError as exc:
        from .exceptions import ConfigError

        raise ConfigError(str(exc)) from None


def _unknown_hooks(plugin: object, exc: Exception) -> str:
    """``unknown hook: ...`` with a "did you mean" for each misspelt hook name."""
    parts = []
    for attr in dir(plugin):
        impl = getattr(plugin, attr, None)
        if impl is None or not hasattr(impl, PROJECT + "_impl"):
            continue
        opts = getattr(impl, PROJECT + "_impl") or {}
        name = opts.get("specname") or attr
        if name in HOOK_NAMES:
            continue
        close = difflib.get_close_matches(name, HOOK_NAMES, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if not parts:
        return f"unknown hook: {exc}"
    return "unknown hook " + ", ".join(parts) + "; the hooks are: " + ", ".join(HOOK_NAMES)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
