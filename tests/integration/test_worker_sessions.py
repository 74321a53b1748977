"""How a worker opens its connections: async commit, and nothing in the session when pooled."""

from __future__ import annotations

import asyncio
import logging
import socket

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqueue
from pgqueue import _store
from pgqueue._worker._db import Db
from pgqueue._worker._scheduler import scheduler_db
from tests.acceptance.conftest import wait_for
from tests.helpers import query, run_worker_until, states, wait_blocked


def commits_off_by_default(dsn: str) -> None:
    """What a DBA tuning for throughput may do: every new session of the database starts with
    synchronous_commit = off."""
    [(name,)] = query(dsn, "SELECT current_database()")
    query(dsn, sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
        sql.Identifier(name)))  # fmt: skip


@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, "off"), ({"synchronous_commit": True}, "on"), ({"listen": False}, "on")],
)
async def test_worker_commit_mode(app: pgqueue.PgQueue, options: dict, expected: str) -> None:
    """Acks skip the WAL flush wait unless asked or poll-only (poolers); claims never do."""
    worker = app.worker(**options)
    try:
        conn = await worker._ack_db.connection()
        cur = await conn.execute("SHOW synchronous_commit")
        assert await cur.fetchone() == (expected,)
        claims = await (await worker._claim_db.connection()).execute("SHOW synchronous_commit")
        assert await claims.fetchone() == ("on",)  # a lost claim would reuse an attempt
    finally:
        await worker._close_connections()


_ROLES = ("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
          " AND application_name LIKE 'pgqueue %' ORDER BY 1")  # fmt: skip


@pytest.mark.parametrize(
    ("periodic", "options", "roles"),
    [
        (False, {}, ["acker", "claimer", "listener", "maintenance"]),
        (False, {"listen": False}, ["acker", "claimer", "maintenance"]),
        (True, {}, ["acker", "claimer", "listener", "maintenance", "scheduler"]),
        (True, {"scheduler": False}, ["acker", "claimer", "listener", "maintenance"]),
        (True, {"listen": False}, ["acker", "claimer", "maintenance", "scheduler"]),
    ],
    ids=["plain", "no-listen", "periodic", "no-scheduler", "periodic-no-listen"],
)
async def test_a_worker_holds_one_connection_per_role(
    app: pgqueue.PgQueue, conn: psycopg.Connection, periodic: bool, options: dict, roles: list
) -> None:
    """production.md's figure: 4 connections a worker (claimer, acker, maintenance, listener),
    3 with --no-listen, one more for the scheduler of an app with periodic tasks (none with
    --no-scheduler), whatever its slots and while it runs jobs."""

    @app.task(name="noop", queue="default")
    async def noop() -> None:
        await asyncio.sleep(1)  # a while for every connection to open: the test's own slack

    if periodic:
        app.periodic("0 0 1 1 *", name="yearly")(noop)
    noop.enqueue_many(conn, [((), {})] * 20)
    conn.commit()
    seen: list[list[str]] = []

    def ran() -> bool:
        seen.append([name for (name,) in query(app.dsn, _ROLES)])
        return states(app.dsn) == {"succeeded": 20}

    await run_worker_until(app.worker(concurrency=50, poll_interval=0.1, **options), ran)
    assert max(seen, key=len) == [f"pgqueue {role}" for role in roles]


@pytest.mark.parametrize(
    ("options", "acks"), [({}, "off"), ({"synchronous_commit": True}, "local")]
)
async def test_claims_wait_for_the_flush_where_the_database_default_is_off(
    dsn: str, options: dict, acks: str
) -> None:
    """A database whose default is synchronous_commit = off made claims skip the flush too,
    so a claim lost in a server crash could hand an attempt out twice. The claim connection
    now raises 'off' to 'local'; so does every connection with synchronous_commit=True."""
    commits_off_by_default(dsn)
    worker = pgqueue.PgQueue(dsn).worker(**options)
    try:
        for db, expected in [(worker._claim_db, "local"), (worker._ack_db, acks)]:
            cur = await (await db.connection()).execute("SHOW synchronous_commit")
            assert await cur.fetchone() == (expected,)
    finally:
        await worker._close_connections()


@pytest.mark.parametrize("default_off", [True, False])
async def test_a_pooled_worker_warns_when_its_claims_would_skip_the_flush(
    dsn: str, default_off: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a pooler (--no-listen) a worker runs no SET, so it cannot raise the database's
    'off': it says so once, at start, and only then."""
    if default_off:
        commits_off_by_default(dsn)
    worker = pgqueue.PgQueue(dsn).worker(listen=False, poll_interval=0.05)

    def actions() -> list[str]:
        return [getattr(r, "action", "") for r in caplog.records]

    with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
        await run_worker_until(worker, lambda: "worker_started" in actions())
    assert actions().count("claims_not_flushed") == (1 if default_off else 0)


async def test_pooled_worker_prepares_nothing(app: pgqueue.PgQueue) -> None:
    """Poll-only workers never use server-side prepared statements (transaction poolers); the
    scheduler's connection prepared them with --no-listen too."""
    worker = app.worker(listen=False)
    try:
        conn = await worker._claim_db.connection()
        assert conn.prepare_threshold is None
        scheduler = scheduler_db(worker)
        assert (scheduler.prepare_threshold, scheduler.async_commit) == (None, None)
    finally:
        await worker._close_connections()
    direct = scheduler_db(app.worker())  # prepared, and its ticks wait for the flush
    assert (direct.prepare_threshold, direct.async_commit) == (5, False)


async def test_maintenance_vacuums_a_claim_path_full_of_dead_rows(
    app: pgqueue.PgQueue, dsn: str
) -> None:
    """Past vacuum_threshold dead rows, a maintenance pass vacuums active_jobs itself."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (task) SELECT 't' FROM generate_series(1, 3000)")
    query(dsn, "DELETE FROM pgqueue.active_jobs")
    counted = "SELECT n_dead_tup >= 3000, vacuum_count FROM pg_stat_user_tables " \
              "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
    wait_for(lambda: query(dsn, counted) == [(True, 0)], what="dead rows counted")
    worker = app.worker(vacuum_threshold=1000)
    try:
        await worker.maintain()
    finally:
        await worker._close_connections()
    vacuumed = "SELECT vacuum_count FROM pg_stat_user_tables " \
               "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
    wait_for(lambda: query(dsn, vacuumed) == [(1,)], what="the vacuum recorded")


async def test_a_fleet_vacuums_no_more_often_than_one_worker(
    app: pgqueue.PgQueue, dsn: str
) -> None:
    """A maintenance pass leaves the vacuum alone if one ended less than half a rescue
    interval ago, whoever ran it: eight workers must not vacuum eight times as often."""
    churn = "INSERT INTO pgqueue.active_jobs (task) SELECT 't' FROM generate_series(1, 3000);" \
            "DELETE FROM pgqueue.active_jobs"  # fmt: skip
    vacuums = "SELECT vacuum_count FROM pg_stat_user_tables " \
              "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
    query(dsn, churn)
    query(dsn, "VACUUM pgqueue.active_jobs")  # another worker's pass, just now
    [(before,)] = query(dsn, vacuums)
    query(dsn, churn)
    counted = "SELECT n_dead_tup >= 3000 FROM pg_stat_user_tables " \
              "WHERE relid = 'pgqueue.active_jobs'::regclass"  # fmt: skip
    wait_for(lambda: query(dsn, counted) == [(True,)], what="dead rows counted")
    worker = app.worker(vacuum_threshold=1000, rescue_interval=600)
    try:
        await worker.maintain()
        assert query(dsn, vacuums) == [(before,)]
        worker.rescue_interval = 0  # the same pass with no spacing asked for does vacuum
        await worker.maintain()
    finally:
        await worker._close_connections()
    wait_for(lambda: query(dsn, vacuums) == [(before + 1,)], what="the vacuum recorded")


def tcp_settings(conn: psycopg.AsyncConnection) -> tuple[bool, int, int, int, int]:
    """What the kernel applies to ``conn``'s socket: keepalive on, its idle time, interval
    and count, and the user timeout (ms)."""
    sock = socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)  # a dup
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", (True, 30, 10, 3, 60_000)),
     ("keepalives_idle=7 tcp_user_timeout=5000", (True, 7, 10, 3, 5000))],
)  # fmt: skip
async def test_worker_connections_give_up_on_a_database_that_stopped_answering(
    dsn: str, given: str, expected: tuple[bool, int, int, int, int]
) -> None:
    """A database gone without closing its connections (a partition, a failover) kept a
    worker waiting for the kernel: about 15 minutes for a statement, two hours and more for an
    idle LISTEN connection. Every worker connection now fails within about a minute; a DSN's
    own settings win. (The black hole itself cannot be made on these test machines: no
    iptables, and no netem/prio qdisc in their kernel; the sockets' settings are read back.)"""
    if conninfo_to_dict(dsn).get("host", "").startswith("/"):
        pytest.skip("a Unix socket: TCP settings do not apply")
    worker = pgqueue.PgQueue(make_conninfo(dsn, **conninfo_to_dict(given))).worker()
    dbs = [
        worker._claim_db,
        worker._ack_db,
        worker._maint_db,
        scheduler_db(worker),
        Db(worker.dsn, "listener", prepare_threshold=None),
    ]  # as _listener.listen opens it
    try:
        for db in dbs:
            assert tcp_settings(await db.connection()) == expected, db.role
    finally:
        for db in dbs:
            await db.close()


@pytest.mark.slow
async def test_a_worker_connection_to_a_server_that_never_answers_gives_up() -> None:
    """A server that takes connections and never answers them (frozen, or a hung proxy in
    front of it), or the first host of a DSN naming several that drops them, kept a worker's
    connect waiting psycopg's default of 130 s per host: its heartbeats could not be retried
    meanwhile, nor its outcomes written (the connection's lock was held), and the leases
    expired. A worker's connect now gives up after 10 s, and is tried again."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads
    port = silent.getsockname()[1]
    db = Db(f"postgresql://postgres@127.0.0.1:{port}/app", "ack")
    try:
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            await asyncio.wait_for(db.connection(), 60)
    finally:
        silent.close()


def test_a_service_file_keeps_its_own_tcp_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect()'s keyword arguments override a pg_service.conf entry: with a service named
    (in the DSN or PGSERVICE) no default is added, so the file's settings hold."""
    from pgqueue._connections import TCP_DEFAULTS, tcp_defaults

    monkeypatch.delenv("PGSERVICE", raising=False)
    assert tcp_defaults("host=db dbname=app") == TCP_DEFAULTS
    assert tcp_defaults("service=prod") == {}
    monkeypatch.setenv("PGSERVICE", "prod")
    assert tcp_defaults("dbname=app") == {}


async def test_a_connect_cancelled_half_way_closes_its_socket() -> None:
    """A worker's connect cut off by a cancellation (run() cancelled as it starts, as its
    listener connects) left the half-opened connection in the CancelledError's frames, which
    the cancelled task keeps (the worker's are kept until run() ends, and by whoever holds
    run()'s task): a server session open for as long. It is closed at the cancellation. (The
    server here accepts and never answers, as a slow network or a busy server would.)"""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        db = Db(f"host=127.0.0.1 port={port} user=pgqueue dbname=pgqueue", "listener")
        connecting = asyncio.ensure_future(db.connection())
        peer, _ = await asyncio.to_thread(server.accept)
        with peer:
            peer.settimeout(30)
            assert await asyncio.to_thread(peer.recv, 1024)  # its first packet: it waits
            connecting.cancel()
            await asyncio.wait([connecting])
            assert connecting.cancelled()
            assert await asyncio.to_thread(peer.recv, 1024) == b"", "the socket is still open"


@pytest.mark.parametrize("why", ["lock timeout", "cancelled"])
async def test_a_statement_error_on_a_sound_connection_keeps_it(
    dsn: str, aconn: psycopg.AsyncConnection, why: str
) -> None:
    """Every OperationalError dropped the connection, though LockNotAvailable (55P03) and
    QueryCanceled (57014) leave it sound: the next step reconnected. The session is kept; one
    the server ended is still dropped and reopened."""
    db = Db(dsn, "maintenance", backends=True)
    try:
        before = await db.run(_store.backend_self())
        await aconn.execute("LOCK TABLE pgqueue.jobs IN ACCESS EXCLUSIVE MODE")
        wait = 0.1 if why == "lock timeout" else 60.0
        waiting = asyncio.ensure_future(
            db.run(_store.Together(_store.locks_wait_at_most(wait), _store.jobs_queues_waiting([])))
        )
        if why == "cancelled":
            await asyncio.to_thread(wait_blocked, dsn, before[0])
            query(dsn, "SELECT pg_cancel_backend(%s)", [before[0]])
        error = psycopg.errors.LockNotAvailable if why == "lock timeout" else (
            psycopg.errors.QueryCanceled)  # fmt: skip
        with pytest.raises(error):
            await waiting
        await aconn.rollback()
        assert await db.run(_store.backend_self()) == before
        assert db.broken is None
        query(dsn, "SELECT pg_terminate_backend(%s)", [before[0]])
        with pytest.raises(psycopg.OperationalError):
            await db.run(_store.backend_self())
        assert await db.run(_store.backend_self()) != before
    finally:
        await db.close()
