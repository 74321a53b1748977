"""The worker's options, checked once when it is built.

A bad value fails there, with ``ValueError`` naming it, rather than later as a claim loop that
spins or stalls, an acker that never writes, or leases that expire under running jobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from pgqueue._options import (
    MAX_CONCURRENCY,
    WHOLE_NUMBER,
    check_count,
    check_given_name,
    check_queue,
    too_long_a_number,
)
from pgqueue._retry import MAX_DELAY, is_number, shown

INT4_MAX = 2**31 - 1  # a claim's per-queue limit is an int in SQL
# Seconds a new process-pool child has to get ready (the app's set-up in it, Django's): the
# call's own timeout stops meanwhile, so that a set-up that never returns would hold the job
# forever.
CHILD_START_TIMEOUT = 120.0
_DEFAULT_QUEUE = "leave queues out (None) for the app's default queue"


def parse_queues(queues: Mapping[str, int] | Iterable[str], concurrency: int) -> dict[str, int]:
    """``{"io": 20}``, ``["io", "cpu:2"]`` or ``"io,cpu:2"`` → ``{queue: concurrency}``."""
    check_slots(concurrency, "concurrency")
    if isinstance(queues, str) and not queues.strip():  # an unset setting's "", say
        raise ValueError(f"queues {queues!r} names no queue: {_DEFAULT_QUEUE}")
    if isinstance(queues, Mapping):
        items = list(queues.items())
    else:
        names = queues.split(",") if isinstance(queues, str) else list(queues)
        items = [_queue_item(raw, concurrency) for raw in names]
    result: dict[str, int] = {}
    for name, n in items:
        if check_queue(name) in result:
            raise ValueError(f"queue {name!r} is given twice: name each queue once")
        result[name] = check_slots(n, f"concurrency of queue {name!r}")
    if not result:
        raise ValueError(f"a worker needs at least one queue: {_DEFAULT_QUEUE}")
    return result


def check_slots(value: int, what: str) -> int:
    """``value`` if it is an int from 1 to ``MAX_CONCURRENCY``, else ``ValueError`` naming
    ``what``."""
    if check_count(value, what) > MAX_CONCURRENCY:
        raise ValueError(
            f"{what} must be at most {MAX_CONCURRENCY} (jobs run at once per queue by one"
            f" worker; run more workers for more), got {shown(value)}"
        )
    return value


def _queue_item(raw: str, concurrency: int) -> tuple[str, int]:
    if not isinstance(raw, str):  # ("io", 2), say: its figure would not be read as one
        raise ValueError(
            f"invalid queue {shown(raw)} in queues: give each as a str, 'NAME' or"
            " 'NAME:CONCURRENCY', or queues as a mapping {'NAME': CONCURRENCY}"
        )
    name, _, count = raw.partition(":")
    name, count = name.strip(), count.strip()
    if not count:
        return name, concurrency
    if not WHOLE_NUMBER.fullmatch(count):  # int() would read "1_0" as 10, "+2" and "١٢" too
        raise ValueError(
            f"concurrency of queue {name!r} must be a whole number >= 1, got {count!r}"
        )
    if too_long_a_number(count):
        raise ValueError(
            f"concurrency of queue {name!r} is out of range: a number of {len(count)} digits"
        )
    return name, int(count)


def check_seconds(value: Any, what: str, *, zero: bool = False) -> float:
    """``value`` as a float if it is a number of seconds > 0 (or >= 0, with ``zero``) and at
    most ``MAX_DELAY``, else ``ValueError`` naming ``what``. NaN and infinities fail too."""
    if not is_number(value):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    # Written as "not in range" so that NaN, which compares false, fails too.
    least = 0.0 if zero else math.ulp(0.0)
    if not least <= value <= MAX_DELAY:
        bound = ">= 0" if zero else "> 0"
        raise ValueError(
            f"{what} must be a number of seconds {bound} and at most {MAX_DELAY:.0f}"
            f" (1000 years), got {value!r}"
        )
    return float(value)


def check_options(options: Mapping[str, Any]) -> None:
    """Check the numeric options of :class:`~pgqueue.Worker` (``None`` keeps a default)."""
    check_seconds(options["lease"], "lease")
    for name in ("poll_interval", "rescue_interval", "summary_interval", "heartbeat"):
        if options[name] is not None:
            check_seconds(options[name], name)
    for name in ("shutdown_timeout", "ack_interval", "long_transaction_warning"):
        check_seconds(options[name], name, zero=True)
    check_seconds(options["child_start_timeout"], "child_start_timeout")
    lease = options["lease"]
    if options["heartbeat"] is None and not lease / 3 > 0:  # a subnormal lease: 5e-324 / 3 == 0
        raise ValueError(f"lease is too short to beat under (its third is 0), got {lease!r}")
    for name in ("heartbeat", "ack_interval"):  # a finished job's lease lasts until its ack
        if options[name] is not None and options[name] >= lease:
            raise ValueError(
                f"{name} must be shorter than lease ({lease!r} s), got {options[name]!r}: a"
                " lease would expire under a job, which another worker would then run again"
            )
    check_count(options["batch_size"], "batch_size", 1, INT4_MAX)
    check_count(options["ack_batch"], "ack_batch")
    check_count(options["vacuum_threshold"], "vacuum_threshold", 0)
    for name in ("threads", "processes", "max_tasks_per_child"):
        if options[name] is not None:
            check_count(options[name], name)
    if options["metrics_port"] is not None:
        check_count(options["metrics_port"], "metrics_port", 0, 65535)
    addr = options["metrics_addr"]
    if not isinstance(addr, str) or not addr.strip() or addr != addr.strip():
        raise ValueError(
            f"metrics_addr must be an address to bind (0.0.0.0, 127.0.0.1, ::), got {addr!r}"
        )
    if options["name"] not in (None, ""):  # None or "" (an unset setting): one is made up
        check_given_name(options["name"], "worker name")
