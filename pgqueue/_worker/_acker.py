"""Buffers outcomes and writes them a batch per statement."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import psycopg

from pgqueue import _store
from pgqueue._errors import error_line, first_line
from pgqueue._store import Acked, Outcome
from pgqueue._worker._db import Db
from pgqueue._worker._faults import crash_point
from pgqueue._worker._outage import Outage

log = logging.getLogger("pgqueue.worker")

# What the database says about the data, not about the connection: retrying cannot help.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError)


def _about(outcome: Outcome, action: str) -> dict[str, object]:
    """The fields of a log record about one outcome's job."""
    return {"action": action, "job_id": outcome.job_id, "attempt": outcome.attempt}


def _as_written(outcomes: list[Outcome]) -> Acked:
    return Acked([o.job_id for o in outcomes], [], [o.attempt for o in outcomes])


async def first_set(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def all_done(
    futures: Sequence[asyncio.Future[Any]], timeout: float, unless: asyncio.Event
) -> None:
    """Wait until each of ``futures`` is done, ``timeout`` seconds have passed, or ``unless``
    is set, whichever comes first; the futures are left as they are."""
    if not futures or unless.is_set():
        return
    waiters = [asyncio.ensure_future(asyncio.wait(futures)), asyncio.ensure_future(unless.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


Settled = Callable[[list[Outcome], Acked], None]
"""Told of each written batch, and of what the database did with it: the outcomes it applied
(one whose lease passed on is not), and the ids of its retries it ended cancelled."""

Refused = Callable[[Outcome, Outcome | None], None]
"""Told of an outcome the database refused, with the failure written in its place, or ``None``
when nothing was written for it."""

Held = Callable[[tuple[int, int]], bool]
"""Whether the worker holds a claim of this (job id, attempt) now: runs it, or has stopped it
and will give it back."""


class Acker:
    """Collects outcomes of ``worker``'s claims; flushes when ``batch`` are waiting or
    ``interval`` seconds passed. ``claims`` is held by the worker's claimer while a claim runs
    and its jobs start, and ``held`` says which claims the worker holds (see _doubtful_kind).
    The claims of the outcomes written are remembered for ``remember`` seconds (see known)."""

    def __init__(
        self,
        db: Db,
        batch: int,
        interval: float,
        settled: Settled | None = None,
        refused: Refused | None = None,
        *,
        worker: str,
        claims: asyncio.Lock | None = None,
        held: Held | None = None,
        remember: float = 40.0,
    ) -> None:
        self.db = db
        self.settled = settled
        self.refused = refused
        self.batch = batch
        self.interval = interval
        self.worker = worker
        self.claims = claims or asyncio.Lock()
        self.held: Held = held or (lambda key: False)
        # Outcomes sent in a statement that failed: it may have committed, its reply lost.
        # Written again, they need care (see _doubtful_kind).
        self._doubtful: set[tuple[int, int]] = set()
        self._buffer: list[Outcome] = []
        self._pending = asyncio.Event()
        self._full = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._written = asyncio.Event()
        # (when, job ids, attempts) of each batch written in the last `remember` seconds (see
        # known): 12 bytes an outcome, where (id, attempt) tuples took 90.
        self.remember = remember
        self._recent: deque[tuple[float, array[int], array[int]]] = deque()

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome for the next batch."""
        self._buffer.append(outcome)
        self._pending.set()
        if len(self._buffer) >= self.batch:
            self._full.set()

    @property
    def pending(self) -> int:
        """How many outcomes wait to be written."""
        return len(self._buffer)

    def known(self, claims: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
        """Those of ``claims`` (job id, attempt) whose outcomes wait to be written, or were
        written in the last ``remember`` seconds (or longer: the record is pruned as batches
        are written), but for those that gave their attempts back (see _remember). Taken
        while paused (see paused), no outcome is on its way meanwhile.

        A written outcome may not stay written: acks skip the WAL flush, and a server crash
        can lose the last of them, leaving their jobs running, leased to this worker, which
        holds them no longer, as it does not hold the jobs of a claim whose reply was lost.
        Such a job is leased to it only until the lease it had when its outcome was written
        expires, at most the worker's lease after: with ``remember`` longer than that, a job
        of this worker's found leased and unexpired (store.leases_read) whose claim is not
        here is not one whose outcome was written. Costs each written batch two arrays of its
        claims (12 bytes an outcome: 5 MB at 10,000 jobs a second and the default lease of
        30 s), appended to a deque, and the pruning of those older; a look through the record
        skips each batch that holds none of the jobs asked about in one pass in C (400,000
        outcomes: about 15 ms)."""
        wanted = set(claims)
        found = {o.claim for o in self._buffer if o.claim in wanted}
        jobs = {job_id for job_id, _ in wanted}
        for _, ids, attempts in self._recent:
            if not jobs.isdisjoint(ids):
                found.update(c for c in zip(ids, attempts, strict=True) if c in wanted)
        return found

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No outcome is written meanwhile: those not yet written are all in the buffer. Taken
        before the worker's claims, in the order a write again takes them (see _write_again)."""
        async with self._flushing:
            yield

    def holding(self) -> list[tuple[int, int]]:
        """The claims (job id, attempt) whose outcomes wait to be written, whose leases the
        worker's heartbeats keep: but those that may have given their attempt back, whose
        job may be another worker's claim of that attempt now (see _doubtful_kind). Any other
        outcome sent in a statement that failed keeps its lease: written, its job's next claim
        has another attempt, which the extension's fence never matches. One followed by an
        outcome of the same attempt keeps it: that committed, and this worker claimed the job
        again under that attempt (see _doubtful_kind)."""
        if not self._doubtful:
            return [o.claim for o in self._buffer]
        kept: list[tuple[int, int]] = []
        later: set[tuple[int, int]] = set()
        for o in reversed(self._buffer):
            key = o.claim
            if key in later or key not in self._doubtful or not o.gives_back:
                kept.append(key)
            later.add(key)
        return kept[::-1]

    async def run(self) -> None:
        """Flush batches forever; a failed flush keeps its outcomes and is tried again."""
        writes = Outage()
        while True:
            await self._pending.wait()
            if len(self._buffer) < self.batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):  # no task per wait (wait_for)
                        await self._full.wait()
            try:
                await self.flush()
            except (psycopg.Error, OSError) as exc:  # anything else fails the worker (_fail)
                n = writes.failed()
                log.warning("ack failed (%s), %d in a row; will retry", error_line(exc), n,
                            exc_info=n == 1,
                            extra={"action": "ack_error", "failures": n})  # fmt: skip
                await asyncio.sleep(min(5.0, 0.05 * 2**n))
                continue
            if failures := writes.ended():
                log.info("writing outcomes works again after %d failures", failures,
                         extra={"action": "ack_restored", "failures": failures})  # fmt: skip

    async def flush(self) -> None:
        """Write every buffered outcome now."""
        async with self._flushing:
            while self._buffer:
                taken, self._buffer = self._buffer[: self.batch * 4], self._buffer[self.batch * 4 :]
                if not self._buffer:
                    self._pending.clear()
                    self._full.clear()
                if self._doubtful and not self._doubtful.isdisjoint(o.claim for o in taken):
                    await self._write_again(taken)
                else:
                    await self._write(taken)

    async def _ack(self, outcomes: list[Outcome]) -> Acked:
        return await self.db.run(_store.jobs_ack(outcomes))

    async def _ack_again(self, outcomes: list[Outcome]) -> Acked:
        """Write ``outcomes`` only where their job is still this worker's claim of their
        attempt (see store.jobs_ack_again); what the database says was written before counts."""
        if not outcomes:
            return _as_written([])
        return await self.db.run(_store.jobs_ack_again(outcomes, self.worker))

    async def _write(self, taken: list[Outcome]) -> None:
        try:
            acked = await self._ack(taken)
        except _REFUSED as exc:
            taken, acked = await self._write_each(taken, exc, self._ack)
        except BaseException:
            self._put_back(taken)
            raise
        if len(acked.ids) < len(taken):
            acked = acked.plus(await self._again(taken, acked.applied()))
        self._done(taken, acked)

    async def _write_again(self, taken: list[Outcome]) -> None:
        """Write a batch that holds outcomes sent before in a statement that failed, and may
        have been written by it (see _doubtful_kind). Those are written with the worker's
        claims paused, as one that gives its attempt back could end its job's next claim (once
        reconnected, which may take a while: a ping, through the connection's lock, which a
        heartbeat may be reconnecting under), each only if its job is still the claim it ends;
        the others as usual."""
        try:
            await self.db.run(_store.ping())
        except BaseException:
            self._put_back(taken, sent=[])
            raise
        async with self.claims:
            kinds = [self._doubtful_kind(i, taken) for i in range(len(taken))]
            by_kind: dict[str, list[Outcome]] = {"": [], "written": [], "again": []}
            for outcome, kind in zip(taken, kinds, strict=True):
                by_kind[kind].append(outcome)
            known, again, usual = by_kind["written"], by_kind["again"], by_kind[""]
            unsettled = [o for o, kind in zip(taken, kinds, strict=True) if kind != "written"]
            if known:
                self._done(known, _as_written(known))
            try:
                acked = await self._ack_again(again)
            except _REFUSED as exc:  # the outcomes found still this worker's claims: one by one
                again, acked = await self._write_each(again, exc, self._ack_again, usual)
            except BaseException:
                self._put_back(unsettled, sent=again)  # in their order: a later one stays behind
                raise
            if again:
                self._done(again, acked)
        if usual:
            await self._write(usual)

    def _doubtful_kind(self, i: int, taken: list[Outcome]) -> str:
        """What to do with ``taken[i]``: "" if written as usual; if it was sent in a statement
        that failed (that may have committed, its reply lost), "again": written only if its
        job is still this worker's claim of that attempt, and else found written or not
        (store.jobs_ack_again), unless it gave its attempt back (the job's next claim then has
        the same attempt) and that committed for sure: "written" if this worker claimed the
        job again under that attempt since, and holds that claim now or has its outcome
        waiting behind this one. A claim of this worker whose reply was lost runs nowhere: the
        outcome written again puts that job back, as its rescue would."""
        key = taken[i].claim
        if key not in self._doubtful:
            return ""
        if not taken[i].gives_back:
            return "again"
        later = itertools.chain(taken[i + 1 :], self._buffer)
        return "written" if self.held(key) or any(o.claim == key for o in later) else "again"

    def _done(self, written: list[Outcome], acked: Acked) -> None:
        """``written`` (as written: a refused outcome replaced by its failure) is settled."""
        if self._doubtful:
            self._doubtful.difference_update(o.claim for o in written)
        self._remember(written)
        self._written.set()
        if acked.ids:
            crash_point("after_ack")
        if len(acked.ids) < len(written):
            self._report_lost(written, acked.applied())
        if self.settled is not None:
            self.settled(written, acked)

    def _remember(self, written: list[Outcome]) -> None:
        """Record the claims of ``written`` (see known), and forget those held long enough.

        Not those that gave their attempts back (a Retry without an error): the job's next
        claim is of the same attempt, and one whose reply was lost looked like a crash's lost
        ack, left to its lease. Given back, such a job runs that attempt again, as its Retry
        (even one a crash lost) asked, if sooner."""
        now = time.monotonic()
        recent = self._recent
        counted = [o for o in written if not o.gives_back]
        ids = array("q", [o.job_id for o in counted])
        recent.append((now, ids, array("i", [o.attempt for o in counted])))
        while recent[0][0] < now - self.remember:
            recent.popleft()

    async def _again(self, taken: list[Outcome], applied: set[tuple[int, int]]) -> Acked:
        """Write once more the outcomes a statement did not apply, from a new snapshot.

        Most belong to a lost lease, which the fence refuses again. One may be a retry of a job
        whose cancel committed while the statement ran: that statement saw neither the cancel
        (its snapshot was older) nor the row as retryable (the row it locked was flagged), and
        the job stayed running until its lease expired. The new statement ends it cancelled."""
        missed = [o for o in taken if o.claim not in applied]
        try:
            return await self.db.run(_store.jobs_ack(missed))
        except (psycopg.Error, OSError):  # as before this second try: their leases settle them
            log.warning("writing %d outcomes again failed", len(missed), exc_info=True,
                        extra={"action": "ack_error"})  # fmt: skip
            return Acked([], [], [])

    async def _write_each(
        self,
        taken: list[Outcome],
        exc: psycopg.Error,
        write: Callable[[list[Outcome]], Awaitable[Acked]],
        behind: list[Outcome] | None = None,
    ) -> tuple[list[Outcome], Acked]:
        """Write a refused batch one outcome at a time with ``write``, so one bad outcome cannot
        hold back the others; an outcome refused on its own is replaced by a failure that says
        why, and left out if that is refused too. Returns the outcomes written. Interrupted, it
        settles those written and keeps the rest, and ``behind`` after them."""
        log.warning(
            "the database refused a batch of %d outcomes (%s); writing them one at a time",
            len(taken), first_line(exc), extra={"action": "ack_refused"},
        )  # fmt: skip
        written: list[Outcome] = []
        acked = Acked([], [], [])
        for i, outcome in enumerate(taken):
            left = taken[i:]
            try:
                try:
                    one = await write([outcome])
                except _REFUSED as refused:
                    # The failure sent may commit, its reply lost: it is what is written again.
                    left = [self._failure(outcome, refused), *taken[i + 1 :]]
                    failure, one = await self._write_refused(outcome, left[0])
                    if failure is None:
                        continue
                    outcome = failure
            except BaseException:
                self._put_back(left + (behind or []), sent=left[:1])
                self._done(written, acked)  # those already written are not written again
                raise
            written.append(outcome)
            acked = acked.plus(one)
        return written, acked

    @staticmethod
    def _failure(outcome: Outcome, exc: psycopg.Error) -> Outcome:
        """The failure recorded in place of ``outcome``, which the database refused."""
        reason = first_line(exc)
        why = f"pgqueue could not store this attempt's outcome ({outcome.state}): {reason}"
        log.error(
            "job %s attempt %s: the database refused its outcome; recording it as failed: %s",
            outcome.job_id, outcome.attempt, reason, extra=_about(outcome, "ack_refused"),
        )  # fmt: skip
        return Outcome(outcome.job_id, outcome.attempt, "failed", error=why)

    async def _write_refused(
        self, outcome: Outcome, failure: Outcome
    ) -> tuple[Outcome | None, Acked]:
        """Record a refused outcome as ``failure``; returns that failure, or ``None`` when the
        database refused it too or its lease had passed on, and tells ``refused`` either way.
        Interrupted (it may have committed, its reply lost), it tells ``refused`` the failure
        is written: its caller keeps the failure, which is written again, and settled so."""
        written: Outcome | None = failure
        try:
            acked = await self.db.run(_store.jobs_ack([failure]))
        except _REFUSED:  # the row itself is refused: its lease expires and the rescue takes it
            log.exception(
                "job %s attempt %s: the failure recording its refused outcome (%s) was refused"
                " too; nothing is written: the job stays running until its lease expires, and"
                " is then rescued as worker lost", outcome.job_id, outcome.attempt,
                outcome.state, extra=_about(outcome, "outcome_unwritten"),
            )  # fmt: skip
            written, acked = None, Acked([], [], [])
        except BaseException:
            if self.refused is not None:
                self.refused(outcome, failure)
            raise
        if written is not None and not acked.ids:  # its lease passed on: not written either
            self._report_lost([failure], set())
            written = None
        if self.refused is not None:
            self.refused(outcome, written)
        return written, acked

    def drop(self) -> list[Outcome]:
        """Empty the buffer, once the acker has stopped: returns the outcomes never written."""
        left, self._buffer = self._buffer, []
        self._doubtful.clear()
        self._pending.clear()
        self._full.clear()
        return left

    def _put_back(self, outcomes: list[Outcome], sent: list[Outcome] | None = None) -> None:
        """Keep ``outcomes`` for the next flush; those ``sent`` (all by default) in a statement
        that failed are doubtful. One never sent is not: its job is still its claim."""
        self._buffer[:0] = outcomes
        self._doubtful.update(o.claim for o in (outcomes if sent is None else sent))
        self._pending.set()

    async def written(self, stopping: asyncio.Event) -> None:
        """Wait until another batch is written, or ``stopping`` is set (the claimer's brake)."""
        self._written.clear()
        await first_set(self._written, stopping)

    @staticmethod
    def _report_lost(taken: list[Outcome], applied: set[tuple[int, int]]) -> None:
        for outcome in taken:
            if outcome.claim not in applied:
                log.warning(
                    "job %s attempt %s: lease lost before its outcome was written; discarded",
                    outcome.job_id, outcome.attempt, extra=_about(outcome, "ack_lease_lost"),
                )  # fmt: skip
