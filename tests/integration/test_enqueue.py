"""Enqueue joins the caller's transaction: commit → job and one wake-up, rollback → nothing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t


def listener(dsn: str) -> psycopg.Connection:
    """An autocommit connection listening on the job channel."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("LISTEN pgqueue_jobs")
    return conn


def notifications(conn: psycopg.Connection) -> list[str]:
    """Payloads received so far (waits briefly for stragglers)."""
    return [n.payload for n in conn.notifies(timeout=0.3)]


def test_rollback_leaves_no_job_and_no_wake_up(dsn: str, conn: psycopg.Connection) -> None:
    """A rolled-back enqueue leaves no row and sends no notification."""
    with listener(dsn) as listen:
        t.add.enqueue(conn, 1, 2)
        conn.rollback()
        assert notifications(listen) == []
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_commit_makes_the_job_and_one_wake_up_visible(dsn: str, conn: psycopg.Connection) -> None:
    """The job is invisible to others until commit; then one notification names its queue."""
    with listener(dsn) as listen:
        job_id = t.add.enqueue(conn, 1, 2)
        assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]
        assert notifications(listen) == []
        conn.commit()
        assert notifications(listen) == ["io"]
    assert query(dsn, "SELECT id, task, args, state FROM pgqueue.jobs") == [
        (job_id, "tests.integration.tasks_app.add", [1, 2], "queued")
    ]


def test_enqueue_never_commits(dsn: str, conn: psycopg.Connection) -> None:
    """After enqueue the caller's transaction is still open and theirs to decide."""
    t.add.enqueue(conn, 1, 2)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def test_enqueue_many_sends_one_notification_per_statement(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A thousand jobs in one enqueue_many wake workers once, not a thousand times."""
    with listener(dsn) as listen:
        ids = t.add.enqueue_many(conn, [((i, i), {}) for i in range(1000)])
        conn.commit()
        assert notifications(listen) == ["io"]
    assert len(ids) == 1000 and ids == sorted(ids)
    rows = query(dsn, "SELECT id, args FROM pgqueue.jobs ORDER BY id")
    assert [(i, [n, n]) for n, i in enumerate(ids)] == rows


def test_delayed_jobs_wake_nobody_and_use_the_database_clock(
    dsn: str, conn: psycopg.Connection
) -> None:
    """delay= sets run_at = now() + delay in SQL; a job not yet due sends no notification."""
    with listener(dsn) as listen:
        job_id = t.add.using(delay=60).enqueue(conn, 1, 2)
        conn.commit()
        assert notifications(listen) == []
    [(seconds,)] = query(
        dsn, "SELECT extract(epoch FROM run_at - created_at) FROM pgqueue.jobs WHERE id = %s",
        [job_id],
    )  # fmt: skip
    assert float(seconds) == pytest.approx(60, abs=0.01)


def test_run_at_and_options_are_stored(dsn: str, conn: psycopg.Connection) -> None:
    """using(queue, priority, run_at, max_attempts) lands in the row."""
    when = datetime.now(UTC) + timedelta(days=1)
    job_id = t.add.using(queue="other", priority=7, run_at=when, max_attempts=9).enqueue(
        conn, 1, b=2
    )
    conn.commit()
    assert query(
        dsn, "SELECT queue, priority, run_at, max_attempts, kwargs FROM pgqueue.jobs WHERE id = %s",
        [job_id],
    ) == [("other", 7, when, 9, {"b": 2})]  # fmt: skip


@pytest.mark.parametrize(
    ("wall", "fold", "utc"),
    [(datetime(2026, 10, 25, 2, 30), 0, datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
     (datetime(2026, 10, 25, 2, 30), 1, datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
     (datetime(2026, 3, 29, 2, 30), 0, datetime(2026, 3, 29, 1, 30, tzinfo=UTC))],
)  # fmt: skip
def test_a_run_at_in_a_daylight_saving_change_is_the_instant_docs_say(
    dsn: str, conn: psycopg.Connection, wall: datetime, fold: int, utc: datetime
) -> None:
    """docs/how-to/scheduling.md: a repeated wall time is its first occurrence unless fold=1,
    a skipped one takes the offset from before the change."""
    run_at = wall.replace(fold=fold, tzinfo=ZoneInfo("Europe/Paris"))
    job_id = t.add.using(run_at=run_at).enqueue(conn, 1, 2)
    conn.commit()
    assert query(dsn, "SELECT run_at FROM pgqueue.jobs WHERE id = %s", [job_id]) == [(utc,)]


def test_a_timedelta_timeout_is_stored_in_seconds_by_every_insert_path(
    dsn: str, conn: psycopg.Connection
) -> None:
    """timeout=timedelta(...) passed validation but reached SQL as an interval, which the
    float column refused: enqueue, enqueue_many and its COPY path now store seconds."""
    task = t.add.using(timeout=timedelta(seconds=90))
    ids = [task.enqueue(conn, 1, 2)]
    ids += task.enqueue_many(conn, [((1, 2), {})])
    ids += task.enqueue_many(conn, [((1, 2), {})] * COPY_THRESHOLD)
    conn.commit()
    timeouts = query(dsn, "SELECT DISTINCT timeout FROM pgqueue.jobs WHERE id = ANY(%s)", [ids])
    assert timeouts == [(90.0,)]


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [(((object(),), {}), TypeError, "enqueue_many call 2: positional argument 0 of task"),
     (((), {"b": float("nan")}), TypeError, "enqueue_many call 2: keyword argument 'b'"),
     ((("x" * 2_000_000,), {}), ValueError, "enqueue_many call 2: arguments of"),
     (5, TypeError, r"enqueue_many call 2: must be an \(args, kwargs\) pair, got 5"),
     (((1, 2),), TypeError, r"enqueue_many call 2: must be an \(args, kwargs\) pair"),
     (("12", {}), TypeError, "enqueue_many call 2: args must be a tuple or list, got '12'"),
     (({"a": 1, "b": 2}, {}), TypeError, "enqueue_many call 2: args must be a tuple or list"),
     (((1,), [("b", 2)]), TypeError, r"enqueue_many call 2: kwargs must be a dict, got \["),
     ((b"12", {}), TypeError, "enqueue_many call 2: args must be a tuple or list, got b'12'"),
     ((None, {}), TypeError, "enqueue_many call 2: args must be a tuple or list, got None"),
     ((7, {}), TypeError, "enqueue_many call 2: args must be a tuple or list, got 7"),
     (((1,), {1: 2}), TypeError, "enqueue_many call 2: keyword argument names of task 'tests.integ"
                                 "ration.tasks_app.add' must be str, got 1"),
     (((1,), {"b": 2, None: 3}), TypeError, "enqueue_many call 2: keyword .* str, got None")],
)  # fmt: skip
def test_a_bad_call_in_enqueue_many_is_named_by_its_index_and_nothing_is_written(
    dsn: str, conn: psycopg.Connection, bad: object, error: type[Exception], message: str
) -> None:
    """The error says which call of the batch is bad; no job of the batch is written and the
    transaction stays usable. A str as args used to be enqueued as its characters ("12" ran
    add("1", "2")), a dict as its keys, pairs as kwargs; a call that was no pair raised
    "cannot unpack non-iterable int object"; a JSON error named the argument, not the call; a
    keyword name that was no str was written as one ({1: 2} as {"1": 2}), and every attempt of
    the job failed."""
    good = ((1, 2), {})
    for calls in ([good, good, bad, good], [good, good, bad] + [good] * COPY_THRESHOLD):
        with pytest.raises(error, match=message):
            t.add.enqueue_many(conn, calls)  # type: ignore[arg-type]
        with pytest.raises(error, match=message):
            t.add.enqueue_many(conn, iter(calls))  # type: ignore[arg-type]
    assert len(t.add.enqueue_many(conn, [good, good])) == 2
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(2,)]


@pytest.mark.parametrize("bad_row", ["x", None])
def test_an_error_of_the_callers_own_iterable_is_not_blamed_on_a_call(
    dsn: str, conn: psycopg.Connection, bad_row: object
) -> None:
    """An error the iterable of calls raises itself (here a generator's int() of a bad row)
    is raised as it is, traceback and all: it used to become "enqueue_many call 1: ...", a
    new error without the generator's frame, as if the call had been bad. Nothing is written."""
    rows = [1, bad_row]
    calls = (((int(row), 2), {}) for row in rows)  # type: ignore[call-overload]
    with pytest.raises((ValueError, TypeError)) as raised:
        t.add.enqueue_many(conn, calls)
    assert not str(raised.value).startswith("enqueue_many call")
    assert str(raised.value).startswith(("invalid literal for int()", "int() argument must be"))
    assert "<genexpr>" in [entry.name for entry in raised.traceback]
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_unserialisable_arguments_fail_before_sql_and_keep_the_transaction(
    dsn: str, conn: psycopg.Connection
) -> None:
    """TypeError names the argument, and the caller's transaction is still usable."""
    conn.execute("CREATE TABLE orders (id int)")
    with pytest.raises(TypeError, match="keyword argument 'b'"):
        t.add.enqueue(conn, 1, b=object())
    conn.execute("INSERT INTO orders VALUES (1)")
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM orders") == [(1,)]


def test_cursors_and_async_connections_are_accepted(dsn: str, conn: psycopg.Connection) -> None:
    """enqueue takes a Cursor too, and leaves the caller's cursor results alone."""
    with conn.cursor() as cur:
        cur.execute("SELECT 42")
        t.add.enqueue(cur, 1, 2)
        assert cur.fetchone() == (42,)
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1,)]


async def test_aenqueue_on_async_connection_and_cursor(
    dsn: str, aconn: psycopg.AsyncConnection
) -> None:
    """aenqueue works on AsyncConnection and AsyncCursor, inside the caller's transaction."""
    first = await t.add.aenqueue(aconn, 1, 2)
    async with aconn.cursor() as cur:
        second = await t.add.aenqueue(cur, 3, 4)
    ids = await t.add.aenqueue_many(aconn, [((5, 6), {})])
    await aconn.rollback()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]
    assert first < second < ids[0]


def test_sync_and_async_connections_are_not_mixed_up(conn: psycopg.Connection) -> None:
    """enqueue on an async connection (or anything unknown) raises a TypeError that says why."""
    with pytest.raises(TypeError, match=r"cannot enqueue on a builtins\.str"):
        t.add.enqueue("not a connection", 1, 2)


def test_enqueue_by_name_needs_no_import_of_the_task(dsn: str, conn: psycopg.Connection) -> None:
    """app.enqueue(conn, name, ...) works for names this process never registered."""
    producer = pgqueue.PgQueue()
    job_id = producer.enqueue(conn, "billing.tasks.send_receipt", 42)
    other = producer.using("billing.tasks.render", queue="cpu", priority=3).enqueue(conn, 7)
    conn.commit()
    assert query(dsn, "SELECT id, task, queue, priority FROM pgqueue.jobs ORDER BY id") == [
        (job_id, "billing.tasks.send_receipt", "default", 0),
        (other, "billing.tasks.render", "cpu", 3),
    ]


def test_database_rejects_rows_that_break_the_contract(dsn: str) -> None:
    """Raw SQL cannot insert bad states, queue names or oversized payloads."""
    bad = [
        "INSERT INTO pgqueue.active_jobs (task, state) VALUES ('t', 'succeeded')",
        "INSERT INTO pgqueue.active_jobs (task, queue) VALUES ('t', 'bad queue')",
        "INSERT INTO pgqueue.active_jobs (task, args) VALUES ('t', '{}')",
        "INSERT INTO pgqueue.active_jobs (task, args) "
        "SELECT 't', jsonb_build_array(repeat(md5(g::text), 40000)) FROM generate_series(1,1) g",
    ]
    for statement in bad:
        with pytest.raises(psycopg.errors.CheckViolation):
            query(dsn, statement)


# 100,000 zeros: 200 kB as JSON text, within max_payload_bytes; 1.2 MB as jsonb, over the
# table's active_jobs_payload_check.
ZEROS = [0] * 100_000
SMALL, BIG = ((1, 2), {}), ((ZEROS, 0), {})
STORED = r"arguments of 'tests\.integration\.tasks_app\.add' are over 1048576 bytes as stored"


def test_arguments_over_the_tables_limit_as_jsonb_raise_the_apps_size_error(
    conn: psycopg.Connection,
) -> None:
    """Arguments whose JSON passes max_payload_bytes but whose jsonb the table refuses raise a
    ValueError that names the task and the stored size (the CheckViolation is its cause), by
    every insert path, not a raw CheckViolation; the caller's transaction is left aborted, for
    them to roll back, as after any refused statement."""
    paths = [
        (lambda: t.add.enqueue(conn, ZEROS, 0), f"^{STORED}"),
        (lambda: t.add.using(unique_key="k").enqueue(conn, ZEROS, 0), f"^{STORED}"),
        (lambda: t.add.enqueue_many(conn, [SMALL, BIG]),
         f"^one of the 2 jobs of enqueue_many: {STORED}"),
        (lambda: t.add.enqueue_many(conn, [SMALL] * 700 + [BIG] + [SMALL] * 299),
         f"^enqueue_many call 700: {STORED}"),
    ]  # fmt: skip
    for enqueue, message in paths:
        with pytest.raises(ValueError, match=message) as raised:
            enqueue()
        assert isinstance(raised.value.__cause__, psycopg.errors.CheckViolation)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()


async def test_async_arguments_over_the_tables_limit_as_jsonb_raise_the_apps_size_error(
    aconn: psycopg.AsyncConnection,
) -> None:
    """The async twins translate the refusal the same way."""
    with pytest.raises(ValueError, match=f"^{STORED}"):
        await t.add.aenqueue(aconn, ZEROS, 0)
    await aconn.rollback()
    with pytest.raises(ValueError, match=f"^enqueue_many call 0: {STORED}"):
        await t.add.aenqueue_many(aconn, [BIG] + [SMALL] * (COPY_THRESHOLD - 1))
    await aconn.rollback()


def test_other_check_violations_on_enqueue_stay_themselves(conn: psycopg.Connection) -> None:
    """Only the payload check is translated: another refused row keeps its CheckViolation."""
    conn.execute("ALTER TABLE pgqueue.active_jobs ADD CONSTRAINT no_sevens CHECK (args <> '[7]')")
    with pytest.raises(psycopg.errors.CheckViolation, match="no_sevens"):
        t.add.enqueue(conn, 7)
    conn.rollback()


MISSING = "pgqueue's schema is not installed in this database: run `pgqueue migrate`"


def test_enqueue_on_a_database_without_the_schema_says_to_migrate(empty_dsn: str) -> None:
    """Enqueueing before `pgqueue migrate` raises SchemaError saying so, by every insert path,
    not a raw UndefinedTable; the caller's transaction is left aborted, for them to roll back."""
    paths = [
        lambda c: t.add.enqueue(c, 1, 2),
        lambda c: t.add.using(unique_key="k").enqueue(c, 1, 2),
        lambda c: t.add.enqueue_many(c, [((1, 2), {})] * 3),
        lambda c: t.add.enqueue_many(c, [((1, 2), {})] * COPY_THRESHOLD),
    ]
    with psycopg.connect(empty_dsn) as c:
        for enqueue in paths:
            with pytest.raises(pgqueue.SchemaError, match=MISSING) as raised:
                enqueue(c)
            undefined = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)
            assert isinstance(raised.value.__cause__, undefined)
            assert "rolled back" in str(raised.value)
            assert c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
            c.rollback()


async def test_aenqueue_on_a_database_without_the_schema_says_to_migrate(empty_dsn: str) -> None:
    """The async twins say so too."""
    async with await psycopg.AsyncConnection.connect(empty_dsn) as c:
        with pytest.raises(pgqueue.SchemaError, match=MISSING):
            await t.add.aenqueue(c, 1, 2)
        await c.rollback()
        with pytest.raises(pgqueue.SchemaError, match=MISSING):
            await t.add.aenqueue_many(c, [((1, 2), {})] * COPY_THRESHOLD)
        await c.rollback()


def audit_trigger(conn: psycopg.Connection) -> None:
    """A user's trigger on pgqueue.active_jobs: it copies each job's args into the user's own
    table active_jobs, whose check PostgreSQL names active_jobs_payload_check, and reads a
    table that does not exist for args [1, 1]."""
    conn.execute("""
        CREATE TABLE public.active_jobs (payload text CHECK (length(payload) < 6));
        CREATE FUNCTION public.audit_job() RETURNS trigger LANGUAGE plpgsql
            SET search_path = public AS $$
        BEGIN
            IF NEW.args = '[1, 1]' THEN INSERT INTO no_such_table VALUES (NEW.id); END IF;
            INSERT INTO active_jobs (payload) VALUES (NEW.args::text);
            RETURN NEW;
        END $$;
        CREATE TRIGGER audit_job AFTER INSERT ON pgqueue.active_jobs
            FOR EACH ROW EXECUTE FUNCTION public.audit_job();
    """)  # fmt: skip
    conn.commit()


def test_a_missing_table_of_a_users_trigger_is_not_pgqueues_schema_missing(
    conn: psycopg.Connection,
) -> None:
    """A trigger of the user's on pgqueue.active_jobs that fails on a table of its own raises
    that UndefinedTable; it became a SchemaError saying the installed schema was not."""
    audit_trigger(conn)
    with pytest.raises(psycopg.errors.UndefinedTable, match="no_such_table"):
        t.add.enqueue(conn, 1, 1)


def test_a_check_of_the_users_own_active_jobs_table_is_not_the_size_limit(
    conn: psycopg.Connection,
) -> None:
    """A check named active_jobs_payload_check on another table than pgqueue's (one a user's
    trigger writes) raises its CheckViolation, by the INSERT and the COPY paths; it became
    the ValueError about the arguments' size as stored."""
    audit_trigger(conn)
    for calls in ([((10, 20), {})], [((10, 20), {})] * COPY_THRESHOLD):
        with pytest.raises(psycopg.errors.CheckViolation, match="active_jobs_payload_check"):
            t.add.enqueue_many(conn, calls)
        conn.rollback()


async def test_enqueue_on_connections_that_return_dicts(dsn: str) -> None:
    """A connection opened with psycopg's ``row_factory=dict_row`` (or an AsyncConnection's)
    enqueues one job, a unique one and batches (COPY included): each raised KeyError: 0,
    reading the id it got back as a tuple."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        ids = [t.add.enqueue(conn, 1, 2), t.add.using(unique_key="k").enqueue(conn, 3, 4)]
        ids += t.add.enqueue_many(conn, [((5, 6), {})] * COPY_THRESHOLD)
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as aconn:
        ids += [await t.add.aenqueue(aconn, 7, 8)]
        ids += await t.add.aenqueue_many(aconn, [((9, 10), {})])
    assert query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id") == [(i,) for i in sorted(ids)]
    assert len(ids) == COPY_THRESHOLD + 4


async def test_enqueue_on_connections_whose_cursors_take_numbered_placeholders(dsn: str) -> None:
    """A connection whose ``cursor_factory`` is psycopg's RawCursor (``$1`` placeholders)
    enqueues: pgqueue's statements, written with ``%s``, failed there with a syntax error."""
    with psycopg.connect(dsn, cursor_factory=psycopg.RawCursor) as conn:
        ids = [t.add.enqueue(conn, 1, 2), *t.add.enqueue_many(conn, [((3, 4), {})])]
        conn.commit()
        assert t.app.get_job(conn, ids[0]).args == [1, 2]  # type: ignore[union-attr]
    async with await psycopg.AsyncConnection.connect(
        dsn, cursor_factory=psycopg.AsyncRawCursor
    ) as aconn:
        ids += [await t.add.aenqueue(aconn, 5, 6)]
    assert query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id") == [(i,) for i in sorted(ids)]


async def test_enqueue_in_the_callers_pipeline(dsn: str) -> None:
    """Inside the caller's ``conn.pipeline()`` block, where psycopg sends statements without
    waiting for their results, enqueue (unique too) and aenqueue return their jobs' ids, and
    enqueue_many all of them: enqueue raised IndexError, a unique enqueue said its key "kept
    changing hands", and enqueue_many returned no ids for the jobs it inserted."""
    with psycopg.connect(dsn) as conn, conn.pipeline():
        ids = [t.add.enqueue(conn, 1, 2), t.add.using(unique_key="k").enqueue(conn, 3, 4)]
        ids += t.add.enqueue_many(conn, [((5, 6), {}), ((7, 8), {})])
    async with await psycopg.AsyncConnection.connect(dsn) as aconn, aconn.pipeline():
        ids += [await t.add.aenqueue(aconn, 9, 10)]
    assert len(ids) == 5
    assert query(dsn, "SELECT id FROM pgqueue.jobs ORDER BY id") == [(i,) for i in sorted(ids)]


CUT_WORKER = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE application_name LIKE 'pgqueue %' AND datname = current_database()
"""
CLAIMING_AGAIN = """
SELECT count(*) = 2 FROM pg_stat_activity
 WHERE application_name IN ('pgqueue claimer', 'pgqueue listener')
   AND datname = current_database()
"""


async def test_an_idle_worker_runs_a_delayed_job_once_due_after_losing_its_connections(
    dsn: str, conn: psycopg.Connection
) -> None:
    """A delayed job sends no notification, and none comes when it falls due: the idle
    worker's poll finds it, also once every one of its connections was cut and made again
    (the job is enqueued after that, so that no wake-up of the reconnection runs it)."""
    app = pgqueue.PgQueue(dsn)
    app.task(name="tests.integration.tasks_app.add")(t.add.fn)
    worker = app.worker(queues=["io"], poll_interval=0.05)
    cut: list[int] = []
    job: list[int] = []

    def ran() -> bool:
        if not cut:  # once the worker is up: cut its sessions
            if not query(dsn, "SELECT 1 FROM pgqueue.workers"):
                return False
            cut.append(query(dsn, CUT_WORKER)[0][0])
            assert cut[0] >= 2
        if not job:  # once it claims and listens again, and has had a second to settle
            if not query(dsn, CLAIMING_AGAIN)[0][0]:
                return False
            time.sleep(1)
            job.append(t.add.using(delay=0.5).enqueue(conn, 1, 2))
            conn.commit()
        return states(dsn) == {"succeeded": 1}

    await run_worker_until(worker, ran)
    [(result, late)] = query(
        dsn, "SELECT result, started_at >= run_at FROM pgqueue.jobs WHERE id = %s", job
    )
    assert (result, late) == (3, True)
