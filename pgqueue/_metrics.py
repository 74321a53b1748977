"""Prometheus metrics served by a worker (``pip install 'pgqueue[prometheus]'``).

Counters and histograms are fed by the worker's job events, in memory. Queue depth is read by
one bounded query every ``interval`` seconds (a capped count on the claim index), never by a
scrape, so a scraper cannot load the database however often it comes.

With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client keeps every value in that directory's
files, one set per process: each worker then serves the totals of every process that writes
there (counters summed, gauges the live workers' own mode), and removes its live gauges' files
at its stop, and those of any process that died without doing so (on Linux, also once its pid
names a process started since: each worker leaves a marker of its pid and start time).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import json
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import _store
from pgqueue._errors import ConfigurationError, error_line, first_line
from pgqueue._hooks import JobEvent
from pgqueue._worker._horizon import HorizonWatch
from pgqueue._worker._liveness import is_dead, started_if_readable
from pgqueue._worker._outage import Outage
from pgqueue._worker._repeat import repeat

if TYPE_CHECKING:
    from pgqueue._worker import Worker
    from pgqueue._worker._executor import ClaimedJob

log = logging.getLogger("pgqueue.worker")

DEPTH_CAP = 10_000
UNREGISTERED = "(unregistered)"  # the task label of jobs whose task the app does not register
# From 1 ms (a no-op's attempt) to 6 h, for durations too: jobs of minutes and of hours are
# common, and Prometheus' default buckets stop at 10 s, beyond which a quantile cannot tell a
# 2-minute attempt from an hour's (nor, past the top bound, one of two hours from five).
SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
                   900, 3600, 7200, 21600)  # fmt: skip
# Seconds a sweep or a worker's start waits for the directory's lock, then goes on without it:
# either holds it for a moment, so a holder that keeps it is stuck (stopped as it held it).
LOCK_WAIT = 5.0


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "metrics need prometheus_client: pip install 'pgqueue[prometheus]'"
        ) from None
    return prometheus_client


def _multiprocess() -> Any:
    _prometheus()
    import prometheus_client.multiprocess

    return prometheus_client.multiprocess


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, if it is set; raises
    ConfigurationError if it is not a directory (prometheus_client cannot write there), or if
    prometheus_client chose its mode, when first imported, without the variable as it is now
    (the values would be in memory, the port serving the directory's files, or the reverse)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # Private to prometheus_client (0.20 and later have it): without it, nothing is checked.
    in_files = getattr(_prometheus().values.ValueClass, "_multiprocess", bool(path))
    if path and not in_files:
        raise ConfigurationError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported, which then"
            " chose to keep values in memory: set it before the process imports prometheus_client"
            " (in its environment)"
        )
    if path == "" and in_files:  # prometheus_client would write into the current directory
        raise ConfigurationError("PROMETHEUS_MULTIPROC_DIR is empty: name a directory, or unset it")
    if path is None and in_files:
        raise ConfigurationError(
            "PROMETHEUS_MULTIPROC_DIR was unset after prometheus_client was imported with it:"
            " leave it set for the process's life"
        )
    if path and not os.path.isdir(path):
        raise ConfigurationError(f"PROMETHEUS_MULTIPROC_DIR is not a directory: {path}")
    return path or None


def _owners(path: str) -> dict[int, list[int]]:
    """The start times of the processes of each pid whose workers left their marker in
    ``path`` (``pgqueue_owner_<pid>_<start time>``, Linux only)."""
    owners: dict[int, list[int]] = {}
    for marker in Path(path).glob("pgqueue_owner_*_*"):
        pid, started = marker.name.rsplit("_", 2)[-2:]
        # A number no pid_t can hold is another program's identifier: os.kill() would raise.
        if pid.isdigit() and started.isdigit() and int(pid) < 2**31:
            owners.setdefault(int(pid), []).append(int(started))
    return owners


def _dead(name: str, owners: dict[int, list[int]]) -> int | None:
    """The process id a live gauge's file is named after, if that process is gone: no process
    has the pid, or a worker's marker names it and every marked process of the pid is dead
    (the pid reused by a process started since); None for a live one's, or a name that is no
    process id (another program's identifier): left."""
    pid = name.rsplit("_", 1)[-1]
    if not pid.isdigit():
        return None
    if int(pid) in owners:
        return None if any(not is_dead(int(pid), s) for s in owners[int(pid)]) else int(pid)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return int(pid)
    except (OSError, OverflowError):  # another user's process, or a number no pid can be
        return None
    return None


def sweep_dead(path: str, unremovable: set[int]) -> None:
    """Remove the live gauges of the processes that died without their stop removing them
    (killed): the live modes would otherwise add their last values for ever. A file that
    cannot be removed is logged once (its pid added to ``unremovable``) and left. Waits its
    turn for the directory's lock (up to ``LOCK_WAIT`` seconds)."""
    with _locked(path, LOCK_WAIT):
        _sweep(path, unremovable)


def _sweep(path: str, unremovable: set[int]) -> None:
    owners = _owners(path)
    for file in Path(path).glob("gauge_live*_*.db"):
        pid = _dead(file.stem, owners)
        if pid is None or pid in unremovable:
            continue
        try:
            _multiprocess().mark_process_dead(pid, path)
        except FileNotFoundError:
            pass  # another worker's sweep removed it first
        except OSError as exc:
            unremovable.add(pid)
            log.warning("cannot remove the live gauges of dead process %d (%s): they are served"
                        " until removed", pid, error_line(exc),
                        extra={"action": "metrics_sweep_error", "pid": pid})  # fmt: skip
    for pid, starts in owners.items():
        for started in starts:
            if is_dead(pid, started) and pid not in unremovable:
                _unlink(_marker(path, pid, started))


@contextlib.contextmanager
def _locked(path: str, wait: float) -> Iterator[None]:
    """Hold the lock of directory ``path``: a sweep holds it from listing the markers to
    removing the files, a worker's start from marking its pid to making its files, so that a
    sweep cannot remove the new files of a worker given a dead worker's pid. Where it cannot
    be had (a lock file that cannot be opened, a file system without locks), or within
    ``wait`` seconds, the caller goes on without it, as before the lock was taken."""
    fd = _lock_file(path)
    try:
        if fd is not None:
            _lock(fd, time.monotonic() + wait)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _lock(fd: int, deadline: float) -> None:
    """Lock ``fd``, waiting until ``deadline`` (``time.monotonic()``) for it, or give up."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)
        except OSError:  # no locks here (NFS without its lock daemon, say)
            return


def _lock_file(path: str) -> int | None:
    """The directory's lock file, open for writing (NFS takes an exclusive lock on no other),
    or for reading if it may not be written (another user's); None if it cannot be opened."""
    name = os.path.join(path, "pgqueue_sweep.lock")
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        with contextlib.suppress(OSError):  # O_NONBLOCK: a named pipe there opens at once
            return os.open(name, flags | os.O_NONBLOCK, 0o644)
    return None


def _claim(path: str, pid: int, started: int) -> None:
    """Mark ``pid``'s files in ``path`` as those of its process started at ``started``, first
    removing the live gauges a dead process of the pid left (its marker names another start):
    they would be opened as the new process's own. Under the directory's lock."""
    dead = [s for s in _owners(path).get(pid, []) if s != started]
    if dead:
        _multiprocess().mark_process_dead(pid, path)
    for old in dead:
        _unlink(_marker(path, pid, old))
    _marker(path, pid, started).touch()


def mark_child() -> None:
    """A process pool child's first set-up when its worker serves metrics in multiprocess
    mode (Linux): the child's marker, so that the live gauges a task's own code makes in it
    are told from those of another process given its pid, as a worker's are. A marker that
    cannot be written leaves the child swept as before, by its pid alone: not the job's error."""
    path, started = os.environ.get("PROMETHEUS_MULTIPROC_DIR"), started_if_readable(os.getpid())
    if path and started is not None:
        with contextlib.suppress(OSError), _locked(path, LOCK_WAIT):
            _claim(path, os.getpid(), started)


def _marker(path: str, pid: int, started: int) -> Path:
    return Path(path, f"pgqueue_owner_{pid}_{started}")


def _unlink(marker: Path) -> None:
    with contextlib.suppress(OSError):  # removed by another sweep, or another user's
        marker.unlink()


class _Directory:
    """prometheus_client's multiprocess collector of the files in ``path``, leaving out those it
    cannot read (truncated, corrupt, another program's: it raised, and every scrape of the
    host's ports answered 500), each logged once, so that the others are still served. Each
    file is checked and read through one descriptor: one checked and then opened again by name
    could be swapped for a named pipe in between, and hang the scrape."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.unreadable: set[str] = set()  # the files logged
        self.lock = threading.Lock()  # the port serves scrapes in threads, several at once
        self.readers = _readers()

    def collect(self) -> Any:
        """Every process's metrics, merged as MultiProcessCollector merges them."""
        files = glob.glob(os.path.join(self.path, "*.db"))  # as MultiProcessCollector lists
        if self.readers is None:  # read again by name, as prometheus_client reads them
            merge = _multiprocess().MultiProcessCollector.merge
            return merge([file for file in files if self._read(file) is not None])
        values, accumulate = self.readers
        merged: dict[str, Any] = {}
        for file in files:
            _merge(merged, self._metrics(file, values))
        return accumulate(merged, True)

    def _metrics(self, file: str, values: Any) -> dict[str, Any]:
        """The metrics of ``file`` read with ``values`` (prometheus_client's reader), none if
        it cannot be read (logged) or is being made."""
        data = self._read(file)
        try:
            return {} if data is None else _file_metrics(file, data, values)
        except Exception as exc:  # whatever garbage makes the reader raise
            self._unreadable(file, error_line(exc))
            return {}

    def _read(self, file: str) -> bytes | None:
        """The used bytes of ``file``, read through the descriptor it is checked on, or None
        for one to leave out (logged if it cannot be read)."""
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None  # removed since the directory was listed
        except OSError as exc:
            self._unreadable(file, error_line(exc))
            return None
        try:
            return self._data(file, fd)
        except OSError as exc:
            self._unreadable(file, error_line(exc))
            return None
        finally:
            os.close(fd)

    def _data(self, file: str, fd: int) -> bytes | None:
        """The bytes of ``file`` (open as ``fd``) its header says are used, or None for one to
        leave out: no regular file (opening a named pipe by name waits for a writer, for ever),
        empty (prometheus_client makes a file empty, then sizes it), or shorter than its header
        says (garbage there made the reader read up to 2 GB)."""
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            self._unreadable(file, "not a regular file")
            return None
        head = os.pread(fd, 4, 0)
        if not head:
            return None
        # Sized after the header is read: a growing file is sized before its header says so.
        size = os.fstat(fd).st_size
        if len(head) < 4:
            self._unreadable(file, f"{size} bytes, shorter than its header")
            return None
        used = struct.unpack("i", head)[0]
        data = os.pread(fd, used, 0) if 8 < used <= size else b""  # 8 and less: no values
        if used > size or len(data) < used:  # (cut short since it was sized)
            self._unreadable(file, f"its header says {used} bytes, it has {max(size, len(data))}")
            return None
        return data

    def _unreadable(self, file: str, why: str) -> None:
        """Log, once, that ``file`` is left out of the scrapes."""
        with self.lock:
            logged = file in self.unreadable
            self.unreadable.add(file)
        if not logged:
            log.error("cannot read %s (%s): its metrics are left out of the scrapes until it"
                      " reads or is removed", file, why,
                      extra={"action": "metrics_file_unreadable", "file": file})  # fmt: skip


def _readers() -> tuple[Any, Any] | None:
    """prometheus_client's reader of a file's bytes and its sum of the files' metrics, both
    private (0.20 to 0.26 have them), or None, logged, for a release without them: the scrape
    then checks each file and reads it again by name, as prometheus_client does."""
    from prometheus_client import mmap_dict

    values = getattr(mmap_dict, "_read_all_values", None)  # what read_all_values_from_file calls
    accumulate = getattr(_multiprocess().MultiProcessCollector, "_accumulate_metrics", None)
    if values is not None and accumulate is not None:
        return values, accumulate
    log.warning("this prometheus_client has no mmap_dict._read_all_values or"
                " MultiProcessCollector._accumulate_metrics: the metrics files are opened again by"
                " name to be read, and a garbage file in them answers 500 to the scrapes",
                extra={"action": "metrics_files_by_name"})  # fmt: skip
    return None


def _file_metrics(file: str, data: bytes, values: Any) -> dict[str, Any]:
    """The metrics of multiprocess file ``file`` whose used bytes are ``data``, read with
    ``values`` as ``MultiProcessCollector._read_metrics`` reads a file it opens by name: a
    gauge's samples labelled with the pid its file's name ends in, the others' without a time."""
    from prometheus_client.metrics_core import Metric

    parts = os.path.basename(file).split("_")
    gauge = parts[0] == "gauge"
    metrics: dict[str, Any] = {}
    for key, value, timestamp, _ in values(data, len(data)) if data else ():
        metric_name, name, labels, help_text = json.loads(key)
        metric = metrics.get(metric_name) or metrics.setdefault(
            metric_name, Metric(metric_name, help_text, parts[0])
        )
        labels_key = tuple(sorted(labels.items()))
        if gauge:
            metric._multiprocess_mode = parts[1]
            metric.add_sample(name, (*labels_key, ("pid", parts[2][:-3])), value, timestamp)
        else:
            metric.add_sample(name, labels_key, value)
    return metrics


def _merge(merged: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Add one file's ``metrics`` to those ``merged`` so far, as MultiProcessCollector adds
    each file's samples to the metric the first file of its name made."""
    for name, metric in metrics.items():
        first = merged.setdefault(name, metric)
        if first is not metric:
            first.samples += metric.samples
            if hasattr(metric, "_multiprocess_mode"):
                first._multiprocess_mode = metric._multiprocess_mode


class _Served:
    """What a worker's port serves: ``source``'s metrics without their ``_created`` samples
    (each counter and histogram series had one, a series more for Prometheus to store per
    counter that tells nothing here: every series starts with the worker, at 0; multiprocess
    mode has none), described as the worker's ``own`` registry's, so that a scrape asking for
    some by name (``/metrics?name[]=...``) finds them."""

    def __init__(self, source: Any, own: Any) -> None:
        self.source = source
        self.own = own

    def describe(self) -> list[Any]:
        """The worker's metrics, for the names a scrape may ask for."""
        return list(self.own.collect())

    def collect(self) -> Iterator[Any]:
        """Each metric of the source, its ``_created`` samples left out."""
        for family in self.source.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class WorkerMetrics:
    """The metrics of one worker, in a registry of their own."""

    def __init__(self, worker: Worker) -> None:
        p = _prometheus()
        self.worker = worker
        self.multiprocess = multiprocess_dir()
        self.unremovable: set[int] = set()  # dead processes whose gauges the sweep cannot remove
        self.files_gone = False  # this process's files were removed under it (logged once)
        self.horizon = HorizonWatch()
        self.registry = p.CollectorRegistry()
        self.started = started_if_readable(os.getpid())
        try:
            with self._claimed():
                self._make(p, self.registry)
            self._start_at_zero()
        except OSError as exc:  # multiprocess mode: prometheus_client cannot write its files
            raise ConfigurationError(
                f"cannot write in PROMETHEUS_MULTIPROC_DIR {self.multiprocess}: {first_line(exc)}"
            ) from exc
        if self.multiprocess is None:  # else read from the files, kept up by the events
            self.running.set_function(lambda: worker.running)

    @contextlib.contextmanager
    def _claimed(self) -> Iterator[None]:
        """In multiprocess mode, on Linux, mark this process's live gauges as its own (the
        sweep tells them from those of a later process given its pid) while they are made,
        first removing those a dead worker of its pid left: they would be opened as its own."""
        if self.multiprocess is None or self.started is None:
            yield
            return
        with _locked(self.multiprocess, LOCK_WAIT):
            _claim(self.multiprocess, os.getpid(), self.started)
            yield

    def _make(self, p: Any, r: Any) -> None:
        """The worker's metrics, in registry ``r`` (in multiprocess mode, each process's
        files are made with its first metrics)."""
        self.finished = p.Counter("pgqueue_jobs_finished", "Jobs that reached a final state.",
                                  ["task", "queue", "state"], registry=r)  # fmt: skip
        self.retries = p.Counter("pgqueue_job_retries", "Failed attempts that will be retried.",
                                 ["task", "queue"], registry=r)  # fmt: skip
        self.rescheduled = p.Counter(
            "pgqueue_jobs_rescheduled", "Attempts that raised pgqueue.Retry (no failure): the job"
            " runs again later.", ["task", "queue"], registry=r,
        )  # fmt: skip
        self.rescued = p.Counter(
            "pgqueue_jobs_rescued", "Jobs of lost workers this worker's rescue requeued or ended.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.duration = p.Histogram("pgqueue_job_duration_seconds", "Time to run one attempt.",
                                    ["task", "queue"], buckets=SECONDS_BUCKETS,
                                    registry=r)  # fmt: skip
        self.latency = p.Histogram(
            "pgqueue_job_start_latency_seconds", "Time from runnable (enqueue or run_at) to start.",
            ["queue"], buckets=SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        # Read by every worker: with several in multiprocess mode, the live ones' latest.
        latest = "livemostrecent"
        self.depth = p.Gauge("pgqueue_queue_depth", f"Runnable jobs (capped at {DEPTH_CAP}).",
                             ["queue"], registry=r, multiprocess_mode=latest)  # fmt: skip
        self.estimate = p.Gauge("pgqueue_active_jobs_estimate",
                                 "Queued + running jobs, all queues (planner estimate).",
                                 registry=r, multiprocess_mode=latest)  # fmt: skip
        self.oldest_transaction = p.Gauge(
            "pgqueue_oldest_transaction_seconds",
            "Seconds the oldest holder has held back the cleanup of the queue's tables "
            "(a slot or a standby: since this worker first saw it at the same xmin).",
            registry=r, multiprocess_mode=latest,
        )  # fmt: skip
        self.read_at = p.Gauge(
            "pgqueue_queue_depth_read_timestamp_seconds", "When the depth, the estimate and the"
            " oldest holder were last read (Unix time): a failed read leaves them as they were.",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.running = p.Gauge("pgqueue_jobs_running", "Jobs the worker (or, in multiprocess"
                               " mode, the live workers) runs now.", registry=r,
                               multiprocess_mode="livesum")  # fmt: skip

    def served(self) -> Any:
        """The registry to serve: this worker's own without its ``_created`` series, or in
        multiprocess mode one that reads every process's files (which have none)."""
        source = self.registry
        if self.multiprocess is not None:
            source = _Directory(self.multiprocess)
        registry = _prometheus().CollectorRegistry(auto_describe=False)
        registry.register(_Served(source, self.registry))
        return registry

    def _count_running(self) -> None:
        if self.multiprocess is not None:
            self.running.set(self.worker.running)

    def _start_at_zero(self) -> None:
        """Serve the counters' known series at 0 from the start: rate() and increase() cannot
        see the step into a series that first appears at 1, and the documented alerts missed
        a first rescue that ended jobs, or a task's first failure."""
        for outcome in ("requeued", "ended"):
            self.rescued.labels(outcome)
        for name, task in self.worker.app.tasks.items():
            if task.options.queue in self.worker.queues:  # its own queue, if this worker's
                self.retries.labels(name, task.options.queue)
                self.rescheduled.labels(name, task.options.queue)
                for state in ("succeeded", "failed", "cancelled"):
                    self.finished.labels(name, task.options.queue, state)

    def on_finished(self, event: JobEvent) -> None:
        """Count one finished attempt (a worker events listener)."""
        job = event.job
        # A row may name any task: the names the app does not know share one label, so that
        # they cannot make series without bound (the job's log record names it).
        task = job.task if job.task in self.worker.app.tasks else UNREGISTERED
        self.duration.labels(task, job.queue).observe(event.duration)
        if event.state == "retrying":
            # A failure's retry has its error; a task's Retry, no failure, has none.
            counter = self.retries if event.error is not None else self.rescheduled
            counter.labels(task, job.queue).inc()
        else:
            self.finished.labels(task, job.queue, event.state).inc()

    def on_rescued(self, requeued: int, ended: int) -> None:
        """Count the jobs of lost workers one rescue requeued and ended."""
        self.rescued.labels("requeued").inc(requeued)
        self.rescued.labels("ended").inc(ended)

    def on_claimed(self, job: ClaimedJob) -> None:
        """Observe how long a claimed job waited to start."""
        self.latency.labels(job.queue).observe(job.waited)
        self._count_running()

    def on_left(self, job: ClaimedJob) -> None:
        """Count the jobs running once an attempt stopped, however it ended (a lost lease and
        the shutdown's stop finish no event)."""
        self._count_running()

    async def refresh_depth(self, interval: float) -> None:
        """Every ``interval`` seconds, forever: :meth:`refresh`."""
        reads = Outage()

        async def one() -> None:
            try:
                await self.refresh()
                reads.ended()
            except (psycopg.Error, OSError) as exc:
                n = reads.failed()
                log.warning("reading queue depth failed (%s), %d in a row", error_line(exc), n,
                            exc_info=n == 1,
                            extra={"action": "metrics_error", "failures": n})  # fmt: skip
            await asyncio.sleep(interval)

        await repeat("metrics", one, "loop_error")

    async def refresh(self) -> None:
        """Read the depth of the worker's queues, the size of the queue table, and how long the
        oldest holder has held back its cleanup; in multiprocess mode first the jobs running
        and the sweep of dead processes' gauges, which need no database."""
        if self.multiprocess is not None:
            self._count_running()
            self._check_files(self.multiprocess)
            # In a thread: it may wait its turn for the directory's lock.
            await asyncio.to_thread(sweep_dead, self.multiprocess, self.unremovable)
        depth = await self.worker.run_sql(_store.queues_depth(list(self.worker.queues), DEPTH_CAP))
        for queue, count in depth.items():
            self.depth.labels(queue).set(count)
        self.estimate.set(await self.worker.run_sql(_store.jobs_estimate_active()))
        held = self.horizon.held(await self.worker.run_sql(_store.horizon_holders(0.0)))
        self.oldest_transaction.set(max((seconds for _, seconds in held), default=0.0))
        self.read_at.set_to_current_time()

    def _check_files(self, path: str) -> None:
        """Log, once, that this process's files were removed under it (the directory emptied or
        removed while it ran): prometheus_client writes on into the unlinked files, and the
        port serves every process's files but this one's."""
        if self.files_gone or Path(path, f"gauge_livesum_{os.getpid()}.db").exists():
            return
        self.files_gone = True
        log.error("this worker's metrics files in PROMETHEUS_MULTIPROC_DIR %s were removed while"
                  " it ran: its counts are no longer served; restart it", path,
                  extra={"action": "metrics_files_gone"})  # fmt: skip

    def close(self) -> None:
        """In multiprocess mode, remove this process's live gauges: it serves no more."""
        if self.multiprocess is not None:
            _multiprocess().mark_process_dead(os.getpid(), self.multiprocess)
            if self.started is not None:
                _unlink(_marker(self.multiprocess, os.getpid(), self.started))


class MetricsServer:
    """``/metrics`` of one worker on ``port`` (0 picks a free port): bound before the worker
    claims anything, served from a thread, the gauges read in the worker's loop."""

    def __init__(
        self, worker: Worker, port: int, addr: str = "0.0.0.0", interval: float = 10.0
    ) -> None:
        self.metrics = WorkerMetrics(worker)
        worker.events.listeners.append(self.metrics.on_finished)
        worker.events.start_listeners.append(self.metrics.on_claimed)
        if self.metrics.multiprocess is not None:  # else read from the worker at each scrape
            worker.events.end_listeners.append(self.metrics.on_left)
        if self.metrics.started is not None and self.metrics.multiprocess is not None:
            worker._executor.child_setups = (("pgqueue._metrics", "mark_child"),)
        worker.events.rescue_listeners.append(self.metrics.on_rescued)
        self.worker = worker
        self.port = port
        self.addr = addr
        self.interval = interval
        self._serving: tuple[Any, threading.Thread] | None = None

    def bind(self) -> None:
        """Serve ``/metrics``, or raise ConfigurationError: an operator who asked for metrics
        must not get a worker without them. The bound port is in
        ``worker.events.metrics_port``."""
        try:
            self._serving = _prometheus().start_http_server(
                self.port, self.addr, registry=self.metrics.served()
            )
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.addr} port {self.port}: {first_line(exc)}"
            ) from exc
        port = self.worker.events.metrics_port = self._serving[0].server_port
        log.info("serving metrics on %s port %s", self.addr, port,
                 extra={"action": "metrics_serving", "addr": self.addr,
                        "port": port})  # fmt: skip

    async def refresh(self) -> None:
        """Read the gauges every ``interval`` seconds, for ever (a loop of the worker's)."""
        await self.metrics.refresh_depth(self.interval)

    def close(self) -> None:
        """Stop serving, if it was; in multiprocess mode, remove this process's live gauges
        (made with the metrics, so even if the port could not be bound)."""
        if self._serving is not None:
            server, thread = self._serving
            self._serving = None
            server.shutdown()
            server.server_close()
            thread.join(5)
        self.metrics.close()
