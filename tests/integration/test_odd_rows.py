"""Rows that pass every check of pgqueue's tables, written by SQL with values pgqueue never
writes: the job or row they belong to is the only thing that suffers, and says why."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from psycopg import sql

import pgqueue
from pgqueue import _store
from pgqueue._cli import cli
from pgqueue._ops import get_job, list_jobs, live_workers
from pgqueue._periodic import cron_list
from pgqueue._worker._db import Db
from pgqueue._worker._scheduler import Scheduler
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t

ADD = "tests.integration.tasks_app.add"


def finished(dsn: str) -> int:
    """How many jobs have succeeded or failed."""
    counts = states(dsn)
    return counts.get("succeeded", 0) + counts.get("failed", 0)


def without_time_checks(dsn: str, table: str) -> None:
    """Drop the checks that bound ``table``'s timestamps and heartbeat (revisions 0005 to
    0007), which refuse every value the tests below write. pgqueue's readers still bound what
    they load, for a database whose checks are gone (dropped by hand, restored without them),
    and these tests keep that so."""
    names = query(
        dsn, "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass"
             " AND conname ~ '_(at|lease|tick|heartbeat_s)_check$'",
        [f"pgqueue.{table}"],
    )  # fmt: skip
    assert names, table
    for (name,) in names:
        query(dsn, sql.SQL("ALTER TABLE pgqueue.{} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(name)))  # fmt: skip


def cli_json(dsn: str, *args: str) -> object:
    """Run a CLI command with --json and return what it printed, decoded."""
    result = CliRunner().invoke(cli, ["--dsn", dsn, *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


async def test_a_job_whose_attempts_cannot_be_counted_up_fails_and_its_queue_runs(
    dsn: str, conn
) -> None:
    """A queued job with attempts = 2147483647 (an INSERT or UPDATE may write it: the check
    only asks attempts >= 0). Every claim that reached it failed on the claim's attempts + 1
    ("integer out of range"), so its whole queue stopped, and every worker retried the same
    failing claim for ever. Now that job fails, its error naming the column, and the rest run."""
    [(bad,)] = query(
        dsn, "INSERT INTO pgqueue.active_jobs (task, queue, args, attempts)"
             " VALUES (%s, 'io', '[1, 2]', 2147483647) RETURNING id", [ADD],
    )  # fmt: skip
    fine = [t.add.enqueue(conn, i, 1) for i in range(5)]
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues=["io"], poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn) == {"succeeded": 5, "failed": 1}, 20)
    [(state, error, errors)] = query(
        dsn, "SELECT state, last_error, errors FROM pgqueue.jobs WHERE id = %s", [bad]
    )
    assert state == "failed"
    assert error == _store.UNCOUNTABLE_ERROR and "attempts" in error
    assert [e["error"] for e in errors] == [error]
    results = dict(query(dsn, "SELECT id, result FROM pgqueue.jobs WHERE state = 'succeeded'"))
    assert [results[i] for i in fine] == [1, 2, 3, 4, 5]


# (column, value) pairs psycopg cannot load into a datetime in some or every time zone.
FAR = [
    ("created_at", "infinity"),
    ("started_at", "200000-01-01 00:00+00"),
    ("lease_expires_at", "-infinity"),
]


def test_one_job_with_a_timestamp_python_cannot_hold_leaves_every_reader_working(
    dsn: str, conn
) -> None:
    """created_at, started_at, lease_expires_at (active) and finished_at, run_at (history)
    have no bounds: an INSERT or UPDATE can make them infinite or put them past year 9999.
    psycopg refused such a row, so get_job failed, and list_jobs, `pgqueue jobs list` and
    `jobs show` failed for every listing that held it ("the database refused: timestamp too
    large"). They now read as the nearest bound, and the rest of each row as it is."""
    without_time_checks(dsn, "active_jobs")
    without_time_checks(dsn, "finished_jobs")
    fine = t.add.enqueue(conn, 1, 2)
    conn.commit()
    insert = sql.SQL("INSERT INTO pgqueue.active_jobs (task, {}) VALUES ('t', %s) RETURNING id")
    bad = [query(dsn, insert.format(sql.Identifier(c)), [v])[0][0] for c, v in FAR]
    query(
        dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
             " attempts, max_attempts, run_at, created_at, finished_at) VALUES (999, 'default',"
             " 't', '[]', '{}', 'failed', 0, 1, 1, '200000-01-01', now(), 'infinity')",
    )  # fmt: skip
    listed = {job.id: job for job in list_jobs(conn)}
    assert set(listed) == {fine, 999, *bad}
    assert listed[bad[0]].created_at.year == 9999
    assert listed[bad[1]].started_at.year == 9999
    assert listed[bad[2]].lease_expires_at.year == 1
    assert (listed[999].run_at.year, listed[999].finished_at.year) == (9999, 9999)
    assert listed[fine].args == [1, 2] and listed[fine].started_at is None
    for job_id in (*bad, 999):
        job = get_job(conn, job_id)
        assert job is not None and job.id == job_id
        shown = cli_json(dsn, "jobs", "show", str(job_id))
        assert isinstance(shown, dict) and shown["id"] == job_id
    assert len(cli_json(dsn, "jobs", "list")) == 5  # type: ignore[arg-type]


def test_one_job_with_an_integer_too_long_for_python_leaves_every_reader_working(
    dsn: str, conn
) -> None:
    """An integer of 5,000 digits in args (PostgreSQL's numeric keeps 131,072): Python's
    int() refuses more than 4,300, so get_job raised ValueError and list_jobs, `pgqueue jobs
    list` and `show` failed for every listing that held the job. It now reads as a Decimal,
    shown as its digits; a worker still fails that job, saying why."""
    huge = "7" * 5000
    [(bad,)] = query(dsn, "SELECT pgqueue.enqueue('t', %s::jsonb, %s::jsonb)",
                     [f"[{huge}]", f'{{"n": {huge}}}'])  # fmt: skip
    fine = t.add.enqueue(conn, 1, 2)
    conn.commit()
    job = get_job(conn, bad)
    assert job is not None and job.args == [Decimal(huge)] and job.kwargs == {"n": Decimal(huge)}
    assert {j.id for j in list_jobs(conn)} == {bad, fine}
    shown = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "show", str(bad), "--json"])
    assert json.loads(shown.output, parse_int=Decimal)["args"] == [Decimal(huge)]
    listed = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "list", "--json"])
    assert len(json.loads(listed.output, parse_int=Decimal)) == 2
    result = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "show", str(bad)])
    assert result.exit_code == 0 and huge[:40] in result.output, result.output
    result = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "list"])
    assert result.exit_code == 0 and str(bad) in result.output, result.output


def test_json_writes_an_integer_too_long_for_python_as_the_number_it_is(dsn: str, conn) -> None:
    """`--json` wrote an integer of 5,000 digits as a string, and every other integer of its
    document too (9007199254740993 as "9007199254740993"), which the reader had read as
    Decimals with it: a script got strings where the job holds numbers. Each is now the
    number SQL shows, all its digits; get_job reads the short ones as ints."""
    huge = "7" * 5000
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('t', %s::jsonb, %s::jsonb)",
                        [f"[{huge}, 9007199254740993]", f'{{"n": {huge}, "m": 2}}'])  # fmt: skip
    job = get_job(conn, job_id)
    assert job is not None and job.args == [Decimal(huge), 9007199254740993]
    assert type(job.args[1]) is int and type(job.kwargs["m"]) is int
    for command in (("jobs", "show", str(job_id)), ("jobs", "list")):
        output = CliRunner().invoke(cli, ["--dsn", dsn, *command, "--json"]).output
        decoded = json.loads(output, parse_int=Decimal)
        shown = decoded if command[1] == "show" else decoded[0]
        assert shown["args"] == [Decimal(huge), 9007199254740993], command
        assert shown["kwargs"] == {"n": Decimal(huge), "m": 2}, command
        assert '"7777' not in output and '"9007199254740993"' not in output, command
    text = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "show", str(job_id)]).output
    assert f"  args          [{huge}, 9007199254740993]" in text.splitlines()


def test_jobs_show_prints_an_errors_column_of_any_shape(dsn: str) -> None:
    """errors is only NOT NULL: SQL can write an object, a scalar, or an array of anything.
    `pgqueue jobs show` read each entry as an object with a text traceback and crashed with a
    Python traceback (AttributeError) on anything else; it now shows what is there as JSON."""
    shapes = {
        '[1, "x", {"attempt": 2, "error": "boom", "traceback": 5}]': [
            "errors entry (not an object): 1\n",
            'errors entry (not an object): "x"\n',
            "attempt 2 failed at None: boom\n    5",
        ],
        '{"a": 1}': ['errors (not an array): {"a": 1}'],
        '"text"': ['errors (not an array): "text"'],
    }
    for errors, expected in shapes.items():
        [(job_id,)] = query(
            dsn,
            "INSERT INTO pgqueue.active_jobs (task, errors) VALUES ('t', %s) RETURNING id",
            [errors],
        )
        result = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "show", str(job_id)])
        assert (result.exit_code, result.exception) == (0, None), result.output
        for text in expected:
            assert text in result.output


WORKER_ROWS = [
    ("w-inf", "Infinity", "now"),
    ("w-huge", "1e300", "now"),
    ("w-nan", "NaN", "now"),
    ("w-future", "1", "infinity"),
]


async def test_a_worker_row_with_an_odd_heartbeat_or_clock_breaks_no_listing_or_maintenance(
    dsn: str, conn
) -> None:
    """worker_processes rows with a heartbeat_s of 'Infinity' or 1e300 (past what an interval
    holds) or a last_seen_at of 'infinity', as SQL can write them: live_workers, `pgqueue
    workers` and the health check failed for every worker ("interval out of range"), and every
    worker's maintenance pass failed at its worker pruning, so the retention of history never
    ran; a worker given the name of the 'infinity' row failed to start. Now the listing shows
    them, and a worker of that name starts and its maintenance prunes history."""
    without_time_checks(dsn, "worker_processes")
    for name, heartbeat, seen in WORKER_ROWS:
        query(dsn, "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
                   " heartbeat_s, last_seen_at) VALUES (%s, 'h', 1, '{\"q\": 1}', 'v', %s, %s)",
              [name, heartbeat, seen])  # fmt: skip
    listed = {w.id: w for w in live_workers(conn)}
    assert set(listed) == {name for name, _, _ in WORKER_ROWS}
    assert listed["w-future"].last_seen_at.year == 9999 and listed["w-inf"].queues == {"q": 1}
    assert len(cli_json(dsn, "workers")) == 4  # type: ignore[arg-type]
    old = t.add.enqueue(conn, 1, 2)
    conn.commit()
    query(dsn, "WITH gone AS (DELETE FROM pgqueue.active_jobs WHERE id = %s RETURNING *)"
               " INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state,"
               " priority, attempts, max_attempts, run_at, created_at, finished_at)"
               " SELECT id, queue, task, args, kwargs, 'succeeded', priority, 1, max_attempts,"
               " run_at, created_at, now() - interval '2 days' FROM gone", [old])  # fmt: skip
    app = pgqueue.PgQueue(dsn, retention={"succeeded": 3600})
    worker = app.worker(
        dsn=dsn, queues=["io"], poll_interval=0.05, rescue_interval=0.05, name="w-future"
    )
    await run_worker_until(worker, lambda: not query(dsn, "SELECT 1 FROM pgqueue.jobs"), 20)


async def test_a_tick_python_cannot_hold_stops_no_schedule(dsn: str) -> None:
    """periodic_ticks holds any timestamp: one tick of 'infinity' or past year 9999, of any
    name, made the scheduler's start fail on every pass (psycopg cannot load it), so that no
    schedule of the database fired again; `pgqueue cron list` failed too. Such ticks, and
    ticks in the future, are now left out of where schedules start."""
    without_time_checks(dsn, "periodic_ticks")
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('other', 'infinity'),"
               " ('beat', '200000-01-01'), ('gone', '-infinity')")  # fmt: skip
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="beat")
    async def beat() -> None:
        return None

    sched = Scheduler(app.periodics.values(), Db(dsn, "test"))
    try:
        for _ in range(3):
            await sched.step()
            await asyncio.sleep(0.6)
    finally:
        await sched.db.close()
    assert states(dsn).get("queued", 0) >= 1
    assert [s.name for s in cron_list(app, dsn)] == ["beat"]


async def test_a_trace_context_of_any_shape_in_meta_lets_its_job_run(dsn: str) -> None:
    """meta is an object (rev. 0006), but what it holds under "trace" is whatever SQL wrote.
    With pgqueue.tracing on, the propagator raised on a trace context that is not an object
    of texts, so every attempt of such a job failed before its task ran. It now starts a span
    without a parent, and the job runs."""
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from pgqueue import tracing

    app = pgqueue.PgQueue(dsn)

    @app.task(name="work", queue="q")
    async def work(n: int) -> int:
        return n

    tracing.instrument(app, tracer_provider=sdk.TracerProvider())
    shapes = ['{"trace": [1]}', '{"trace": "x"}', '{"trace": {"traceparent": 5}}', '{"trace": 1}']
    for meta in shapes:
        query(dsn, "SELECT pgqueue.enqueue('work', '[1]', queue => 'q', max_attempts => 1,"
                   " meta => %s::jsonb)", [meta])  # fmt: skip
    worker = app.worker(queues=["q"], poll_interval=0.05)
    await run_worker_until(worker, lambda: finished(dsn) == len(shapes), 20)
    assert states(dsn) == {"succeeded": len(shapes)}
