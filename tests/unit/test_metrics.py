"""The metrics a worker serves, fed with events as its hot path feeds them (no database)."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import stat
import struct
import subprocess
import sys
import threading
import tracemalloc
import types
from pathlib import Path
from typing import Any

import pytest

import pgqueue
from pgqueue import JobContext
from pgqueue._hooks import JobEvent

prometheus_client = pytest.importorskip("prometheus_client")
from pgqueue._metrics import WorkerMetrics  # noqa: E402  # needs prometheus_client


def metrics() -> WorkerMetrics:
    """The metrics of a worker that never connects."""
    app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
    return WorkerMetrics(app.worker(queues=["q"]))


def buckets(m: WorkerMetrics, name: str) -> dict[float, float]:
    """The cumulative counts of histogram ``name``, by finite upper bound."""
    return {
        float(s.labels["le"]): s.value
        for family in m.registry.collect()
        for s in family.samples
        if s.name == f"{name}_bucket" and s.labels["le"] != "+Inf"
    }


def test_job_durations_of_minutes_fall_in_buckets_of_their_own() -> None:
    """The duration histogram had Prometheus' default buckets, the last at 10 s: an attempt of
    two minutes and one of an hour fell in +Inf alike, and the documented p95 panel read 10 s
    for both. Its buckets now reach an hour, as the start latency's do."""
    m = metrics()
    for seconds in (0.002, 120.0, 3000.0):
        m.on_finished(JobEvent(JobContext(1, "work", "q", 1, 3), "succeeded", seconds))
    counts = buckets(m, "pgqueue_job_duration_seconds")
    assert (counts[0.005], counts[60.0], counts[300.0], counts[3600.0]) == (1, 1, 2, 3)


def series(m: WorkerMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of metric ``name``, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in m.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_counters_are_served_at_zero_before_their_first_count() -> None:
    """A counter's series appeared only with its first count, at 1: Prometheus' rate() and
    increase() cannot see the step into a new series, so the documented alert on a rescue
    that ended jobs, or on a task's failures, missed the first one (and a lone one for good).
    The rescue's two outcomes, and each state of each registered task of a queue the worker
    serves, are served at 0 from the start."""
    app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
    app.task(name="mail", queue="q")(lambda: None)
    app.task(name="elsewhere", queue="other")(lambda: None)
    m = WorkerMetrics(app.worker(queues=["q"]))
    assert series(m, "pgqueue_jobs_rescued_total") == {
        (("outcome", "requeued"),): 0.0,
        (("outcome", "ended"),): 0.0,
    }
    finished = series(m, "pgqueue_jobs_finished_total")
    assert finished == {
        (("queue", "q"), ("state", state), ("task", "mail")): 0.0
        for state in ("succeeded", "failed", "cancelled")
    }
    assert series(m, "pgqueue_job_retries_total") == {(("queue", "q"), ("task", "mail")): 0.0}


def test_job_durations_from_a_millisecond_to_hours_fall_in_buckets_of_their_own() -> None:
    """The buckets began at 5 ms and stopped at an hour: jobs of 1 ms and 4 ms shared one, and
    so did attempts of two hours and of five (in +Inf), where the documented p95 panel read
    one hour. They now reach from 1 ms to 6 h, with a bound between 5 min and an hour."""
    m = metrics()
    for seconds in (0.0008, 0.004, 600.0, 2 * 3600.0, 5 * 3600.0):
        m.on_finished(JobEvent(JobContext(1, "work", "q", 1, 3), "succeeded", seconds))
    counts = buckets(m, "pgqueue_job_duration_seconds")
    assert (counts[0.001], counts[0.005], counts[900.0]) == (1, 2, 3)
    assert (counts[3600.0], counts[7200.0], counts[21600.0]) == (3, 4, 5)


def test_a_retry_the_task_asked_for_is_no_failed_attempt() -> None:
    """``raise pgqueue.Retry(...)`` is for when nothing failed (a rate limit), yet it counted in
    pgqueue_job_retries_total, "failed attempts that will be retried", and so in the
    documented retries panel and alerts: a task polling with Retry looked like one failing.
    It counts in pgqueue_jobs_rescheduled_total instead, served at 0 from the start."""
    app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
    app.task(name="work", queue="q")(lambda: None)
    m = WorkerMetrics(app.worker(queues=["q"]))
    job = JobContext(1, "work", "q", 1, 3)
    m.on_finished(JobEvent(job, "retrying", 0.1))  # Retry: no error
    m.on_finished(JobEvent(job, "retrying", 0.1, error="ValueError: boom"))
    m.on_finished(JobEvent(job, "retrying", 0.1))
    labels = (("queue", "q"), ("task", "work"))
    assert series(m, "pgqueue_job_retries_total") == {labels: 1.0}
    assert series(m, "pgqueue_jobs_rescheduled_total") == {labels: 2.0}


def test_the_served_metrics_have_no_created_series() -> None:
    """Each counter and histogram series came with a ``_created`` series (the time it was
    made), a series more per counter for Prometheus to store that says nothing here, where
    every series starts at 0 with the worker; multiprocess mode serves none. The worker's
    port serves none in either mode."""
    m = metrics()
    m.on_finished(JobEvent(JobContext(1, "work", "q", 1, 3), "succeeded", 0.5))
    text = prometheus_client.generate_latest(m.served()).decode()
    assert "pgqueue_jobs_finished_total{" in text
    assert "pgqueue_job_duration_seconds_count{" in text
    assert "_created" not in text


def test_a_scrape_asking_for_some_metrics_by_name_gets_them() -> None:
    """A scrape may name the metrics it wants (``/metrics?name[]=...``): the served registry
    knew no names, so such a scrape got an empty page where it had got the metrics."""
    m = metrics()
    m.on_finished(JobEvent(JobContext(1, "work", "q", 1, 3), "succeeded", 0.5))
    wanted = ["pgqueue_jobs_running", "pgqueue_job_duration_seconds_count"]
    text = prometheus_client.generate_latest(m.served().restricted_registry(wanted)).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        'pgqueue_job_duration_seconds_count{queue="q",task="(unregistered)"} 1.0',
        "pgqueue_jobs_running 0.0",
    ]


def test_a_prometheus_client_without_its_private_mode_flag_still_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The mode check reads a private attribute of prometheus_client: a release without it
    must not stop every worker that serves metrics."""
    from pgqueue._metrics import multiprocess_dir

    monkeypatch.delattr(prometheus_client.values.ValueClass, "_multiprocess")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert multiprocess_dir() is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert multiprocess_dir() == str(tmp_path)


def test_a_file_prometheus_client_is_making_is_no_unreadable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """prometheus_client makes a process's file empty and sizes it a moment later: a scrape
    in between (another worker's first job, say) logged that file at ERROR as unreadable
    "until it is removed", and never again once it was. An empty file is one being made,
    left out of that scrape without a word; a truncated one is still logged."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from pgqueue._metrics import _Directory

    made = MmapedDict(str(tmp_path / "counter_1.db"))
    made.write_value(mmap_key("jobs", "jobs_total", [], [], "Jobs."), 3.0, 0.0)
    made.close()
    (tmp_path / "histogram_2.db").touch()  # opened, not yet sized
    (tmp_path / "counter_3.db").write_bytes(struct.pack("i", 64) + bytes(4))  # 64 bytes used: cut
    served = {s.name: s.value for family in _Directory(str(tmp_path)).collect()
              for s in family.samples}  # fmt: skip
    assert served == {"jobs_total": 3.0}
    logged = [r for r in caplog.records if getattr(r, "action", None) == "metrics_file_unreadable"]
    assert [Path(r.file).name for r in logged] == ["counter_3.db"]


def scraped(path: Path) -> dict[str, float]:
    """One scrape of the multiprocess files in ``path``: each sample's value, by name; run in a
    thread, so that a scrape blocked for ever fails the test instead of hanging it."""
    from pgqueue._metrics import _Directory

    served: dict[str, float] = {}
    scrape = threading.Thread(
        target=lambda: served.update(
            (s.name, s.value) for family in _Directory(str(path)).collect() for s in family.samples
        ),
        daemon=True,
    )
    scrape.start()
    scrape.join(60)  # a bound, not a timing: the scrape opens no file that can block
    blocked = scrape.is_alive()
    while scrape.is_alive():  # a blocked scrape may open a pipe again (reading it alone)
        for fifo in [f for f in path.glob("*.db") if stat.S_ISFIFO(f.lstat().st_mode)]:
            with contextlib.suppress(OSError):  # a blocked open gets a writer, then end of file
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        scrape.join(1)
    assert not blocked, "the scrape blocked"
    return served


def one_counter(path: Path) -> None:
    """A process's counter file in ``path``, with ``jobs_total`` 3."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    made = MmapedDict(str(path / "counter_1.db"))
    made.write_value(mmap_key("jobs", "jobs_total", [], [], "Jobs."), 3.0, 0.0)
    made.close()


def test_a_named_pipe_in_the_directory_does_not_block_the_scrapes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``.db`` that was a named pipe made the scrape's open wait for a writer for ever: the
    port's thread hung, and every later scrape of it with it. What is not a regular file is
    left out, logged once as unreadable, and the others served."""
    one_counter(tmp_path)
    os.mkfifo(tmp_path / "counter_2.db")
    assert scraped(tmp_path) == {"jobs_total": 3.0}
    logged = [r for r in caplog.records if getattr(r, "action", None) == "metrics_file_unreadable"]
    assert [Path(r.file).name for r in logged] == ["counter_2.db"]


def test_a_file_swapped_for_a_named_pipe_after_its_check_does_not_block_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape checked that a file was a regular file, then opened it again by name to read
    it: swapped for a named pipe in between, the read waited for a writer for ever. The file is
    read through the descriptor it was checked on, so the scrape reads what it checked. The
    swap comes at the exact point, the check's ``fstat``, as no real interleaving can be
    forced; it stands for another process renaming a pipe over the file at that moment."""
    one_counter(tmp_path)
    target, fstat = tmp_path / "counter_1.db", os.fstat

    def swapping(fd: int) -> os.stat_result:
        checked = fstat(fd)
        if not stat.S_ISFIFO(target.lstat().st_mode):  # the first check: swap, once
            os.mkfifo(tmp_path / "pipe")
            os.replace(tmp_path / "pipe", target)
        return checked

    monkeypatch.setattr(os, "fstat", swapping)
    assert scraped(tmp_path) == {"jobs_total": 3.0}


def without_reader(monkeypatch: pytest.MonkeyPatch) -> str:
    """prometheus_client as a release that renamed mmap_dict._read_all_values."""
    from prometheus_client import mmap_dict

    kept = {k: v for k, v in vars(mmap_dict).items() if k != "_read_all_values"}
    monkeypatch.setattr(prometheus_client, "mmap_dict", types.SimpleNamespace(**kept))
    return "_read_all_values"


def without_sum(monkeypatch: pytest.MonkeyPatch) -> str:
    """prometheus_client as a release that renamed MultiProcessCollector._accumulate_metrics:
    its public merge still reads the files by name."""
    from prometheus_client import multiprocess

    collector = multiprocess.MultiProcessCollector

    class Renamed:
        @staticmethod
        def merge(files: list[str], accumulate: bool = True) -> Any:
            return collector._accumulate_metrics(collector._read_metrics(files), accumulate)

    monkeypatch.setattr(multiprocess, "MultiProcessCollector", Renamed)
    return "_accumulate_metrics"


@pytest.mark.parametrize("release", [without_reader, without_sum])
def test_a_prometheus_client_without_the_private_readers_still_serves_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    release: Any,
) -> None:  # fmt: skip
    """A scrape reads each file with two private functions of prometheus_client: a release
    without one served no file (each logged unreadable) or answered 500 to every scrape. The
    files are then read by name, as prometheus_client reads them, and that is said once."""
    one_counter(tmp_path)
    (tmp_path / "counter_3.db").write_bytes(struct.pack("i", 64) + bytes(4))  # still left out
    missing = release(monkeypatch)
    assert scraped(tmp_path) == {"jobs_total": 3.0}
    logged = [r for r in caplog.records if getattr(r, "action", None) == "metrics_files_by_name"]
    assert len(logged) == 1 and missing in logged[0].getMessage()


def test_a_garbage_header_does_not_make_a_scrape_read_more_than_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first 4 bytes of a file say how much of it is used: garbage there (2 GB in a file
    of 8 kB) made a scrape allocate that much to read it. A file is read no further than its
    size; one whose header says more is left out, logged as unreadable."""
    one_counter(tmp_path)
    (tmp_path / "counter_2.db").write_bytes(struct.pack("i", 2**31 - 1) + bytes(8188))
    tracemalloc.start()
    try:
        served = scraped(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert served == {"jobs_total": 3.0}
    assert peak < 2**24  # what was read: the files' 73 kB, and the merge, not 2 GB
    logged = [r for r in caplog.records if getattr(r, "action", None) == "metrics_file_unreadable"]
    assert [Path(r.file).name for r in logged] == ["counter_2.db"]


DEAD_NAMESAKE = """
import json, os, sys, threading
from pathlib import Path
from prometheus_client.mmap_dict import MmapedDict, mmap_key
import pgqueue
from pgqueue import _metrics
from pgqueue._worker._liveness import process_started

path, pid = sys.argv[1], os.getpid()
started = process_started(pid)
# A dead worker of this pid: its marker (a start a tick earlier) and its live gauge.
Path(path, f"pgqueue_owner_{pid}_{started - 1}").touch()
stale = MmapedDict(f"{path}/gauge_livesum_{pid}.db")
stale.write_value(mmap_key("pgqueue_jobs_running", "pgqueue_jobs_running", [], [], "r"), 5.0, 0)
stale.close()
"""

SWEEP_RACE = """
import fcntl
app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
waiting, main, new = threading.Event(), threading.current_thread(), []
starting = threading.Thread(target=lambda: start())
lock, listed = _metrics._lock, _metrics._owners

def spied(fd, deadline):  # the worker's start says when it must wait for the sweep's lock
    if threading.current_thread() is starting:
        try:
            return fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no sweep holds it
        except BlockingIOError:
            waiting.set()
    return lock(fd, deadline)

def start():
    new.append(_metrics.WorkerMetrics(app.worker(queues=["q"])))
    waiting.set()

def listing(path):  # the sweep listed the markers: a worker of this pid starts now
    owners = listed(path)
    if threading.current_thread() is main and starting.ident is None:
        starting.start()
        waiting.wait()  # until it waits for the lock, or has started without it
    return owners

_metrics._lock, _metrics._owners = spied, listing
_metrics.sweep_dead(path, set())
starting.join()
names = (f.name.replace(f"{pid}_{started}", "PID_START") for f in Path(path).iterdir())
print(json.dumps(sorted(name.replace(str(pid), "PID") for name in names)))
"""


def run_script(script: str, directory: Path) -> Any:
    """The JSON that ``script`` prints, run in a process of its own whose
    PROMETHEUS_MULTIPROC_DIR is ``directory``."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("the markers need /proc (Linux)")
    done = subprocess.run(
        [sys.executable, "-c", script, str(directory)], capture_output=True, text=True,
        timeout=120, cwd=Path(__file__).parents[2],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_sweep_does_not_remove_the_new_files_of_a_worker_given_a_dead_workers_pid(
    tmp_path: Path,
) -> None:
    """The sweep listed the markers, then removed the files of the pids they called dead: a
    worker started in between with a dead worker's pid (its marker not yet listed) lost its
    new live gauges, its jobs_running no longer served (metrics_files_gone). The sweep and a
    worker's start now take turns: the start waits while the sweep removes the dead worker's
    files, then makes its own."""
    files = run_script(DEAD_NAMESAKE + SWEEP_RACE, tmp_path)
    assert [f for f in files if not f.startswith(("counter_", "histogram_"))] == [
        "gauge_livemax_PID.db",
        "gauge_livemostrecent_PID.db",
        "gauge_livesum_PID.db",
        "pgqueue_owner_PID_START",  # the dead worker's marker removed, the new one's kept
        "pgqueue_sweep.lock",
    ]


INHERITED = """
from prometheus_client import generate_latest
app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
metrics = _metrics.WorkerMetrics(app.worker(queues=["q"]))
served = generate_latest(metrics.served()).decode().splitlines()
print(json.dumps([line for line in served if line.startswith("pgqueue_jobs_running")]))
"""


def test_a_worker_given_a_dead_workers_pid_does_not_serve_its_gauges(tmp_path: Path) -> None:
    """A worker started with the pid of a worker killed before the sweep removed its live
    gauges opened that worker's files as its own: it served the dead worker's jobs_running
    (5 here) until its first pass. A worker's start removes the live gauges a dead process of
    its pid left (its marker names another start time)."""
    assert run_script(DEAD_NAMESAKE + INHERITED, tmp_path) == ["pgqueue_jobs_running 0.0"]


class _Spied:
    """A lock that says when a thread comes to wait for it."""

    def __init__(self, waiting: threading.Event) -> None:
        self.lock = threading.Lock()
        self.waiting = waiting

    def __enter__(self) -> None:
        self.waiting.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_two_scrapes_at_once_log_a_bad_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The port serves scrapes in threads: two at once could both find a bad file not yet
    logged, and log it twice. The second waits for the first's record, and makes none."""
    from pgqueue._metrics import _Directory

    (tmp_path / "counter_2.db").write_bytes(struct.pack("i", 64) + bytes(4))
    directory = _Directory(str(tmp_path))
    waiting, main = threading.Event(), threading.current_thread()
    second = threading.Thread(target=lambda: (directory.collect(), waiting.set()))

    class Checked(set[str]):
        def __contains__(self, file: object) -> bool:
            found = super().__contains__(file)
            if threading.current_thread() is main and second.ident is None:
                second.start()  # the other scrape comes once this one has checked
                waiting.wait()  # until it waits for this one, or has logged
            return found

    directory.unreadable = Checked()
    directory.lock = _Spied(waiting)  # type: ignore[assignment]
    directory.collect()
    second.join()
    logged = [r for r in caplog.records if getattr(r, "action", None) == "metrics_file_unreadable"]
    assert [Path(r.file).name for r in logged] == ["counter_2.db"]


def test_a_bad_file_is_not_read_again_at_each_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a bad file stayed, each scrape read every file three times: all together, which
    failed, then each alone to find the bad one, then the good ones together. Each file is
    opened once a scrape, the bad one left out."""
    from pgqueue._metrics import _Directory

    one_counter(tmp_path)
    bad = tmp_path / "counter_2.db"  # its header is right, its first key no JSON
    bad.write_bytes(struct.pack("ii", 32, 0) + struct.pack("i", 8) + b"not json" + bytes(8180))
    directory = _Directory(str(tmp_path))
    assert {s.name for family in directory.collect() for s in family.samples} == {"jobs_total"}
    read: list[str] = []

    def counted(opener: Any) -> Any:
        def opening(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file).endswith(".db"):
                read.append(Path(file).name)
            return opener(file, *args, **kwargs)

        return opening

    monkeypatch.setattr(os, "open", counted(os.open))  # the check's opens
    monkeypatch.setattr(builtins, "open", counted(builtins.open))  # prometheus_client's, by name
    assert {s.name for family in directory.collect() for s in family.samples} == {"jobs_total"}
    assert sorted(read) == ["counter_1.db", "counter_2.db"]


A_DEAD_PROCESS = """
import errno, fcntl, json, os, subprocess, sys, threading
from pathlib import Path
from prometheus_client.mmap_dict import MmapedDict, mmap_key
import pgqueue
from pgqueue import _metrics

path = sys.argv[1]
ended = subprocess.Popen(["true"])
ended.wait()
dead = MmapedDict(f"{path}/gauge_livesum_{ended.pid}.db")  # a killed process's live gauge
dead.write_value(mmap_key("pgqueue_jobs_running", "pgqueue_jobs_running", [], [], "r"), 5.0, 0)
dead.close()
app = pgqueue.PgQueue("postgresql://nobody@127.0.0.1:1/none")
left = lambda: sorted(f.name for f in Path(path).glob(f"*_{ended.pid}.db"))
"""

NO_LOCK_FILE = """
os.mkdir(Path(path, "pgqueue_sweep.lock"))  # no lock file can be opened
_metrics.WorkerMetrics(app.worker(queues=["q"]))
_metrics.sweep_dead(path, set())
print(json.dumps(left()))
"""


def test_a_worker_starts_and_sweeps_where_no_lock_file_can_be_opened(tmp_path: Path) -> None:
    """A lock file that cannot be opened (another user's, readable by none; a directory of
    that name) refused the worker's start as "cannot write in PROMETHEUS_MULTIPROC_DIR", where
    it started before the lock, and skipped every sweep silently: a killed worker's live gauges
    counted for ever. The start and the sweep go on without the lock, as before it."""
    assert run_script(A_DEAD_PROCESS + NO_LOCK_FILE, tmp_path) == []


TAKEN = """
taken, flock = [], fcntl.flock

def spied(fd, op):  # the locks taken, by thread
    flock(fd, op)
    taken.append(threading.current_thread().name)

fcntl.flock = spied
_metrics.WorkerMetrics(app.worker(queues=["q"]))
_metrics.sweep_dead(path, set())
print(json.dumps([taken, left()]))
"""

NFS = """
real = fcntl.flock

def nfs(fd, op):  # NFS locks as fcntl's byte ranges: an exclusive one needs a file open to write
    if op & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    real(fd, op)

fcntl.flock = nfs
"""


def test_the_directorys_lock_is_taken_on_nfs(tmp_path: Path) -> None:
    """NFS takes an exclusive flock() only on a file open for writing (flock(2)): the lock
    file, opened for reading, failed with EBADF, which refused every worker's start and skipped
    every sweep. It is opened for writing (for reading only if it may not be written: another
    user's), and both take it."""
    taken = run_script(A_DEAD_PROCESS + NFS + TAKEN, tmp_path)
    assert taken == [["MainThread", "MainThread"], []]


STUCK = """
_metrics.LOCK_WAIT = 0.1
stuck = os.open(f"{path}/pgqueue_sweep.lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(stuck, fcntl.LOCK_EX)  # its holder stopped (SIGSTOP) as it swept, say

def returned(call):
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(20)  # a bound, not a timing: the lock is waited for a tenth of a second
    return not thread.is_alive()

start = lambda: _metrics.WorkerMetrics(app.worker(queues=["q"]))
sweep = lambda: _metrics.sweep_dead(path, set())
print(json.dumps([returned(start), returned(_metrics.mark_child), returned(sweep), left()]))
"""


def test_a_lock_held_for_ever_blocks_no_start_and_stops_no_sweep(tmp_path: Path) -> None:
    """A worker's start, and a process pool child's, waited for the directory's lock without
    end: a holder stopped with it (SIGSTOP, a debugger) hung every worker started on the host,
    and failed each process task as its child's start timed out; each sweep found it held,
    and skipped, for ever. Each waits its turn for a while (``LOCK_WAIT``), then goes on
    without it, as before the lock."""
    assert run_script(A_DEAD_PROCESS + STUCK, tmp_path) == [True, True, True, []]


def test_a_bad_file_rewritten_in_place_is_served_again_when_it_reads(tmp_path: Path) -> None:
    """A file found unreadable was left out unread until its inode, size or time written
    changed: on tmpfs, where prometheus_client's writes through mmap leave the time written as
    it was, a live worker's file read once as garbage (a read as it was written, say) had its
    counts left out for good, though it was whole again. A file found bad is read alone at
    each scrape, and served again once it reads."""
    from pgqueue._metrics import _Directory

    one_counter(tmp_path)
    bad = tmp_path / "counter_2.db"
    one_counter(tmp_path)
    (tmp_path / "counter_1.db").rename(bad)
    one_counter(tmp_path)
    with bad.open("r+b") as file:  # its first key's JSON broken, in place
        file.seek(12)
        file.write(b"{")
    was = bad.stat()
    directory = _Directory(str(tmp_path))
    served = {s.name: s.value for family in directory.collect() for s in family.samples}
    assert served == {"jobs_total": 3.0}
    with bad.open("r+b") as file:  # whole again, in place, the time written left as it was
        file.seek(12)
        file.write(b"[")
    os.utime(bad, ns=(was.st_atime_ns, was.st_mtime_ns))
    served = {s.name: s.value for family in directory.collect() for s in family.samples}
    assert served == {"jobs_total": 6.0}


def test_a_lock_file_that_may_only_be_read_is_still_taken(tmp_path: Path) -> None:
    """The lock file is opened for writing, which NFS needs: one another user made, which this
    one may only read, is opened for reading, and the lock still taken (here a file no one may
    write, chattr +i, stands for it: root may write any other)."""
    lock = tmp_path / "pgqueue_sweep.lock"
    lock.touch()
    if subprocess.run(["chattr", "+i", str(lock)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        assert run_script(A_DEAD_PROCESS + TAKEN, tmp_path) == [["MainThread", "MainThread"], []]
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=True)
