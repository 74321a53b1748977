"""How a worker ages the holders of the cleanup horizon between passes, and warns of each once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pgqueue._store import HorizonHolder
from pgqueue._worker._horizon import HorizonWatch

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def slot(at: float, xmin: int = 700, name: str = "standby1") -> HorizonHolder:
    """A replication slot holding ``xmin``, read ``at`` seconds after T0."""
    return holder("slot", at, name=name, xmin=xmin, xmin_age=5)


def transaction(at: float, open_for: float, pid: int = 42) -> HorizonHolder:
    """A transaction of backend ``pid`` open for ``open_for`` seconds, read ``at`` s after T0."""
    started = T0 + timedelta(seconds=at - open_for)
    return holder("transaction", at, pid=pid, started_at=started, open_seconds=open_for)


def holder(kind: str, at: float, **fields: Any) -> HorizonHolder:
    """A holder of ``kind`` read ``at`` seconds after T0; the fields not given are None."""
    empty = dict.fromkeys(HorizonHolder.__dataclass_fields__, None)
    values = {**empty, "every_database": True, **fields}
    return HorizonHolder(**{**values, "kind": kind, "seen_at": T0 + timedelta(seconds=at)})


def seconds(watch: HorizonWatch, *found: HorizonHolder) -> list[float]:
    """The seconds ``watch`` says each of ``found`` has held the horizon."""
    return [s for _, s in watch.held(list(found))]


def test_a_transaction_is_as_old_as_postgresql_says() -> None:
    """A transaction (or a prepared one) has a start: its age is the database's, from the start."""
    assert seconds(HorizonWatch(), transaction(at=100, open_for=61.5)) == [61.5]


def test_a_slot_counts_from_when_the_watch_first_saw_it_at_the_same_xmin() -> None:
    """No start time: held since first seen; a new xmin (the standby's query ended) resets."""
    watch = HorizonWatch()
    assert seconds(watch, slot(at=0)) == [0.0]
    assert seconds(watch, slot(at=30)) == [30.0]
    assert seconds(watch, slot(at=45, xmin=800)) == [0.0]
    assert seconds(watch, slot(at=50, xmin=800), slot(at=50, name="standby2")) == [5.0, 0.0]


def test_the_watch_remembers_only_what_the_latest_pass_returned() -> None:
    """A slot missing from one pass (its xmin stopped lagging) starts again when it returns."""
    watch = HorizonWatch()
    seconds(watch, slot(at=0))
    seconds(watch, transaction(at=10, open_for=70))
    assert seconds(watch, slot(at=20)) == [0.0]


def test_each_holder_is_due_once_and_only_past_the_threshold() -> None:
    """Due once held for ``after`` seconds; not again while it holds, again once it is new."""
    watch = HorizonWatch()

    def due(*found: HorizonHolder) -> list[tuple[str, float]]:
        return [(h.kind, s) for h, s in watch.due(watch.held(list(found)), 60)]

    assert due(slot(at=0), transaction(at=0, open_for=61)) == [("transaction", 61)]
    assert due(slot(at=59), transaction(at=59, open_for=120)) == []
    assert due(slot(at=60), transaction(at=60, open_for=121)) == [("slot", 60)]
    assert due(slot(at=90)) == []
    assert due(slot(at=91), transaction(at=91, open_for=62, pid=43)) == [("transaction", 62)]
