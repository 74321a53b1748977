"""The operations examples in examples/ run as documented."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.helpers import query, run_worker_until, states

EXAMPLES = Path(__file__).parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module of that name."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint recording the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_alert_example_posts_to_the_webhook_on_final_failure(
    dsn: str, conn: Any, webhook: tuple[str, list[dict[str, Any]]], monkeypatch: Any
) -> None:
    """examples/alert_on_failure.py: a job failing for good posts one alert; a success none."""
    url, received = webhook
    monkeypatch.setenv("ALERT_WEBHOOK", url)
    example = load_example("alert_on_failure")
    example.build_report.using(max_attempts=1).enqueue(conn, -1)
    example.build_report.enqueue(conn, 7)
    conn.commit()
    w = example.app.worker(dsn=dsn, queues=["reports"], poll_interval=0.05)
    await run_worker_until(w, lambda: states(dsn) == {"failed": 1, "succeeded": 1})
    assert len(received) == 1
    assert "failed after 1 attempts: ValueError: no report -1" in received[0]["text"]


def test_trigger_example_script_runs_end_to_end(dsn: str) -> None:
    """examples/enqueue_from_trigger.py: a signup's job runs and the script prints its result."""
    query(dsn, (EXAMPLES / "enqueue_from_trigger.sql").read_text())
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "enqueue_from_trigger.py")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PGQUEUE_DSN": dsn},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "succeeded, result 'welcome sent to ada@example.com'" in done.stdout
