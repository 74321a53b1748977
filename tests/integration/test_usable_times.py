"""From SQL too, every timestamp pgqueue keeps, and a worker's heartbeat, is one its readers
can load (rev. 0007); rows that held others are repaired on upgrade."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue
import pgqueue.admin
from pgqueue._embed import install_revision
from pgqueue._options import RUN_AT_MAX, RUN_AT_MIN
from pgqueue._retry import MAX_DELAY
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

TABLES = ("active_jobs", "finished_jobs", "worker_processes", "periodic_ticks")
CHECKS = (
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated"
    " FROM pg_constraint WHERE contype = 'c' AND connamespace = 'pgqueue'::regnamespace"
    " ORDER BY 1, 2"
)
# One row of each table, as pgqueue writes it; each test below changes one of its values.
ROWS = [
    "SELECT pgqueue.enqueue('t')",
    "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
    " attempts, max_attempts, run_at, created_at, started_at) VALUES (-1, 'default', 't', '[]',"
    " '{}', 'succeeded', 0, 1, 1, now(), now(), now())",
    "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version, heartbeat_s)"
    " VALUES ('w', 'h', 1, '[]', 'v', 5)",
    "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', now())",
]
FAR = ["infinity", "-infinity", "200000-01-01 00:00+00", "9999-12-31 00:00:00.000001+00",
       "0001-01-01 23:59:59.999999+00"]  # fmt: skip
# (table, column, value): every value a check of 0007 refuses.
BAD = [
    *[("active_jobs", c, v) for c in ("created_at", "started_at", "lease_expires_at") for v in FAR],
    *[("worker_processes", c, v) for c in ("started_at", "last_seen_at") for v in FAR],
    *[("worker_processes", "heartbeat_s", v) for v in ("NaN", "Infinity", "0", "-1", "1e300")],
    ("worker_processes", "heartbeat_s", "31557600000.000004"),
    *[("periodic_ticks", c, v) for c in ("tick", "created_at") for v in FAR],
]
CASTS = {"heartbeat_s": "double precision"}


def write_rows(dsn: str) -> None:
    for statement in ROWS:
        query(dsn, statement)


def everything(dsn: str) -> list[list[tuple[Any, ...]]]:
    """Every row of the four tables, as psycopg loads them (which fails on a time it cannot
    hold): the reader that 0007 keeps working."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            conn.execute(sql.SQL("SELECT * FROM pgqueue.{} ORDER BY 1").format(
                sql.Identifier(table))).fetchall()
            for table in TABLES
        ]  # fmt: skip


@pytest.mark.parametrize("table, column, value", BAD)
def test_sql_cannot_write_a_time_or_heartbeat_no_reader_can_load(
    dsn: str, table: str, column: str, value: str
) -> None:
    """An UPDATE fails on the check that names the table and column, and the row keeps its
    values. Before 0007 each of these was written, and psycopg then failed on the row."""
    write_rows(dsn)
    before = everything(dsn)
    statement = sql.SQL("UPDATE pgqueue.{} SET {} = %s::{}").format(
        sql.Identifier(table),
        sql.Identifier(column),
        sql.SQL(CASTS.get(column, "timestamptz")),
    )
    with pytest.raises(psycopg.errors.CheckViolation, match=f"{table}_{column}_check|lease"):
        query(dsn, statement, [value])
    assert everything(dsn) == before


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
def test_the_bounds_themselves_are_written_and_read_back(dsn: str, zone: str) -> None:
    """The first and last times a check takes, and the longest heartbeat (1000 years, the
    longest pgqueue.Worker takes), are written in any session zone and loaded back."""
    write_rows(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(zone)))
        for bound in (RUN_AT_MIN, RUN_AT_MAX):
            conn.execute(
                "UPDATE pgqueue.active_jobs SET created_at = %(b)s, started_at = %(b)s,"
                " lease_expires_at = %(b)s", {"b": bound},
            )  # fmt: skip
            conn.execute(
                "UPDATE pgqueue.finished_jobs SET run_at = %(b)s, created_at = %(b)s,"
                " started_at = %(b)s, finished_at = %(b)s", {"b": bound},
            )  # fmt: skip
            conn.execute(
                "UPDATE pgqueue.worker_processes SET started_at = %(b)s, last_seen_at = %(b)s,"
                " heartbeat_s = 31557600000", {"b": bound},
            )  # fmt: skip
            conn.execute("UPDATE pgqueue.periodic_ticks SET tick = %(b)s, created_at = %(b)s",
                         {"b": bound})  # fmt: skip
            loaded = everything(dsn)
            assert bound in loaded[0][0] and bound in loaded[1][0] and bound in loaded[3][0]
            assert 31557600000 in loaded[2][0]
            assert conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (2,)


def at_0006_with_odd_rows(dsn: str) -> None:
    """Revision 0006, and rows of every table holding what 0007 refuses."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0006", lambda text: cur.execute(text.encode()))
        cur.execute(
            "INSERT INTO pgqueue.active_jobs (id, task, queue, args, state, worker_id,"
            " attempts, created_at, started_at, lease_expires_at) VALUES"
            " (1, %(t)s, 'io', '[1, 1]', 'queued', NULL, 0, 'infinity', NULL, NULL),"
            " (2, %(t)s, 'io', '[1, 2]', 'running', 'gone', 1, now(), '200000-01-01',"
            "  now() - interval '1 s'),"
            " (3, %(t)s, 'io', '[1, 3]', 'queued', NULL, 0, now(), '-infinity', 'infinity'),"
            " (4, %(t)s, 'io', '[1, 4]', 'queued', NULL, 0, now(), NULL, NULL)",
            {"t": t.add.name},
        )
        cur.execute(
            "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
            " attempts, max_attempts, meta, run_at, created_at, started_at, finished_at) VALUES"
            " (11, 'io', %(t)s, '[2, 1]', '{}', 'cancelled', 0, 0, 3, '{}', now(), now(), NULL,"
            "  'infinity'),"
            " (12, 'io', %(t)s, '[2, 2]', '{}', 'cancelled', 0, 0, 3, '{\"k\": 1}', now(),"
            "  '-infinity', 'infinity', now()),"
            " (13, 'io', %(t)s, '[2, 3]', '{}', 'cancelled', 0, 0, 3, '[1]', '200000-01-01',"
            "  now(), now(), now()),"
            " (14, 'io', %(t)s, '[2, 4]', '{}', 'cancelled', 0, 0, 3, '{}', now(), now(), now(),"
            "  now())",
            {"t": t.add.name},
        )
        cur.execute(
            "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
            " heartbeat_s, started_at, last_seen_at) VALUES"
            " ('w-inf', 'h', 1, '[]', 'v', 'Infinity', now(), now()),"
            " ('w-nan', 'h', 2, '[]', 'v', 'NaN', now(), now()),"
            " ('w-zero', 'h', 3, '[]', 'v', 0, now(), now()),"
            " ('w-neg', 'h', 4, '[]', 'v', -5, now(), now()),"
            " ('w-future', 'h', 5, '[]', 'v', 5, '-infinity', 'infinity'),"
            " ('w-fine', 'h', 6, '[]', 'v', 5, now(), now())"
        )
        cur.execute(
            "INSERT INTO pgqueue.periodic_ticks (name, tick, created_at) VALUES"
            " ('a', 'infinity', now()), ('b', '200000-01-01', now()),"
            " ('c', date_trunc('minute', now()), '-infinity'),"
            " ('d', date_trunc('minute', now()), now())"
        )


async def test_upgrading_from_0006_repairs_every_table_and_every_reader_loads_it(
    empty_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each odd time becomes the time of the upgrade with the old one in meta (jobs); an odd
    heartbeat the nearest usable one; an odd tick is deleted. Then psycopg loads every row
    and both views, a worker runs the active jobs (rescuing the running one) and the finished
    ones can be retried. One NOTICE per table says what was done."""
    at_0006_with_odd_rows(empty_dsn)
    with caplog.at_level(logging.WARNING, "pgqueue.migrate"):
        pgqueue.migrate(empty_dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    everything(empty_dsn)
    for view in ("jobs", "workers", "queue_stats"):
        query(empty_dsn, sql.SQL("SELECT * FROM pgqueue.{}").format(sql.Identifier(view)))

    now_ish = "{} BETWEEN now() - interval '1 minute' AND now()"
    recent = {c: sql.SQL(now_ish).format(sql.Identifier(c)) for c in (
        "created_at", "started_at", "lease_expires_at", "finished_at", "run_at")}  # fmt: skip
    active = query(empty_dsn, sql.SQL(
        "SELECT id, {}, {}, {}, meta FROM pgqueue.active_jobs ORDER BY id").format(
            recent["created_at"], recent["started_at"], recent["lease_expires_at"]))  # fmt: skip
    assert active == [
        (1, True, None, None, {"created_at_was": "infinity"}),
        (2, True, True, True, {"started_at_was": "200000-01-01 00:00:00+00"}),
        (3, True, True, True, {"started_at_was": "-infinity", "lease_expires_at_was": "infinity"}),
        (4, True, None, None, {}),
    ]
    history = query(empty_dsn, sql.SQL(
        "SELECT id, {}, {}, {}, meta FROM pgqueue.finished_jobs ORDER BY id").format(
            recent["created_at"], recent["started_at"], recent["finished_at"]))  # fmt: skip
    assert history == [
        (11, True, None, True, {"finished_at_was": "infinity"}),
        (
            12,
            True,
            True,
            True,
            {"k": 1, "created_at_was": "-infinity", "started_at_was": "infinity"},
        ),
        (13, True, True, True, {"meta_was": [1], "run_at_was": "200000-01-01 00:00:00+00"}),
        (14, True, True, True, {}),
    ]
    workers = query(empty_dsn, "SELECT id, heartbeat_s, started_at > now() - interval '1 minute',"
                               " last_seen_at > now() - interval '1 minute'"
                               " FROM pgqueue.worker_processes ORDER BY pid")  # fmt: skip
    assert workers == [
        ("w-inf", 31557600000.0, True, True),
        ("w-nan", 31557600000.0, True, True),
        ("w-zero", 0.001, True, True),
        ("w-neg", 0.001, True, True),
        ("w-future", 5.0, True, True),
        ("w-fine", 5.0, True, True),
    ]
    ticks = query(empty_dsn, "SELECT name, created_at > now() - interval '1 minute'"
                             " FROM pgqueue.periodic_ticks ORDER BY name")  # fmt: skip
    assert ticks == [("c", True), ("d", True)]
    assert [r.getMessage() for r in caplog.records if r.name == "pgqueue.migrate"] == [
        "pgqueue 0007: 3 rows of pgqueue.finished_jobs held a timestamp no reader can load (ids"
        " 11, 12, 13); each such timestamp is now the time of this upgrade, and the old value is"
        " in meta->>'<column>_was'",
        "pgqueue 0007: 3 rows of pgqueue.active_jobs held a timestamp no reader can load (ids"
        " 1, 2, 3); each such timestamp is now the time of this upgrade, and the old value is in"
        " meta->>'<column>_was'",
        "pgqueue 0007: 2 rows of pgqueue.periodic_ticks held a tick no reader can load ('a' at"
        " infinity, 'b' at 200000-01-01 00:00:00+00); no schedule fires at such a time, and they"
        " are deleted",
        "pgqueue 0007: 1 rows of pgqueue.periodic_ticks held a created_at no reader can load; it"
        " is now the time of this upgrade",
        "pgqueue 0007: 5 rows of pgqueue.worker_processes held a heartbeat or a time no reader"
        " can use (ids w-future, w-inf, w-nan, w-neg, w-zero); they now hold the nearest usable"
        " value",
    ]
    retried = query(empty_dsn, "SELECT pgqueue.retry(id) FROM generate_series(11, 14) AS id")
    assert retried == [(True,)] * 4
    worker = t.app.worker(dsn=empty_dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.1)
    await run_worker_until(worker, lambda: states(empty_dsn) == {"succeeded": 8})


def test_fresh_and_upgraded_databases_end_with_the_same_checks(dsn: str, empty_dsn: str) -> None:
    """Same definitions, all validated, whichever way the database came; and the migration
    leaves no helper function behind."""
    at_0006_with_odd_rows(empty_dsn)
    pgqueue.migrate(empty_dsn)
    fresh, upgraded = query(dsn, CHECKS), query(empty_dsn, CHECKS)
    assert upgraded == fresh
    assert all(valid for _, _, _, valid in fresh)
    names = {(table, name) for table, name, _, _ in fresh}
    for table, column in [
        ("pgqueue.active_jobs", "created_at"),
        ("pgqueue.active_jobs", "started_at"),
        ("pgqueue.worker_processes", "heartbeat_s"),
        ("pgqueue.worker_processes", "started_at"),
        ("pgqueue.worker_processes", "last_seen_at"),
        ("pgqueue.periodic_ticks", "tick"),
        ("pgqueue.periodic_ticks", "created_at"),
    ]:
        assert (table, f"{table.split('.')[1]}_{column}_check") in names
    leftover = "SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgqueue_0007%'"
    assert query(empty_dsn, leftover) == [(0,)]


def test_the_longest_heartbeat_sql_takes_is_the_longest_a_worker_takes(dsn: str) -> None:
    """The check's bounds are the Worker's: above 0 (a lease whose third is 0 is refused; it
    made the worker fail at start on the check) and at most MAX_DELAY (1000 years), which the
    SQL spells as a number, so this keeps the two equal."""
    [(definition,)] = query(
        dsn, "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
             " WHERE conname = 'worker_processes_heartbeat_s_check'")  # fmt: skip
    bounds = re.findall(r"heartbeat_s ([<>]=?) \(?'?(\d+)", definition)
    assert bounds == [(">", "0"), ("<=", f"{MAX_DELAY:.0f}")], definition
    with pytest.raises(ValueError, match="at most"):
        t.app.worker(dsn=dsn, lease=MAX_DELAY * 2)
    with pytest.raises(ValueError, match="too short to beat under"):  # its heartbeat was 0
        t.app.worker(dsn=dsn, lease=5e-324, ack_interval=0)


def test_every_failed_job_is_retried_whatever_odd_values_the_history_holds(dsn: str) -> None:
    """The history gains no check, so a row there may hold a created_at, meta or timeout that
    active_jobs refuses (written by hand, or acknowledged while an upgrade ran). `pgqueue jobs
    retry --failed` retries every failed job in one statement, so that one row failed them
    all on active_jobs_created_at_check. Such values now come back as the upgrades repair
    them, the old ones in meta."""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state,"
               " priority, attempts, max_attempts, run_at, created_at, meta, timeout)"
               " SELECT g, 'io', 't', '[]', '{}', 'failed', 0, 3, 3, now(), now(), '{}', 1.5"
               " FROM generate_series(1, 10) AS g")  # fmt: skip
    query(dsn, "UPDATE pgqueue.finished_jobs SET created_at = 'infinity' WHERE id = 3")
    query(dsn, "UPDATE pgqueue.finished_jobs SET meta = '[1]', timeout = 'NaN' WHERE id = 5")
    query(dsn, "UPDATE pgqueue.finished_jobs SET timeout = 0 WHERE id = 7")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert pgqueue.admin.retry_failed(conn) == 10
    assert states(dsn) == {"queued": 10}
    odd = query(dsn, "SELECT id, meta, timeout, created_at > now() - interval '1 minute'"
                     " FROM pgqueue.active_jobs WHERE meta <> '{}' ORDER BY id")  # fmt: skip
    assert odd == [
        (3, {"created_at_was": "infinity"}, 1.5, True),
        (5, {"meta_was": [1], "timeout_was": "NaN"}, None, True),
        (7, {"timeout_was": "0"}, None, True),
    ]


def test_the_upgrade_waits_for_its_locks_without_holding_up_workers(empty_dsn: str) -> None:
    """0007 locks active_jobs, worker_processes and periodic_ticks together, in tries of at
    most 100 ms that let go of everything when they fail. Before, its first ALTER queued an
    exclusive lock behind an open transaction that had enqueued a job, and every claim and
    heartbeat queued behind it until that transaction ended (and a heartbeat that locked
    worker_processes first could close a deadlock that aborted the migration). Here a claim
    and a heartbeat sent while the migration waits finish before the transaction ends."""
    at_0006_with_odd_rows(empty_dsn)
    finished: dict[str, float] = {}
    with psycopg.connect(empty_dsn) as holder:
        holder.execute("SELECT pgqueue.enqueue('t')")  # open: holds active_jobs until commit

        def migrate() -> None:
            pgqueue.migrate(empty_dsn)
            finished["migration"] = time.monotonic()

        upgrade = threading.Thread(target=migrate)
        upgrade.start()
        time.sleep(0.5)  # the migration has repaired the history and is trying its locks
        with psycopg.connect(
            empty_dsn, autocommit=True, prepare_threshold=None, options="-c lock_timeout=10s"
        ) as worker:  # before, both statements waited for the holder: fail rather than hang
            worker.execute("UPDATE pgqueue.active_jobs SET priority = 1 WHERE id = 4")
            finished["claim"] = time.monotonic()
            worker.execute(
                "WITH seen AS (UPDATE pgqueue.worker_processes SET last_seen_at = now()"
                " WHERE id = 'w-fine' RETURNING id)"
                " UPDATE pgqueue.active_jobs SET priority = 2 WHERE id = 4"
            )
            finished["heartbeat"] = time.monotonic()
        assert "migration" not in finished
        released = time.monotonic()
    upgrade.join(60)
    assert finished["claim"] < released and finished["heartbeat"] < released
    assert finished["migration"] > released
    assert pgqueue.schema_check(empty_dsn) is None
    assert query(empty_dsn, "SELECT priority FROM pgqueue.active_jobs WHERE id = 4") == [(2,)]
