"""The scheduler: a worker service that turns the ticks of periodic tasks into jobs.

Every worker may run it. Ticks are computed from the database's clock, and each tick is
recorded in ``pgqueue.periodic_ticks`` by the same statement that enqueues its job, so the
primary key of that table decides which scheduler fires a tick: exactly one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from pgqueue import _store
from pgqueue._cron import Due, due_ticks, next_tick
from pgqueue._errors import error_line
from pgqueue._periodic import MAX_CATCH_UP, PRUNE_GRACE, Periodic
from pgqueue._worker._db import Db, backoff, session
from pgqueue._worker._outage import Outage
from pgqueue._worker._repeat import repeat

if TYPE_CHECKING:
    from pgqueue._worker._worker import Worker

log = logging.getLogger("pgqueue.scheduler")

MAX_SLEEP = 30.0  # re-read the database clock at least this often
WAKE_LATE = 0.002  # wake just after a tick, never just before it
LATE = timedelta(seconds=1)  # a tick fired later than this is logged as caught up
RETRY_CAP = 10.0  # seconds between tries while the database fails, at most
PRUNE_INTERVAL = 60.0
PRUNE_BATCH = 500
PRUNE_BATCHES = 4  # per pass (2000 rows): pruning never holds the scheduler up for long
# How long a name no schedule of the pruning code has keeps its ticks, and then its watermark
# once it has no tick (see TICKS_PRUNE): the longest catch_up and an hour, and then the
# longest a schedule goes between two ticks: a 29 February's, 2,922 days from 2096 to 2104
# (2100 is no leap year), and a day for its zone's offset. A year, it was: such a schedule
# of another app, restarted just after its next tick, had lost its mark and skipped it.
DEFAULT_KEEP = (MAX_CATCH_UP + PRUNE_GRACE).total_seconds()
FORGET_AFTER = DEFAULT_KEEP + timedelta(days=2923).total_seconds()
# How a periodic_coalesced record ends when its scheduler fired no tick after the ticks said.
NOTHING_LEFT = "; the next pass found no tick due after them (coalesce=True)"
OTHERS = "; the tick after them was recorded by another scheduler (coalesce=True)"
FELL_BEHIND = (
    "; the ticks after them were fired by another scheduler, or skipped, while this one fell"
    " behind (coalesce=True)"
)
STOPPED = "; the scheduler stopped before it fired the latest due tick (coalesce=True)"


async def run_scheduler(worker: Worker) -> None:
    """The worker service: schedule ``worker.app``'s periodic tasks until the worker stops."""
    db = scheduler_db(worker)
    try:
        await Scheduler(worker.app.periodics.values(), db).run(worker.stopping)
    finally:
        await db.close()


def scheduler_db(worker: Worker) -> Db:
    """The scheduler's connection, opened as the claimer's: nothing in the session behind a
    pooler (with --no-listen it used to prepare statements there), and commits that wait for
    the flush, so that a tick a crash could lose is never fired twice."""
    return Db(worker.dsn, "scheduler", **session(pooled=not worker.listen, synchronous_commit=True))


class Scheduler:
    """Fires the ticks of some periodic tasks; one per worker, any number per database."""

    def __init__(self, periodics: Iterable[Periodic], db: Db, limit: int = 100) -> None:
        self.periodics = list(periodics)
        self.db = db
        self.limit = limit
        self.cursors: dict[str, datetime] = {}
        self.pruner = TickPruner()
        self.coalescing = Coalesced()
        self._outage = Outage()  # the database's failures in a row (a bug's: see repeat)
        # Retried sooner than the shortest catch_up, so that the ticks after an outage ends
        # are still within it when the next try finds the database back.
        windows = [p.catch_up.total_seconds() / 2 for p in self.periodics]
        self._retry_cap = min([RETRY_CAP, *windows])

    async def run(self, stopping: asyncio.Event) -> None:
        """Fire ticks as they fall due until ``stopping`` is set; database errors are retried,
        and a pass that raises anything else (a bug) is logged and the passes go on (repeat):
        a stray CancelledError used to end the scheduler unseen, for the process's life."""
        log.info(
            "scheduler started: %s", ", ".join(f"{p.name} [{p.cron}]" for p in self.periodics),
            extra={"action": "scheduler_started"},
        )  # fmt: skip
        try:
            await repeat(
                "scheduler", lambda: self._pass(stopping), "scheduler_error", stopping, log
            )
        finally:  # stopped (or cancelled) between the passes of a catch-up
            self.coalescing.end_all(STOPPED)

    async def _pass(self, stopping: asyncio.Event) -> None:
        """One pass, then the wait for the next: after a database error, with backoff."""
        try:
            delay = await self.step()
            if down := self._outage.ended():
                log.info("scheduler passes work again after %d failures", down,
                         extra={"action": "scheduler_restored", "failures": down})  # fmt: skip
        except (psycopg.Error, OSError) as exc:
            n = self._outage.failed()
            log.warning("scheduler pass failed (%s), %d in a row", error_line(exc), n,
                        exc_info=n == 1,
                        extra={"action": "scheduler_error", "failures": n})  # fmt: skip
            delay = backoff(n, self._retry_cap)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)

    async def step(self) -> float:
        """One pass: start if needed, fire what is due, prune now and then; returns the sleep."""
        if not self.cursors:
            await self.start()
        # With no schedule left (the database refused each one: see accepts) it still prunes:
        # its worker's maintenance does not, its app having schedules.
        delay = await self.fire_due() if self.periodics else MAX_SLEEP
        if self.pruner.due():
            await self.prune()
        return delay

    async def fire_due(self) -> float:
        """Fire the due ticks of every schedule; returns the sleep until the next."""
        now = await self.db.run(_store.clock_now())
        more = False
        for periodic in self.periodics:
            more |= await self.fire_alone(periodic, now)
        return 0.0 if more else self.sleep_after(now)

    async def start(self) -> None:
        """Pick up where the database says each schedule left off.

        A schedule with no tick yet starts now: a new schedule never fires for the past. One
        whose ticks were all pruned (by code that does not know it, once older than 7 days)
        goes on from the latest, its watermark, if its next tick is within ``catch_up``. One
        whose job the database refuses is left out (see ``accepts``).
        """
        now = await self.db.run(_store.clock_now())
        self.periodics = [p for p in self.periodics if await self.accepts(p, now)]
        last = await self.db.run(_store.ticks_last())
        pruned = [p.name for p in self.periodics if p.name not in last]
        marks = await self.db.run(_store.watermarks_get(pruned)) if pruned else {}
        self.cursors = {
            p.name: last.get(p.name) or _resumed(p, marks.get(p.name), now) for p in self.periodics
        }

    async def accepts(self, periodic: Periodic, now: datetime) -> bool:
        """Whether the database takes the job of ``periodic``'s ticks, tried once, rolled back.

        Its arguments are fixed in the code, so a job refused once (kwargs whose JSON passes
        ``max_payload_bytes`` but whose jsonb is over the table's limit, say) is refused at
        every tick: it is reported here, once, and not at a nightly schedule's first tick.
        """
        job = periodic.tick_job()
        try:
            await self.db.run(_store.ticks_try(job, now, periodic.keep_seconds))
        except psycopg.errors.UniqueViolation:  # of the rows there, not of the job: an id
            return True  # drawn taken (a sequence behind its table), the next one free
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            reason = exc.diag.message_primary or str(exc)  # the DETAIL repeats the whole row
        except UnicodeEncodeError as exc:  # kwargs the connection's encoding cannot carry
            reason = str(exc)
        else:
            return True
        log.error(
            "periodic %r: the database refuses its job (%s); this worker will not fire it:"
            " change its kwargs, or its task's options, and restart", periodic.name, reason,
            extra={"action": "periodic_refused", "periodic": periodic.name},
        )  # fmt: skip
        return False

    async def fire(self, periodic: Periodic, now: datetime) -> bool:
        """Enqueue the due ticks of one schedule; True if more are due than one pass takes."""
        cursor = self.cursors[periodic.name]
        if cursor < now - periodic.catch_up:  # stalled (SIGSTOP, outage): others may have fired
            cursor = await self.resume(periodic.name, cursor)
        due = due_ticks(periodic.cron, cursor, now, periodic.catch_up, self.limit)
        if due.skipped or cursor > self.cursors[periodic.name]:
            # The ticks right after those gathered are not this scheduler's: their record ends
            # here, so that its range (first to last) holds no tick it does not count.
            self.coalescing.end(periodic.name, FELL_BEHIND)
        if due.skipped:
            _log_skipped(periodic, due.skipped, due.skipped_last)
        if due.due:
            jobless = due.coalesced_through(periodic.coalesce)
            won = await self.db.run(
                _store.ticks_insert(periodic.tick_job(), due.due, periodic.keep_seconds, jobless)
            )
            fired = self.coalescing.add(periodic.name, due, won, jobless)
            _log_fired(periodic, fired, now)
        else:  # a catch-up gathered ends with nothing due only if the database's clock went back
            self.coalescing.end(periodic.name, NOTHING_LEFT)
        self.cursors[periodic.name] = due.cursor
        return due.more

    async def fire_alone(self, periodic: Periodic, now: datetime) -> bool:
        """``fire``, where an error of this schedule's own (the database refusing its job,
        say) is logged and the pass goes on: its ticks are tried again next pass. An error of
        the connection, which every schedule would meet, ends the pass."""
        try:
            return await self.fire(periodic, now)
        except (psycopg.OperationalError, OSError):
            raise
        except Exception:
            log.exception(
                "periodic %r: its due ticks could not be fired", periodic.name,
                extra={"action": "periodic_error", "periodic": periodic.name},
            )  # fmt: skip
            return False

    async def resume(self, name: str, cursor: datetime) -> datetime:
        """The later of ``cursor`` and the schedule's latest tick in the database, so that ticks
        other schedulers fired meanwhile are not reported as skipped; with no tick left (code
        that does not know the schedule pruned them all), its watermark, the latest pruned."""
        last = (await self.db.run(_store.ticks_last())).get(name)
        if last is None:  # a watermark lies below every tick kept: read only when none is
            last = (await self.db.run(_store.watermarks_get([name]))).get(name)
        return cursor if last is None else max(cursor, last)

    def sleep_after(self, now: datetime) -> float:
        """Seconds from ``now`` (database time) until just after the next tick of any schedule."""
        upcoming = min(next_tick(p.cron, now) for p in self.periodics)
        return min(MAX_SLEEP, (upcoming - now).total_seconds() + WAKE_LATE)

    async def prune(self) -> int:
        """Delete old tick rows in small batches; returns how many went."""
        return await self.pruner.run(self.db, {p.name: p.keep_seconds for p in self.periodics})


class Coalesced:
    """The ticks of each schedule that a scheduler recorded without a job (coalesce=True),
    gathered over the passes a long catch-up takes, to be said in one record once the latest
    due tick is fired, or once the run breaks (a tick after them another scheduler's, or
    skipped; a pass that finds none due), or at the scheduler's stop: each gathered tick is
    said once, in a record whose range holds no tick it does not count."""

    def __init__(self) -> None:
        self.ticks: dict[str, tuple[str, str, int]] = {}  # name: first, last, count

    def add(
        self, name: str, due: Due, won: _store.TicksWon, through: datetime | None
    ) -> _store.TicksWon:
        """Take the coalesced ticks out of ``won`` (those at or before ``through``) and return
        the others; say the coalesced ones once no more ticks are due. A due tick another
        scheduler recorded ends the run gathered so far, so that a record's range holds only
        the ticks it counts."""
        if through is not None:
            mine = {tick for _job_id, tick in won}
            for tick in (t.isoformat() for t in due.due if t <= through):
                if tick in mine:
                    first, _last, count = self.ticks.get(name, (tick, "", 0))
                    self.ticks[name] = (first, tick, count + 1)
                else:
                    self.end(name, OTHERS)
            won = [(job_id, tick) for job_id, tick in won if datetime.fromisoformat(tick) > through]
        if not due.more:
            self.end(name, _into(won))
        return won

    def end(self, name: str, into: str) -> None:
        """Say the ticks of ``name`` gathered so far, if any, ending the message with ``into``."""
        if done := self.ticks.pop(name, None):
            _log_coalesced(name, *done, into)

    def end_all(self, into: str) -> None:
        """Say the ticks gathered so far of every schedule."""
        for name in list(self.ticks):
            self.end(name, into)


class TickPruner:
    """Deletes old tick rows, and watermarks no schedule needs, every 30 to 60 s.

    Every scheduler runs one with its schedules' windows, and so does the maintenance of a
    worker whose app has no schedule: with no scheduler, the rows of an app's removed last
    schedule were pruned by no one. A name this code does not know is pruned as another
    app's scheduler prunes it (DEFAULT_KEEP): it may be that app's, with a longer window.
    """

    def __init__(self) -> None:
        self.next_run = time.monotonic() + PRUNE_INTERVAL * random.uniform(0.1, 1.0)
        self.denied = False  # the database refused the last prune (said once until one passes)

    def due(self) -> bool:
        """Whether a prune is due now."""
        return time.monotonic() >= self.next_run

    async def run(self, db: Db, keep: dict[str, float] | None = None) -> int:
        """One prune (up to PRUNE_BATCHES batches) keeping each name's ticks for its ``keep``
        seconds (a schedule's window); returns how many ticks went."""
        self.next_run = time.monotonic() + PRUNE_INTERVAL * random.uniform(0.5, 1.0)
        total = 0
        for _ in range(PRUNE_BATCHES):
            try:
                count = await db.run(
                    _store.ticks_prune(keep or {}, DEFAULT_KEEP, FORGET_AFTER, PRUNE_BATCH)
                )
            except psycopg.errors.LockNotAvailable:  # an insert held a name's lock for 5 s:
                break  # a stalled scheduler, likely; the ticks wait for a later prune
            except psycopg.errors.InsufficientPrivilege as exc:
                self._refused(exc)  # after batches that passed (a revoke meanwhile): said too
                break
            self.denied = False  # a prune passed (not one that met a lock timeout first)
            total += count
            if count < PRUNE_BATCH:
                break
        else:  # there may be more: go on at the next pass, so that pruning keeps up with
            self.next_run = 0.0  # schedules making more than a pass's 2,000 rows a minute
        if total:
            log.debug("pruned %s old ticks", total,
                      extra={"action": "ticks_pruned", "count": total})  # fmt: skip
        return total

    def _refused(self, exc: psycopg.errors.InsufficientPrivilege) -> None:
        """Say once that the role may not prune: it failed every prune, the scheduler's pass
        (a warning with its traceback a minute) or the maintenance pass (whose later steps,
        the vacuum of the claim path among them, were skipped). Tried again each interval,
        so that a grant takes effect without a restart."""
        if not self.denied:
            log.warning(
                "old ticks cannot be pruned: %s; grant this role SELECT, INSERT, UPDATE, DELETE on"
                " pgqueue.periodic_ticks and pgqueue.periodic_watermarks (re-run roles.sql for"
                " pgqueue_worker); tried again every minute, said again once one has passed",
                error_line(exc), extra={"action": "ticks_prune_denied"},
            )  # fmt: skip
        self.denied = True


def _resumed(periodic: Periodic, mark: datetime | None, now: datetime) -> datetime:
    """Where a schedule without tick rows starts: after its watermark if the next tick from
    there is due or to come (the ticks it missed are then those a kept tick would give), else
    now; a rare schedule another app pruned thus still catches up a tick missed on a restart."""
    if mark is not None and next_tick(periodic.cron, mark) > now - periodic.catch_up:
        return mark
    return now


def _log_skipped(periodic: Periodic, skipped: list[datetime], last: datetime | None) -> None:
    count = f"{len(skipped)}+" if len(skipped) >= 1000 else str(len(skipped))
    log.warning(
        "periodic %r: skipped %s missed ticks older than the catch-up window of %s s,"
        " from %s to %s",
        periodic.name, count, periodic.catch_up.total_seconds(), skipped[0].isoformat(),
        (last or skipped[-1]).isoformat(),
        extra={"action": "periodic_skipped", "periodic": periodic.name, "count": len(skipped)},
    )  # fmt: skip


def _into(kept: _store.TicksWon) -> str:
    """How a periodic_coalesced record ends: what became of the latest due tick, ``kept[-1]``."""
    if not kept:
        return "; the latest due tick was another scheduler's to fire (coalesce=True)"
    if kept[-1][0] is None:  # its job refused by the unique key: said periodic_overlapped
        return (f"; the latest, {kept[-1][1]}, got no job either, an earlier tick's job being"
                " unfinished (coalesce=True, overlap=False)")  # fmt: skip
    return f", into tick {kept[-1][1]} (coalesce=True)"


def _log_coalesced(name: str, first: str, last: str, count: int, into: str) -> None:
    log.info(
        "periodic %r: coalesced %d missed ticks, from %s to %s%s", name, count, first, last, into,
        extra={"action": "periodic_coalesced", "periodic": name, "count": count,
               "first": first, "last": last},
    )  # fmt: skip


def _log_fired(periodic: Periodic, won: _store.TicksWon, now: datetime) -> None:
    for job_id, tick in won:
        if job_id is None:
            _log_overlapped(periodic, tick)
            continue
        late = now - datetime.fromisoformat(tick) > LATE
        log.log(
            logging.INFO if late else logging.DEBUG,
            "periodic %r: job %s for tick %s%s", periodic.name, job_id, tick,
            " (caught up)" if late else "",
            extra={"action": "periodic_fired", "periodic": periodic.name, "job_id": job_id,
                   "tick": tick, "caught_up": late},
        )  # fmt: skip


def _log_overlapped(periodic: Periodic, tick: str) -> None:
    log.info(
        "periodic %r: tick %s skipped: the job of an earlier tick is still queued or running"
        " (overlap=False)", periodic.name, tick,
        extra={"action": "periodic_overlapped", "periodic": periodic.name, "tick": tick},
    )  # fmt: skip
