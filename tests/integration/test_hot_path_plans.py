"""The hot path's plans stay small however big the history, and bulk enqueue keeps its order."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgqueue import _store
from tests.helpers import query
from tests.integration import tasks_app as t

HISTORY = 200_000


def plan_nodes(
    conn: psycopg.Connection[Any], q: _store.Query[Any], analyze: bool = False
) -> list[dict[str, Any]]:
    """Every node of the plan of ``q``, flattened: EXPLAIN without running it, or with
    ``analyze`` EXPLAIN ANALYZE, which runs it (the caller rolls back)."""
    explain = sql.SQL("EXPLAIN (ANALYZE {}, FORMAT JSON) {}").format(
        sql.SQL("true" if analyze else "false"), sql.SQL(q.sql)
    )
    [(doc,)] = conn.execute(explain, q.params).fetchall()
    doc = json.loads(doc) if isinstance(doc, str) else doc
    nodes, todo = [], [doc[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def scans_of(nodes: list[dict[str, Any]], table: str) -> set[tuple[str, str | None]]:
    """(node type, index) for every scan of ``table``."""
    return {
        (n["Node Type"], n.get("Index Name"))
        for n in nodes
        if n.get("Relation Name") == table and n["Node Type"] != "ModifyTable"
    }


def fill_history(dsn: str) -> None:
    """A big finished history, a queue of another name, and jobs scheduled later; ANALYZE."""
    query(dsn, """
        INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,
            attempts, max_attempts, run_at, created_at, started_at, finished_at)
        SELECT -i, 'io', 'old', '[]', '{}', 'succeeded', 0, 1, 3, now(), now(), now(), now()
          FROM generate_series(1, %s) i""", [HISTORY])  # fmt: skip
    query(dsn, """
        INSERT INTO pgqueue.active_jobs (queue, task, run_at)
        SELECT CASE WHEN i % 2 = 0 THEN 'other' ELSE 'io' END, 'later',
               now() + CASE WHEN i % 2 = 0 THEN interval '0' ELSE interval '1 hour' END
          FROM generate_series(1, 20000) i""")  # fmt: skip
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task) SELECT 'io', 'now' FROM "
               "generate_series(1, 50)")  # fmt: skip
    query(dsn, "ANALYZE pgqueue.active_jobs, pgqueue.finished_jobs")


@pytest.mark.parametrize("how", ["idle", "counted", "resumed", "resumed idle"])
@pytest.mark.parametrize("wanted", [{"io": 100}, {"io": 100, "other": 5}], ids=["one", "two"])
def test_claim_uses_its_partial_index_with_a_large_history(
    dsn: str, wanted: dict[str, int], how: str
) -> None:
    """With 200k finished rows, the claim (one queue or several; woken from idle, counting
    what it walks, or resuming where the last one ended, with a backlog or idle) reads only
    the claim index and the primary key; a resumed claim looks its point's run_at up in
    history by primary key too."""
    fill_history(dsn)
    resumed = how.startswith("resumed")
    idle = dict.fromkeys(wanted, 1.0) if how == "resumed idle" else None
    with psycopg.connect(dsn) as conn:
        after: dict[str, _store.ClaimPoint] = {}
        if resumed:  # a point per queue, from a claim rolled back
            after = _store.run(conn.cursor(), _store.jobs_claim("w", wanted, 30)).ends
            conn.rollback()
            assert set(after) == set(wanted)
        claim = _store.jobs_claim("w", wanted, 30, after, count=how != "idle", idle=idle)
        nodes = plan_nodes(conn, claim)
    assert scans_of(nodes, "active_jobs") == {
        ("Index Scan", "active_jobs_claim_idx"), ("Index Scan", "active_jobs_pkey"),
    }  # fmt: skip
    assert scans_of(nodes, "finished_jobs") == (
        {("Index Scan", "finished_jobs_pkey")} if resumed else set()
    )


@pytest.mark.parametrize("how", ["skip", "look", "pages"])
@pytest.mark.parametrize("wanted", [{"io": 100}, {"io": 100, "other": 5}], ids=["one", "two"])
def test_claims_that_skip_or_count_pages_read_the_claim_index_and_primary_key_only(
    dsn: str, wanted: dict[str, int], how: str
) -> None:
    """With 200k finished rows, a claim that skips the jobs not yet due (one descent per
    priority, then the due entries), one that looks (caught up) and one that counts pages read
    only the claim index and the primary key, as the worker's probe reads the claim index."""
    fill_history(dsn)
    with psycopg.connect(dsn) as conn:
        nodes = plan_nodes(conn, _store.jobs_claim("w", wanted, 30, **{how: True}))
        probe = plan_nodes(conn, _store.jobs_claim_probe("io", 100))
    claim_index = {
        ("Index Scan", "active_jobs_claim_idx"), ("Index Only Scan", "active_jobs_claim_idx"),
    }  # fmt: skip
    assert scans_of(nodes, "active_jobs") - claim_index == {("Index Scan", "active_jobs_pkey")}
    assert scans_of(nodes, "finished_jobs") == set()
    assert scans_of(probe, "active_jobs") <= claim_index


def test_a_look_behind_a_point_reads_the_claim_index_and_primary_keys_only(dsn: str) -> None:
    """The worker's look behind an idle queue's point, once a second while it resumes, reads
    the claim index up to the point and finds the point's run_at by primary key, in active
    jobs or in a history of 200k rows. (Written with EXISTS, it scanned the whole table.)"""
    fill_history(dsn)
    with psycopg.connect(dsn) as conn:
        point = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 100}, 30)).ends["io"]
        conn.rollback()
        nodes = plan_nodes(conn, _store.jobs_behind_point("io", point, 1.0))
    assert scans_of(nodes, "active_jobs") == {
        ("Index Only Scan", "active_jobs_claim_idx"), ("Index Scan", "active_jobs_pkey"),
    }  # fmt: skip
    assert scans_of(nodes, "finished_jobs") == {("Index Scan", "finished_jobs_pkey")}


def test_ack_finds_rows_by_primary_key_when_statistics_saw_nothing_running(dsn: str) -> None:
    """Stats taken with no running job must not make the ack scan the lease index or the table,
    and a big history is read through its primary key only."""
    fill_history(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = _store.run(conn.cursor(), _store.jobs_claim("w", {"io": 50}, 30)).rows
        outcomes = [_store.Outcome(r[0], r[5], "succeeded", result="null") for r in rows]
        nodes = plan_nodes(conn, _store.jobs_ack(outcomes))
    assert scans_of(nodes, "active_jobs") == {("Index Scan", "active_jobs_pkey")}
    # A job already in history is skipped by a probe of its primary key, not a scan of it all.
    probes = scans_of(nodes, "finished_jobs")
    assert probes and {index for _, index in probes} == {"finished_jobs_pkey"}, probes


def test_a_rescue_pass_reads_only_the_lease_index_when_no_worker_died(dsn: str) -> None:
    """Every worker's maintenance pass looks for expired leases: with 20k queued rows and some
    running ones it must read the lease index and primary key, not the whole table. (With the
    dead-worker clause in one OR, every pass scanned active_jobs: 22 ms per 200k rows.)"""
    fill_history(dsn)
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', worker_id = 'w', attempts = 1, "
               "lease_expires_at = now() + interval '1 hour' WHERE task = 'now'")  # fmt: skip
    query(dsn, "ANALYZE pgqueue.active_jobs")
    with psycopg.connect(dsn) as conn:
        nodes = plan_nodes(conn, _store.leases_rescue([]), analyze=True)
        conn.rollback()
    ran = [n for n in nodes if n.get("Actual Loops", 0) > 0]
    assert scans_of(ran, "active_jobs") == {
        ("Index Scan", "active_jobs_lease_idx"), ("Index Scan", "active_jobs_pkey"),
    }  # fmt: skip
    assert query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'running'") == [(50,)]


def test_big_enqueue_many_returns_ids_in_input_order(dsn: str, conn: psycopg.Connection) -> None:
    """A batch loaded with COPY returns ids matching the calls, in the order given."""
    n = _store.COPY_THRESHOLD + 500
    ids = t.add.using(priority=3).enqueue_many(conn, [((i, 0), {"k": i}) for i in range(n)])
    conn.commit()
    rows = dict(query(dsn, "SELECT id, args->>0 FROM pgqueue.jobs"))
    assert [int(rows[i]) for i in ids] == list(range(n))
    assert query(dsn, "SELECT DISTINCT priority, queue, kwargs ? 'k' FROM pgqueue.jobs") == [
        (3, "io", True)
    ]


async def test_big_aenqueue_many_honours_delay_by_the_database_clock(
    dsn: str, aconn: psycopg.AsyncConnection
) -> None:
    """The async COPY path stores run_at = now() + delay, computed by the database."""
    n = _store.COPY_THRESHOLD
    ids = await t.add.using(delay=3600).aenqueue_many(aconn, [((i, i), {}) for i in range(n)])
    await aconn.commit()
    assert len(set(ids)) == n
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs WHERE run_at - created_at "
                      "BETWEEN interval '3599 s' AND interval '3601 s'") == [(n,)]  # fmt: skip


def test_copy_keeps_tabs_backslashes_newlines_and_unicode(
    dsn: str, conn: psycopg.Connection, app
) -> None:
    """Values that COPY's text format must escape arrive unchanged, task name included."""
    tricky = 'tab\there back\\slash \\N new\nline cr\r "quoted" é ✓'
    task = app.using("odd\\task\tname", queue="io")
    task.enqueue_many(conn, [((tricky, i), {"s": tricky}) for i in range(_store.COPY_THRESHOLD)])
    conn.commit()
    assert query(dsn, "SELECT DISTINCT task, args->>0, kwargs->>'s' FROM pgqueue.jobs") == [
        ("odd\\task\tname", tricky, tricky)
    ]


def test_copy_ids_stay_right_when_the_sequence_is_not_contiguous(
    dsn: str, conn: psycopg.Connection
) -> None:
    """Ids reserved with gaps (other sessions' inserts, or an increment) still map in order."""
    query(dsn, "ALTER SEQUENCE pgqueue.active_jobs_id_seq INCREMENT BY 3")
    n = _store.COPY_THRESHOLD + 10
    ids = t.add.enqueue_many(conn, [((i, 0), {}) for i in range(n)])
    conn.commit()
    rows = dict(query(dsn, "SELECT id, args->>0 FROM pgqueue.jobs"))
    assert [int(rows[i]) for i in ids] == list(range(n))
    assert ids[1] - ids[0] == 3
