"""Security: registry-only tasks, bounded payloads, bound identifiers, NOTIFY is only a hint,
least-privilege roles, and redaction of stored errors."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue._embed import install_revision
from pgqueue._migrate import roles_sql
from pgqueue._store import COPY_THRESHOLD, _queries
from pgqueue._worker._db import Db
from pgqueue._worker._scheduler import Scheduler, TickPruner
from tests.acceptance.conftest import wait_for
from tests.helpers import query, run_worker_until, states
from tests.integration import tasks_app as t
from tests.integration.test_enqueue_many_dropped import drop_job_one
from tests.integration.test_unique_jobs import make_app as make_unique_app
from tests.integration.test_unique_many import calls

INJECTIONS = [
    "x'; DROP TABLE pgqueue.active_jobs; --",
    'x"; DELETE FROM pgqueue.finished_jobs; --',
    "__import__('os').system('touch /tmp/pgqueue-pwned')",
    "$$; SELECT pg_sleep(10); $$",
]


def _worker(app: pgqueue.PgQueue, dsn: str, **options: object) -> pgqueue.Worker:
    options.setdefault("queues", ["io"])
    return app.worker(dsn=dsn, poll_interval=0.05, **options)


@pytest.mark.parametrize("name", [
    "os.system", "subprocess.call", "builtins.eval", "antigravity.fly", "pgqueue._demo.run_demo",
    "tests.integration.tasks_app.fast_retry", "x" * 255, *INJECTIONS,
])  # fmt: skip
async def test_rows_naming_unregistered_code_fail_as_unknown_and_import_nothing(
    dsn: str, name: str
) -> None:
    """Dotted paths, injection strings and 255-char names are looked up, never imported."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (task, queue, max_attempts) VALUES (%s, 'io', 1)",
          [name])  # fmt: skip
    modules = set(sys.modules)
    await run_worker_until(_worker(t.app, dsn), lambda: states(dsn).get("failed") == 1)
    assert query(dsn, "SELECT task, last_error FROM pgqueue.jobs") == [
        (name, f"unknown task {name!r}")
    ]
    assert not {"antigravity", "subprocess"} & (set(sys.modules) - modules)


def test_overlong_and_injected_queue_and_task_names_are_rejected(dsn: str, conn) -> None:
    """Bad names fail in Python before any SQL, and in the database's CHECKs for raw SQL."""
    for bad in [*INJECTIONS, "q" * 65, ""]:
        with pytest.raises(ValueError, match="invalid queue name"):
            t.add.using(queue=bad)
        with pytest.raises(ValueError, match="invalid queue name"):
            t.app.worker(dsn=dsn, queues=[bad])
    with pytest.raises(ValueError, match="invalid task name"):
        t.app.using("t" * 256)
    for column, value in [("queue", INJECTIONS[0]), ("task", "t" * 256)]:
        statement = sql.SQL("INSERT INTO pgqueue.active_jobs (task, queue) VALUES ({})").format(
            sql.SQL(", ").join([sql.Literal(value if column == "task" else "ok"),
                                sql.Literal(value if column == "queue" else "ok")]))  # fmt: skip
        with pytest.raises(psycopg.errors.CheckViolation):
            query(dsn, statement)


def test_injection_strings_as_task_names_are_stored_verbatim(dsn: str, conn) -> None:
    """A task name is a bound parameter: the string is stored as is and nothing else happens."""
    for name in INJECTIONS:
        t.app.using(name, queue="io").enqueue(conn)
    conn.commit()
    assert sorted(r[0] for r in query(dsn, "SELECT task FROM pgqueue.jobs")) == sorted(INJECTIONS)


def test_payload_cap_is_checked_before_sending_and_by_the_database(dsn: str, conn) -> None:
    """Arguments over max_payload_bytes raise before any SQL; raw inserts hit the CHECK."""
    small = pgqueue.PgQueue(dsn, max_payload_bytes=100)
    with pytest.raises(ValueError, match="the limit is 100 bytes"):
        small.using("any", queue="io").enqueue(conn, "x" * 200)
    conn.rollback()
    assert t.app.max_payload_bytes == 1024 * 1024  # the documented default
    with pytest.raises(ValueError, match="limit is 1048576"):
        t.add.enqueue(conn, "x" * (1024 * 1024 + 1), 0)
    conn.rollback()
    # Random text barely compresses, so the stored size stays over the 1 MiB constraint.
    huge = ("INSERT INTO pgqueue.active_jobs (task, args) SELECT 'raw', jsonb_build_array("
            "string_agg(md5(i::text), '')) FROM generate_series(1, 40000) AS i")  # fmt: skip
    with pytest.raises(psycopg.errors.CheckViolation, match="active_jobs_payload_check"):
        query(dsn, huge)
    assert states(dsn) == {}


@pytest.fixture
def make_role(dsn: str) -> Iterator[object]:
    """Create login roles for one test (optionally in group roles); drop them afterwards."""
    made: list[str] = []

    def make(*groups: str) -> str:
        name = f"pgq_test_{uuid.uuid4().hex[:10]}"
        query(dsn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        for group in groups:
            query(dsn, sql.SQL("GRANT {} TO {}").format(sql.Identifier(group),
                                                         sql.Identifier(name)))  # fmt: skip
        made.append(name)
        return make_conninfo(dsn, user=name)

    yield make
    for name in made:
        query(dsn, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        query(dsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


async def test_notifications_from_a_role_without_grants_change_nothing(
    dsn: str, conn, make_role
) -> None:
    """Any role may NOTIFY: forged wake-ups and cancel hints neither claim nor cancel a job."""
    nobody = make_role()
    running = t.sleepy.enqueue(conn, 1.0)
    later = t.add.using(delay=3600).enqueue(conn, 1, 2)
    conn.commit()
    w = _worker(t.app, dsn, lease=30)

    async def forge() -> None:
        await asyncio.sleep(0.3)
        async with await psycopg.AsyncConnection.connect(nobody, autocommit=True) as evil:
            for channel, payload in [("pgqueue_cancel", w.name), ("pgqueue_jobs", "io")]:
                await evil.execute("SELECT pg_notify(%s, %s)", [channel, payload])
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await evil.execute("UPDATE pgqueue.active_jobs SET cancel_requested = true")

    forger = asyncio.create_task(forge())
    await run_worker_until(w, lambda: states(dsn).get("succeeded") == 1)
    await forger
    assert dict(query(dsn, "SELECT id, state FROM pgqueue.jobs")) == {
        running: "succeeded",
        later: "queued",
    }


async def test_worker_and_producer_roles_do_their_jobs_and_nothing_more(
    dsn: str, make_role
) -> None:
    """roles.sql: a worker runs under pgqueue_worker; a producer can enqueue, not change jobs."""
    query(dsn, roles_sql())
    worker_dsn, producer_dsn = make_role("pgqueue_worker"), make_role("pgqueue_producer")
    with psycopg.connect(producer_dsn) as producer:
        job_id = t.add.enqueue(producer, 20, 22)
        producer.commit()
        assert query(producer_dsn, "SELECT state FROM pgqueue.jobs") == [("queued",)]
        for statement in ["UPDATE pgqueue.active_jobs SET priority = 1",
                          "DELETE FROM pgqueue.finished_jobs"]:  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                producer.execute(statement)
            producer.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            t.app.cancel(producer, job_id)
        producer.rollback()
    w = _worker(t.app, worker_dsn, rescue_interval=0.1)
    await run_worker_until(w, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT result FROM pgqueue.jobs") == [(42,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(worker_dsn, "UPDATE pgqueue.alembic_version SET version_num = 'x'")


@pytest.mark.parametrize("path", ["fresh", "upgraded"])
async def test_a_worker_role_fires_prunes_and_raises_the_watermark(
    empty_dsn: str, make_role, path: str
) -> None:
    """Under pgqueue_worker a scheduler fires ticks and prunes them, which reads and raises
    the watermark (0009): on a fresh schema with roles.sql, and on one that ran roles.sql at
    0008 and was migrated to 0009 afterwards without running it again."""
    if path == "fresh":
        pgqueue.migrate(empty_dsn)
        query(empty_dsn, roles_sql())
    else:
        with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
            install_revision(cur, "0008", lambda text: cur.execute(text.encode()))
        query(empty_dsn, roles_sql())
        pgqueue.migrate(empty_dsn)
    user = conninfo_to_dict(make_role("pgqueue_worker"))["user"]
    app = pgqueue.PgQueue(empty_dsn)

    @app.periodic("* * * * * *", name="beat", catch_up=10)
    async def beat() -> None:
        pass

    sched = Scheduler(app.periodics.values(), Db(make_conninfo(empty_dsn, user=user), "t"))
    query(empty_dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES"
                     " ('beat', now() - interval '2 hours')")  # fmt: skip
    try:
        await sched.step()
        assert await sched.prune() == 1
    finally:
        await sched.db.close()
    [(mark,)] = query(empty_dsn, "SELECT pruned_through FROM pgqueue.periodic_watermarks")
    fired = "SELECT count(*) FROM pgqueue.jobs WHERE (meta->>'tick')::timestamptz > %s"
    assert query(empty_dsn, fired, (mark,))[0][0] > 0


def test_a_migrator_without_createrole_grants_once_a_dba_made_the_roles(
    make_role, empty_dsn: str
) -> None:
    """security.md's split: a DBA creates the two roles (CREATEROLE), the schema's owner,
    without CREATEROLE, migrates and runs roles.sql, which then only grants on its schema."""
    owner = conninfo_to_dict(make_role())["user"]
    query(empty_dsn, sql.SQL("CREATE SCHEMA pgqueue AUTHORIZATION {}").format(
        sql.Identifier(owner)))  # fmt: skip
    for role in ("pgqueue_worker", "pgqueue_producer"):  # the DBA's part, if not done yet
        if not query(empty_dsn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]):
            query(empty_dsn, sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    owner_dsn = make_conninfo(empty_dsn, user=owner)
    assert query(owner_dsn, "SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user") == [
        (False,)
    ]
    pgqueue.migrate(owner_dsn)
    query(owner_dsn, roles_sql())
    may = "SELECT has_table_privilege(%s, 'pgqueue.active_jobs', %s)"
    assert query(empty_dsn, may, ["pgqueue_worker", "UPDATE"]) == [(True,)]
    assert query(empty_dsn, may, ["pgqueue_producer", "UPDATE"]) == [(False,)]


def test_the_owner_of_a_schema_a_dba_created_migrates_it(make_role, empty_dsn: str) -> None:
    """A role that owns schema pgqueue, made for it by a DBA, without CREATE on the database
    (least privilege), could not migrate it: CREATE SCHEMA IF NOT EXISTS needs that privilege
    even when the schema exists. (The database is dropped before the role.)"""
    owner = conninfo_to_dict(make_role())["user"]
    query(empty_dsn, sql.SQL("CREATE SCHEMA pgqueue AUTHORIZATION {}").format(
        sql.Identifier(owner)))  # fmt: skip
    owner_dsn = make_conninfo(empty_dsn, user=owner)
    pgqueue.migrate(owner_dsn)
    assert pgqueue.schema_check(owner_dsn) is None


def _enqueue_every_way(producer: psycopg.Connection[Any]) -> list[int]:
    """A unique job (new key, held key, on_conflict="raise"), SQL pgqueue.enqueue with a held
    key, enqueue_many with unique keys (one held), small and large (COPY), committed: the ids
    of the last."""
    first = t.add.using(unique_key="order-1").enqueue(producer, 1, 2)
    assert t.add.using(unique_key="order-1").enqueue(producer, 1, 2) == first
    producer.commit()
    with pytest.raises(pgqueue.DuplicateJob):
        t.add.using(unique_key="order-1", on_conflict="raise").enqueue(producer, 1, 2)
    producer.rollback()
    held = producer.execute("SELECT pgqueue.enqueue('t', unique_key => 'order-1')")
    assert held.fetchone() == (first,)
    keyed = t.add.enqueue_many(producer, [((1, 2), {})] * 2, unique_keys=["order-1", "order-2"])
    assert keyed[0] == first
    small = t.add.enqueue_many(producer, [((i, i), {}) for i in range(10)])
    large = t.add.enqueue_many(producer, [((i, i), {}) for i in range(1500)])
    producer.commit()
    assert len(set(small) | set(large)) == 1510
    return large


def test_a_producer_enqueues_every_way_the_api_offers(dsn: str, make_role) -> None:
    """Under pgqueue_producer: every way of enqueueing, and get_job. A unique job and the SQL
    fallback failed on reading unique_key, and enqueue_many of 1,000 jobs or more on the
    identity sequence: "permission denied"."""
    query(dsn, roles_sql())
    with psycopg.connect(make_role("pgqueue_producer")) as producer:
        large = _enqueue_every_way(producer)
        job = t.app.get_job(producer, large[-1])
        assert job is not None and job.args == [1499, 1499]
    assert states(dsn) == {"queued": 1512}


def test_a_producer_kept_from_reading_jobs_still_enqueues_every_way(dsn: str, make_role) -> None:
    """The producer reads every job's arguments, result and errors through pgqueue.jobs (for
    get_job and wait): with that grant taken back, as security.md says a team may, every way
    of enqueueing still works, and reading a job is refused."""
    query(dsn, roles_sql())
    query(dsn, "REVOKE SELECT ON pgqueue.jobs FROM pgqueue_producer")
    with psycopg.connect(make_role("pgqueue_producer")) as producer:
        large = _enqueue_every_way(producer)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            t.app.get_job(producer, large[-1])
    assert states(dsn) == {"queued": 1512}


async def test_redact_hook_scrubs_stored_errors_and_tracebacks(dsn: str, conn) -> None:
    """PgQueue(redact=...) rewrites error messages and tracebacks before they are stored."""
    app = pgqueue.PgQueue(dsn, redact=lambda text: text.replace("hunter2", "[redacted]"))

    @app.task(queue="io", max_attempts=1)
    async def login(password: str) -> None:
        raise RuntimeError(f"cannot log in with password {password}")

    login.enqueue(conn, "hunter2")
    conn.commit()
    await run_worker_until(_worker(app, dsn), lambda: states(dsn).get("failed") == 1)
    [(last_error, errors)] = query(dsn, "SELECT last_error, errors::text FROM pgqueue.jobs")
    assert last_error == "RuntimeError: cannot log in with password [redacted]"
    assert "hunter2" not in errors and "[redacted]" in errors


def test_the_database_accepts_exactly_the_queue_names_python_accepts(dsn: str) -> None:
    """The queue CHECK (rewritten in revision 0002 for speed) and check_queue agree."""
    from pgqueue._options import check_queue

    candidates = ["a", "q" * 64, "io.cpu-2_x", "q" * 65, "", "é", "a b", "a\n", "a$", *INJECTIONS]
    for name in candidates:
        try:
            check_queue(name)
            python_ok = True
        except ValueError:
            python_ok = False
        insert = "INSERT INTO pgqueue.active_jobs (task, queue) VALUES ('t', %s)"
        try:
            query(dsn, insert, [name])
            database_ok = True
        except psycopg.errors.CheckViolation:
            database_ok = False
        assert (name, database_ok) == (name, python_ok)
    assert query(dsn, "SELECT count(*) FROM pgqueue.active_jobs") == [(3,)]


def test_the_roles_call_pgqueues_functions_where_public_may_not(dsn: str, make_role) -> None:
    """A database hardened so that PUBLIC may not execute functions: roles.sql granted
    compatible_since() again but not the rest, so the producer's SQL pgqueue.enqueue and the
    worker's cancel and retry failed on "permission denied for function". The producer may
    still not call cancel or retry."""
    query(dsn, "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgqueue FROM PUBLIC")
    query(dsn, roles_sql())
    worker_dsn, producer_dsn = make_role("pgqueue_worker"), make_role("pgqueue_producer")
    with psycopg.connect(producer_dsn) as producer:
        [(job_id,)] = producer.execute("SELECT pgqueue.enqueue(%s)", [t.add.name]).fetchall()
        producer.commit()
        for call in ("cancel", "retry"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                producer.execute(sql.SQL("SELECT pgqueue.{}(%s)").format(sql.Identifier(call)),
                                 [job_id])  # fmt: skip
            producer.rollback()
    with psycopg.connect(worker_dsn) as worker:
        assert t.app.cancel(worker, job_id) == "cancelled"
        t.app.retry(worker, job_id)
        worker.commit()
    assert states(dsn) == {"queued": 1}


PAST_QUEUED = [
    "INSERT INTO pgqueue.active_jobs (task, state, lease_expires_at, worker_id)"
    " VALUES ('t', 'running', '9999-12-30', 'ghost')",
    "INSERT INTO pgqueue.active_jobs (task, attempts) VALUES ('t', 2)",
    "INSERT INTO pgqueue.active_jobs (task, cancel_requested) VALUES ('t', true)",
    "INSERT INTO pgqueue.active_jobs (task, errors, last_error) VALUES ('t', '[]', 'x')",
]


@pytest.mark.parametrize("statement", PAST_QUEUED)
def test_a_producer_cannot_insert_a_job_past_queued(dsn: str, make_role, statement: str) -> None:
    """The producer had INSERT on every column: a job inserted running, under a worker that
    does not exist and a lease to 9999, was never rescued nor cancellable, and held its
    unique key from every enqueue. It may set what enqueueing sets, not a job's progress."""
    query(dsn, roles_sql())
    with (
        psycopg.connect(make_role("pgqueue_producer")) as producer,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        producer.execute(statement.encode())
    assert states(dsn) == {}


# An INSERT's or a COPY's column list into active_jobs, as the store and the SQL functions
# write them.
_INTO_ACTIVE = re.compile(r"(?:INSERT INTO|COPY) pgqueue\.active_jobs(?: AS \w+)?\s*\(([^)]*)\)")


def _inserted_columns(text: str) -> set[str]:
    return {c.strip() for cols in _INTO_ACTIVE.findall(text) for c in cols.split(",")}


def _producer_may_insert(dsn: str) -> set[str]:
    return {
        name
        for (name,) in query(
            dsn,
            """
        SELECT attname FROM pg_attribute
         WHERE attrelid = 'pgqueue.active_jobs'::regclass AND attnum > 0 AND NOT attisdropped
           AND has_column_privilege('pgqueue_producer', attrelid, attnum, 'INSERT')""",
        )
    }


def test_the_producer_may_insert_every_column_an_enqueue_sets(dsn: str) -> None:
    """roles.sql grants the producer INSERT on a list of columns: every column the store's
    inserts and COPY into active_jobs set, and SQL pgqueue.enqueue's, must be on it (a
    column an enqueue starts to set, added by a later revision, fails every enqueue of the
    producer with "permission denied" until roles.sql grants it)."""
    query(dsn, roles_sql())
    store = "\n".join(v for v in vars(_queries).values() if isinstance(v, str))
    [(enqueue,)] = query(dsn, "SELECT pg_get_functiondef('pgqueue.enqueue'::regproc)")
    for text in (store, enqueue):
        assert _inserted_columns(text)  # the pattern still finds them
        assert _inserted_columns(text) - _producer_may_insert(dsn) == set()


def test_roles_sql_takes_back_the_table_wide_insert_earlier_versions_gave(dsn: str) -> None:
    """A database whose producer got INSERT on all of active_jobs from an earlier roles.sql:
    running the script again, and once more, leaves it the enqueue columns only."""
    query(dsn, roles_sql())
    query(dsn, "GRANT INSERT ON pgqueue.active_jobs TO pgqueue_producer")  # as it was
    assert {"state", "attempts", "worker_id"} < _producer_may_insert(dsn)
    query(dsn, roles_sql())
    query(dsn, roles_sql())
    assert _producer_may_insert(dsn) == {
        "id", "queue", "task", "args", "kwargs", "priority", "max_attempts", "run_at",
        "timeout", "unique_key", "meta",
    }  # fmt: skip


def _statements(script: str) -> list[str]:
    """The statements of a script as psql sends them, one at a time: a line ending in ";"
    ends one, unless it is inside a $$-quoted body."""
    statements, lines = [], []
    for line in script.splitlines():
        lines.append(line)
        if line.rstrip().endswith(";") and "\n".join(lines).count("$$") % 2 == 0:
            statements.append("\n".join(lines))
            lines = []
    assert not "\n".join(lines).strip("\n -"), "a statement without its ;"
    return statements


def _privileges(dsn: str) -> set[tuple[str, ...]]:
    """What pgqueue's roles may do to each column of pgqueue's tables, and which of its
    functions they may call."""
    return set(
        query(
            dsn,
            """
        SELECT r, c.relname, a.attname, p
          FROM unnest(ARRAY['pgqueue_producer', 'pgqueue_worker']) AS r,
               unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) AS p,
               pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'pgqueue'::regnamespace AND c.relkind IN ('r', 'v')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND has_column_privilege(r, c.oid, a.attnum, p)
        UNION ALL
        SELECT r, f.oid::regprocedure::text, '', 'EXECUTE'
          FROM unnest(ARRAY['pgqueue_producer', 'pgqueue_worker']) AS r,
               pg_proc AS f
         WHERE f.pronamespace = 'pgqueue'::regnamespace
           AND has_function_privilege(r, f.oid, 'EXECUTE')""",
        )
    )


def test_re_running_roles_sql_statement_by_statement_never_takes_a_grant_away(dsn: str) -> None:
    """Re-run after an upgrade, as the docs say, by psql, which commits each statement on its
    own: between any two of them the roles keep every privilege they had. The REVOKE of the
    producer's table-wide INSERT, committed before the column GRANT that gives most of it
    back, made its enqueues fail with "permission denied" meanwhile (a web request's)."""
    query(dsn, "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgqueue FROM PUBLIC")
    query(dsn, roles_sql())
    granted = _privileges(dsn)
    assert ("pgqueue_producer", "active_jobs", "meta", "INSERT") in granted
    for statement in _statements(roles_sql()):
        query(dsn, statement.encode())
        assert granted - _privileges(dsn) == set(), statement
    assert _privileges(dsn) == granted


_SIGNATURES = (
    "SELECT oid::regprocedure::text FROM pg_proc"
    " WHERE pronamespace = 'pgqueue'::regnamespace AND proname LIKE %s"
)
_GRANT_EXECUTE = re.compile(r"GRANT EXECUTE ON FUNCTION(.*?)\bTO\b", re.DOTALL)
_FUNCTION = re.compile(r"(pgqueue\.\w+)\s*(\([^)]*\))?")


def _granted_functions(text: str) -> list[tuple[str, str]]:
    """The functions GRANT EXECUTE statements in a script or a page name, with the argument
    list each is given ("": the bare name)."""
    return [
        (name, arguments)
        for grant in _GRANT_EXECUTE.findall(text)
        for name, arguments in _FUNCTION.findall(grant)
    ]


def _documented_sql() -> str:
    from pathlib import Path

    page = Path(__file__).parents[2] / "docs" / "how-to" / "security.md"
    return "\n".join(re.findall(r"```sql\n(.*?)```", page.read_text("utf-8"), re.DOTALL))


@pytest.mark.parametrize("source", ["roles.sql", "security.md"])
def test_every_function_granted_is_named_by_its_real_signature(dsn: str, source: str) -> None:
    """roles.sql and the grants security.md shows name each function with its argument list,
    and that list is the signature of a function the schema has (read from pg_proc): a bare
    name fails once an overload exists, and a stale list fails once a revision changes it."""
    text = roles_sql() if source == "roles.sql" else _documented_sql()
    granted = _granted_functions(text)
    assert {name for name, _ in granted} >= {"pgqueue.enqueue", "pgqueue.cancel"}
    real = {row[0] for row in query(dsn, _SIGNATURES, ["%"])}
    for name, arguments in granted:
        assert arguments, f"{name} is granted without its argument list"
        [(signature,)] = query(dsn, "SELECT to_regprocedure(%s)::text", [name + arguments])
        assert signature in real, f"{name}{arguments} is no function of schema pgqueue"


def test_roles_sql_runs_where_pgqueues_functions_have_overloads(dsn: str) -> None:
    """A user's overload of pgqueue.enqueue, cancel and retry (or a later revision's): the
    bare names in roles.sql's GRANTs failed with "function name is not unique"."""
    for name in ("enqueue", "cancel", "retry"):
        query(dsn, sql.SQL("CREATE FUNCTION pgqueue.{}(point) RETURNS bigint LANGUAGE sql"
                           " AS 'SELECT 1::bigint'").format(sql.Identifier(name)))  # fmt: skip
    query(dsn, "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgqueue FROM PUBLIC")
    query(dsn, roles_sql())
    callable_by = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
    [(enqueue,)] = query(dsn, _SIGNATURES + " AND pronargs > 1", ["enqueue"])
    assert query(dsn, callable_by, ["pgqueue_producer", enqueue]) == [(True,)]
    assert query(dsn, callable_by, ["pgqueue_worker", "pgqueue.retry(bigint)"]) == [(True,)]
    assert query(dsn, callable_by, ["pgqueue_worker", "pgqueue.retry(point)"]) == [(False,)]


def test_a_producer_checks_the_schema_as_a_readiness_gate(dsn: str, make_role) -> None:
    """pgqueue.schema_check() (`migrate --check`, `healthcheck`) under pgqueue_producer, a web
    application's role: it failed on "permission denied for table alembic_version"."""
    query(dsn, roles_sql())
    producer_dsn = make_role("pgqueue_producer")
    assert pgqueue.schema_check(producer_dsn) is None
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(producer_dsn, "UPDATE pgqueue.alembic_version SET version_num = 'x'")


async def test_a_role_that_may_not_prune_ticks_says_so_once_and_fires_on(
    dsn: str, make_role, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker role without DELETE on periodic_watermarks: every prune failed the scheduler's
    pass ("permission denied", a warning with its traceback a minute). The pass now goes on,
    the refusal is said once until a prune passes, and a later grant takes effect."""
    query(dsn, roles_sql())
    query(dsn, "REVOKE DELETE ON pgqueue.periodic_watermarks FROM pgqueue_worker")
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="beat")
    async def beat() -> None:
        pass

    sched = Scheduler(app.periodics.values(), Db(make_role("pgqueue_worker"), "t"))
    try:
        for _ in range(2):
            sched.pruner.next_run = 0.0
            await sched.step()
        query(dsn, "GRANT DELETE ON pgqueue.periodic_watermarks TO pgqueue_worker")
        assert await sched.prune() == 0 and not sched.pruner.denied
    finally:
        await sched.db.close()
    denied = [r for r in caplog.records if getattr(r, "action", "") == "ticks_prune_denied"]
    assert [r.levelname for r in denied] == ["WARNING"]
    assert "InsufficientPrivilege" in denied[0].getMessage()


async def test_a_prune_that_met_a_lock_timeout_does_not_say_the_refusal_again(
    dsn: str, make_role, caplog: pytest.LogCaptureFixture
) -> None:
    """A prune that gave up on a name's lock (an insert holding it 5 s) pruned nothing, yet
    it counted as a prune that passed: the next refused one warned again (ticks_prune_denied
    is said once until a prune passes)."""
    query(dsn, roles_sql())
    query(dsn, "REVOKE DELETE ON pgqueue.periodic_watermarks FROM pgqueue_worker")
    old_tick = "INSERT INTO pgqueue.periodic_ticks VALUES ('gone', now() - '1 year'::interval)"
    query(dsn, old_tick)
    pruner, db = TickPruner(), Db(make_role("pgqueue_worker"), "t")
    try:
        assert await pruner.run(db) == 0 and pruner.denied
        with psycopg.connect(dsn) as holder:  # an insert of the name's tick, stalled
            holder.execute("SELECT pg_advisory_xact_lock_shared(7403159, hashtext('gone'))")
            assert await pruner.run(db) == 0
        assert await pruner.run(db) == 0
    finally:
        await db.close()
    denied = [r for r in caplog.records if getattr(r, "action", "") == "ticks_prune_denied"]
    assert len(denied) == 1 and pruner.denied
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(1,)]


async def test_a_prune_refused_half_way_reports_the_batches_that_passed(
    dsn: str, make_role, caplog: pytest.LogCaptureFixture
) -> None:
    """A prune whose second batch was refused (DELETE revoked after its first committed):
    it said the refusal, but not the 500 ticks its first batch had deleted (ticks_pruned)."""
    caplog.set_level("DEBUG", "pgqueue.scheduler")
    query(dsn, roles_sql())
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) SELECT 'gone', now()"
               " - make_interval(days => 30 + i) FROM generate_series(1, 600) AS i")  # fmt: skip

    class RevokedAfterOne(Db):
        async def run(self, query_: Any) -> Any:
            result = await super().run(query_)
            query(dsn, "REVOKE DELETE ON pgqueue.periodic_watermarks FROM pgqueue_worker")
            return result

    pruner, db = TickPruner(), RevokedAfterOne(make_role("pgqueue_worker"), "t")
    try:
        assert await pruner.run(db) == 500 and pruner.denied
    finally:
        await db.close()
    said = [(r.action, getattr(r, "count", None)) for r in caplog.records if hasattr(r, "action")]
    assert said == [("ticks_prune_denied", None), ("ticks_pruned", 500)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(100,)]


async def test_a_worker_role_that_may_not_vacuum_says_so_once_and_stops_trying(
    dsn: str, make_role, caplog: pytest.LogCaptureFixture
) -> None:
    """Under pgqueue_worker (not the owner of active_jobs), the vacuum a maintenance pass runs
    past vacuum_threshold dead rows was skipped by PostgreSQL in a warning no one saw, at
    every pass: the worker now says once that autovacuum does that work alone, and stops."""
    query(dsn, roles_sql())
    query(dsn, "INSERT INTO pgqueue.active_jobs (task) SELECT 't' FROM generate_series(1, 3000)")
    query(dsn, "DELETE FROM pgqueue.active_jobs")
    counted = "SELECT n_dead_tup >= 3000 FROM pg_stat_user_tables " \
              "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
    wait_for(lambda: query(dsn, counted) == [(True,)], what="dead rows counted")
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = pgqueue.PgQueue().worker(dsn=make_role("pgqueue_worker"), vacuum_threshold=1000)
    try:
        for _ in range(2):
            await worker.maintain()
    finally:
        await worker._close_connections()
    said = [r for r in caplog.records if getattr(r, "action", "") == "vacuum_not_permitted"]
    assert [r.levelname for r in said] == ["INFO"]
    assert "autovacuum" in said[0].getMessage()
    assert "MAINTAIN" in said[0].getMessage()


async def test_a_worker_role_owning_the_database_vacuums_active_jobs_itself(
    dsn: str, make_role, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL lets the database's owner vacuum its tables, active_jobs included, though
    another role owns it: a worker under such a role vacuums, and says nothing of being
    refused (the check asked of the role counts the database's owner, as VACUUM does)."""
    query(dsn, roles_sql())
    worker_dsn = make_role("pgqueue_worker")
    role = conninfo_to_dict(worker_dsn)["user"]
    database = query(dsn, "SELECT current_database()")[0][0]
    owner = query(dsn, "SELECT relowner::regrole::text FROM pg_class "
                       "WHERE oid = 'pgqueue.active_jobs'::regclass")  # fmt: skip
    assert owner != [(role,)]
    query(dsn, sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
        sql.Identifier(database), sql.Identifier(role)))  # fmt: skip
    try:
        query(
            dsn, "INSERT INTO pgqueue.active_jobs (task) SELECT 't' FROM generate_series(1, 3000)"
        )
        query(dsn, "DELETE FROM pgqueue.active_jobs")
        counted = "SELECT n_dead_tup >= 3000 FROM pg_stat_user_tables " \
                  "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
        wait_for(lambda: query(dsn, counted) == [(True,)], what="dead rows counted")
        caplog.set_level(logging.INFO, logger="pgqueue.worker")
        worker = pgqueue.PgQueue().worker(dsn=worker_dsn, vacuum_threshold=1000)
        try:
            await worker.maintain()
        finally:
            await worker._close_connections()
    finally:
        query(dsn, sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(
            sql.Identifier(database)))  # fmt: skip
    assert worker._vacuum_permitted is True  # asked: the vacuum was due
    assert [r for r in caplog.records if getattr(r, "action", "") == "vacuum_not_permitted"] == []


def test_only_the_insert_trigger_runs_as_the_owner_and_its_search_path_is_pinned(
    dsn: str,
) -> None:
    """A SECURITY DEFINER function without a pinned search_path runs, as the owner, whatever a
    caller's path puts before pg_catalog: only the insert trigger's function runs as the owner
    (it reads the history the producer cannot), and its path is pg_catalog, pg_temp (last).
    enqueue, cancel and retry run with their caller's privileges."""
    rows = query(
        dsn,
        """
        SELECT p.proname, p.prosecdef, p.proconfig
          FROM pg_proc AS p WHERE p.pronamespace = 'pgqueue'::regnamespace ORDER BY 1""",
    )
    assert [(name, config) for name, definer, config in rows if definer] == [
        ("notify_jobs_inserted", ["search_path=pg_catalog, pg_temp"])
    ]
    assert {"enqueue", "cancel", "retry"} <= {name for name, definer, _ in rows if not definer}


@pytest.mark.parametrize("size", [4, COPY_THRESHOLD])
def test_a_role_that_may_not_delete_gets_the_error_and_an_aborted_transaction(
    dsn: str, make_role, size: int
) -> None:
    """enqueue_many without keys, one of whose jobs a user's trigger drops, under
    pgqueue_producer, which may insert jobs but not delete them: the others cannot be taken
    back, and the error is still PgQueueError, not "permission denied", saying that the
    transaction is aborted; nothing of it commits."""
    drop_job_one(dsn)
    query(dsn, roles_sql())
    _app, charge = make_unique_app(dsn)
    with psycopg.connect(make_role("pgqueue_producer")) as producer:
        charge.enqueue(producer, 100)
        with pytest.raises(pgqueue.PgQueueError, match=r"the transaction is aborted") as raised:
            charge.enqueue_many(producer, calls(size))
        assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
        assert producer.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        producer.rollback()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_on_an_autocommit_connection_that_role_gets_the_batchs_own_error(
    dsn: str, make_role
) -> None:
    """The same under pgqueue_producer on an autocommit connection: the batch's own
    transaction is rolled back, so nothing is aborted and nothing has to be deleted; the error
    said the transaction was aborted and must be rolled back, from a DELETE that failed."""
    drop_job_one(dsn)
    query(dsn, roles_sql())
    _app, charge = make_unique_app(dsn)
    with psycopg.connect(make_role("pgqueue_producer"), autocommit=True) as producer:
        with pytest.raises(pgqueue.PgQueueError, match=r"none of the batch's jobs") as raised:
            charge.enqueue_many(producer, calls(4))
        assert raised.value.__cause__ is None
        kept = charge.enqueue(producer, 100)
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]
