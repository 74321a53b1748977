"""examples/docker/compose.yaml's commands run as its services do, without Docker: migrate, a
worker of the demo's queues, and the demo as producer, on one database."""

from __future__ import annotations

import importlib
import json
import re
import signal
import subprocess
import sys

from tests.acceptance.conftest import ROOT, cli_env, wait_for
from tests.helpers import query

COMPOSE = ROOT / "examples" / "docker" / "compose.yaml"


def commands() -> dict[str, list[str]]:
    """Each service's ``command``, which the file writes as a JSON array on one line."""
    found, service = {}, ""
    for line in COMPOSE.read_text().splitlines():
        if match := re.fullmatch(r"  ([a-z]+):(?:\s+#.*)?", line):
            service = match[1]
        elif match := re.fullmatch(r"\s+command: (\[.*\])", line):
            found[service] = json.loads(match[1])
    return found


def as_run_here(command: list[str]) -> list[str]:
    """A service's `pgqueue ...` command, run with this interpreter."""
    assert command[0] == "pgqueue", command
    return [sys.executable, "-m", "pgqueue", *command[1:]]


def test_the_compose_services_migrate_then_serve_the_demo_a_worker_shares(empty_dsn: str) -> None:
    """migrate creates the schema; the worker serves the demo's queues and runs jobs the demo
    commits; the demo reports its orders; SIGTERM stops the worker cleanly."""
    found = commands()
    assert set(found) == {"migrate", "worker", "producer"}
    env = {k: v for k, v in cli_env(empty_dsn).items() if k != "PGQUEUE_APP"}
    migrate = subprocess.run(as_run_here(found["migrate"]), env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr
    worker = subprocess.Popen(as_run_here(found["worker"]), env=env, cwd=ROOT,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: query(empty_dsn, "SELECT count(*) FROM pgqueue.workers") == [(1,)],
                 what="the worker's registration")  # fmt: skip
        [(name,)] = query(empty_dsn, "SELECT id FROM pgqueue.workers")
        demo = subprocess.run(as_run_here(found["producer"]), env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        assert "rolled-back job ids found in pgqueue.jobs:        0" in demo.stdout
        ran = query(empty_dsn, "SELECT count(*) FROM pgqueue.jobs WHERE worker_id = %s", [name])
        assert ran[0][0] > 0  # the compose worker took jobs the producer committed
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err


def test_the_compose_worker_names_the_demos_app_by_a_public_path() -> None:
    """Users copy the example: its worker's ``--app`` is a public module (no ``_`` part) whose
    ``app`` is the demo's own, so the worker serves the tasks `pgqueue demo` enqueues."""
    command = commands()["worker"]
    module, _, attribute = command[command.index("--app") + 1].partition(":")
    assert not [part for part in module.split(".") if part.startswith("_")], module
    from pgqueue._demo import app

    assert getattr(importlib.import_module(module), attribute) is app
