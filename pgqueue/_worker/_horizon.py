"""What holds back the cleanup of the queue's tables, as a worker watches it, and its warnings.

PostgreSQL gives a transaction, prepared or not, a start time, but not the xmin a replication
slot or a standby holds: for those, a watch remembers when it first saw each one hold the same
xmin and counts from there. A standby whose long query ends moves its xmin on, and the count
starts again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pgqueue._store import HorizonHolder

log = logging.getLogger("pgqueue.worker")

Held = tuple[HorizonHolder, float]
"""A holder and the seconds it has held the horizon (for a slot or a standby: at least)."""

_Key = tuple[str, object, object]


class HorizonWatch:
    """What one observer (a worker's maintenance, its metrics) remembers between passes, and
    only about the holders its latest pass returned."""

    def __init__(self) -> None:
        self._since: dict[_Key, datetime] = {}  # slots and standbys: first seen at their xmin
        self._due: set[_Key] = set()

    def held(self, found: list[HorizonHolder]) -> list[Held]:
        """Each holder in ``found`` with the seconds it has held the horizon: since it began,
        or, for a slot or a standby, since this watch first saw it hold the same xmin."""
        since = self._since
        self._since = {h.key: since.get(h.key, h.seen_at) for h in found if h.open_seconds is None}
        return [(h, _seconds(h, self._since)) for h in found]

    def due(self, held: list[Held], after: float) -> list[Held]:
        """Those held for ``after`` seconds or more, except those that already were at the
        last call: each holder is due once."""
        over = [(h, seconds) for h, seconds in held if seconds >= after]
        fresh = [(h, seconds) for h, seconds in over if h.key not in self._due]
        self._due = {h.key for h, _ in over}
        return fresh


def _seconds(holder: HorizonHolder, since: dict[_Key, datetime]) -> float:
    if holder.open_seconds is not None:
        return holder.open_seconds
    return (holder.seen_at - since[holder.key]).total_seconds()


def warn(holder: HorizonHolder, seconds: float) -> None:
    """Log a ``long_transaction`` warning that names ``holder`` and says what to do about it."""
    message, *args = _MESSAGES[holder.kind](holder, seconds)
    extra = {"action": "long_transaction", "kind": holder.kind, "pid": holder.pid,
             "open_s": seconds, "database": holder.database}  # fmt: skip
    if holder.kind in _NAMED:
        extra[_NAMED[holder.kind]] = holder.name
    log.warning(message, *args, extra=extra)


def _transaction(h: HorizonHolder, seconds: float) -> tuple[Any, ...]:
    return (
        "a transaction open for %.0f s holds back the cleanup of the queue's tables, "
        "which grow until it ends: pid %s, database %s, user %s, application %r, %s%s",
        seconds, h.pid, h.database, h.user, h.application, h.state,
        ", has written (this holds back every database)" if h.every_database else "",
    )  # fmt: skip


def _prepared(h: HorizonHolder, seconds: float) -> tuple[Any, ...]:
    return (
        "a transaction prepared %.0f s ago holds back the cleanup of every database's tables, "
        "the queue's too, until it is committed or rolled back: gid %s, database %s, owner %s; "
        "if the transaction manager that prepared it will not finish it, "
        "run ROLLBACK PREPARED %s in database %s",
        seconds, _quoted(h.name), h.database, h.user, _quoted(h.name), h.database,
    )  # fmt: skip


# What a slot and a standby both say: how long they held which xmin, and how to end a query.
_HELD = (
    "has held xmin %s (%s transactions behind) for at least %.0f s, which holds back the "
    "cleanup of every database's tables, the queue's too: "
)
_QUERY = "still runs a query that needs it; end that query there, or let it finish"


def _slot(h: HorizonHolder, seconds: float) -> tuple[Any, ...]:
    held = (_quoted(h.name), h.xmin, h.xmin_age, seconds)
    if h.pid is None:
        return (
            "replication slot %s " + _HELD + "no standby is connected to it; if none will be "
            "again, drop it with SELECT pg_drop_replication_slot(%s)",
            *held, _quoted(h.name),
        )  # fmt: skip
    return (
        "replication slot %s " + _HELD + "the standby that uses it "
        "(walsender pid %s, application %r, client %s) " + _QUERY,
        *held, h.pid, h.application, h.client,
    )  # fmt: skip


def _standby(h: HorizonHolder, seconds: float) -> tuple[Any, ...]:
    return (
        "a standby with hot_standby_feedback (walsender pid %s, application %r, client %s) "
        + _HELD + "it " + _QUERY,
        h.pid, h.application, h.client, h.xmin, h.xmin_age, seconds,
    )  # fmt: skip


def _quoted(text: str | None) -> str:
    """``text`` as an SQL string literal, to paste into the statement a warning suggests."""
    return "'" + str(text).replace("'", "''") + "'"


_MESSAGES: dict[str, Callable[[HorizonHolder, float], tuple[Any, ...]]] = {
    "transaction": _transaction,
    "prepared": _prepared,
    "slot": _slot,
    "standby": _standby,
}
_NAMED = {"prepared": "gid", "slot": "slot"}  # the field that carries the holder's name
