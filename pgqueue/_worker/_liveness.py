"""Telling a crashed worker from a live one without waiting for its leases.

A worker records where it runs (``host_key``: the kernel's boot id and its pid namespace) and
when its process started. Another worker with the same ``host_key`` sees the same process table,
so it can check for itself: if that pid is gone, is a zombie, or now belongs to a process that
started later, the worker is dead and nothing of it can still be running its jobs. Anything
less certain (another host, another container, a platform without ``/proc``) answers "alive",
and the lease decides as before.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def host_key() -> str | None:
    """Who shares this process table: ``<boot id>:<pid namespace inode>``; ``None`` off Linux."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat(_PROC / "self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{namespace}"


def process_started(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` if it is a zombie."""
    stat = (_PROC / str(pid) / "stat").read_text()
    # "pid (comm) state ... starttime ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped: nothing of it runs any more
        return None
    return int(fields[19])  # field 22 of proc_pid_stat(5); fields[0] is field 3


def started_if_readable(pid: int) -> int | None:
    """:func:`process_started`, or ``None`` also when it cannot be read (no ``/proc``)."""
    try:
        return process_started(pid)
    except (OSError, ValueError, IndexError):
        return None


def this_process() -> tuple[str | None, int | None]:
    """``(host_key(), process_started(os.getpid()))``, ``(None, None)`` if it cannot be read."""
    started = started_if_readable(os.getpid())
    return (None, None) if started is None else (host_key(), started)


def is_dead(pid: int, started: int | None) -> bool:
    """Whether the process recorded as (``pid``, ``started``) in this namespace has ended.

    A pid that now belongs to a process started at another time was reused: the recorded one
    is dead. Whatever cannot be read (``/proc`` hidden, say) counts as alive: the lease decides.
    """
    if started is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to another user
        pass
    try:
        return process_started(pid) != started
    except (OSError, ValueError, IndexError):
        return False
