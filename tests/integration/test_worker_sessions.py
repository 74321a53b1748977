"""How a worker opens its connections: async commit, and nothing in the session when pooled."""

from __future__ import annotations

import pytest

import pgqueue


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, "off"), ({"synchronous_commit": True}, "on"), ({"listen": False}, "on")],
)
async def test_worker_commit_mode(app: pgqueue.PgQueue, options: dict, expected: str) -> None:
    """Claims and acks skip the WAL flush wait unless asked, or unless poll-only (poolers)."""
    worker = app.worker(**options)
    try:
        conn = await worker._claim_db.connection()
        cur = await conn.execute("SHOW synchronous_commit")
        assert await cur.fetchone() == (expected,)
    finally:
        await worker._close_connections()


async def test_pooled_worker_prepares_nothing(app: pgqueue.PgQueue) -> None:
    """Poll-only workers never use server-side prepared statements (transaction poolers)."""
    worker = app.worker(listen=False)
    try:
        conn = await worker._claim_db.connection()
        assert conn.prepare_threshold is None
    finally:
        await worker._close_connections()
