"""A job never takes the id of a finished one (revision 0010): the insert that would is refused,
since the ack of such a job kept the old history row and dropped the new job's outcome."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from tests.helpers import query, run_worker_until

SET_BACK = sql.SQL("ALTER TABLE pgqueue.active_jobs ALTER COLUMN id RESTART WITH {}")
SET_PAST = (
    "SELECT setval(pg_get_serial_sequence('pgqueue.active_jobs', 'id'),"
    " (SELECT max(id) FROM pgqueue.jobs))"
)


def make_app(dsn: str) -> tuple[pgqueue.PgQueue, pgqueue.Task[[str], str]]:
    """An app with one task that returns its argument."""
    app = pgqueue.PgQueue(dsn)

    @app.task(name="echo")
    def echo(word: str) -> str:
        return word

    return app, echo


async def finished_job(dsn: str) -> tuple[pgqueue.PgQueue, pgqueue.Task[[str], str], int]:
    """The app, its task, and the id of a job of it that succeeded with "first"."""
    app, echo = make_app(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = echo.enqueue(conn, "first")
    await run_worker_until(
        app.worker(), lambda: query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs")[0][0] == 1
    )
    return app, echo, job_id


async def test_an_insert_with_the_id_of_a_finished_job_is_refused(dsn: str) -> None:
    """A raw INSERT that sets the id of a finished job fails with unique_violation naming the
    id: it went in, ran, and its outcome was dropped, the history keeping "first"."""
    _app, _echo, job_id = await finished_job(dsn)
    with pytest.raises(psycopg.errors.UniqueViolation, match=f"job id {job_id} is the id of a"):
        query(dsn, "INSERT INTO pgqueue.active_jobs (id, task) VALUES (%s, 'echo')", (job_id,))
    assert query(dsn, "SELECT id, state, result FROM pgqueue.jobs") == [
        (job_id, "succeeded", "first")
    ]


@pytest.mark.parametrize("how", ["enqueue", "unique", "many", "copy", "sql"])
async def test_enqueues_after_the_id_sequence_was_set_back_are_refused(dsn: str, how: str) -> None:
    """With the identity sequence set back (a restore, a promoted replica), every enqueue path
    fails instead of creating a job whose outcome its ack drops; once the sequence is set past
    every id, as the error's hint says, enqueues work again."""
    _app, echo, job_id = await finished_job(dsn)
    query(dsn, SET_BACK.format(sql.Literal(job_id)))
    enqueue = {
        "enqueue": lambda conn: echo.enqueue(conn, "second"),
        "unique": lambda conn: echo.using(unique_key="k").enqueue(conn, "second"),
        "many": lambda conn: echo.enqueue_many(conn, [(("second",), {})] * 2),
        "copy": lambda conn: echo.enqueue_many(conn, [(("second",), {})] * COPY_THRESHOLD),
        "sql": lambda conn: conn.execute("SELECT pgqueue.enqueue('echo', '[\"second\"]')"),
    }[how]
    with psycopg.connect(dsn) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            enqueue(conn)
        assert caught.value.diag.message_hint is not None
        assert "setval" in caught.value.diag.message_hint
        conn.rollback()
        conn.execute(SET_PAST)
        enqueue(conn)
        conn.commit()
    assert query(dsn, "SELECT result FROM pgqueue.jobs WHERE id = %s", (job_id,)) == [("first",)]


async def test_retry_still_moves_a_failed_job_back_under_its_id(dsn: str) -> None:
    """pgqueue.retry() inserts the job under its own id, which the history holds until the same
    statement deletes it: the insert's check lets it by."""
    _app, _echo, job_id = await finished_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET state = 'failed' WHERE id = %s", (job_id,))
    assert query(dsn, "SELECT pgqueue.retry(%s)", (job_id,)) == [(True,)]
    assert query(dsn, "SELECT id, state FROM pgqueue.jobs") == [(job_id, "queued")]


def test_an_enqueue_from_the_sequence_probes_the_history_once_not_per_job(dsn: str) -> None:
    """The check probed the history's primary key for every inserted id, an eighth of the time
    of an enqueue_many of 100,000 jobs beside a history of 1,000,000; ids the sequence hands
    out are past every finished one, so it now probes only ids up to the history's greatest.
    (Counted in the transaction: pg_stat_get_xact_blocks_fetched of the key's index.)"""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state,"
               " priority, attempts, max_attempts, run_at, created_at)"
               " SELECT nextval(pg_get_serial_sequence('pgqueue.active_jobs', 'id')), 'q', 't',"
               " '[]', '{}', 'succeeded', 0, 1, 3, now(), now()"
               " FROM generate_series(1, 20000)")  # fmt: skip
    _app, echo = make_app(dsn)
    with psycopg.connect(dsn) as conn:
        echo.enqueue_many(conn, [(("x",), {})] * 5000)
        [(read,)] = conn.execute(
            "SELECT pg_stat_get_xact_blocks_fetched('pgqueue.finished_jobs_pkey'::regclass)"
        )
    assert read < 10, f"{read} pages of the history's key read for 5,000 new jobs"


@pytest.mark.parametrize(
    ("level", "refused"),
    [("READ COMMITTED", True), ("REPEATABLE READ", False), ("SERIALIZABLE", False)],
)
def test_the_check_sees_a_job_ended_after_the_snapshot_only_under_read_committed(
    dsn: str, level: str, refused: bool
) -> None:
    """The documented limit of revision 0010's check (docs/reference/sql.md): it reads the
    history with the statement's snapshot. A producer whose snapshot (REPEATABLE READ,
    SERIALIZABLE) predates the end of the active job holding the id that a sequence set back
    hands it does not see that id in the history, and the job's deleted row no longer blocks
    the primary key: the id is taken twice. READ COMMITTED refuses it."""
    app, echo = make_app(dsn)
    with (
        psycopg.connect(dsn, autocommit=True) as admin,
        psycopg.connect(dsn) as producer,
    ):
        producer.execute(sql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(sql.SQL(level)))
        producer.execute("SELECT 1")  # the snapshot of REPEATABLE READ and SERIALIZABLE
        job_id = echo.enqueue(admin, "first")
        admin.execute(SET_BACK.format(sql.Literal(job_id)))
        assert app.cancel(admin, job_id) == "cancelled"  # the job ends: into the history
        if refused:
            with pytest.raises(psycopg.errors.UniqueViolation, match=f"job id {job_id} is"):
                echo.enqueue(producer, "second")
            return
        assert echo.enqueue(producer, "second") == job_id
        producer.commit()
    assert query(dsn, "SELECT state FROM pgqueue.jobs WHERE id = %s ORDER BY 1", (job_id,)) == [
        ("cancelled",),
        ("queued",),
    ]
