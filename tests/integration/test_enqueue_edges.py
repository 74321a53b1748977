"""Enqueue paths at their edges: big batches in the caller's pipeline, odd unique keys."""

from __future__ import annotations

import psycopg
import pytest

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from tests.helpers import query


def make_task(dsn: str) -> pgqueue.Task[[int], None]:
    """An app with one task."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="edge")
    def edge(n: int) -> None:
        del n

    return edge


def test_a_big_enqueue_many_in_the_callers_pipeline_enqueues_every_job(dsn: str) -> None:
    """Inside ``conn.pipeline()``, a batch big enough for COPY (which a pipeline cannot run)
    is inserted with INSERT statements: it raised NotSupportedError ("COPY cannot be used in
    pipeline mode") and enqueued nothing."""
    edge = make_task(dsn)
    with psycopg.connect(dsn) as conn, conn.pipeline():
        ids = edge.enqueue_many(conn, [((n,), {}) for n in range(COPY_THRESHOLD + 1)])
    assert len(ids) == COPY_THRESHOLD + 1 and ids == sorted(ids)
    rows = query(dsn, "SELECT id, args FROM pgqueue.jobs ORDER BY id")
    assert rows == [(i, [n]) for n, i in enumerate(ids)]


async def test_a_big_aenqueue_many_in_the_callers_pipeline_enqueues_every_job(dsn: str) -> None:
    """The async twin: aenqueue_many in ``aconn.pipeline()`` takes the INSERT path too."""
    edge = make_task(dsn)
    async with await psycopg.AsyncConnection.connect(dsn) as aconn, aconn.pipeline():
        ids = await edge.aenqueue_many(aconn, [((n,), {}) for n in range(COPY_THRESHOLD)])
    assert len(ids) == COPY_THRESHOLD
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(COPY_THRESHOLD,)]


@pytest.mark.parametrize("key", ["a\x00b", "\x00"])
def test_a_unique_key_holding_nul_is_refused_for_its_nul(key: str) -> None:
    """A key with a NUL character is refused before any SQL, saying why: the message said
    "use 1-255 characters" of a 3-character key."""
    with pytest.raises(ValueError, match="NUL"):
        pgqueue.PgQueue().using("edge", unique_key=key)
