"""Metrics of several worker processes on one host, in prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``): real workers in subprocesses, scraped over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import query, states

ROOT = Path(__file__).parents[2]
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def start_worker(dsn: str, directory: Path, name: str, queue: str) -> subprocess.Popen[str]:
    """A CLI worker of ``queue`` serving metrics on a free port, its JSON log on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "tests.integration.tasks_app",
         "--log-format", "json", "worker", "-q", queue, "--metrics-port", "0",
         "--metrics-addr", "127.0.0.1", "--name", name],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PROMETHEUS_MULTIPROC_DIR": str(directory)},
    )  # fmt: skip


def metrics_port(worker: subprocess.Popen[str]) -> int:
    """The port the worker's log says it serves metrics on."""
    assert worker.stderr is not None
    for line in worker.stderr:
        record = json.loads(line)
        if record.get("action") == "metrics_serving":
            return int(record["port"])
    raise AssertionError(f"the worker exited {worker.wait()} without serving metrics")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of ``port``: each sample's value, by its name and sorted labels."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_for(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds (a correctness check with a generous bound, no timing)."""
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def finished(port: int, task: str, queue: str) -> float:
    """The succeeded count of ``task`` on ``queue`` a scrape of ``port`` gives."""
    key = (("queue", queue), ("state", "succeeded"), ("task", task))
    return scrape(port).get(("pgqueue_jobs_finished_total", key), -1.0)


def pids_of(directory: Path, prefix: str = "") -> set[int]:
    """The process ids prometheus_client's files in ``directory`` are named after."""
    return {int(f.stem.rsplit("_", 1)[1]) for f in directory.glob(f"{prefix}*.db")}


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Worker processes to start; any left running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for worker in started:
        if worker.poll() is None:
            worker.kill()
        worker.wait(30)
        if worker.stderr is not None:
            worker.stderr.close()


def test_a_scrape_of_one_worker_counts_the_jobs_of_every_worker_on_the_host(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, each worker served only its own in-memory counts
    (and wrote files nothing read): a scrape of one port missed the other workers' jobs. Now
    every worker serves the host's totals, the process pool's jobs counted once by the worker
    that ran them (its children record nothing); a gauge is the live workers' (no pid
    label), and the files of a killed worker's and of a stopped worker's gauges are removed."""
    for task, args, queue, n in (("add", "[1, 2]", "io", 3), ("process_pid", "[]", "cpu", 2)):
        for _ in range(n):
            query(dsn, "SELECT pgqueue.enqueue(%s, %s::jsonb, queue => %s)",
                  [f"tests.integration.tasks_app.{task}", args, queue])  # fmt: skip
    io = start_worker(dsn, tmp_path, "w-io", "io")
    workers.append(io)
    cpu = start_worker(dsn, tmp_path, "w-cpu", "cpu")
    workers.append(cpu)
    port, cpu_port = metrics_port(io), metrics_port(cpu)
    wait_for("all jobs succeeded", lambda: states(dsn) == {"succeeded": 5})
    add, pid = "tests.integration.tasks_app.add", "tests.integration.tasks_app.process_pid"
    for p in (port, cpu_port):
        wait_for("both workers' counts", lambda p=p: (finished(p, add, "io"),
                 finished(p, pid, "cpu")) == (3.0, 2.0))  # fmt: skip
    served = scrape(port)
    assert served[("pgqueue_jobs_running", ())] == 0.0
    assert ("pgqueue_queue_depth", (("queue", "cpu"),)) in served
    assert not [name for name, _ in served if name.endswith("_created")]
    # The process pool's children wrote no files: only the two workers did.
    assert pids_of(tmp_path) == {io.pid, cpu.pid}

    cpu.kill()
    cpu.wait(30)
    wait_for(
        "the killed worker's live gauges gone",
        lambda: cpu.pid not in pids_of(tmp_path, "gauge_live"),
    )
    assert (finished(port, add, "io"), finished(port, pid, "cpu")) == (3.0, 2.0)
    io.send_signal(signal.SIGTERM)
    assert io.wait(30) == 0
    assert pids_of(tmp_path, "gauge_live") == set()


def test_a_multiprocess_directory_that_does_not_exist_stops_the_worker_with_one_line(
    dsn: str, tmp_path: Path
) -> None:
    """A PROMETHEUS_MULTIPROC_DIR that does not exist made the metrics' creation raise
    FileNotFoundError, a traceback naming a file of prometheus_client's; the worker now exits
    1 with one line naming the variable, before claiming anything."""
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    missing = tmp_path / "missing"
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "tests.integration.tasks_app",
         "worker", "-q", "io", "--burst", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: PROMETHEUS_MULTIPROC_DIR is not a directory: {missing}"
    ]
    assert states(dsn) == {"queued": 1}


def test_a_worker_whose_port_is_in_use_leaves_no_live_gauges_behind(
    dsn: str, tmp_path: Path
) -> None:
    """A worker that could not bind its metrics port exited 1 leaving its live gauges' files
    in the directory (made with the metrics, before the bind), served by the other workers
    until one of them swept them; it removes them as it exits."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app",
             "tests.integration.tasks_app", "worker", "-q", "io", "--burst",
             "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "cannot serve metrics on 127.0.0.1 port" in done.stderr
    assert list(tmp_path.glob("gauge_live*.db")) == []


def environment(directory: str | None) -> dict[str, str]:
    """This process's environment with PROMETHEUS_MULTIPROC_DIR ``directory`` (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return env if directory is None else {**env, "PROMETHEUS_MULTIPROC_DIR": directory}


def embedded_worker(dsn: str, before: str | None, after: str) -> str:
    """The last line of a process that imports prometheus_client with ``before`` as its
    PROMETHEUS_MULTIPROC_DIR (None: unset), changes it to ``after`` ("": unsets it), then
    makes a worker with metrics (an embedded worker, the app's code setting the variable)."""
    script = (
        "import os, sys; import prometheus_client; os.environ.pop('PROMETHEUS_MULTIPROC_DIR', 0)\n"
        "if sys.argv[1]: os.environ['PROMETHEUS_MULTIPROC_DIR'] = sys.argv[1]\n"
        "from tests.integration.tasks_app import app\n"
        "app.worker(dsn=sys.argv[2], queues=['io'], metrics_port=0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, after, dsn], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env=environment(before),
    )  # fmt: skip
    assert done.returncode == 1
    return done.stderr.splitlines()[-1]


def test_a_worker_in_a_process_that_imported_prometheus_client_first_is_refused(
    dsn: str, tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR set in a process that had imported prometheus_client without
    it: the values stayed in memory while the port served the directory's files, none of this
    worker's counts among them, and nothing said so (unset after the import instead, a
    TypeError from prometheus_client's files). The worker is refused, saying why."""
    last = embedded_worker(dsn, None, str(tmp_path))
    assert last.startswith("pgqueue.ConfigurationError: PROMETHEUS_MULTIPROC_DIR was set after")
    assert "before the process imports prometheus_client" in last
    last = embedded_worker(dsn, str(tmp_path), "")
    assert last.startswith("pgqueue.ConfigurationError: PROMETHEUS_MULTIPROC_DIR was unset after")


def test_a_live_gauge_file_not_named_by_a_pid_does_not_stop_the_depth_being_read(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """A live gauge's file whose name ends in a number no process id can be (another
    program's process identifier in a shared directory) made the sweep raise OverflowError
    before the depth was read, at every pass: the depth was never read, its read time stayed
    0, and an ERROR called it a bug. The sweep leaves that file alone; the depth is read."""
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io',"
               " run_at => now() + interval '1 hour')")  # fmt: skip
    from prometheus_client.mmap_dict import MmapedDict

    stranger = tmp_path / f"gauge_livesum_{10**20}.db"
    MmapedDict(str(stranger)).close()
    io = start_worker(dsn, tmp_path, "w-io", "io")
    workers.append(io)
    port = metrics_port(io)
    depth = ("pgqueue_queue_depth", (("queue", "io"),))
    wait_for("the depth read", lambda: depth in scrape(port))
    assert scrape(port)[("pgqueue_queue_depth_read_timestamp_seconds", ())] > 0
    assert stranger.exists()


def test_an_empty_multiprocess_directory_variable_stops_the_worker_with_one_line(
    dsn: str, tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR set but empty (``PROMETHEUS_MULTIPROC_DIR=${UNSET}`` in a
    compose file) switched prometheus_client to multiprocess mode, its files written into the
    worker's current directory, never swept. The worker exits 1 with one line instead."""
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "tests.integration.tasks_app",
         "worker", "-q", "io", "--burst", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**environment(""), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "Error: PROMETHEUS_MULTIPROC_DIR is empty: name a directory, or unset it"
    ]
    assert list(tmp_path.glob("*.db")) == []


def test_a_dead_process_gauge_the_sweep_cannot_remove_is_logged_once_and_left(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """A dead process's live gauge the sweep could not remove (another user's file) raised
    PermissionError before the depth was read, at every pass, logged each time as a failed
    depth read. The sweep logs it once (metrics_sweep_error) and the depth is read."""
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr to make a file no one may remove")
    from prometheus_client.mmap_dict import MmapedDict

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    kept = tmp_path / f"gauge_livesum_{int(dead.stdout)}.db"
    MmapedDict(str(kept)).close()
    if subprocess.run(["chattr", "+i", str(kept)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        io = start_worker(dsn, tmp_path, "w-io", "io")
        workers.append(io)
        port = metrics_port(io)
        read_at = ("pgqueue_queue_depth_read_timestamp_seconds", ())
        wait_for("the depth read", lambda: scrape(port).get(read_at, 0.0) > 0)
        first = scrape(port)[read_at]
        wait_for("a second pass", lambda: scrape(port)[read_at] != first)
        io.send_signal(signal.SIGTERM)
        assert io.wait(30) == 0
        assert io.stderr is not None
        actions = [json.loads(line).get("action") for line in io.stderr]
        assert actions.count("metrics_sweep_error") == 1
        assert "metrics_error" not in actions
    finally:
        subprocess.run(["chattr", "-i", str(kept)], check=True)


def test_a_worker_whose_files_were_removed_under_it_says_so(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """The directory emptied (or removed) while a worker ran: prometheus_client went on
    writing into its unlinked files, and the port served a page without the worker's counts,
    answering 200, nothing logged. The worker logs it, once, at ERROR."""
    io = start_worker(dsn, tmp_path, "w-io", "io")
    workers.append(io)
    metrics_port(io)
    for file in tmp_path.glob("*.db"):
        file.unlink()
    assert io.stderr is not None
    deadline = threading.Timer(30, io.kill)  # a pass every 10 s: the first, and two more
    deadline.start()
    try:
        gone = [r for r in map(json.loads, io.stderr) if r.get("action") == "metrics_files_gone"]
    finally:
        deadline.cancel()
    assert io.wait() == -signal.SIGKILL
    assert [(r["level"], str(tmp_path) in r["message"]) for r in gone] == [("error", True)]


def test_a_multiprocess_directory_the_worker_cannot_write_stops_it_with_one_line(
    dsn: str, tmp_path: Path
) -> None:
    """A PROMETHEUS_MULTIPROC_DIR the worker may not write into (another user's, read-only)
    stopped it with a PermissionError traceback from a file of prometheus_client's; it exits 1
    with one line naming the variable, before claiming anything."""
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr to make a directory no one may write into")
    if subprocess.run(["chattr", "+i", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not permitted here")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app",
             "tests.integration.tasks_app", "worker", "-q", "io", "--burst", "--metrics-port",
             "0"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env=environment(str(tmp_path)),
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path)], check=True)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"Error: cannot write in PROMETHEUS_MULTIPROC_DIR {tmp_path}: ")
    assert states(dsn) == {"queued": 1}


def test_an_unreadable_file_in_the_directory_is_left_out_of_the_scrapes_and_logged_once(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """One corrupt or truncated file in PROMETHEUS_MULTIPROC_DIR (a disk full, a stray copy)
    made prometheus_client's collector raise at every scrape: each port answered 500, the
    whole host unscraped. The file is left out, logged once at ERROR, and the others served."""
    (tmp_path / "counter_111.db").write_bytes(struct.pack("i", 64) + bytes(4))  # 64 used: cut
    (tmp_path / "histogram_222.db").write_bytes(bytes(range(256)) * 8)  # not the format
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    io = start_worker(dsn, tmp_path, "w-io", "io")
    workers.append(io)
    port = metrics_port(io)
    add = "tests.integration.tasks_app.add"
    wait_for("the job counted", lambda: finished(port, add, "io") == 1.0)
    assert ("pgqueue_jobs_running", ()) in scrape(port)
    io.send_signal(signal.SIGTERM)
    assert io.wait(30) == 0
    assert io.stderr is not None
    logged = [r for r in map(json.loads, io.stderr) if r.get("action") == "metrics_file_unreadable"]
    assert sorted((r["level"], Path(r["file"]).name) for r in logged) == [
        ("error", "counter_111.db"),
        ("error", "histogram_222.db"),
    ]


def test_the_live_gauges_of_a_worker_whose_pid_was_reused_are_removed(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """A killed worker's live gauges were removed once no process had its pid: a pid reused
    meanwhile (by any process) kept them for ever, its jobs_running counted on. Each worker
    now leaves a marker of its pid and start time; a file whose pid now names a process that
    started at another time is removed, one whose marker matches is kept, as is a marker
    naming no pid (another program's identifier)."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("the markers need /proc (Linux)")
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from pgqueue._worker._liveness import process_started

    others = [subprocess.Popen(["sleep", "120"]) for _ in range(2)]
    try:
        reused, live = others[0].pid, others[1].pid
        for pid, started in ((reused, process_started(reused) - 1), (live, process_started(live))):
            gauge = MmapedDict(str(tmp_path / f"gauge_livesum_{pid}.db"))
            key = mmap_key("pgqueue_jobs_running", "pgqueue_jobs_running", [], [], "running")
            gauge.write_value(key, 5.0, 0.0)
            gauge.close()
            (tmp_path / f"pgqueue_owner_{pid}_{started}").touch()
        (tmp_path / f"pgqueue_owner_{10**20}_1").touch()
        io = start_worker(dsn, tmp_path, "w-io", "io")
        workers.append(io)
        port = metrics_port(io)
        wait_for("the reused pid's gauges gone", lambda: reused not in pids_of(tmp_path))
        assert scrape(port)[("pgqueue_jobs_running", ())] == 5.0  # the live owner's
        assert pids_of(tmp_path, "gauge_live") == {io.pid, live}
        io.send_signal(signal.SIGTERM)
        assert io.wait(30) == 0
        assert io.stderr is not None
        records = [json.loads(line) for line in io.stderr]
        assert [r.get("action") for r in records if r["level"] != "info"] == []
        markers = sorted(f.name.rsplit("_", 1)[0] for f in tmp_path.glob("pgqueue_owner_*"))
        assert markers == [f"pgqueue_owner_{10**20}", f"pgqueue_owner_{live}"]
    finally:
        for other in others:
            other.kill()
            other.wait()


def run_a_process_task(dsn: str, directory: Path, workers: list[Any]) -> subprocess.Popen[str]:
    """A worker of queue ``cpu`` serving metrics, once it ran a process task that succeeded."""
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.process_pid', '[]',"
               " queue => 'cpu')")  # fmt: skip
    cpu = start_worker(dsn, directory, "w-cpu", "cpu")
    workers.append(cpu)
    metrics_port(cpu)
    wait_for("the job succeeded", lambda: states(dsn) == {"succeeded": 1})
    return cpu


def test_a_process_pool_child_marks_its_pid_as_a_worker_does(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """The process pool's children left no marker: the live gauges a task's own code makes
    in a child were kept for ever once the killed child's pid was reused, and removed from a
    live child given the pid of a dead worker whose marker was not yet swept. A child marks
    its pid and start time as the worker does, and the sweep removes the marker once it ends."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("the markers need /proc (Linux)")
    from pgqueue._worker._liveness import process_started

    cpu = run_a_process_task(dsn, tmp_path, workers)
    [(child,)] = query(dsn, "SELECT result::int FROM pgqueue.jobs")
    assert child != cpu.pid
    assert (tmp_path / f"pgqueue_owner_{child}_{process_started(child)}").exists()
    os.kill(child, signal.SIGKILL)
    wait_for("the dead child's marker swept", lambda: not list(tmp_path.glob(f"*_{child}_*")))


HOLD_AND_STOP = """
import fcntl, os, signal, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print(flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def test_a_process_stopped_with_the_directorys_lock_blocks_no_worker(
    dsn: str, tmp_path: Path, workers: list[Any]
) -> None:
    """A process stopped as it held the directory's lock (a worker sent SIGSTOP as it swept)
    hung every worker started on the host before it served anything, failed its process tasks
    as their children's start timed out, and kept every sweep from running. Each waits its
    turn a while, then goes on without the lock: the worker serves, its process task succeeds
    and a dead process's live gauges are swept."""
    from prometheus_client.mmap_dict import MmapedDict

    lock = str(tmp_path / "pgqueue_sweep.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_STOP, lock],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "\n"  # it holds it
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        MmapedDict(str(tmp_path / f"gauge_livesum_{int(dead.stdout)}.db")).close()
        run_a_process_task(dsn, tmp_path, workers)
        wait_for(
            "the dead process's gauge swept", lambda: int(dead.stdout) not in pids_of(tmp_path)
        )
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
