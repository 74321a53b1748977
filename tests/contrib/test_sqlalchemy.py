"""SQLAlchemy: enqueue joins the transaction of a Session, Connection, or their async twins."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Delete, Update, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.horizontal_shard import ShardedSession
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.pool import NullPool

from pgqueue import DuplicateJob
from pgqueue.testing import assert_enqueued
from tests.contrib.sqlalchemy_app import app as shop
from tests.helpers import query, run_worker_until, states


def url(dsn: str) -> str:
    """A SQLAlchemy psycopg URL for a libpq DSN."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    info = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    host, port = info.get("host"), info.get("port")
    socket = bool(host and host.startswith("/"))  # the embedded server listens on a socket
    return URL.create(
        "postgresql+psycopg",
        username=info.get("user"),
        password=info.get("password"),
        host=None if socket else host,
        port=None if socket or not port else int(port),
        database=info.get("dbname"),
        query={"host": host or "", "port": port or "5432"} if socket else {},
    ).render_as_string(hide_password=False)


@pytest.fixture
def engine(dsn: str) -> Iterator[Engine]:
    """The app's engine on this test's database, tables created."""
    db = create_engine(url(dsn), poolclass=NullPool)
    shop.configure(db)
    yield db
    db.dispose()


def test_session_rollback_leaves_no_job(engine: Engine, dsn: str) -> None:
    """An enqueue on a Session rolls back with the session's writes."""
    with Session(engine) as session:
        shop.place_order(session)
        session.rollback()
    assert query(dsn, "SELECT count(*) FROM orders") == [(0,)]
    assert states(dsn) == {}


async def test_session_commit_and_the_worker_runs_it(engine: Engine, dsn: str) -> None:
    """commit → the job is there with the order, and a worker ships the order."""
    with Session(engine) as session, session.begin():
        order_id = shop.place_order(session).id
    worker = shop.queue.worker(dsn=dsn, poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded") == 1)
    assert query(dsn, "SELECT status FROM orders WHERE id = %s", [order_id]) == [("shipped",)]


def test_a_sync_session_enqueues_where_sqlalchemys_asyncio_does_not_import(
    engine: Engine, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLAlchemy 2.1 installs without greenlet, and then sqlalchemy.ext.asyncio raises
    ImportError: a sync Session (and alembic's upgrade_ops) must enqueue all the same."""
    monkeypatch.setitem(sys.modules, "sqlalchemy.ext.asyncio", None)  # import -> ImportError
    with Session(engine) as session, session.begin():
        shop.ship.enqueue(session, 1)
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([1],)]


def test_connection_without_a_begun_transaction_joins_the_next_commit(engine, dsn) -> None:
    """On a Connection with no transaction yet, enqueue begins one; commit() keeps the job."""
    with engine.connect() as conn:
        shop.ship.enqueue(conn, 1)
        conn.execute(text("INSERT INTO orders (status) VALUES ('new')"))
        conn.commit()
    with engine.connect() as conn:
        shop.ship.enqueue(conn, 2)  # closed without commit: rolled back
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([1],)]


async def test_async_session_and_connection(dsn: str) -> None:
    """AsyncSession and AsyncConnection: aenqueue joins their transaction."""
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(db) as session, session.begin():
            await shop.ship.aenqueue(session, 1)
        async with db.connect() as conn:
            await shop.ship.aenqueue(conn, 2)
            await conn.rollback()
        async with db.begin() as conn:
            await shop.ship.aenqueue(conn, 3)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([3],)]


async def test_scoped_sessions_enqueue_in_the_current_scopes_session(engine, dsn) -> None:
    """A scoped_session (Flask-SQLAlchemy's db.session) and an async_scoped_session enqueue in
    the transaction of their current session; handed to the wrong method, they say which."""
    scoped = scoped_session(sessionmaker(engine))
    try:
        shop.ship.enqueue(scoped, 1)
        scoped.commit()
        shop.ship.enqueue(scoped, 2)
        scoped.rollback()
        with pytest.raises(TypeError, match="use enqueue"):
            await shop.ship.aenqueue(scoped, 3)
    finally:
        scoped.remove()
    db = create_async_engine(url(dsn), poolclass=NullPool)
    ascoped = async_scoped_session(async_sessionmaker(db), scopefunc=asyncio.current_task)
    try:
        await shop.ship.aenqueue(ascoped, 4)
        await ascoped.commit()
        with pytest.raises(TypeError, match="use aenqueue"):
            shop.ship.enqueue(ascoped, 5)
    finally:
        await ascoped.remove()
        await db.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([4],)]


async def test_sync_and_async_mix_ups_say_which_method_to_call(engine, dsn) -> None:
    """aenqueue on a Session, or enqueue on an AsyncSession, names the right method."""
    with Session(engine) as session, pytest.raises(TypeError, match="use enqueue"):
        await shop.ship.aenqueue(session, 1)
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(db) as session:
            with pytest.raises(TypeError, match="use aenqueue"):
                shop.ship.enqueue(session, 1)
    finally:
        await db.dispose()


async def test_a_sync_object_of_an_async_engine_says_to_use_aenqueue(dsn: str) -> None:
    """A Session or Connection inside run_sync runs on an async engine's psycopg connection:
    enqueue said its postgresql+psycopg driver was not postgresql+psycopg."""
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(db) as session, db.connect() as conn:
            for holder in (session, conn):
                with pytest.raises(TypeError, match=r"async engine.*aenqueue") as refused:
                    await holder.run_sync(lambda sync: shop.ship.enqueue(sync, 1))
                assert "driver" not in str(refused.value)
    finally:
        await db.dispose()


class AppSession(Session):
    """A Session subclass, as SQLModel's Session and many projects' own are."""


class AppAsyncSession(AsyncSession):
    """An AsyncSession subclass, as SQLModel's is."""


async def test_subclasses_of_sqlalchemys_classes_are_accepted(engine, dsn) -> None:
    """A subclass of Session or AsyncSession (defined outside SQLAlchemy) enqueues in its
    transaction like the class itself."""
    with AppSession(engine) as session, session.begin():
        shop.ship.enqueue(session, 1)
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AppAsyncSession(db) as asession, asession.begin():
            await shop.ship.aenqueue(asession, 2)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([2],)]


def test_another_driver_is_refused_by_name() -> None:
    """A non-psycopg engine (here SQLite) gets an error naming its driver."""
    db = create_engine("sqlite://")
    try:
        with Session(db) as session, pytest.raises(TypeError, match=r"sqlite\+pysqlite"):
            shop.ship.enqueue(session, 1)
    finally:
        db.dispose()


async def test_a_session_with_only_per_mapper_binds_enqueues_on_its_one_engine(
    engine: Engine, dsn: str
) -> None:
    """Session(binds={Model: engine}) has no bind= to hand over: when all its binds are one
    engine, the job joins the transaction of that engine's connection, sync and async."""
    with Session(binds={shop.Order: engine}) as session, session.begin():
        shop.place_order(session)
    with Session(binds={shop.Order: engine}) as session:
        shop.place_order(session)
        session.rollback()
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(binds={shop.Order: db}) as asession, asession.begin():
            await shop.ship.aenqueue(asession, 7)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT count(*) FROM orders") == [(1,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([7],)]


def test_a_session_whose_binds_name_several_engines_says_how_to_choose(engine, dsn) -> None:
    """Binds on two engines and no bind=: pgqueue cannot tell which database holds its schema
    and says to enqueue on the connection of the right one, which works."""
    other = create_engine(url(dsn), poolclass=NullPool)
    binds = {shop.Order: engine, shop.Base: other}
    try:
        with Session(binds=binds) as session:
            with pytest.raises(TypeError, match=r"bind_arguments=\{'mapper': "):
                shop.ship.enqueue(session, 1)
            with session.begin():
                shop.ship.enqueue(session.connection(bind_arguments={"mapper": shop.Order}), 2)
    finally:
        other.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([2],)]


class RoutingSession(Session):
    """SQLAlchemy's "custom vertical partitioning" recipe as a read/write split: flushes,
    UPDATEs and DELETEs on the leader, every other statement on a follower."""

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Any:
        if self._flushing or isinstance(clause, Update | Delete):
            return self.info["leader"]
        return self.info["follower"]


def written_jobs(session: Session, leader: Engine) -> int:
    """The jobs the transaction of ``session``'s writes (on ``leader``) sees."""
    writes = session.connection(bind_arguments={"bind": leader})
    return writes.execute(text("SELECT count(*) FROM pgqueue.jobs")).scalar_one()


async def test_a_routing_get_bind_enqueues_where_the_session_writes(engine, dsn) -> None:
    """A Session routing reads to a follower with its own get_bind(): the job joins the
    transaction of the session's writes (on the leader), sync and async, before or after its
    first flush. It went to a follower: committed apart from the orders, or refused there."""
    follower = create_engine(url(dsn), poolclass=NullPool)  # writable: the split was silent
    try:
        with RoutingSession(info={"leader": engine, "follower": follower}) as session:
            shop.ship.enqueue(session, 1)  # before any write
            shop.place_order(session)  # flushes on the leader, then enqueues
            assert written_jobs(session, engine) == 2
            session.rollback()
    finally:
        follower.dispose()
    leader = create_async_engine(url(dsn), poolclass=NullPool)
    afollower = create_async_engine(url(dsn), poolclass=NullPool)
    binds = {"leader": leader.sync_engine, "follower": afollower.sync_engine}
    try:
        async with AsyncSession(sync_session_class=RoutingSession, info=binds) as asession:
            await shop.ship.aenqueue(asession, 3)
            jobs = await asession.run_sync(written_jobs, leader.sync_engine)
            assert jobs == 1
            await asession.commit()
    finally:
        await leader.dispose()
        await afollower.dispose()
    assert query(dsn, "SELECT count(*) FROM orders") == [(0,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([3],)]


def test_a_routing_get_bind_asked_from_flush_events_and_when_it_raises(engine, dsn) -> None:
    """Enqueued from before_flush and after_flush (the session already flushing), jobs join
    the writes on the leader, and the flush goes on; a get_bind() that raises leaves the
    session not flushing, so its next flush runs."""
    follower = engine.execution_options(postgresql_readonly=True)  # a job there would fail
    with RoutingSession(info={"leader": engine, "follower": follower}) as session:
        event.listen(session, "before_flush", lambda s, *_: shop.ship.enqueue(s, 1))
        event.listen(session, "after_flush", lambda s, *_: shop.ship.enqueue(s, 2))
        session.add(shop.Order())
        session.commit()
    with RoutingSession(info={"follower": engine}) as session:  # no leader: KeyError
        with pytest.raises(KeyError):
            shop.ship.enqueue(session, 3)
        assert not session._flushing
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([2],)]
    assert query(dsn, "SELECT count(*) FROM orders") == [(1,)]


class DeferringSession(Session):
    """A get_bind() of a project's own that only defers to SQLAlchemy's (to log, say)."""

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Any:
        return super().get_bind(mapper, clause=clause, **kw)


async def test_a_get_bind_deferring_to_sqlalchemys_enqueues_on_the_one_engine(engine, dsn):
    """A get_bind() that only calls super(), on a session with per-mapper binds of one engine
    and no bind=, enqueues there, sync and async, as the Session itself does. SQLAlchemy's
    get_bind finds no bind for pgqueue's INSERT: it raised UnboundExecutionError."""
    with DeferringSession(binds={shop.Order: engine}) as session, session.begin():
        shop.place_order(session)
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        factory = async_sessionmaker(sync_session_class=DeferringSession, binds={shop.Base: db})
        async with factory() as asession, asession.begin():
            await shop.ship.aenqueue(asession, 7)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT count(*) FROM orders") == [(1,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([7],)]


async def test_a_sharded_session_says_to_choose_the_shard(engine, dsn) -> None:
    """A ShardedSession (horizontal sharding) chooses a shard by mapper or instance, and a job
    has neither: a TypeError says to enqueue on a shard's connection, which works, sync and
    async. SQLAlchemy's shard lookup failed on a bare AssertionError."""
    shards = {"east": engine, "west": engine}
    options: dict[str, Any] = {"shards": shards, "shard_chooser": lambda *a, **k: "east"}
    options.update(identity_chooser=lambda *a, **k: ["east"], execute_chooser=lambda c: ["east"])
    with ShardedSession(**options) as session, session.begin():
        with pytest.raises(TypeError, match=r"bind_arguments=\{'shard_id': "):
            shop.ship.enqueue(session, 1)
        shop.ship.enqueue(session.connection(bind_arguments={"shard_id": "east"}), 2)
    db = create_async_engine(url(dsn), poolclass=NullPool)
    options["shards"] = {"east": db.sync_engine}
    try:
        async with AsyncSession(sync_session_class=ShardedSession, **options) as asession:
            with pytest.raises(TypeError, match="shard_id"):
                await shop.ship.aenqueue(asession, 3)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([2],)]


def test_enqueue_many_on_a_pooled_session_leaves_its_connection_as_it_found_it(dsn) -> None:
    """enqueue_many on a Session, as INSERTs and as COPY, and a unique enqueue (alone and in a
    batch, one refused), commit and roll back with it; the pooled connection comes back at the
    next checkout with no session setting of pgqueue's left on it."""
    db = create_engine(url(dsn), pool_size=1, max_overflow=0)
    probe = text("SELECT pg_backend_pid(), array_agg(name ORDER BY name) FROM pg_settings"
                 " WHERE source = 'session'")  # fmt: skip
    try:
        with db.connect() as conn:
            before = conn.execute(probe).one()
        calls = [((i,), {}) for i in range(1000)]  # COPY from 1,000 jobs
        with Session(db) as session:
            shop.ship.enqueue_many(session, calls[:3])
            shop.ship.enqueue_many(session, calls)
            shop.ship.using(unique_key="once").enqueue(session, -1)
            session.rollback()
            shop.ship.enqueue_many(session, calls)
            once = shop.ship.using(unique_key="once").enqueue(session, -1)
            keyed = shop.ship.enqueue_many(session, calls[:2], unique_keys=["once", "twice"])
            with pytest.raises(DuplicateJob):  # its savepoint taken back, not the rest
                shop.ship.using(on_conflict="raise").enqueue_many(
                    session, calls[:2], unique_keys=["new", "once"]
                )
            session.commit()
        with db.connect() as conn:
            assert conn.execute(probe).one() == before
    finally:
        db.dispose()
    assert keyed[0] == once
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(1002,)]


async def test_a_keyed_batch_on_an_async_session_joins_its_transaction(dsn: str) -> None:
    """aenqueue_many with unique_keys on an AsyncSession: a held key gets its holder's id, a
    batch refused with DuplicateJob takes back its own jobs only, and the jobs roll back and
    commit with the session."""
    db = create_async_engine(url(dsn), poolclass=NullPool)
    calls = [((i,), {}) for i in range(2)]
    try:
        async with AsyncSession(db) as session:
            await shop.ship.aenqueue_many(session, calls, unique_keys=["gone", None])
            await session.rollback()
            once = await shop.ship.using(unique_key="once").aenqueue(session, -1)
            keyed = await shop.ship.aenqueue_many(session, calls, unique_keys=["once", "twice"])
            with pytest.raises(DuplicateJob):
                await shop.ship.using(on_conflict="raise").aenqueue_many(
                    session, calls, unique_keys=["new", "once"]
                )
            await session.commit()
    finally:
        await db.dispose()
    assert keyed[0] == once
    assert query(dsn, "SELECT args, unique_key FROM pgqueue.jobs ORDER BY id") == [
        ([-1], "once"), ([1], "twice"),
    ]  # fmt: skip


def test_arguments_too_large_as_jsonb_raise_the_apps_size_error(engine: Engine, dsn: str) -> None:
    """An enqueue on a Session whose arguments pass max_payload_bytes as JSON but not the
    table's check as jsonb raises pgqueue's ValueError, not a raw CheckViolation."""
    with Session(engine) as session:
        with pytest.raises(
            ValueError, match=r"'tests\.contrib\.sqlalchemy_app\.app\.ship' are over"
        ):
            shop.ship.enqueue(session, [0] * 100_000)
        session.rollback()
    assert states(dsn) == {}


async def test_a_rolled_back_savepoint_drops_its_job_and_its_orders(engine, dsn) -> None:
    """Inside begin_nested() the job joins the savepoint: rolling the savepoint back drops
    it with the savepoint's ORM writes, and the outer transaction commits the rest, sync
    and async alike (a savepoint begun before the session's first statement too)."""
    with Session(engine) as session, session.begin():
        with session.begin_nested():  # the session's first statement runs inside it
            shop.ship.enqueue(session, 1)
        nested = session.begin_nested()
        shop.place_order(session)
        nested.rollback()
        shop.ship.enqueue(session, 3)
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with AsyncSession(db) as asession, asession.begin():
            nested_async = await asession.begin_nested()
            await shop.ship.aenqueue(asession, 4)
            await nested_async.rollback()
            async with asession.begin_nested():
                await shop.ship.aenqueue(asession, 5)
    finally:
        await db.dispose()
    assert query(dsn, "SELECT count(*) FROM orders") == [(0,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([3],), ([5],)]


async def test_an_engine_or_a_session_factory_says_what_to_hand_over(engine: Engine, dsn) -> None:
    """An Engine or a sessionmaker (sync or async), handed to enqueue or aenqueue, holds no
    transaction for the job to join: the error says to pass a Session or a Connection. It said
    to install pgqueue's contrib, which was installed."""
    db = create_async_engine(url(dsn), poolclass=NullPool)
    holders = [engine, engine.execution_options(x=1), sessionmaker(engine)]
    holders += [db, async_sessionmaker(db)]
    try:
        for holder in holders:
            with pytest.raises(TypeError, match=r"no transaction.*Session or a Connection"):
                shop.ship.enqueue(holder, 1)
            with pytest.raises(TypeError, match=r"no transaction.*Session or a Connection"):
                await shop.ship.aenqueue(holder, 1)
    finally:
        await db.dispose()
    assert states(dsn) == {}


async def test_the_join_an_external_transaction_test_recipe_rolls_jobs_back(engine, dsn) -> None:
    """SQLAlchemy's recipe for tests (a Session bound to a Connection whose transaction the
    test rolls back, join_transaction_mode="create_savepoint"): the code under test commits
    and rolls back its session, assert_enqueued on the session sees the committed jobs, and
    the test's rollback drops them all, sync and async."""
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        shop.place_order(session)
        session.commit()  # releases the savepoint only
        shop.ship.enqueue(session, 2)
        session.rollback()
        assert_enqueued(shop.ship, count=1, conn=session)
        session.close()
        outer.rollback()
    db = create_async_engine(url(dsn), poolclass=NullPool)
    try:
        async with db.connect() as aconn:
            aouter = await aconn.begin()
            asession = AsyncSession(bind=aconn, join_transaction_mode="create_savepoint")
            await shop.ship.aenqueue(asession, 3)
            await asession.commit()
            await asession.close()
            await aouter.rollback()
    finally:
        await db.dispose()
    assert query(dsn, "SELECT count(*) FROM orders") == [(0,)]
    assert states(dsn) == {}


async def test_autocommit_isolation_commits_each_job_at_once(engine: Engine, dsn: str) -> None:
    """isolation_level="AUTOCOMMIT" (on a connection or an engine) leaves no transaction to
    join: each job commits alone, as the ORM's writes do, and a rollback keeps it."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        shop.ship.enqueue(conn, 1)
        conn.rollback()
    with Session(engine.execution_options(isolation_level="AUTOCOMMIT")) as session:
        shop.ship.enqueue(session, 2)
        session.rollback()
    db = create_async_engine(url(dsn), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with AsyncSession(db) as asession:
            await shop.ship.aenqueue(asession, 3)
            await asession.rollback()
    finally:
        await db.dispose()
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([2],), ([3],)]


def test_enqueue_leaves_pending_objects_unflushed(engine: Engine, dsn: str) -> None:
    """enqueue does not flush the session (no more than session.execute(text(...)) does):
    an order added but not flushed stays pending, without an id, until the flush."""
    with Session(engine) as session, session.begin():
        order = shop.Order()
        session.add(order)
        shop.ship.enqueue(session, 1)
        assert order in session.new and order.id is None
    assert query(dsn, "SELECT count(*) FROM orders") == [(1,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([1],)]


def test_schema_translate_map_leaves_pgqueues_schema_alone(engine: Engine, dsn: str) -> None:
    """An engine's schema_translate_map (a schema per tenant) maps the app's tables only: jobs
    go to schema pgqueue, where workers read them, whatever the map says."""
    tenants = engine.execution_options(schema_translate_map={None: "t1", "pgqueue": "t1"})
    with Session(tenants) as session, session.begin():
        shop.ship.enqueue(session, 1)
    assert query(dsn, "SELECT args FROM pgqueue.jobs") == [([1],)]


def test_session_events_fire_and_may_enqueue_before_the_commit(engine: Engine, dsn) -> None:
    """The user's after_commit and after_rollback handlers fire around enqueues; a job enqueued
    in before_commit commits with the session, and one in after_commit is refused by
    SQLAlchemy, as any statement there is: the transaction is over."""
    factory = sessionmaker(engine)
    fired: list[str] = []
    event.listen(factory, "after_commit", lambda session: fired.append("commit"))
    event.listen(factory, "after_rollback", lambda session: fired.append("rollback"))
    event.listen(factory, "before_commit", lambda session: shop.ship.enqueue(session, 1))
    with factory() as session:
        shop.ship.enqueue(session, 2)
        session.rollback()
        session.commit()
    assert fired == ["rollback", "commit"]
    event.listen(factory, "after_commit", lambda session: shop.ship.enqueue(session, 3))
    with factory() as session, pytest.raises(InvalidRequestError, match="'committed' state"):
        session.commit()
    assert query(dsn, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([1],)]
