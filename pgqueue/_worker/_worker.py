"""The worker process: one claimer, a listener, an executor, an acker, heartbeats, maintenance."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import operator
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from pgqueue import _store
from pgqueue._connections import normalize_dsn
from pgqueue._errors import (
    ConfigurationError,
    PgQueueError,
    WorkerFailed,
    error_line,
    first_line,
    unreachable,
)
from pgqueue._events import WorkerEvents, counted
from pgqueue._retention import Pruner
from pgqueue._schema import check_schema
from pgqueue._store import Outcome
from pgqueue._version import __version__
from pgqueue._worker._acker import Acker, all_done, first_set
from pgqueue._worker._config import CHILD_START_TIMEOUT, check_options, parse_queues
from pgqueue._worker._context import JobContext
from pgqueue._worker._db import Db, backoff, session
from pgqueue._worker._eager import run_now
from pgqueue._worker._executor import OVERRUN_GRACE, ClaimedJob, JobExecutor, overran
from pgqueue._worker._faults import crash_point
from pgqueue._worker._horizon import HorizonWatch, warn
from pgqueue._worker._listener import listen
from pgqueue._worker._liveness import is_dead, this_process
from pgqueue._worker._outage import Outage
from pgqueue._worker._procchild import refuse_in_a_child_start
from pgqueue._worker._repeat import repeat
from pgqueue._worker._scheduler import TickPruner, run_scheduler

if TYPE_CHECKING:
    from pgqueue._app import PgQueue
    from pgqueue._metrics import MetricsServer
    from pgqueue._task import Task

log = logging.getLogger("pgqueue.worker")
_QUEUE = operator.itemgetter(1)  # of a claimed row
_Held = TypeVar("_Held")

Service = Callable[["Worker"], Awaitable[None]]
"""A coroutine run beside the claimer for the worker's whole life (scheduler, metrics, ...)."""


@dataclass(slots=True)
class _Running:
    job: ClaimedJob
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    started: float = 0.0  # time.monotonic() as the attempt started
    overran: bool = False  # logged as running on past its timeout (see _warn_overran)
    found: Task[Any, Any] | None = None  # the job's task, looked up once per job


@dataclass
class WorkerStats:
    """Counters a worker keeps about itself: jobs claimed, and attempts ended so (an outcome
    the database then does not write is taken out again; see Worker._unwritten)."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0  # failed, to be retried
    rescheduled: int = 0  # raised pgqueue.Retry
    cancelled: int = 0


# A claim that read this many claim-index entries beyond the rows it took makes the worker's
# next claims resume where the last ended. Eight workers of one queue at batch 100 walked
# 600-700 per claim, at most 1,600 (rows the others hold locked, rows claimed since that the
# claim is the first to find dead); a transaction holding the cleanup horizon back adds one
# per job claimed since it began. A claim woken from idle takes a job or a few, and walking
# 1,000 entries costs it 0.08 ms (about 6 % of its latency); its resumed claim costs what a
# claim from the head does, so it resumes sooner.
_WALKED_TO_RESUME = 5_000
_WALKED_TO_RESUME_IDLE = 1_000

# A claim from the head that read this many more pages of the claim index than its entries
# fill may be stepping over jobs not yet due: the index checks "run_at <= now()" without
# returning the entries that fail it, about 200 to a page. 100 pages are about 20,000 such
# jobs, 0.7 ms of a claim; a claim that skips them (JOBS_CLAIM_ONE_SKIP) costs 0.2-0.5 ms
# more than one from the head. A claim's own pages: the descent and its rows' and walked
# entries' pages, counted generously (100 to a page), and a descent for each more queue it
# claims, as deep as the index is: 2 pages up to about 50,000 entries, 3 up to millions. No
# fixed figure fits: at 5 pages a descent, 30,000 jobs not yet due in one of 50 queues went
# unseen (247 pages read, 97 of them descents), at 2, a claim of 50 empty queues on an index
# of 100,000 entries (150 pages) probed them all every 10 s. A descent counts one page, the
# fewest, and a claim of several queues over that is judged again, before any probe, with a
# descent measured on the maintenance connection (JOBS_CLAIM_DESCENT, 0.1-0.3 ms), which then
# counts for _DESCENT_FRESH seconds: nothing is added to the claim path, and a worker whose
# claims never look over never measures. Entries of claimed jobs that a scan found dead are
# skipped inside the index too, so such a claim only makes the worker probe
# (JOBS_CLAIM_PROBE): it skips if skipping saves that many pages, and otherwise does not probe
# again for _SKIP_QUIET seconds.
_PAGES_TO_SKIP = 100
_PAGES_OF_DESCENT = 10
_ENTRIES_PER_PAGE = 100
_SKIP_QUIET = 10.0
_DESCENT_FRESH = 60.0

# Seconds a coroutine cancelled at the shutdown timeout gets to unwind (its finally blocks
# may await); one that ignores its cancellation is abandoned after that, and shutdown goes on.
CANCEL_GRACE = 5.0

# Seconds the stop of a run() cancelled during its shutdown gets from then on (see _stop): its
# coroutines, cancelled at once, CANCEL_GRACE to unwind, and its last writes 5 s more.
CANCELLED_STOP = CANCEL_GRACE + 5.0

# The longest a starting worker watches a name last seen on another host for its holder's
# next heartbeat (see _check_name_free): one and a half of the holder's heartbeats, at most.
NAME_WATCH_MAX = 60.0

# Seconds the acker remembers a written outcome beyond the lease (see Acker.known): the lease
# runs on the database's clock, the record on the worker's.
_REMEMBER_MARGIN = 10.0

_THREADS = ("pgqueue-task", "pgqueue-callback")  # the names of the threads a worker runs code in


class Worker:
    """Claims and runs jobs of some queues until stopped.

    Parameters are documented in ``docs/reference/python-api.md``; all durations are seconds.
    """

    def __init__(
        self,
        app: PgQueue,
        *,
        queues: Mapping[str, int] | Iterable[str] | None = None,
        concurrency: int = 10,
        dsn: str | None = None,
        name: str | None = None,
        poll_interval: float = 1.0,
        lease: float = 30.0,
        heartbeat: float | None = None,
        rescue_interval: float = 5.0,
        shutdown_timeout: float = 30.0,
        burst: bool = False,
        listen: bool = True,
        batch_size: int = 100,
        ack_batch: int = 200,
        ack_interval: float = 0.005,
        threads: int | None = None,
        processes: int | None = None,
        services: Iterable[Service] = (),
        synchronous_commit: bool = False,
        vacuum_threshold: int = 20_000,
        long_transaction_warning: float = 60.0,
        scheduler: bool = True,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        summary_interval: float = 60.0,
        isolate_crashed: bool = True,
        max_tasks_per_child: int | None = None,
        child_start_timeout: float = CHILD_START_TIMEOUT,
    ) -> None:
        check_options(locals())  # every option by name, before anything is built from them
        self._settings = _changed(locals())  # for the start record
        self._queues_chosen = queues is not None  # else the app's default queue
        # Where each option given came from, by its name here ("env PGQUEUE_BURST"): the CLI's.
        self._sources: dict[str, str] = {}
        self.app = app
        # Only None means the default queue: "" or [] (a setting left empty, a list filtered
        # down to nothing) ran it unasked, where the CLI refuses `-q ""`.
        self.queues = parse_queues([app.defaults.queue] if queues is None else queues, concurrency)
        self.dsn = normalize_dsn(dsn) if dsn else app.dsn
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.lease = lease
        self.heartbeat = heartbeat or lease / 3
        self.rescue_interval = rescue_interval
        self.shutdown_timeout = shutdown_timeout
        self.burst = burst
        self.listen = listen
        self.batch_size = batch_size
        self.vacuum_threshold = vacuum_threshold
        self._vacuum_permitted: bool | None = None  # asked when a vacuum is first due
        self.long_transaction_warning = long_transaction_warning
        self._horizon = HorizonWatch()  # what holds back cleanup: seen, and warned of
        self.stats = WorkerStats()
        self._host_key, self._process_started = this_process()
        # What this worker's row names; a namesake that takes the row names another.
        self._me: _store.Identity = (
            socket.gethostname(),
            os.getpid(),
            self._host_key,
            self._process_started,
        )
        self._name_taken: str | None = None  # see _check_holder
        self.services = list(services)
        if scheduler and app.periodics:  # every worker may schedule: ticks are deduplicated
            self.services.append(run_scheduler)
        # Without a schedule, maintenance prunes the ticks: those of a removed last schedule
        # were otherwise pruned by no one (one index probe a minute when there are none).
        self._tick_pruner = TickPruner() if scheduler and not app.periodics else None
        self.stopping = asyncio.Event()
        self._free = dict(self.queues)
        # Keyed by (job id, attempt): after a lost lease this worker may claim the same job
        # again while its stale copy still runs; each copy keeps its own entry.
        self._running: dict[tuple[int, int], _Running] = {}
        self._inline: list[_Running] = []  # claimed jobs _run_inline() will finish at once
        self._unfinished: list[tuple[int, int]] = []
        self._abandoned: list[asyncio.Task[None]] = []  # see _abandon
        # Retries reported once written (see _settled): (context, start, end) by (id, attempt),
        # oldest first: an attempt given back whose ack's reply was lost may be claimed and
        # retried again before that ack is settled (see Acker._doubtful_kind).
        self._retrying: dict[tuple[int, int], list[tuple[JobContext, float, float]]] = {}
        # The jobs whose written end the app's job_ended hooks hear of (see _settled):
        # (context, duration) by (id, attempt), held only for the tasks that have one.
        self._ending: dict[tuple[int, int], list[tuple[JobContext, float]]] = {}
        # The attempts stopped at shutdown, (context, start, end) by (id, attempt): the
        # release puts them back, or ends cancelled those asked to cancel (see _released).
        self._stopped: dict[tuple[int, int], tuple[JobContext, float, float]] = {}
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._beat_now = asyncio.Event()  # a cancel hint asks for an early heartbeat
        self._backlog: set[str] = set(self.queues)  # queues that may have runnable jobs
        self._claims = Outage()  # claims (and a --burst worker's look for the end) failing
        self._maintenance_outage = Outage()
        # Where each queue's last claim ended. Until _resume_until, claims resume there (see
        # JOBS_CLAIM_AFTER and _resume_points): set when a claim from the head walked past
        # thousands of index entries it could not take, for _claim_rescan seconds or longer.
        self._claim_after: dict[str, _store.ClaimPoint] = {}
        self._claim_rescan = 1.0
        self._walk_rate = 20_000  # entries walked per second of resuming that follows
        self._resume_until = 0.0  # claims of queues with a backlog resume until then
        self._idle_resume_until = 0.0  # ... and those of queues without one
        # Idle queues may resume until then: a claim from the head, or a look behind their
        # points (_watch_behind_points), found nothing they would miss.
        self._behind_clear_until = 0.0
        self._head_counted_at = -self._claim_rescan  # ... and the last one that counted
        # Claims skip the jobs not yet due until then (see _PAGES_TO_SKIP), and do not resume:
        # set when a probe (_watch_skipping) found that skipping saves many pages, for
        # _claim_rescan seconds or longer, the more pages the longer; only claims of queues
        # that probe measured skip, and only where it found skipping saves over them together.
        self._skip_until = 0.0
        self._skip_saved: dict[str, int] = {}  # pages skipping saves, per queue that probe read
        self._skip_rate = 100  # pages saved per second of skipping that follows
        self._skip_quiet_until = 0.0  # a probe found skipping would not pay: none until then
        self._pages_counted_at = -self._claim_rescan  # the last claim that counted pages
        self._probe: dict[str, int] = {}  # the queues and limits _watch_skipping probes next
        self._probe_pages = (0, 0)  # ... asked by a claim that read these pages, filled these
        self._descent = 1  # claim-index pages a descent reads, measured (see _PAGES_TO_SKIP)
        self._descent_until = 0.0  # ... valid until then, and 1 after
        self._probe_wanted = asyncio.Event()
        total = sum(self.queues.values())
        self._executor = JobExecutor(
            app, threads or total, processes or os.cpu_count() or 1, isolate_crashed,
            max_tasks_per_child, child_start_timeout,
        )  # fmt: skip
        db = session(pooled=not listen, synchronous_commit=synchronous_commit)
        # Claims always wait for the WAL flush: a claim lost in a crash would hand the same
        # attempt number out twice, and fencing could no longer tell a zombie from its heir.
        claims = session(pooled=not listen, synchronous_commit=True)
        self._claim_db = Db(self.dsn, "claimer", backends=listen, **claims)
        self._ack_db = Db(self.dsn, "acker", **db)
        self._maint_db = Db(self.dsn, "maintenance", **db)
        # Held while a claim runs and its jobs start: the acker pauses claims to write again
        # an outcome whose reply was lost (see Acker._doubtful_kind).
        self._claiming = asyncio.Lock()
        self._acker = Acker(
            self._ack_db, ack_batch, ack_interval, self._settled, self._refused,
            worker=self.name, claims=self._claiming, held=self._holds,
            remember=lease + _REMEMBER_MARGIN,
        )  # fmt: skip
        self._writes_done = False  # shutdown's writes have ended: no outcome is written now
        self._registering = False  # the start has registered the worker's row, or tried to
        # A claim's reply was cut off by a cancellation of run(): psycopg has the server cancel
        # the statement, which has often committed by then, and raises CancelledError all the
        # same; its jobs are given back at the stop (see _unknown_claims). Or lost with its
        # connection: given back before the next claim (see _give_back_unknown), or at the stop.
        self._claim_cut = False
        self._claim_lost = False
        self._hurry = asyncio.Event()  # run() was cancelled during the shutdown (see _stop)
        self.events = WorkerEvents(self, summary_interval)
        self._pruner = Pruner(app.retention)
        self._metrics: MetricsServer | None = None
        if metrics_port is not None:
            from pgqueue._metrics import MetricsServer

            self._metrics = MetricsServer(self, metrics_port, metrics_addr)
        self._ack_backlog = max(ack_batch, total)  # outcomes, or callbacks, left waiting
        self._callbacks_warned_at = -60.0
        self._failure: tuple[str, BaseException] | None = None  # see _fail

    def __repr__(self) -> str:
        return f"<pgqueue.Worker {self.name!r} queues={self.queues}>"

    @property
    def running(self) -> int:
        """How many jobs this worker is running now."""
        return len(self._running)

    def stop(self) -> None:
        """Ask the worker to stop claiming and shut down gracefully."""
        if not self.stopping.is_set():
            log.info("stopping: no new claims",
                     extra={"action": "worker_stopping", "worker": self.name})  # fmt: skip
        self.stopping.set()
        self._wake.set()
        self._slot_freed.set()

    def abandoned_threads(self) -> int:
        """Thread tasks still running after shutdown (their jobs were put back in the queue),
        and sync callbacks still running after the time shutdown gave them."""
        threads = threading.enumerate()
        return sum(t.name.startswith(_THREADS) and t.is_alive() for t in threads)

    def wake(self) -> None:
        """Make the claimer look for jobs now (what a notification does)."""
        self._wake.set()

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run until :meth:`stop` (or, in burst mode, until nothing is runnable).

        Raises :class:`ConfigurationError` at once in a process-pool child still starting (a
        script without an ``if __name__ == "__main__":`` guard, which each child runs again),
        before claiming anything if ``metrics_port`` cannot be bound, :class:`PgQueueError`
        if the shutdown's last writes failed and left outcomes unwritten (their jobs are
        rescued once their leases expire), and
        :class:`WorkerFailed` after the shutdown if a loop it cannot do without failed, and
        :class:`ConfigurationError` after the shutdown if another worker took its name while
        it ran (see _check_holder).
        Cancelled, it shuts down first (in a hurry if it already was: see _stop), then the
        CancelledError goes on, even if the last writes failed (logged)."""
        refuse_in_a_child_start()
        try:
            await self._start()
        except BaseException:
            await self._unstart()
            raise
        if install_signal_handlers:
            self._install_signal_handlers()
        background = []
        for loop, coro in self._essential().items():
            background.append(asyncio.ensure_future(coro))
            background[-1].add_done_callback(functools.partial(self._loop_ended, loop))
        for coro in self._background():
            background.append(asyncio.ensure_future(coro))
            background[-1].add_done_callback(_report_stopped)
        cancelled = begun = False  # begun: the shutdown had, stop() (or _fail) came first
        try:
            await self._claim_loop()
        except Exception as exc:
            self._fail("claim", exc)
        except asyncio.CancelledError:
            cancelled, begun = True, self.stopping.is_set()
            raise
        finally:
            try:
                await self._stop(background, hurry=begun)
            except Exception:  # its writes failed too: their error is WorkerFailed's context
                # Cancelled, the cancellation goes on (asyncio.timeout makes it TimeoutError);
                # the stop has logged what its failed writes left undone.
                if not cancelled:
                    if self._failure is None:
                        raise
                    raise self._failed()  # noqa: B904 - its __cause__ is the loop's error
            finally:
                if install_signal_handlers:
                    self._remove_signal_handlers()
        # Not from the finally: a CancelledError or KeyboardInterrupt raised goes through.
        if self._failure is not None:
            raise self._failed()
        if self._name_taken is not None:
            raise ConfigurationError(self._name_taken)

    def _failed(self) -> WorkerFailed:
        assert self._failure is not None
        loop, error = self._failure
        failed = WorkerFailed(
            f"worker {self.name} failed: its {loop} loop raised {type(error).__name__}:"
            f" {error} (see the worker_failed log record); restart it"
        )
        failed.__cause__ = error
        return failed

    def _essential(self) -> dict[str, Awaitable[None]]:  # started with ensure_future
        """The loops besides the claimer that the worker cannot be correct without, by name:
        without heartbeats the leases of its running jobs expire and other workers run them
        again; without the acker no outcome is written. One that ends fails the worker."""
        return {"acker": self._acker.run(), "heartbeat": self._heartbeat_loop()}

    def _loop_ended(self, loop: str, part: asyncio.Future[None]) -> None:
        error = None if part.cancelled() else part.exception()
        if error is not None:
            self._fail(loop, error)

    def _fail(self, loop: str, error: BaseException) -> None:
        """Stop as a failed worker: ``loop``, one the worker cannot be correct without, raised
        (a bug, a MemoryError, ...). run() raises WorkerFailed once shut down, so that the
        process exits non-zero and its supervisor restarts it. Without heartbeats its running
        jobs are stopped at once and put back, before their leases expire."""
        if self._failure is not None and self._failure[0] == loop:
            return  # the same loop again: the shutdown's flush meeting the acker's bug
        if self._failure is None:
            self._failure = (loop, error)
        log.critical(
            "worker %s failed: its %s loop raised %s: %s; it stops, and must be restarted",
            self.name, loop, type(error).__name__, error,
            exc_info=error, extra={"action": "worker_failed", "worker": self.name, "loop": loop},
        )  # fmt: skip
        self.stop()
        if loop == "heartbeat":
            self._stop_running()

    def _background(self) -> list[Awaitable[None]]:  # started with ensure_future
        parts: list[Awaitable[None]] = [
            self._maintenance_loop(), self._watch_behind_points(), self._watch_skipping(),
        ]  # fmt: skip
        if self.listen:
            parts.append(
                listen(self.dsn, self.queues, self.wake, self.stopping, on_cancel=self._cancel_hint)
            )
        parts += [service(self) for service in self.services]
        parts.append(self.events.summarize())
        if self._metrics is not None:
            parts.append(self._metrics.refresh())
        return parts

    async def _start(self) -> None:
        if self._metrics is not None:
            self._metrics.bind()  # first: a port in use stops the worker before anything
        # The claimer and the acker connect while the schema is checked: the first claim and
        # the first acknowledgement come sooner. return_exceptions: cancelled, the gathering
        # ends when both have, not when the first has (the other's cut-off query, left behind,
        # logged a psycopg warning as the process exited).
        opening = asyncio.gather(
            self._claim_db.connection(), self._ack_db.connection(), return_exceptions=True
        )
        try:
            await check_schema(self._maint_db)
            if not self.listen:
                await self._check_claims_flush()
            # A worker that died under this name (restarted by systemd, say) gives its jobs
            # back before the name is taken again.
            await self.rescue()
            await self._check_name_free()
            # Stopped while watching the name: not taken, nor claimed under. The openings are
            # waited for all the same: one left running opened after the shutdown closed the
            # connections, and stayed open.
            stopped = self.stopping.is_set()
            if not stopped:
                self._registering = True  # cancelled, it may have committed all the same
                await self._maint_db.run(self._register())
        except BaseException:
            opening.cancel()  # failed or cancelled: end them (_unstart closes what they opened)
            await asyncio.gather(opening, return_exceptions=True)
            raise
        for opened in await opening:  # a psycopg.Error or OSError is retried by the claim loop
            if isinstance(opened, BaseException) and not isinstance(
                opened, psycopg.Error | OSError
            ):
                raise opened
        if stopped:
            return
        log.info(
            "worker %s started: pgqueue %s, queues %s, concurrency %s, database %s; %s",
            self.name, __version__, self.queues, sum(self.queues.values()), _safe_dsn(self.dsn),
            self._settings_text(),
            extra={"action": "worker_started", "worker": self.name, "version": __version__,
                   "queues": self.queues, "dsn": _safe_dsn(self.dsn),
                   "settings": self._settings, "sources": self._sources},
        )  # fmt: skip
        self._check_task_queues_served()

    def _check_task_queues_served(self) -> None:
        """Warn when no task of the app is sent to a queue this worker serves: a worker left on
        the default queue, its app's tasks on others, claims nothing of theirs and said
        nothing. Not an error: a job sent to a served queue with using(queue=...) runs. A
        schedule's jobs go to its own queue (periodic(queue=...)), which its task may not."""
        theirs = sorted(
            {task.options.queue for task in self.app.tasks.values()}
            | {periodic.queue for periodic in self.app.periodics.values()}
        )
        if not theirs or set(theirs) & set(self.queues):
            return
        served = sorted(self.queues)
        # Left at the default queue: the newcomer's slip. Queues chosen: a worker kept for jobs
        # sent there with using(queue=...), said at every start, where a warning could not be
        # silenced (or a typo, which the line still shows at the default level).
        log.log(
            logging.INFO if self._queues_chosen else logging.WARNING,
            "worker %s serves %s %s, to which none of its app's tasks is sent by default (they"
            " go to %s): serve theirs, e.g. --queues %s (Worker(queues=...) in Python)",
            self.name, "queue" if len(served) == 1 else "queues", ", ".join(served),
            ", ".join(theirs), ",".join(theirs),
            extra={"action": "no_task_queue_served", "worker": self.name, "queues": served,
                   "task_queues": theirs},
        )  # fmt: skip

    def _settings_text(self) -> str:
        """The options not at their defaults, each with where it came from if known: a
        variable left set (PGQUEUE_BURST=1 makes a worker exit once idle) shows in the log."""
        if not self._settings:
            return "other settings at their defaults"
        return "settings " + ", ".join(
            f"{name}={value!r}" + (f" ({self._sources[name]})" if name in self._sources else "")
            for name, value in self._settings.items()
        )

    async def _unstart(self) -> None:
        """After a start that raised or was cancelled: remove the worker's row if it got
        that far (a live-looking worker that runs nothing, whose name no other process on
        this host could take until pruned), and close its connections and port."""
        try:
            if self._registering:
                with contextlib.suppress(psycopg.Error, OSError):
                    await self._maint_db.run(_store.workers_delete(self.name, self._me))
        finally:
            await self._close_connections()

    async def _check_claims_flush(self) -> None:
        """Behind a pooler a worker runs no SET, so its claims commit as the database's or the
        role's default says: warn when that lets them skip the WAL flush."""
        if await self._maint_db.run(_store.session_commit_setting()) == "off":
            log.warning(
                "synchronous_commit is off for this database or role, and behind a pooler"
                " (--no-listen) the worker cannot turn it on for its claims: a claim lost in a"
                " server crash can hand the same attempt out twice, and fencing cannot tell the"
                " two apart. Set it for the workers' role: ALTER ROLE ... SET"
                " synchronous_commit = local",
                extra={"action": "claims_not_flushed", "worker": self.name},
            )

    async def _check_name_free(self) -> None:
        """Refuse a name a live worker holds; take one its holder no longer beats under.

        Two live workers with one name share one registration row: when either dies, the
        rescue of dead workers gives back the jobs the other is still running, and they run
        twice. A name held by a dead process (a restart under systemd, say) is free. On this
        host the process table says whether the holder lives; a holder on another host seen
        less than three heartbeats ago is watched for one and a half of its heartbeats (at
        most NAME_WATCH_MAX s): seen again, it lives, and the name is refused. That may be
        this worker's own earlier life on a node it has left (a pod rescheduled after a
        crash): its row did not change, and the name is taken. A graceful stop deletes the
        row, so only a restart after a crash waits."""
        held = await self._maint_db.run(_store.workers_read(self.name))
        if held is None:
            return
        hostname, pid, host_key, started, seen_ago, heartbeat, _ = held
        if host_key is not None and host_key == self._host_key:
            if (pid, started) != (os.getpid(), self._process_started) and not is_dead(pid, started):
                raise ConfigurationError(
                    f"worker name {self.name!r} is taken by a live worker on this host (pid "
                    f"{pid}): give each worker its own --name, or leave it out for a unique one"
                )
        elif seen_ago < 3 * heartbeat:  # another host: it may be a restart that moved
            watch = min(1.5 * heartbeat, NAME_WATCH_MAX)
            log.warning(
                "worker name %r was in use %.0f s ago on %s (pid %s): watching it for %.0f s"
                " before taking it; two live workers with one name rescue each other's running"
                " jobs", self.name, seen_ago, hostname, pid, watch,
                extra={"action": "worker_name_in_use", "worker": self.name, "pid": pid},
            )  # fmt: skip
            await self._wait(self.stopping, watch)
            again = await self._maint_db.run(_store.workers_read(self.name))
            if again is not None and _unlike_but_when(again, held):  # it beat, or a new one
                raise ConfigurationError(
                    f"worker name {self.name!r} is taken by a live worker on {again[0]} (pid"
                    f" {again[1]}), seen {again[4]:.1f} s ago: give each worker its own --name,"
                    " or leave it out for a unique one"
                )

    def _register(self, missing_only: bool = False) -> _store.Query[bool]:
        hostname, pid, host_key, started = self._me
        return _store.workers_register(
            self.name, hostname, pid, json.dumps(self.queues), __version__, self.heartbeat,
            host_key, started, missing_only,
        )  # fmt: skip

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def _remove_signal_handlers(self) -> None:
        # A stopped worker's handlers would ignore SIGTERM and os._exit() on SIGINT, whatever
        # the program does next on this loop.
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)

    def _on_sigint(self) -> None:
        if self.stopping.is_set():
            log.warning("second interrupt: exiting now", extra={"action": "worker_forced_exit"})
            os._exit(130)
        self.stop()

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self.stopping.is_set():
            if self._acker.pending >= self._ack_backlog:
                # Outcomes not yet written keep their rows running: claiming on while the
                # acker falls behind would only let leases expire.
                await self._acker.written(self.stopping)
                continue
            if self.events.pending >= self._ack_backlog:
                # Burst mode: nothing left, and callbacks get the time shutdown gives them.
                if self.burst and not self._running and await self._idle():
                    break
                await self._callbacks_behind(self.poll_interval if self.burst else None)
                continue
            wanted = {q: min(n, self.batch_size) for q, n in self._free.items() if n > 0}
            if not wanted:
                await self._wait(self._slot_freed, None)
                self._slot_freed.clear()
                continue
            if not self._backlog.intersection(wanted):
                self._run_inline()  # nothing more to claim: run the last jobs before waiting
                await self._wait(self._wake, self.poll_interval)
                if self.stopping.is_set():
                    break
            self._wake.clear()
            now = time.monotonic()
            skip = self._skips(wanted, now)
            after, idle = ({}, {}) if skip else self._resume_points(wanted, now)
            # A claim of queues with a backlog counts what it walked. Woken from idle, counting
            # costs the latency path 0.03 ms: a claim from the head counts only until one
            # count has come back in the last _claim_rescan seconds. A skipping claim does
            # not count: when skipping ends, the next claim from the head looks again.
            backlogged = bool(self._backlog.intersection(wanted))
            counted = not skip and (
                backlogged or (not after and now >= self._head_counted_at + self._claim_rescan)
            )
            try:
                if self._claim_lost:
                    await self._give_back_unknown()
                # Caught up, a claim that counts says what it read even if it takes nothing.
                # Pages are counted about once a second: that costs a claim of 100 0.05 ms.
                pages = now >= self._pages_counted_at + self._claim_rescan
                async with self._claiming:
                    claim = await self._claim_db.run(_store.jobs_claim(
                        self.name, wanted, self.lease, after, counted, idle, skip,
                        not backlogged, pages,
                    ))  # fmt: skip
                    self._start_jobs([ClaimedJob(*row) for row in claim.rows])
            except asyncio.CancelledError:
                self._claim_cut = True  # the claim may have committed: its jobs are unread
                raise
            except (psycopg.Error, OSError) as exc:
                self._claim_failed(exc)
                # The connection broke: the claim may have committed, its reply lost. Not
                # so a claim that failed on a connection that held (a statement or lock
                # timeout, a serialization failure): the server answered, it rolled back.
                self._claim_lost |= isinstance(exc, OSError) or self._claim_db.dropped
                if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
                    await self._fail_uncountable(list(wanted))
                await self._wait(self.stopping, backoff(self._claims.failures))
                self._backlog.update(wanted)
                continue
            if self._claims.failures:
                self._claim_restored()
            self._claim_after.update(claim.ends)
            if not after:  # only a claim from the head decides
                self._behind_clear_until = now + 2 * self._claim_rescan
                if claim.counted:
                    self._head_counted_at = now
                    if claim.pages or pages:  # it counted pages (0: of the table only)
                        self._pages_counted_at = now
                        self._note_pages(claim, wanted, now)
                if claim.walked > (_WALKED_TO_RESUME if backlogged else _WALKED_TO_RESUME_IDLE):
                    # Claims from the head would keep walking those entries, and more of them,
                    # as long as whatever keeps them lasts: resume for a while, the longer the
                    # more this one walked, so that the claims from the head that look again
                    # cost little beside the claims that resume. Only a claim with a backlog
                    # makes claims with a backlog resume: theirs is the costlier statement.
                    pause = min(60.0, max(self._claim_rescan, claim.walked / self._walk_rate))
                    if backlogged:
                        self._resume_until = max(self._resume_until, now + pause)
                    self._idle_resume_until = max(self._idle_resume_until, now + pause)
            jobs = claim.rows
            self._note_backlog(jobs, wanted)
            if self.burst and not jobs and await self._idle():
                break

    async def _give_back_unknown(self) -> None:
        """After a claim whose connection broke (it may have committed, its reply lost): give
        back, the attempt not counted (LEASES_RELEASE), the jobs leased to this worker that it
        does not know (see _unknown_claims). Claimed so, they ran nowhere, and waited for their
        leases to expire, to be rescued as 'worker lost' (a job of one attempt failed so,
        never run). No outcome is written meanwhile (one on its way is in no buffer), and no
        claim runs, taken in the order a write again takes them (Acker._write_again). A job
        asked to cancel meanwhile ends cancelled, not run."""
        async with self._acker.paused(), self._claiming:
            await self._end_broken_claim()
            unknown = await self._unknown_claims(self._claim_db)
            if unknown:
                released, ended = await self._claim_db.run(_store.leases_release(unknown))
                log.info(
                    "put back %s jobs of a claim whose reply was lost (%s ended cancelled, as"
                    " asked)", released, len(ended),
                    extra={"action": "claim_given_back", "count": released,
                           "cancelled": len(ended)},
                )  # fmt: skip
        self._claim_lost = False

    async def _end_broken_claim(self, on: Db | None = None) -> None:
        """End the server session of the claimer's connection that broke, and wait until it
        is gone (up to 10 s), so that the claim it may still run cannot commit after the
        jobs leased to this worker are read (see store.BACKEND_END). Not behind a pooler
        (the worker does not know the session then), nor once the session is gone. ``on``:
        the connection to do it on, if not the claimer's."""
        db = self._claim_db
        broken, db.broken = db.broken, None
        if broken is None:
            return
        try:
            gone = await _session_ended(on or db, broken, db.application)
        except (psycopg.OperationalError, OSError, asyncio.CancelledError):
            # Not known to be gone (the database still out of reach, say): the next give-back
            # (or the stop) tries again. Forgotten here, the session was never ended once the
            # database was back. (Of the statements that broke since, none was a claim.)
            # Another error is not retried: it would stop the claims for good.
            db.broken = broken
            raise
        if gone:
            return
        log.warning(
            "the server session (pid %s) of a claim whose connection broke did not end in"
            " 10 s: jobs it may claim yet wait for their leases", broken[0],
            extra={"action": "claim_session_left", "pid": broken[0]},
        )  # fmt: skip

    async def _unknown_claims(self, db: Db) -> list[tuple[int, int]]:
        """The claims (job id, attempt) leased to this worker, their leases unexpired, that
        it neither holds (runs, or gives back at its stop) nor knows an outcome of, waiting or
        written lately (Acker.known): those of a claim whose reply was lost.

        Why an outcome written lately counts: acks skip the WAL flush, and a server crash may
        lose one after the worker was told it committed. Its job is then leased to this
        worker again, under the attempt that ran: given back, the attempt not counted, it
        would run that attempt again (and a job that crashes the server, for ever). Left out,
        it is rescued when its lease expires, the attempt counted, as any job of a lost ack.
        Its lease is the one it had when the outcome was written, no heartbeat extends it
        after, and the acker remembers the outcome for longer (see Acker.known), so a lease
        read unexpired here belongs to no written outcome the record has forgotten."""
        leased = await db.run(_store.leases_read(self.name, self._me))
        unheld = [key for key in leased if not self._holds(key)]
        known = self._acker.known(unheld) if unheld else set()
        return [key for key in unheld if key not in known]

    async def _callbacks_behind(self, timeout: float | None) -> None:
        """Wait until a callback ends (or ``timeout`` passes: a burst worker looks whether
        anything is left): callbacks slower than the jobs would pile up without end (a sync
        one waits for one of the loop's few default threads). Warn once a minute: callbacks
        that never end stop the worker's claims here."""
        now = time.monotonic()
        if now >= self._callbacks_warned_at + 60:
            self._callbacks_warned_at = now
            log.warning(
                "%s callbacks (on_success, on_failure, Django's task_finished) have not ended: no"
                " claims until one does",
                self.events.pending, extra={"action": "callbacks_behind"},
            )  # fmt: skip
        self.events.callback_ended.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await first_set(self.events.callback_ended, self.stopping)

    def _note_pages(self, claim: _store.Claim, wanted: dict[str, int], now: float) -> None:
        """After a claim from the head that counted pages: if it read many more claim-index
        pages than its entries fill and its descents (one per queue) read, or none (planned
        from statistics that saw no job due, it scanned the table, whose pages it does not
        count), have _watch_skipping find out whether skipping the jobs not yet due would
        save them (see _PAGES_TO_SKIP)."""
        filled = (claim.walked + len(claim.rows)) // _ENTRIES_PER_PAGE
        if (
            self._over(claim.pages, filled, len(wanted), now)
            and now >= self._skip_quiet_until
            and not self._probe
        ):
            self._probe = dict(wanted)
            self._probe_pages = (claim.pages, filled)
            self._probe_wanted.set()

    def _over(self, pages: int, filled: int, queues: int, now: float) -> bool:
        """Whether a claim from the head of ``queues`` queues that read ``pages`` claim-index
        pages, ``filled`` of them with its entries, read more than _PAGES_TO_SKIP beyond its
        own, or none (a table scan): a descent of each more queue counts as measured, while
        that holds, and as one page otherwise."""
        descent = self._descent if now < self._descent_until else 1
        own = _PAGES_OF_DESCENT + descent * (queues - 1) + filled
        return not pages or pages - own > _PAGES_TO_SKIP

    async def _still_over(self) -> bool:
        """Whether the claim that asked for a probe is over (see _over) with a descent measured
        on the maintenance connection: once more if the last measurement no longer holds and
        the claim was of several queues (a claim of one queue counts no descent of its own)."""
        now = time.monotonic()
        if now >= self._descent_until and len(self._probe) > 1:
            with contextlib.suppress(psycopg.Error, OSError):  # cannot tell: one page, the fewest
                if descent := await self._maint_db.run(_store.jobs_claim_descent()):
                    self._descent, self._descent_until = descent, now + _DESCENT_FRESH
        return self._over(*self._probe_pages, len(self._probe), now)

    def _skips(self, wanted: dict[str, int], now: float) -> bool:
        """Whether this claim skips the jobs not yet due: until _skip_until, if the probe
        that set it measured every queue of the claim, and found that skipping saves more
        than _PAGES_TO_SKIP over them together. A claim of other queues (one whose slots were
        all busy while the probe ran, say) reads from the head, and may probe them."""
        if now >= self._skip_until or not wanted.keys() <= self._skip_saved.keys():
            return False
        return sum(self._skip_saved[queue] for queue in wanted) > _PAGES_TO_SKIP

    async def _watch_skipping(self) -> None:
        """Probe, on the maintenance connection, whether claims that skip the jobs not yet
        due would read fewer pages than claims from the head, when a claim asks for it and is
        still over with a measured descent (see _still_over): if they would save more than
        _PAGES_TO_SKIP over all the claim's queues together (skipping is decided for them
        together), claims of those queues skip for a while, the longer the more they save; if
        not, no probe for _SKIP_QUIET seconds."""
        await repeat("watch_skipping", self._probe_when_asked, "loop_error", self.stopping)

    async def _probe_when_asked(self) -> None:
        """One pass of _watch_skipping: wait for a claim to ask, then probe."""
        await self._probe_wanted.wait()
        self._probe_wanted.clear()
        try:
            if not await self._still_over():
                return  # its descents read those pages: no probe, and no quiet
            queues = await self._pages_saved()
        finally:
            self._probe = {}  # the next claim that reads too many pages asks again
        now = time.monotonic()
        saved = sum(queues.values())  # skipping is decided for all queues together
        if saved > _PAGES_TO_SKIP:
            pause = min(60.0, max(self._claim_rescan, saved / self._skip_rate))
            log.debug(
                "claims from the head read %s more pages than claims that skip the jobs not"
                " yet due; skipping them for %.0f s", saved, pause,
                extra={"action": "claim_skipping", "pages": saved},
            )  # fmt: skip
            # This probe's queues skip as long as it says: an earlier probe's longer
            # period was measured over other queues, or over their older state.
            self._skip_until = now + pause
            self._skip_saved = queues
        else:
            self._skip_quiet_until = now + _SKIP_QUIET

    async def _pages_saved(self) -> dict[str, int]:
        """The pages that skipping saves a claim of each queue _watch_skipping probes, read
        on the maintenance connection; none if the probe fails."""
        queues: dict[str, int] = {}
        try:
            for queue, limit in self._probe.items():
                head, skipping = await self._maint_db.run(_store.jobs_claim_probe(queue, limit))
                queues[queue] = head - skipping
        except (psycopg.Error, OSError):
            return {}  # cannot tell: claims from the head go on, and ask again later
        return queues

    async def _fail_uncountable(self, queues: list[str]) -> None:
        """After a claim failed on integer overflow: fail the queued jobs whose attempts
        cannot be counted up, which made it fail (and would make every claim of their queue
        fail), so that the queue runs again."""
        with contextlib.suppress(psycopg.Error, OSError):  # the claim loop retries anyway
            for job_id in await self._maint_db.run(_store.jobs_fail_uncountable(queues)):
                log.error(
                    "job %s failed: %s", job_id, _store.UNCOUNTABLE_ERROR,
                    extra={"action": "job_uncountable", "job_id": job_id},
                )  # fmt: skip

    def _resume_points(
        self, wanted: dict[str, int], now: float
    ) -> tuple[dict[str, _store.ClaimPoint], dict[str, float]]:
        """Where this claim resumes, per queue, and which of those queues resume as idle ones
        (see JOBS_CLAIM_AFTER). A queue with a backlog resumes at its point until
        _resume_until; one without resumes a second before it (a job whose enqueuing
        transaction ended after younger ones were claimed lies behind the point) until
        _idle_resume_until, and only while the last claim from the head, or the last look
        behind the points, says that nothing lies behind them (_behind_clear_until)."""
        resumes = now < self._resume_until
        idle_resumes = now < self._idle_resume_until and now < self._behind_clear_until
        if not resumes and not idle_resumes:
            return {}, {}
        after: dict[str, _store.ClaimPoint] = {}
        idle: dict[str, float] = {}
        for queue, point in self._claim_after.items():
            if queue not in wanted:
                continue
            if queue in self._backlog:
                if resumes:
                    after[queue] = point
            elif idle_resumes:
                after[queue] = point
                idle[queue] = self._claim_rescan
        return after, idle

    async def _watch_behind_points(self) -> None:
        """While idle queues resume, look once per _claim_rescan, on the maintenance
        connection, for a runnable job their resumed claims would not read (one that
        committed more than _claim_rescan seconds after younger ones were claimed). Finding
        none lets them go on resuming, so that the claims from the head, which walk every
        entry a held horizon keeps, come once per resume period instead of once per rescan
        and no longer delay the claim a job arrives during; finding one, or failing to look,
        makes the next claim read from the head, at once."""
        await repeat("watch_behind_points", self._look_behind_points, "loop_error", self.stopping)

    async def _look_behind_points(self) -> None:
        """One pass of _watch_behind_points."""
        await self._wait(self.stopping, self._claim_rescan)
        sent = time.monotonic()
        if sent >= self._idle_resume_until:
            return
        points = [(q, p) for q, p in self._claim_after.items() if q not in self._backlog]
        behind = False
        try:
            for queue, point in points:
                look = _store.jobs_behind_point(queue, point, self._claim_rescan)
                if await self._maint_db.run(look):
                    behind = True
                    break
        except (psycopg.Error, OSError):
            behind = True  # cannot tell: the claim from the head will
        if behind:
            self._behind_clear_until = 0.0
            self.wake()
        elif points:
            clear = sent + 2 * self._claim_rescan
            self._behind_clear_until = max(self._behind_clear_until, clear)

    def _note_backlog(self, rows: list[Any], wanted: dict[str, int]) -> None:
        """A queue whose claim came back full probably has more: claim it again when a slot
        of that queue frees up, without waiting for a notification or the poll."""
        queues = list(map(_QUEUE, rows))  # counted in C, not by a Python loop over the jobs
        for queue, n in wanted.items():
            if queues.count(queue) >= n:
                self._backlog.add(queue)
            else:
                self._backlog.discard(queue)

    async def _idle(self) -> bool:
        """Burst mode: nothing running here, nothing left to write, no job of its tasks that a
        claim could take. Those another transaction holds locked (a test's open transaction,
        a long SELECT ... FOR UPDATE) no claim can take: they are left, with a warning, as
        are those of tasks this worker does not know (pgqueue.testing's drain holds another
        app's locked, for a worker that would claim them)."""
        if self._running:
            await self._wait(self._slot_freed, None)
            self._slot_freed.clear()
            return False
        try:
            await self._acker.flush()
            runnable = _store.jobs_count_runnable(list(self.queues), list(self.app.tasks))
            claimable, count = await self._claim_db.run(runnable)
        except (psycopg.Error, OSError) as exc:  # as a failed claim: the loop looks again
            self._claim_failed(exc, "burst: checking for the end")
            await self._wait(self.stopping, backoff(self._claims.failures))
            return False
        if not claimable and count:
            log.warning(
                "burst: ending with %s runnable jobs left that other transactions hold locked",
                count, extra={"action": "burst_left_locked", "count": count},
            )  # fmt: skip
        return claimable == 0

    def _claim_failed(self, exc: BaseException, what: str = "claim") -> None:
        n = self._claims.failed()
        log.warning("%s failed (%s), %d in a row; retrying", what, error_line(exc), n,
                    exc_info=n == 1, extra={"action": "claim_error", "failures": n})  # fmt: skip

    def _claim_restored(self) -> None:
        failures = self._claims.ended()
        log.info("claims work again after %d failures", failures,
                 extra={"action": "claim_restored", "failures": failures})  # fmt: skip

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: wait_for wraps every wait in a task of its own, which
        # costs the idle claimer a loop iteration between a notification and its claim.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    # -- running ----------------------------------------------------------------------------

    def _holds(self, key: tuple[int, int]) -> bool:
        """Whether this worker runs the attempt ``key`` (job id, attempt), or stopped it at
        shutdown and gives it back."""
        return key in self._running or key in self._unfinished

    def _start_jobs(self, jobs: list[ClaimedJob]) -> None:
        """Start the jobs of a claim. One whose start raises (a bug: run() fails the worker)
        and those after it are not started, and go back at the stop with the jobs stopped
        there; heartbeats keep their leases meanwhile."""
        for n, job in enumerate(jobs):
            try:
                self._start_job(job)
            except BaseException:
                self._unfinished += [(left.id, left.attempt) for left in jobs[n:]]
                raise

    def _start_job(self, job: ClaimedJob) -> None:
        crash_point("after_claim")
        # What may raise comes first: a start that raised has changed nothing.
        running = _Running(job, job.context())
        running.found = found = self.app.get_task(job.task)
        inline = self._executor.runs_inline(job, found)
        self.stats.claimed += 1
        self._free[job.queue] -= 1
        self._running[job.id, job.attempt] = running
        if not inline:
            execute = self._execute(running)
            try:
                running.task = asyncio.create_task(execute)
            except BaseException:  # a task factory's bug, say: the job did not start
                execute.close()
                self._free[job.queue] += 1
                self.stats.claimed -= 1
                del self._running[job.id, job.attempt]
                raise
            return
        # A coroutine that cannot suspend needs no task: the batch's inline jobs run from one
        # callback, after the claimer has sent its next claim.
        if not self._inline:
            asyncio.get_running_loop().call_soon(self._run_inline)
        self._inline.append(running)

    def _run_inline(self) -> None:
        """Run the inline jobs claimed so far to their end, each in a context of its own."""
        batch, self._inline = self._inline, []
        for running in batch:
            try:
                run_now(self._execute(running), contextvars.copy_context())
            except Exception as exc:  # what a task would report as never retrieved
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "inline job raised", "exception": exc}
                )

    async def _execute(self, running: _Running) -> None:
        job, ctx = running.job, running.ctx
        outcome: Outcome | None = None
        started = running.started = self.events.job_started(job)
        try:
            outcome = await self._executor.run(job, ctx, running.found)
        except asyncio.CancelledError:
            if ctx.cancel_reason == "cancel requested":
                outcome = Outcome(job.id, job.attempt, "cancelled", error="cancelled on request")
            elif ctx.cancel_reason == "shutdown":
                self._unfinished.append((job.id, job.attempt))
                self._stopped[job.id, job.attempt] = (ctx, started, time.monotonic())
        except Exception as exc:  # a bug of ours or a hook's: the job ends, its slot comes back
            log.exception("job %s: its outcome could not be made", job.id,
                          extra={"action": "outcome_error", "job_id": job.id})  # fmt: skip
            error = f"pgqueue could not make this attempt's outcome: {type(exc).__qualname__}"
            outcome = Outcome(job.id, job.attempt, "failed", error=error)
        finally:
            del self._running[job.id, job.attempt]
            if self.events.end_listeners:
                self.events.job_left(job)
        try:
            if outcome is not None and (ctx.cancel_reason is None or self._kept(outcome, ctx)):
                crash_point("after_side_effect")
                self._acker.add(outcome)
                ended = self.app.hooks.job_ended
                if ended and job.task in ended:  # told once written (see _settled)
                    ending = (ctx, time.monotonic() - started)
                    self._ending.setdefault(outcome.claim, []).append(ending)
                if outcome.state == "queued":  # the ack may end it cancelled: report it then
                    report = (ctx, started, time.monotonic())
                    self._retrying.setdefault((job.id, job.attempt), []).append(report)
                else:
                    if outcome.state == "succeeded":
                        self.stats.succeeded += 1
                    else:
                        self._count(outcome.state)
                    self.events.job_finished(ctx, outcome, started, running.found)
            # A thread ignoring its cancellation keeps its slot; shutdown abandons threads.
            if not self.stopping.is_set() and (
                settling := self._executor.settling(job, ctx, started)
            ):
                await settling
        finally:
            self._free[job.queue] += 1
            self._slot_freed.set()
            if job.queue in self._backlog:
                self._wake.set()

    def _kept(self, outcome: Outcome, ctx: JobContext) -> bool:
        """Whether the outcome of an attempt the worker stopped is written: not after a lost
        lease (the job is another attempt's now), nor once shutdown's writes have ended (a
        coroutine abandoned then that ended later: its job is back in the queue, or goes back
        when its lease expires if the last flush failed). An abandoned attempt whose outcome
        is written is not put back too: a Retry() gives its attempt back, and putting back
        that attempt would put back the job's next claim."""
        if ctx.cancel_reason == "lease lost":
            return False
        if not self._writes_done:
            with contextlib.suppress(ValueError):  # only an abandoned attempt is there
                self._unfinished.remove(outcome.claim)
            return True
        log.warning(
            "job %s: its abandoned task ended (%s) after the worker's last writes; that outcome"
            " is not written, and the job runs again",
            outcome.job_id, outcome.state,
            extra={"action": "outcome_unwritten", "job_id": outcome.job_id,
                   "attempt": outcome.attempt},
        )  # fmt: skip
        return False

    def _count(self, name: str, by: int = 1) -> None:
        setattr(self.stats, name, getattr(self.stats, name) + by)
        # The job's log record is written by self.events.job_finished, with all its fields.

    def _settled(self, written: list[Outcome], acked: _store.Acked) -> None:
        """Report the retries of a written batch as the database ended them: a job asked to
        cancel while its attempt ran is cancelled, not queued again (see JOBS_ACK). An outcome
        whose lease passed on is not written (the acker's ack_lease_lost record names it): see
        _unwritten."""
        if len(acked.ids) == len(written) and not self._retrying and not self._ending:
            return  # the common case: every outcome written, none of them a retry
        applied = acked.applied()
        for outcome in written:
            if outcome.claim not in applied:
                self._unwritten(outcome)
                continue
            if outcome.state == "queued" and outcome.job_id in acked.cancelled:
                outcome = Outcome(outcome.job_id, outcome.attempt, "cancelled",
                                  error="cancelled on request")  # fmt: skip
            ending = _oldest(self._ending, outcome.claim)
            if ending is not None and outcome.state != "queued":
                self.events.job_ended(*ending, outcome)
            held = _oldest(self._retrying, outcome.claim)
            if held is None:
                continue
            ctx, started, ended = held
            self._count(counted(outcome))
            task = self.app.get_task(ctx.task)
            self.events.job_finished(ctx, outcome, started + time.monotonic() - ended, task)

    def _refused(self, outcome: Outcome, written: Outcome | None) -> None:
        """Correct the report of an outcome the database refused: ``written`` is the failure
        written instead, or ``None`` if nothing was. A retry is reported once written (see
        _settled), so only what is written; other outcomes were reported when they ended."""
        if written is None:  # the acker's outcome_unwritten or ack_lease_lost record names it
            self._unwritten(outcome)
            return
        if outcome.state in ("queued", "failed"):
            return  # a retry is reported failed once written; a failure was, and failed it is
        self._count(outcome.state, -1)
        self._count("failed")
        log.error(
            "job %s attempt %s failed, not %s as reported: %s",
            outcome.job_id, outcome.attempt, outcome.state, written.error,
            extra={"action": "job_failed", "job_id": outcome.job_id, "attempt": outcome.attempt},
        )  # fmt: skip

    def _unwritten(self, outcome: Outcome) -> None:
        """Forget an outcome the database holds nothing of (its job runs again, or another
        worker's attempt ends it): a retry was not reported, and another outcome, reported when
        its attempt ended, leaves worker.stats (the events sent stay sent). A failure written
        in place of a refused retry holds that retry's report (see _refused)."""
        _oldest(self._ending, outcome.claim)
        if _oldest(self._retrying, outcome.claim) is None and outcome.state != "queued":
            self._count(outcome.state, -1)

    def cancel_local(self, job_id: int, reason: str, attempt: int | None = None) -> None:
        """Stop this worker's attempts at ``job_id`` (only ``attempt`` if given); async tasks
        are cancelled at once."""
        for (held_id, held_attempt), running in list(self._running.items()):
            if held_id == job_id and attempt in (None, held_attempt):
                running.ctx.cancel(reason)
                if running.task is not None:
                    running.task.cancel()

    # -- heartbeats and maintenance ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        beats = Outage()
        while True:
            pause = self._beat_retry(beats.failures) if beats.failures else self.heartbeat
            await self._wait(self._beat_now, pause)
            self._beat_now.clear()
            self._warn_overran()
            try:
                await self.extend_leases()
            except (psycopg.Error, OSError) as exc:
                n = beats.failed()
                if beats.worth_a_line():
                    log.warning("heartbeat failed (%s), %d in a row", error_line(exc), n,
                                exc_info=n == 1,
                                extra={"action": "heartbeat_error", "failures": n})  # fmt: skip
                continue
            if failures := beats.ended():
                log.info("heartbeats work again after %d failures", failures,
                         extra={"action": "heartbeat_restored", "failures": failures})  # fmt: skip

    def _warn_overran(self) -> None:
        """Log, once, each attempt whose coroutine runs on OVERRUN_GRACE seconds past its
        timeout, having swallowed the CancelledError that stopped it: its job stays running
        under this worker's heartbeats, and nothing else says so. Looked for at each beat, so
        that jobs cost nothing more for it (a thread past its timeout: see JobExecutor.settle)."""
        now = time.monotonic()
        for running in self._running.values():
            job, task = running.job, running.task
            if job.timeout is None or running.overran or task is None or not task.cancelling():
                continue  # not cancelled: a process task whose wait for a child stops its clock
            if now - running.started >= job.timeout + OVERRUN_GRACE:
                running.overran = True
                reason = running.ctx.cancel_reason or "timeout"
                overran(job, reason, now - running.started, "its coroutine")

    def _beat_retry(self, failures: int) -> float:
        """The pause before a failed heartbeat is tried again. While the worker holds leases
        (jobs running, outcomes waiting, jobs to give back), at most a tenth of the heartbeat
        interval or of what a failed beat leaves of the lease, whichever is shorter (1 s by
        default): the leases have only what is left of them, and a retry 10 s after the
        database came back found them expired and rescued, their jobs running twice.
        Holding none, at most the heartbeat interval: a job claimed meanwhile gets its first
        heartbeat as soon as usual, and an idle worker's outage is not a line a second."""
        held = self._running or self._unfinished or self._acker.pending
        left = self.lease - self.heartbeat  # of the lease, when a beat fails
        cap = min(self.heartbeat, left) / 10 if held else self.heartbeat
        return backoff(failures, min(10.0, max(0.1, cap)))

    def _cancel_hint(self, worker: str | None) -> None:
        # Only a hint: the heartbeat re-reads cancel_requested from the rows it holds. None:
        # the listener has just started listening, and a hint for us may have been missed.
        if worker in (None, self.name) and self._running:
            self._beat_now.set()

    async def extend_leases(self) -> None:
        """Extend the leases of running jobs, of those whose outcomes wait to be written, and
        of those to give back at the stop; stop the running ones lost or asked to cancel."""
        held = list(self._running)
        # Outcomes wait long only for the shutdown's last flush after the acker failed (_fail).
        leases = held + self._acker.holding() + self._unfinished
        beat = await self._ack_db.run(_store.leases_extend(self.name, self.lease, leases))
        self._check_holder(beat.holder)
        alive = beat.leases
        for job_id, attempt in held:
            if (job_id, attempt) not in alive:
                log.warning(
                    "job %s: lease lost; stopping the local attempt %s", job_id, attempt,
                    extra={"action": "lease_lost", "job_id": job_id, "attempt": attempt},
                )  # fmt: skip
                self.cancel_local(job_id, "lease lost", attempt)
            elif alive[job_id, attempt]:
                self.cancel_local(job_id, "cancel requested", attempt)

    def _check_holder(self, holder: _store.Identity | None) -> None:
        """Stop, once, if this worker's row names another process: a namesake took the name
        (two workers that started at about the same moment both found it free). The two
        would rescue and give back each other's running jobs: the rescue of a dead worker
        takes every job leased under its name, and a give-back after a lost claim every one
        it does not know. The row is the namesake's now, and so is the name; this worker
        stops as at stop() (its running jobs finish, none of the namesake's is given back:
        see LEASES_READ), which ends the danger soonest without stopping a job, and run()
        then raises ConfigurationError, so that the process exits non-zero."""
        if not self._registering or holder in (None, self._me) or self._name_taken is not None:
            return  # None: the row is gone, and maintenance registers it again
        hostname, pid = holder[0], holder[1]
        self._name_taken = (
            f"worker name {self.name!r} was taken, while this worker ran, by a worker on"
            f" {hostname} (pid {pid}): give each worker its own --name, or leave it out for a"
            " unique one"
        )
        log.error(
            "%s; this worker stops: its running jobs finish, and it claims no more",
            self._name_taken,
            extra={"action": "worker_name_taken", "worker": self.name, "pid": pid},
        )
        self.stop()

    async def _maintenance_loop(self) -> None:
        # A bug: its passes go on, as other workers' do, less often.
        await repeat("maintenance", self._maintenance_pass, "maintenance_error")

    async def _maintenance_pass(self) -> None:
        # Jitter keeps a fleet of workers from sweeping in lock-step.
        await asyncio.sleep(self.rescue_interval * random.uniform(0.5, 1.0))
        outage = self._maintenance_outage  # the database's; a bug's traceback: see repeat
        if failed := await self._maintain():
            (step, exc), *more = failed
            n = outage.failed()
            log.warning("maintenance: %s failed (%s), %d in a row", step, error_line(exc), n,
                        exc_info=exc if n == 1 else None,
                        extra={"action": "maintenance_error", "failures": n})  # fmt: skip
            _log_failed_too(more)
            return
        if n := outage.ended():
            log.info("maintenance works again after %d failures", n,
                     extra={"action": "maintenance_restored", "failures": n})  # fmt: skip

    async def _register_again(self) -> None:
        """Put this running worker's row back if it is gone (see WORKERS_REGISTER_MISSING)."""
        if self._registering and await self._maint_db.run(self._register(missing_only=True)):
            log.warning(
                "this worker's row in pgqueue.worker_processes was gone (pruned while its"
                " heartbeats failed, or deleted); registered it again",
                extra={"action": "worker_reregistered", "worker": self.name},
            )  # fmt: skip

    async def maintain(self) -> None:
        """One maintenance pass: rescue the jobs of dead workers and expired leases, forget
        long-dead workers, prune history (and old ticks, in a worker without a scheduler),
        warn of what holds the horizon back, vacuum the claim path, and register this running
        worker again if its row is gone.

        The steps are unrelated: one whose statement failed (a permission, a timeout) skips
        none of the others, and the first error is raised once all have run; each failure
        after it is logged. A lost connection ends the pass at once: the next steps would
        only wait to reconnect."""
        if failed := await self._maintain():
            (_, exc), *more = failed
            _log_failed_too(more)
            raise exc

    async def _maintain(self) -> list[tuple[str, Exception]]:
        """Run the maintenance steps (see :meth:`maintain`); the name and error of each that
        failed on the database, in order, up to a lost connection's."""
        failed: list[tuple[str, Exception]] = []
        for name, step in self._maintenance_steps():
            try:
                await step()
            except (psycopg.Error, OSError) as exc:
                failed.append((name, exc))
                if unreachable(exc):
                    break
        return failed

    def _maintenance_steps(self) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
        return [
            ("the rescue", self.rescue),
            ("the workers' prune", lambda: self._maint_db.run(_store.workers_prune())),
            ("the history's prune", lambda: self._pruner.run(self._maint_db)),
            ("the ticks' prune", self._prune_ticks),
            ("the horizon check", self._warn_horizon_holders),  # before a vacuum: it can last
            ("the vacuum", self.vacuum_claim_path),
            ("the re-registration", self._register_again),
        ]

    async def _prune_ticks(self) -> None:
        if self._tick_pruner and self._tick_pruner.due():
            await self._tick_pruner.run(self._maint_db)

    async def rescue(self) -> None:
        """Give back the jobs of expired leases, and at once those of workers that share this
        process table and whose process is gone (see :mod:`pgqueue._worker._liveness`)."""
        dead = await self._dead_neighbours()
        for worker_id, pid, _started in dead:
            log.warning(
                "worker %s (pid %s, same host) is gone: rescuing its jobs now", worker_id, pid,
                extra={"action": "worker_dead", "worker": worker_id, "pid": pid},
            )  # fmt: skip
        rescued = await self._maint_db.run(_store.leases_rescue(dead))
        requeued, failed, cancelled = rescued[:3]
        if requeued or failed or cancelled:
            log.warning(
                "rescued %s jobs of lost workers (%s requeued; %s failed, out of attempts;"
                " %s cancelled, as asked)", requeued + failed + cancelled, requeued, failed,
                cancelled, extra={"action": "jobs_rescued", "requeued": requeued,
                                  "failed": failed, "cancelled": cancelled},
            )  # fmt: skip
            self.events.jobs_rescued(requeued, failed + cancelled)

    async def _dead_neighbours(self) -> list[tuple[str, int, int]]:
        if self._host_key is None:
            return []
        rows = await self._maint_db.run(_store.workers_on_host(self._host_key))
        me = (os.getpid(), self._process_started)
        return [
            (worker_id, pid, started)
            for worker_id, pid, started in rows
            if (pid, started) != me and is_dead(pid, started)
        ]

    async def vacuum_claim_path(self) -> None:
        """Vacuum active_jobs once it holds ``vacuum_threshold`` dead rows (and a fifth of its
        live ones: vacuuming a big backlog costs more than the dead rows it removes).

        Autovacuum looks at a table once a minute by default; under heavy churn a minute of
        dead claim-index entries is what every claim must step over, so workers help out.
        The fleet helps as much as one worker would: a pass skips the vacuum if any vacuum of
        the table ended less than half a rescue interval ago (the shortest gap between one
        worker's own passes). Eight workers that each vacuumed cost a drain as much time in
        VACUUM as in claiming.
        """
        if not self.vacuum_threshold:
            return
        dead, live, since = await self._maint_db.run(_store.active_dead_tuples())
        due = dead >= max(self.vacuum_threshold, live // 5) and since >= self.rescue_interval / 2
        if due and await self._may_vacuum():
            await self._maint_db.run(_store.active_vacuum())

    async def _may_vacuum(self) -> bool:
        """Whether this worker's role may vacuum active_jobs, asked once; said once if not.
        PostgreSQL skips a vacuum it may not run with a warning to this session alone, which
        went unseen at every pass."""
        if self._vacuum_permitted is None:
            self._vacuum_permitted = await self._maint_db.run(_store.active_vacuum_permitted())
            if not self._vacuum_permitted:
                log.info(
                    "this worker's role may not vacuum pgqueue.active_jobs (only its owner may,"
                    " or on PostgreSQL 17 and later a role granted MAINTAIN on it): autovacuum"
                    " clears its dead rows alone",
                    extra={"action": "vacuum_not_permitted"},
                )
        return self._vacuum_permitted

    async def _warn_horizon_holders(self) -> None:
        """Warn, once per holder, of what has kept the row versions of finished jobs from being
        removed for more than ``long_transaction_warning`` seconds: a transaction open or
        prepared that long, a replication slot or standby seen holding the same xmin that long.
        While one does, the queue's table and indexes grow, and claims from the head of the
        queue step over more of them (docs/operations.md, "Claims got slow")."""
        after = self.long_transaction_warning
        if not after:
            return
        found = await self._maint_db.run(_store.horizon_holders(after))
        for holder, seconds in self._horizon.due(self._horizon.held(found), after):
            warn(holder, seconds)

    async def run_sql(self, query: _store.Query[Any]) -> Any:
        """Run one store query on the worker's maintenance connection (for services)."""
        return await self._maint_db.run(query)

    # -- shutdown ---------------------------------------------------------------------------

    async def _stop(self, background: list[asyncio.Task[None]], hurry: bool) -> None:
        """Shut down in a task of its own, which a cancellation of run() does not cut short:
        cancelled meanwhile (an application's own shutdown), or already (``hurry``: after
        stop()), the stop waits no longer for running jobs nor callbacks, and its last writes
        (outcomes, jobs put back, the worker's row) still run, for up to CANCELLED_STOP
        seconds; then CancelledError goes on. A second cancellation ends that wait too."""
        shutdown = asyncio.ensure_future(self._shutdown(background))
        shutdown.add_done_callback(self._stop_raised)
        try:
            if hurry:
                await self._hurried(shutdown)
            else:
                await asyncio.shield(shutdown)
        except asyncio.CancelledError:
            if not shutdown.done() and not self._hurry.is_set():
                await self._hurried(shutdown)
            raise
        finally:
            if shutdown.done() and not shutdown.cancelled():
                shutdown.exception()  # retrieved: raised by the shield, or logged as it ended

    async def _hurried(self, shutdown: asyncio.Future[None]) -> None:
        """Make the ``shutdown`` under way hurry, and wait for it: cut it short after
        CANCELLED_STOP seconds, or at once if run() is cancelled again, and give it then up to
        CANCEL_GRACE seconds to close the worker's connections as it unwinds."""
        running, began = len(self._running), time.monotonic()
        log.warning(
            "run() cancelled during the shutdown: %s running jobs are stopped and put back now;"
            " the last writes get up to %s s", running, CANCELLED_STOP,
            extra={"action": "worker_cancelled", "worker": self.name, "running": running},
        )  # fmt: skip
        self._hurry.set()
        self._stop_running()  # now, wherever the shutdown is
        try:
            await asyncio.wait([shutdown], timeout=CANCELLED_STOP)
        finally:
            if not shutdown.done():
                log.error(
                    "the stop of the cancelled worker %s was cut short after %.1f s, its last"
                    " writes unfinished: the outcomes and jobs it had not written stay running"
                    " until their leases expire (lease %g s), and run again", self.name,
                    time.monotonic() - began, self.lease,
                    extra={"action": "worker_stop_cut", "worker": self.name},
                )  # fmt: skip
                shutdown.cancel()
                await asyncio.wait([shutdown], timeout=CANCEL_GRACE)

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        self.stop()
        failure: psycopg.Error | OSError | None = None
        try:  # cut short (see _hurried), the stop still ends its loops and closes its connections
            await self._end_jobs()
            await self._finish_writes()
        except (psycopg.Error, OSError) as exc:
            failure = exc
        finally:
            try:  # cut short here too (see _hurried), it still closes its connections
                await self._end_loops(background)
            finally:
                self._writes_done = True  # if the last flush failed: the acker has stopped now
                left = self._drop_unwritten()
                await self._close_connections()
        if failure is not None:
            if not left:
                raise self._stop_failed(failure)
            raise self._stopped_unwritten(left, failure) from failure
        done = self.stats
        log.info(
            "worker %s stopped: jobs claimed %d (%d succeeded, %d failed, %d retried,"
            " %d rescheduled, %d cancelled)",
            self.name, done.claimed, done.succeeded, done.failed, done.retried, done.rescheduled,
            done.cancelled,
            extra={"action": "worker_stopped", "worker": self.name},
        )  # fmt: skip

    async def _end_loops(self, background: list[asyncio.Task[None]]) -> None:
        """After the last writes (a retry they record as failed calls its on_failure then),
        let callbacks end, up to the shutdown timeout; then end the worker's loops, and wait
        for them unless the stop was cut short (see _hurried) before: a loop slow to unwind
        then kept the connections open for as long, as a cut here no longer does."""
        try:
            await self.events.drain(self.shutdown_timeout, self._hurry)
        finally:
            for part in background:
                part.cancel()
        shutdown = asyncio.current_task()  # its task: _hurried cancels it to cut it short
        if shutdown is None or not shutdown.cancelling():
            await asyncio.gather(*background, return_exceptions=True)

    async def _end_jobs(self) -> None:
        """Let the running jobs finish, up to the shutdown timeout (or until hurried: see
        _stop); then stop those left, and put their jobs back with the last writes."""
        self._run_inline()  # claimed jobs are finished and acknowledged, as tasks would be
        tasks = [r.task for r in self._running.values() if r.task is not None]
        # Without heartbeats (_fail) the leases of the jobs would expire while they ran on.
        if tasks and (self._failure is None or self._failure[0] != "heartbeat"):
            log.info(
                "waiting up to %s s for %s running job%s", self.shutdown_timeout, len(tasks),
                "" if len(tasks) == 1 else "s",
                extra={"action": "worker_draining", "worker": self.name, "running": len(tasks)},
            )  # fmt: skip
            await all_done(tasks, self.shutdown_timeout, self._hurry)
        self._stop_running()
        if tasks:
            done, stuck = await asyncio.wait(tasks, timeout=CANCEL_GRACE)
            await asyncio.gather(*done, return_exceptions=True)
            self._abandon(stuck)
        self._executor.shutdown()

    def _stop_running(self) -> None:
        """Stop every running attempt, to put its job back at the stop."""
        for job_id, attempt in list(self._running):
            self.cancel_local(job_id, "shutdown", attempt)

    def _stop_failed(self, failure: BaseException) -> BaseException:
        """Log, and return to raise, the failure of a last write after the outcomes (putting
        the unfinished jobs back, deregistering): a cancelled run() raises no other error."""
        log.error(
            "the stop of worker %s failed after writing its outcomes (%s): the jobs it had not"
            " put back stay running until their leases expire (lease %g s), and run again",
            self.name, first_line(failure), self.lease,
            extra={"action": "worker_stop_failed", "worker": self.name},
        )  # fmt: skip
        return failure

    def _stop_raised(self, shutdown: asyncio.Future[None]) -> None:
        """Log a bug the shutdown raised: a cancelled run() raises its CancelledError instead
        (the database's errors are logged where they are met)."""
        error = None if shutdown.cancelled() else shutdown.exception()
        if error is not None and not isinstance(error, (PgQueueError, psycopg.Error, OSError)):
            log.error(
                "the stop of worker %s raised %s: %s", self.name, type(error).__name__, error,
                exc_info=error, extra={"action": "worker_stop_failed", "worker": self.name},
            )  # fmt: skip

    def _stopped_unwritten(self, left: int, failure: BaseException) -> PgQueueError:
        """Log, and return to raise, what a stop whose last writes failed left undone."""
        message = (
            f"the worker stopped with {left} outcome{'s' if left > 1 else ''} unwritten"
            f" ({first_line(failure)}): their jobs stay running until their leases expire"
            f" (lease {self.lease:g} s), and are then rescued: they run again, or fail as"
            " 'worker lost' when out of attempts"
        )
        log.error(message, extra={"action": "outcome_unwritten"})
        return PgQueueError(message)

    def _drop_unwritten(self) -> int:
        """The acker has stopped: an outcome it still holds (the last flush failed, and the
        acker after it) is never written, and leaves worker.stats (see _unwritten). Returns
        how many there were."""
        left = self._acker.drop()
        for outcome in left:
            log.warning(
                "job %s attempt %s: its outcome (%s) was not written by the stop; the job stays"
                " running until its lease expires, and runs again",
                outcome.job_id, outcome.attempt, outcome.state,
                extra={"action": "outcome_unwritten", "job_id": outcome.job_id,
                       "attempt": outcome.attempt},
            )  # fmt: skip
            self._unwritten(outcome)
        return len(left)

    def _abandon(self, stuck: set[asyncio.Task[None]]) -> None:
        """Leave coroutines that ignored their cancellation: their jobs go back to the queue
        with the others stopped at shutdown, and they stop wherever they were when the
        process exits (the CLI exits without waiting for them)."""
        for running in [r for r in self._running.values() if r.task in stuck]:
            job = running.job
            log.warning(
                "job %s: its task ignored its cancellation for %s s; abandoned, its job put back"
                " in the queue", job.id, CANCEL_GRACE,
                extra={"action": "job_abandoned", "job_id": job.id, "attempt": job.attempt},
            )  # fmt: skip
            self._unfinished.append((job.id, job.attempt))
            if running.ctx.cancel_reason != "lease lost":  # a stale copy: the job is not its
                # Reported as those stopped are if the release ends it cancelled (_released).
                stopped = (running.ctx, running.started, time.monotonic())
                self._stopped[job.id, job.attempt] = stopped
        self._abandoned += stuck

    def abandoned_coroutines(self) -> int:
        """Async tasks still running after shutdown, having ignored their cancellation (their
        jobs were put back in the queue, and how they end is not written): ``asyncio.run``
        would wait for them forever."""
        return sum(not task.done() for task in self._abandoned)

    async def _close_connections(self) -> None:
        """Close the worker's connections, and the metrics server's socket."""
        if self._metrics is not None:
            self._metrics.close()
        for db in (self._claim_db, self._ack_db, self._maint_db):
            await db.close()

    async def _finish_writes(self) -> None:
        await _revive(self._ack_db)
        try:
            try:
                await self._acker.flush()
            except (psycopg.Error, OSError):
                # Its connection broke: the statement may have committed, its reply lost. Once
                # more, on a new connection, which finds what it wrote (see Acker._doubtful_kind).
                await self._acker.flush()  # failed, it leaves the acker writing until stopped
        except (psycopg.Error, OSError):
            raise
        except Exception as exc:  # a bug (_fail): its outcomes stay unwritten, the rest goes on
            self._fail("acker", exc)
        self._writes_done = True
        if self._claim_cut or self._claim_lost:  # their jobs, if it committed, run nowhere
            # On the acker's connection, which has just worked: the claimer's would have to be
            # opened again, and a stop whose new connections fail left its jobs to their leases.
            await self._end_broken_claim(self._ack_db)
            self._unfinished += await self._unknown_claims(self._ack_db)
        if self._unfinished:
            released, ended = await self._ack_db.run(_store.leases_release(self._unfinished))
            self._released(set(ended))
            self._unfinished = []  # given back: their leases are no longer the heartbeats' own
            log.info(
                "put %s unfinished job back in its queue" if released == 1
                else "put %s unfinished jobs back in their queues", released,
                extra={"action": "jobs_released", "count": released},
            )  # fmt: skip
        await _revive(self._maint_db)  # only now: a vacuum running on it must not delay the above
        await self._maint_db.run(_store.workers_delete(self.name, self._me))

    def _released(self, cancelled: set[int]) -> None:
        """Report the jobs stopped at shutdown that the release ended cancelled, as asked
        while they ran (see LEASES_RELEASE), as any cancelled job is: the counts, the log,
        the listeners and the job_ended hooks. Those put back did not end. Matched by job id:
        only a job's live claim is in _stopped (a stale copy, its lease lost, never is)."""
        for claim in dict.fromkeys(self._unfinished):  # an abandoned attempt may be there twice
            stopped = self._stopped.pop(claim, None)
            if stopped is None or claim[0] not in cancelled:
                continue
            ctx, started, ended = stopped
            outcome = Outcome(*claim, "cancelled", error="cancelled on request")
            self.events.job_ended(ctx, ended - started, outcome)
            self._count("cancelled")
            task = self.app.get_task(ctx.task)
            self.events.job_finished(ctx, outcome, started + time.monotonic() - ended, task)


# Worker options the start record states apart (queues, concurrency, name, database), or not.
_NOT_SETTINGS = frozenset({"self", "app", "queues", "concurrency", "dsn", "name", "services"})


def _changed(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a Worker (its ``__init__``'s locals) given other values than the
    defaults, but those the start record states apart."""
    defaults = inspect.signature(Worker.__init__).parameters
    return {
        name: value for name, value in options.items()
        if name in defaults and name not in _NOT_SETTINGS and value != defaults[name].default
    }  # fmt: skip


def _unlike_but_when(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Whether two reads of a worker's row (WORKERS_READ) differ but for how long ago it was
    last seen, which grows between them: its holder beat, or another registered."""
    return row[:4] + row[5:] != other[:4] + other[5:]


def _oldest(held: dict[tuple[int, int], list[_Held]], claim: tuple[int, int]) -> _Held | None:
    """Forget, and return, the oldest report ``held`` for ``claim`` (an attempt given back
    whose ack's reply was lost may end again before that ack is settled)."""
    reports = held.get(claim)
    if not reports:
        return None
    first = reports.pop(0)
    if not reports:
        del held[claim]
    return first


async def _session_ended(db: Db, backend: _store.Backend, application: str) -> bool:
    """End ``backend`` if it still runs as ``application`` (see store.BACKEND_END), and
    wait until it is gone, up to 10 s: whether it is."""
    if not await db.run(_store.backend_end(backend, application)):
        return True
    for _ in range(200):
        if not await db.run(_store.backend_alive(backend)):
            return True
        await asyncio.sleep(0.05)
    return False


async def _revive(db: Db) -> None:
    """Notice a connection dropped while idle (a server restart, pg_terminate_backend) with a
    ping, which Db.run then reopens, rather than with a write shutdown would not retry."""
    with contextlib.suppress(psycopg.OperationalError):
        await db.run(_store.ping())


def _report_stopped(part: asyncio.Future[None]) -> None:
    """Log a service (or other background part) that ended with an error: it used to end
    unseen, its error kept until shutdown gathered it."""
    error = None if part.cancelled() else part.exception()
    if error is not None:
        coro = part.get_coro() if isinstance(part, asyncio.Task) else None
        name = getattr(coro, "__qualname__", repr(part))
        log.error(
            "worker service %s stopped: %s: %s", name, type(error).__name__, error,
            exc_info=error, extra={"action": "service_error", "service": name},
        )  # fmt: skip


def _safe_dsn(dsn: str) -> str:
    """The DSN with its secrets hidden, for logs: the password, and the passphrase of the SSL
    key (sslpassword), or any other libpq adds (oauth_client_secret)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    for key in info:
        if key.endswith("password") or "secret" in key:
            info[key] = "***"
    return psycopg.conninfo.make_conninfo("", **info)


def _log_failed_too(failed: list[tuple[str, Exception]]) -> None:
    """A line for each maintenance step that failed after the pass's first failure."""
    for name, exc in failed:
        log.warning("maintenance: %s failed too (%s)", name, error_line(exc),
                    extra={"action": "maintenance_error"})  # fmt: skip


Worker.__module__ = "pgqueue"
