"""A wait with ``timeout=0`` looks once: the job finished is returned, else TimeoutError."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import run_worker_until, states
from tests.integration.test_ops_api import make_app, worker


@pytest.mark.parametrize("listen", [True, False])
async def test_a_wait_of_no_time_returns_a_job_already_finished(
    dsn: str, conn: Any, listen: bool
) -> None:
    """timeout=0 raised TimeoutError even for a finished job: wait and wait_sync now read it
    once and return it, listening or polling."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    await run_worker_until(worker(app), lambda: states(dsn) == {"succeeded": 1})
    for _ in range(20):
        assert (await app.wait(job_id, timeout=0, listen=listen)).result == 42
        assert app.wait_sync(job_id, timeout=0, listen=listen).result == 42


@pytest.mark.parametrize("listen", [True, False])
async def test_a_wait_of_no_time_raises_for_a_job_not_finished(
    dsn: str, conn: Any, listen: bool
) -> None:
    """timeout=0 for a job still queued: TimeoutError once it is read, waiting for nothing."""
    app = make_app(dsn)
    job_id = app.using("add").enqueue(conn, 20, 22)
    conn.commit()
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0 s"):
        await app.wait(job_id, timeout=0, poll_interval=60, listen=listen)
    with pytest.raises(TimeoutError, match=f"job {job_id} did not finish within 0 s"):
        app.wait_sync(job_id, timeout=0, poll_interval=60, listen=listen)
