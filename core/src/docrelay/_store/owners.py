"""Lease owners: who holds a lease, and whether that process is provably gone."""

from __future__ import annotations

import os
import socket
from functools import cache

__all__ = ["owner_is_dead", "process_identity"]

# -- owners ------------------------------------------------------------------------------------
# A lease owner reads ``HOST:PID:pBOOT.PIDNS.START:RANDOM:THREAD``. The third part lets another
# worker on the same machine prove that the owner is gone: same kernel (boot id), same PID
# namespace, and process PID either absent, a zombie, or started at another time (PID reused).


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@cache
def _machine() -> tuple[str, str] | None:
    """(boot id, PID namespace) of this kernel and container, or ``None`` without /proc."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if not boot:
        return None
    return boot.replace("-", "")[:16], "".join(c for c in ns if c.isdigit())


def _process_start(pid: int) -> str | None:
    """Start time of process *pid* (clock ticks since boot); ``""`` when it is gone or a
    zombie; ``None`` when that cannot be told (no permission)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20:
        return None
    if fields[0] in ("Z", "X"):
        return ""  # dead, not yet reaped by its parent
    return fields[19]


@cache
def _identity(pid: int) -> str:
    machine = _machine()
    start = _process_start(pid) if machine else None
    tag = f"p{machine[0]}.{machine[1]}.{start}" if machine and start else "p?"
    return f"{socket.gethostname()}:{pid}:{tag}"


def process_identity() -> str:
    """``HOST:PID:TAG`` of this process: the start of every lease owner it uses."""
    return _identity(os.getpid())


def owner_is_dead(owner: str) -> bool:
    """Whether the process behind lease *owner* is provably gone: on this machine (same host
    name, boot and PID namespace) and its PID absent, a zombie, or another process now.
    Owners on other machines, of unknown form, or still alive are never called dead."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[2].startswith("p") or not parts[1].isdigit():
        return False
    host, pid, tag = parts[0], int(parts[1]), parts[2][1:]
    machine = _machine()
    if machine is None or host != socket.gethostname():
        return False
    boot, _, rest = tag.partition(".")
    ns, _, start = rest.partition(".")
    if (boot, ns) != machine or not start:
        return False
    now_start = _process_start(pid)
    if now_start is None:
        return False
    return now_start != start
