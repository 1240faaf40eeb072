"""``docrelay send`` and ``run`` keep their peak memory down with glibc's malloc: the worker
threads share two arenas (unless ``MALLOC_ARENA_MAX`` says otherwise) and the files'
payloads, once stored, are handed back before the workers start. Elsewhere (musl, macOS,
Windows) both are no-ops. Unit level: the C library is a stand-in that records calls."""

from __future__ import annotations

from typing import Any

import pytest
from docrelay.cli import _common


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def mallopt(self, *args: Any) -> int:
        self.calls.append(("mallopt", args))
        return 1

    def malloc_trim(self, *args: Any) -> int:
        self.calls.append(("malloc_trim", args))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> _Libc:
    fake = _Libc()
    monkeypatch.setattr(_common, "_glibc", lambda: fake)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    return fake


def test_two_arenas_unless_the_environment_says_otherwise(
    libc: _Libc, monkeypatch: pytest.MonkeyPatch
) -> None:
    _common.few_malloc_arenas()
    assert libc.calls == [("mallopt", (-8, 2))]  # M_ARENA_MAX
    libc.calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    _common.few_malloc_arenas()
    assert libc.calls == []


def test_freed_memory_is_given_back(libc: _Libc) -> None:
    _common.give_back_freed_memory()
    assert libc.calls == [("malloc_trim", (0,))]


def test_no_glibc_no_call(monkeypatch: pytest.MonkeyPatch) -> None:
    _common._glibc.cache_clear()
    monkeypatch.setattr(_common.sys, "platform", "darwin")
    try:
        assert _common._glibc() is None
        _common.few_malloc_arenas()
        _common.give_back_freed_memory()
    finally:
        _common._glibc.cache_clear()
