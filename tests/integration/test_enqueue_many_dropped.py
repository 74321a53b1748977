"""enqueue_many without keys and a user's BEFORE INSERT trigger that drops a job: the batch is
refused, as a keyed batch is, rather than returning fewer ids than calls."""

from __future__ import annotations

import psycopg
import pytest

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from tests.helpers import query
from tests.integration.test_unique_jobs import make_app
from tests.integration.test_unique_many import calls

DROP_IT = """
CREATE FUNCTION drop_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF NEW.args = '[1]' THEN RETURN NULL; END IF;
    RETURN NEW;
END $$
"""
REFUSED = r"^enqueue_many: 1 of the batch's \d+ jobs did not go in"


def drop_job_one(dsn: str) -> None:
    """A user's trigger: the job whose arguments are [1] is not inserted."""
    query(dsn, DROP_IT)
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_it()")  # fmt: skip


@pytest.mark.parametrize("autocommit", [False, True])
@pytest.mark.parametrize("size", [4, COPY_THRESHOLD])
def test_a_job_a_trigger_drops_refuses_the_batch(dsn: str, autocommit: bool, size: int) -> None:
    """Below the COPY threshold (an INSERT) and above it (COPY): the list was one id short
    (INSERT), or held an id no job has (COPY). PgQueueError says so, none of the batch's
    jobs stays, and the transaction goes on with what it did before."""
    drop_job_one(dsn)
    _app, charge = make_app(dsn)
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        kept = charge.enqueue(conn, 100)
        with pytest.raises(pgqueue.PgQueueError, match=REFUSED):
            charge.enqueue_many(conn, calls(size))
        assert conn.execute("SELECT count(*) FROM pgqueue.active_jobs").fetchone() == (1,)
        conn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]


@pytest.mark.parametrize("size", [4, COPY_THRESHOLD])
async def test_the_async_twin_refuses_it_too(dsn: str, aconn, size: int) -> None:
    """aenqueue_many: the same error, and none of the batch's jobs."""
    drop_job_one(dsn)
    _app, charge = make_app(dsn)
    kept = await charge.aenqueue(aconn, 100)
    with pytest.raises(pgqueue.PgQueueError, match=REFUSED):
        await charge.aenqueue_many(aconn, calls(size))
    await aconn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]


@pytest.mark.parametrize("size", [4, COPY_THRESHOLD])
def test_on_an_autocommit_connection_the_refused_batch_never_commits(dsn: str, size: int) -> None:
    """On an autocommit connection the batch's statements run in one transaction, rolled back
    when it is refused: its jobs were never committed, for a worker to claim, before being
    deleted (a test-only AFTER INSERT trigger records each job that went in)."""
    drop_job_one(dsn)
    query(dsn, "CREATE TABLE went_in (id bigint)")
    query(dsn, "CREATE FUNCTION record_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " INSERT INTO went_in VALUES (NEW.id); RETURN NULL; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_record AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION record_it()")  # fmt: skip
    _app, charge = make_app(dsn)
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(pgqueue.PgQueueError, match=REFUSED),
    ):
        charge.enqueue_many(conn, calls(size))
    assert query(dsn, "SELECT count(*) FROM went_in") == [(0,)]
