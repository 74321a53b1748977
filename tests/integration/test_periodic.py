"""The scheduler against a real database: one job per tick, catch-up, pruning, cron list."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue import _store
from pgqueue._cli import cli
from pgqueue._cron import normalize
from pgqueue._embed import install_revision
from pgqueue._store import _queries as q
from pgqueue._worker._db import Db
from pgqueue._worker._scheduler import FORGET_AFTER, Scheduler, TickPruner
from tests.helpers import query, run_worker_until, states


def make_app(dsn: str, catch_up: float = 600, overlap: bool = True) -> pgqueue.PgQueue:
    """An app with a per-second schedule named 'beat' that returns its tick."""
    app = pgqueue.PgQueue(dsn)

    @app.periodic(
        "* * * * * *", name="beat", kwargs={"label": "b"}, catch_up=catch_up, overlap=overlap
    )
    async def beat(label: str) -> str:
        return f"{label} {pgqueue.current_job().meta['tick']}"

    return app


async def db_now(db: Db) -> datetime:
    """The database clock."""
    return await db.run(_store.clock_now())


async def schedulers(app: pgqueue.PgQueue, n: int) -> list[Scheduler]:
    """``n`` schedulers of ``app``, each on its own connection."""
    return [Scheduler(app.periodics.values(), Db(app.dsn, f"test{i}")) for i in range(n)]


async def close(*scheds: Scheduler) -> None:
    """Close the schedulers' connections."""
    for s in scheds:
        await s.db.close()


LINKED = """
SELECT count(*) FROM pgqueue.periodic_ticks t
  JOIN pgqueue.jobs j ON j.id = t.job_id AND (j.meta->>'tick')::timestamptz = t.tick
"""

OLD_TICKS = """
INSERT INTO pgqueue.periodic_ticks (name, tick)
SELECT n, now() - h * interval '1 hour'
  FROM unnest(array['beat', 'gone']) n, generate_series(2, 5) h
"""


def tick_jobs(dsn: str) -> list[tuple[str, int]]:
    """(tick, number of jobs) for every tick that has a job."""
    return query(
        dsn,
        "SELECT meta->>'tick', count(*) FROM pgqueue.jobs WHERE meta->>'periodic' = 'beat'"
        " GROUP BY 1 ORDER BY 1",
    )


async def test_racing_schedulers_make_one_job_per_tick(dsn: str) -> None:
    """Four schedulers firing the same 20 ticks at once create 20 jobs, one per tick."""
    app = make_app(dsn)
    scheds = await schedulers(app, 4)
    now = await db_now(scheds[0].db)
    for s in scheds:
        s.cursors = {"beat": now - timedelta(seconds=20)}
    await asyncio.gather(*(s.fire(app.periodics["beat"], now) for s in scheds))
    await close(*scheds)
    jobs = tick_jobs(dsn)
    assert len(jobs) == 20
    assert {count for _tick, count in jobs} == {1}
    linked = query(dsn, LINKED)
    assert linked == [(20,)]


async def test_job_carries_its_schedule_kwargs_and_tick(dsn: str) -> None:
    """A tick's job has the schedule's kwargs and meta {'periodic', 'tick'} in UTC ISO form."""
    app = make_app(dsn)
    [sched] = await schedulers(app, 1)
    now = await db_now(sched.db)
    sched.cursors = {"beat": now - timedelta(seconds=1)}
    await sched.fire(app.periodics["beat"], now)
    await close(sched)
    [(task, kwargs, meta)] = query(dsn, "SELECT task, kwargs, meta FROM pgqueue.jobs")
    assert task.endswith("<locals>.beat")
    assert (kwargs, meta["periodic"]) == ({"label": "b"}, "beat")
    assert datetime.fromisoformat(meta["tick"]) == now.replace(microsecond=0)


async def test_missed_ticks_inside_the_window_run_and_older_ones_are_logged(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After 30 s of downtime with catch_up=10 s: the last 10 ticks are enqueued, 20 skipped."""
    app = make_app(dsn, catch_up=10)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    sched.cursors = {"beat": now - timedelta(seconds=30)}
    with caplog.at_level(logging.INFO, logger="pgqueue.scheduler"):
        await sched.fire(app.periodics["beat"], now)
    await close(sched)
    fired = [datetime.fromisoformat(t) for t, _n in tick_jobs(dsn)]
    assert fired == [now - timedelta(seconds=s) for s in range(10, -1, -1)]
    [skipped] = [r for r in caplog.records if getattr(r, "action", "") == "periodic_skipped"]
    assert skipped.count == 19  # ticks now-29 .. now-11  # type: ignore[attr-defined]
    assert "older than the catch-up window of 10.0 s" in skipped.getMessage()


async def test_start_resumes_from_the_last_tick_in_the_database(dsn: str) -> None:
    """A restarted scheduler continues after the newest recorded tick; nothing fires twice."""
    app = make_app(dsn)
    [first, second] = await schedulers(app, 2)
    now = await db_now(first.db)
    first.cursors = {"beat": now - timedelta(seconds=5)}
    await first.fire(app.periodics["beat"], now)
    await second.start()
    assert second.cursors["beat"] == now.replace(microsecond=0)
    await second.step()
    await close(first, second)
    assert {n for _t, n in tick_jobs(dsn)} == {1}


async def test_a_new_schedule_never_fires_for_the_past(dsn: str) -> None:
    """With no recorded tick, the scheduler starts at the database's now."""
    app = make_app(dsn)
    [sched] = await schedulers(app, 1)
    await sched.start()
    started = sched.cursors["beat"]
    await sched.step()
    await close(sched)
    assert all(datetime.fromisoformat(t) > started for t, _n in tick_jobs(dsn))


async def test_ticks_older_than_the_horizon_are_refused_by_the_database(dsn: str) -> None:
    """Even a stalled scheduler cannot enqueue a tick older than the schedule's horizon."""
    app = make_app(dsn, catch_up=10)
    [sched] = await schedulers(app, 1)
    now = await db_now(sched.db)
    periodic = app.periodics["beat"]
    old = now - timedelta(seconds=periodic.keep_seconds + 5)
    won = await sched.db.run(_store.ticks_insert(periodic.tick_job(), [old], periodic.keep_seconds))
    await close(sched)
    assert won == []


async def test_prune_keeps_recent_and_latest_ticks(dsn: str, caplog: Any) -> None:
    """Old ticks of known schedules go but their latest stays; unknown names last 7 days.
    Each ticks_pruned record says how many went in its field ``count``."""
    caplog.set_level(logging.DEBUG, logger="pgqueue.scheduler")
    app = make_app(dsn, catch_up=10)
    query(dsn, OLD_TICKS)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', now())")
    [sched] = await schedulers(app, 1)
    assert await sched.prune() == 4
    await close(sched)
    left = query(dsn, "SELECT name, count(*) FROM pgqueue.periodic_ticks GROUP BY 1 ORDER BY 1")
    assert left == [("beat", 1), ("gone", 4)]
    query(dsn, "DELETE FROM pgqueue.periodic_ticks WHERE name = 'beat'")
    [sched] = await schedulers(pgqueue.PgQueue(dsn), 1)
    sched.periodics = list(app.periodics.values())
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', now() - interval"
               " '3 hours'), ('beat', now() - interval '4 hours')")  # fmt: skip
    assert await sched.prune() == 1  # the latest 'beat' tick stays even though it is old
    query(dsn, "UPDATE pgqueue.periodic_ticks SET tick = tick - interval '8 days'")
    assert await sched.prune() == 4  # all of 'gone', which no code schedules any more
    await close(sched)
    assert query(dsn, "SELECT name FROM pgqueue.periodic_ticks") == [("beat",)]
    pruned = [r for r in caplog.records if getattr(r, "action", None) == "ticks_pruned"]
    assert [r.count for r in pruned] == [4, 1, 4]


async def test_worker_runs_the_schedule_and_the_task_reads_its_tick(dsn: str) -> None:
    """A worker with periodic tasks schedules them by default; the job knows its tick."""
    app = make_app(dsn)
    worker = app.worker(poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded", 0) >= 2)
    for result, meta in query(dsn, "SELECT result, meta FROM pgqueue.jobs WHERE state ="
                                   " 'succeeded'"):  # fmt: skip
        assert result == f"b {meta['tick']}"


def test_scheduler_false_leaves_the_worker_without_a_scheduler(dsn: str) -> None:
    """Worker(scheduler=False) (CLI --no-scheduler) runs no scheduler service."""
    app = make_app(dsn)
    assert len(app.worker().services) == 1
    assert app.worker(scheduler=False).services == []
    assert pgqueue.PgQueue(dsn).worker().services == []


def test_cron_list_shows_last_and_next_ticks_and_removed_schedules(dsn: str) -> None:
    """cron list: each schedule with last/next tick; names only in the database are flagged."""
    app = make_app(dsn)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', now()),"
               " ('removed', now() - interval '1 day')")  # fmt: skip
    [beat, removed] = pgqueue.cron_list(app)
    assert beat.name == "beat" and beat.last_tick is not None and beat.next_tick is not None
    assert beat.next_tick > beat.last_tick and beat.in_code
    assert removed.name == "removed" and not removed.in_code and removed.next_tick is None


def test_cron_list_command(dsn: str) -> None:
    """`pgqueue cron list` prints the table."""
    result = CliRunner().invoke(
        cli, ["--app", "tests.integration.periodic_app:app", "--dsn", dsn, "cron", "list"]
    )
    assert result.exit_code == 0, result.output
    header, line, _refresh = result.output.splitlines()
    assert header.split()[:2] == ["NAME", "SCHEDULE"]
    assert line.startswith("nightly  0 2 * * * (Europe/Berlin)  -")


async def test_scheduler_reconnects_after_losing_its_connection(dsn: str) -> None:
    """A pass that fails because the connection died is followed by one that reconnects."""
    app = make_app(dsn)
    [sched] = await schedulers(app, 1)
    await sched.start()
    pid = (await sched.db.connection()).info.backend_pid
    query(dsn, "SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(psycopg.OperationalError):
        await sched.step()
    sched.cursors["beat"] -= timedelta(seconds=3)
    await sched.step()
    await close(sched)
    assert len(tick_jobs(dsn)) >= 3


async def test_a_paused_scheduler_does_not_report_ticks_others_fired_as_skipped(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler stopped (SIGSTOP) for longer than catch_up while another one kept firing
    must not warn that those ticks were skipped: each of them ran once."""
    app = make_app(dsn, catch_up=10)
    [paused] = await schedulers(app, 1)
    now = (await db_now(paused.db)).replace(microsecond=0)
    paused.cursors = {"beat": now - timedelta(seconds=30)}
    others = "SELECT 'beat', %s - s * interval '1 second' FROM generate_series(11, 29) AS s"
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) " + others, (now,))
    with caplog.at_level(logging.INFO, logger="pgqueue.scheduler"):
        await paused.fire(app.periodics["beat"], now)
    await close(paused)
    assert [r for r in caplog.records if getattr(r, "action", "") == "periodic_skipped"] == []
    assert len(tick_jobs(dsn)) == 11


async def test_a_paused_scheduler_does_not_report_ticks_others_fired_and_pruned_as_skipped(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As above, but the ticks the others fired were pruned since (by code that does not
    know the schedule: its latest tick too), their watermark left: resume() read the ticks
    only, found none, and reported the 19 as skipped. It reads the watermark then."""
    app = make_app(dsn, catch_up=10)
    [paused] = await schedulers(app, 1)
    now = (await db_now(paused.db)).replace(microsecond=0)
    paused.cursors = {"beat": now - timedelta(seconds=30)}
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks (name, pruned_through)"
               " VALUES ('beat', %s - interval '11 seconds')", (now,))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pgqueue.scheduler"):
        await paused.fire(app.periodics["beat"], now)
    await close(paused)
    assert [r for r in caplog.records if getattr(r, "action", "") == "periodic_skipped"] == []
    assert len(tick_jobs(dsn)) == 11


async def test_a_tick_pruned_by_code_with_a_shorter_catch_up_is_not_fired_again(dsn: str) -> None:
    """Two deployments of 'beat' (catch_up 10 s and 1 day, as in a rolling deploy): a tick the
    first recorded and then pruned must not get a second job from the other's late scheduler."""
    short, long = make_app(dsn, catch_up=10), make_app(dsn, catch_up=86400)
    [pruner] = await schedulers(short, 1)
    [late] = await schedulers(long, 1)
    now = (await db_now(pruner.db)).replace(microsecond=0)
    fired = now - timedelta(hours=2)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s),"
               " ('beat', %s)", (fired, now))  # fmt: skip
    assert await pruner.prune() == 1
    late.cursors = {"beat": fired - timedelta(seconds=1)}
    await late.fire(long.periodics["beat"], now)
    await close(pruner, late)
    assert fired.isoformat() not in {tick for tick, _n in tick_jobs(dsn)}


WATERMARKS = "SELECT name, pruned_through FROM pgqueue.periodic_watermarks ORDER BY name"


async def test_pruning_raises_a_names_watermark_and_never_lowers_it(dsn: str) -> None:
    """The watermark is the latest tick pruning deleted, per name (names no longer in the code
    included); a later prune of an older tick leaves it where it is."""
    app = make_app(dsn, catch_up=10)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    hours = [now - timedelta(hours=h) for h in range(6)]
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) SELECT n, t FROM"
               " unnest(array['beat', 'gone']) AS n, unnest(%s::timestamptz[]) AS t",
          (hours[2:] + hours[:1],))  # fmt: skip
    query(dsn, "UPDATE pgqueue.periodic_ticks SET tick = tick - interval '8 days'"
               " WHERE name = 'gone'")  # fmt: skip
    assert await sched.prune() == 9
    assert query(dsn, WATERMARKS) == [
        ("beat", hours[2]), ("gone", hours[0] - timedelta(days=8)),
    ]  # fmt: skip
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s)", (hours[5],))
    assert await sched.prune() == 1
    await close(sched)
    assert query(dsn, WATERMARKS)[0] == ("beat", hours[2])


async def test_the_tick_insert_refuses_ticks_at_or_below_the_watermark(dsn: str) -> None:
    """Only ticks after the name's watermark get a job, however long the caller's horizon; a
    name without a watermark (a new schedule) and other names are not held back by it."""
    app = make_app(dsn)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    mark = now - timedelta(seconds=5)
    ticks = [mark - timedelta(seconds=1), mark, mark + timedelta(seconds=1)]
    job = app.periodics["beat"].tick_job()
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks VALUES ('other', %s)", (now,))
    fresh = await sched.db.run(_store.ticks_insert(job, ticks[:1], 86400))
    assert [tick for _id, tick in fresh] == [ticks[0].isoformat()]
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks VALUES ('beat', %s)", (mark,))
    won = await sched.db.run(_store.ticks_insert(job, ticks[1:], 86400))
    await close(sched)
    assert [tick for _id, tick in won] == [ticks[2].isoformat()]


async def test_a_tick_insert_that_began_before_a_prune_committed_does_not_revive_it(
    dsn: str,
) -> None:
    """The prune has deleted the tick and raised the watermark, not yet committed; an insert
    of that tick starts then and must not fire it once the prune commits. It waits for the
    prune's lock on the name, so its snapshot sees the watermark; before 0009, its ON CONFLICT
    waited for the prune, found the row gone and inserted it."""
    app = make_app(dsn, catch_up=86400)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    fired = now - timedelta(hours=2)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s),"
               " ('beat', %s)", (fired, now))  # fmt: skip
    job = app.periodics["beat"].tick_job()
    with psycopg.connect(dsn) as pruner:
        assert _store.run_together(pruner, _store.ticks_prune({"beat": 10}, 10, 10)) == 1
        insert = asyncio.create_task(sched.db.run(_store.ticks_insert(job, [fired], 86400)))
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        for _ in range(100):
            if insert.done() or query(dsn, waiting) != [(0,)]:
                break
            await asyncio.sleep(0.02)
        pruner.commit()
        won = await insert
    await close(sched)
    assert won == []
    assert query(dsn, WATERMARKS) == [("beat", fired)]
    assert fired.isoformat() not in {tick for tick, _n in tick_jobs(dsn)}


def test_two_prunes_racing_on_one_name_end_at_the_later_tick(dsn: str) -> None:
    """Two prunes of one name in open transactions: the second waits for the first's lock on
    the name, then deletes the next tick and raises the watermark to it."""
    [(now,)] = query(dsn, "SELECT date_trunc('second', now())")
    ticks = [now - timedelta(hours=h) for h in (4, 3, 0)]
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) SELECT 'beat', t"
               " FROM unnest(%s::timestamptz[]) AS t", (ticks,))  # fmt: skip
    prune = _store.ticks_prune({"beat": 10}, 10, 10, limit=1)
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        assert _store.run_together(first, prune) == 1
        racer = threading.Thread(target=lambda: _store.run_together(second, prune))
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()  # waiting for the first's lock on 'beat'
        first.commit()
        racer.join(10)
        second.commit()
    assert query(dsn, WATERMARKS) == [("beat", ticks[1])]
    assert query(dsn, "SELECT tick FROM pgqueue.periodic_ticks") == [(ticks[2],)]


async def test_an_upgrade_from_0008_keeps_the_ticks_and_pruning_then_sets_the_watermark(
    empty_dsn: str,
) -> None:
    """0009 adds the empty table and leaves the ticks alone (those pruned before it leave no
    watermark); the first prune after it records one, and the pruned tick stays unfired."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0008", lambda text: cur.execute(text.encode()))
        cur.execute("INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES"
                    " ('beat', date_trunc('second', now()) - interval '2 hours'),"
                    " ('beat', date_trunc('second', now()))")  # fmt: skip
    pgqueue.migrate(empty_dsn)
    assert query(empty_dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(2,)]
    assert query(empty_dsn, WATERMARKS) == []
    short, long = make_app(empty_dsn, catch_up=10), make_app(empty_dsn, catch_up=86400)
    [pruner] = await schedulers(short, 1)
    [late] = await schedulers(long, 1)
    [(fired,)] = query(empty_dsn, "SELECT min(tick) FROM pgqueue.periodic_ticks")
    assert await pruner.prune() == 1
    assert query(empty_dsn, WATERMARKS) == [("beat", fired)]
    late.cursors = {"beat": fired - timedelta(seconds=1)}
    await late.fire(long.periodics["beat"], fired + timedelta(seconds=1))
    await close(pruner, late)
    assert fired.isoformat() not in {tick for tick, _n in tick_jobs(empty_dsn)}


# A test-only brake: an insert into periodic_ticks from a connection named 'pgqueue held'
# waits, row by row, while the test holds advisory lock 42. Its statement's snapshot is
# taken by then, so the test can commit and prune ticks behind the insert's back.
HOLD = """
CREATE FUNCTION hold_tick() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'pgqueue held' THEN
        PERFORM pg_advisory_xact_lock_shared(42);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_tick BEFORE INSERT ON pgqueue.periodic_ticks
   FOR EACH ROW EXECUTE FUNCTION hold_tick();
"""

# This database's only: another database's sessions (a parallel run's) wait on their own.
WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def until_waiting(dsn: str, count: int, *tasks: asyncio.Task[Any]) -> None:
    """Wait until ``count`` advisory lock requests wait, or one of ``tasks`` ends."""
    for _ in range(250):
        if query(dsn, WAITING) == [(count,)] or any(t.done() for t in tasks):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{query(dsn, WAITING)} advisory lock requests wait, not {count}")


async def test_a_tick_committed_behind_an_inserts_back_and_pruned_does_not_fire_twice(
    dsn: str,
) -> None:
    """An insert of two old ticks has taken its snapshot and is held at the first; another
    scheduler commits the second tick with its job, and a prune of code with a shorter
    catch_up deletes it. The insert must not give it a second job: the prune waits for the
    insert to end (before, it neither saw the tick nor its watermark, nor hit a conflict)."""
    long, short = make_app(dsn, catch_up=86400), make_app(dsn, catch_up=10)
    [other] = await schedulers(long, 1)
    [pruner] = await schedulers(short, 1)
    held = Db(dsn, "held")
    now = (await db_now(other.db)).replace(microsecond=0)
    early, tick = now - timedelta(hours=2, seconds=1), now - timedelta(hours=2)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s)", (now,))
    query(dsn, HOLD)
    job = long.periodics["beat"].tick_job()
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(42)")
        insert = asyncio.create_task(held.run(_store.ticks_insert(job, [early, tick], 86400)))
        await until_waiting(dsn, 1, insert)
        assert insert.done() is False
        assert len(await other.db.run(_store.ticks_insert(job, [tick], 86400))) == 1
        prune = asyncio.create_task(pruner.prune())
        await until_waiting(dsn, 2, prune)
        gate.execute("SELECT pg_advisory_unlock(42)")
        won, pruned = await insert, await prune
    await held.close()
    await close(other, pruner)
    assert [tick for _id, tick in won] == [early.isoformat()]
    assert pruned == 2
    assert tick_jobs(dsn) == [(early.isoformat(), 1), (tick.isoformat(), 1)]
    assert query(dsn, WATERMARKS) == [("beat", tick)]


async def test_prunes_of_names_in_opposite_orders_and_inserts_wait_without_deadlock(
    dsn: str,
) -> None:
    """While an insert of the name whose lock comes last is held, two prunes of three names
    (given in opposite orders) and an insert of the name whose lock comes first queue up
    instead of deleting under it; once it ends all four finish (none aborted as a deadlock),
    each old tick is deleted once, and the two inserted ticks have a job each."""
    [sched] = await schedulers(make_app(dsn), 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) SELECT n, %s - h * interval"
               " '1 hour' FROM unnest(array['a', 'b', 'c']) n, generate_series(0, 3) h",
          (now,))  # fmt: skip
    [first, _, last] = [n for (n,) in query(dsn, "SELECT n FROM unnest(array['a', 'b', 'c'])"
                                                 " AS n ORDER BY hashtext(n)")]  # fmt: skip
    query(dsn, HOLD)
    jobs = {n: _store.TickJob(n, "default", "beat", "{}") for n in "abc"}
    dbs = [Db(dsn, "held"), Db(dsn, "p1"), Db(dsn, "p2"), Db(dsn, "late")]
    held, late = now - timedelta(minutes=90), now - timedelta(seconds=1)
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(42)")
        insert = _store.ticks_insert(jobs[last], [held], 86400)
        tasks = [asyncio.create_task(dbs[0].run(insert))]
        await until_waiting(dsn, 1, *tasks)
        for db, names in zip(dbs[1:3], ["abc", "cba"], strict=True):
            tasks.append(
                asyncio.create_task(
                    db.run(_store.ticks_prune(dict.fromkeys(names, 10.0), 10.0, 10.0))
                )
            )
            await until_waiting(dsn, len(tasks), *tasks)
        insert = _store.ticks_insert(jobs[first], [late], 86400)
        tasks.append(asyncio.create_task(dbs[3].run(insert)))
        await until_waiting(dsn, 4, *tasks)
        assert [t.done() for t in tasks] == [False] * 4
        gate.execute("SELECT pg_advisory_unlock(42)")
        won_held, pruned_1, pruned_2, won_late = await asyncio.gather(*tasks)
    for db in [sched.db, *dbs]:
        await db.close()
    assert (len(won_held), pruned_1 + pruned_2, len(won_late)) == (1, 10, 1)
    an_hour_ago = now - timedelta(hours=1)
    assert query(dsn, WATERMARKS) == [(n, an_hour_ago) for n in "abc"]
    assert sorted(query(dsn, "SELECT name, tick FROM pgqueue.periodic_ticks")) == sorted(
        [(n, now) for n in "abc"] + [(first, late)]
    )


async def test_a_schedule_the_database_refuses_does_not_hold_back_the_next_ones(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kwargs of 100,000 zeros pass the app's size check as JSON text (200 kB) but not the
    database's (1.2 MB as jsonb): each tick insert of that schedule fails. The schedule after
    it still fires in the same pass, on the same connection, and the failure names the first."""
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="big", kwargs={"zeros": [0] * 100_000})
    async def big(zeros: list[int]) -> None: ...

    @app.periodic("* * * * * *", name="small")
    async def small() -> None: ...

    [sched] = await schedulers(app, 1)
    now = await db_now(sched.db)
    sched.cursors = dict.fromkeys(["big", "small"], now - timedelta(seconds=3))
    with caplog.at_level(logging.ERROR, logger="pgqueue.scheduler"):
        await sched.step()
    await close(sched)
    fired = "SELECT DISTINCT meta->>'periodic' FROM pgqueue.jobs"
    assert query(dsn, fired) == [("small",)]
    errors = [r for r in caplog.records if getattr(r, "action", "") == "periodic_error"]
    assert [getattr(r, "periodic", None) for r in errors] == ["big"]
    assert "active_jobs_payload_check" in caplog.text


# A test-only brake: every tick an insert writes after its transaction's first waits while the
# test holds advisory lock 42, so two inserts can each hold their first tick uncommitted.
HOLD_AFTER_FIRST = """
CREATE FUNCTION hold_after_first() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('pgqueue_test.seen', true) = 'yes' THEN
        PERFORM pg_advisory_xact_lock_shared(42);
    END IF;
    PERFORM set_config('pgqueue_test.seen', 'yes', true);
    RETURN NEW;
END $$;
CREATE TRIGGER hold_after_first BEFORE INSERT ON pgqueue.periodic_ticks
   FOR EACH ROW EXECUTE FUNCTION hold_after_first();
"""


BLOCKED = """
SELECT count(*) FROM pg_locks
 WHERE NOT granted
   AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())
"""


async def test_inserts_of_the_same_ticks_in_opposite_orders_do_not_deadlock(dsn: str) -> None:
    """Two schedulers insert the same two ticks, given in opposite orders, each held after its
    first row. The statement inserts in tick order whatever its caller's order, so the second
    waits for the first's tick instead of taking the other one first: both end (none aborted
    as a deadlock) and each tick has one job. In the callers' orders, each held the tick the
    other wanted next."""
    [sched] = await schedulers(make_app(dsn), 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    ticks = [now - timedelta(seconds=2), now - timedelta(seconds=1)]
    query(dsn, HOLD_AFTER_FIRST)
    job = _store.TickJob("beat", "default", "beat", "{}")
    dbs = [Db(dsn, "up"), Db(dsn, "down")]
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(42)")
        tasks = [
            asyncio.create_task(db.run(_store.ticks_insert(job, order, 86400)))
            for db, order in zip(dbs, [ticks, ticks[::-1]], strict=True)
        ]
        for _ in range(250):  # each waits: for the gate, or for the other's first tick
            if query(dsn, BLOCKED) == [(2,)]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"{query(dsn, BLOCKED)} lock requests wait, not 2")
        gate.execute("SELECT pg_advisory_unlock(42)")
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for db in [sched.db, *dbs]:
        await db.close()
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(tick for won in results for _id, tick in won) == [t.isoformat() for t in ticks]
    assert tick_jobs(dsn) == [(t.isoformat(), 1) for t in ticks]


def two_apps(dsn: str, names: tuple[str, str], queue: str = "default") -> list[pgqueue.PgQueue]:
    """Two apps (two codebases, or an old and a new deploy), each with a per-second schedule
    of a task of its own, under the schedule names ``names``."""
    apps = []
    for name in names:
        app = pgqueue.PgQueue(dsn)
        app.periodic("* * * * * *", name=name, queue=queue)(
            app.task(name=f"task of {name} in app {len(apps)}")(_noop)
        )
        apps.append(app)
    return apps


async def _noop() -> None:
    """A periodic task's body."""


async def fire_both(apps: list[pgqueue.PgQueue], seconds: int) -> list[tuple[str, int]]:
    """Each app's scheduler fires the last ``seconds`` ticks, one after the other; returns
    (task, jobs) per task."""
    scheds = [Scheduler(app.periodics.values(), Db(app.dsn, f"app{i}"))
              for i, app in enumerate(apps)]  # fmt: skip
    now = (await db_now(scheds[0].db)).replace(microsecond=0)
    for sched, app in zip(scheds, apps, strict=True):
        [periodic] = app.periodics.values()
        sched.cursors = {periodic.name: now - timedelta(seconds=seconds)}
        await sched.fire(periodic, now)
    await close(*scheds)
    return query(apps[0].dsn, "SELECT task, count(*) FROM pgqueue.jobs GROUP BY 1 ORDER BY 1")


async def test_two_apps_with_one_schedule_name_are_one_schedule(dsn: str) -> None:
    """A schedule's name is its identity in the database: two apps that schedule different
    tasks under one name share its ticks, so each tick fires once, for whichever app's
    scheduler inserts it first, and the other app's task gets no job; and its cursor: a
    scheduler of the second app starts after the first app's last tick."""
    apps = two_apps(dsn, ("report", "report"))
    assert await fire_both(apps, 5) == [("task of report in app 0", 5)]
    [sched] = await schedulers(apps[1], 1)
    await sched.start()
    await close(sched)
    [(last,)] = query(dsn, "SELECT max(tick) FROM pgqueue.periodic_ticks")
    assert sched.cursors == {"report": last}


async def test_a_renamed_schedule_fires_under_both_names_while_old_code_runs(dsn: str) -> None:
    """During a rolling deploy that renames a schedule, old workers fire the old name and new
    workers the new one: two schedules, so every tick of the overlap makes two jobs."""
    apps = two_apps(dsn, ("report", "report-v2"))
    assert await fire_both(apps, 5) == [
        ("task of report in app 0", 5), ("task of report-v2 in app 1", 5),
    ]  # fmt: skip


def night_ticks(dsn: str, name: str) -> list[tuple[datetime, int]]:
    """(tick, number of jobs) for every tick of the schedule ``name`` that has a job."""
    rows = query(
        dsn,
        "SELECT meta->>'tick', count(*) FROM pgqueue.jobs WHERE meta->>'periodic' = %s"
        " GROUP BY 1 ORDER BY 1",
        (name,),
    )
    return [(datetime.fromisoformat(tick), count) for tick, count in rows]


async def test_a_rolling_deploy_over_the_autumn_change_fires_at_worst_what_old_code_did(
    dsn: str,
) -> None:
    """On 31 October 2027 Berlin repeats 02:00-03:00: this release fires 02:30 once (CEST),
    the earlier one fired 02:30 CET too. With both releases scheduling, the first occurrence
    is one tick for both (one job), and this release adds no tick of its own; the second
    occurrence fires once if an old worker's scheduler fires it, as before."""
    app = pgqueue.PgQueue(dsn)
    for name in ("nightly", "nightly-new"):
        app.periodic("30 2 * * *", timezone="Europe/Berlin", name=name, catch_up=3 * 3600)(_noop)
    nightly, nightly_new = app.periodics["nightly"], app.periodics["nightly-new"]
    cest, cet = datetime(2027, 10, 31, 0, 30, tzinfo=UTC), datetime(2027, 10, 31, 1, 30, tzinfo=UTC)
    [new, alone] = await schedulers(app, 2)
    new.cursors = {"nightly": cest - timedelta(hours=1)}
    await new.fire(nightly, cest + timedelta(minutes=15))
    # A worker of the earlier release, after the fold, fires what it computes: both 02:30s.
    old_rule = _store.ticks_insert(nightly.tick_job(), [cest, cet], nightly.keep_seconds)
    assert [datetime.fromisoformat(t) for _id, t in await alone.db.run(old_rule)] == [cet]
    await new.fire(nightly, cet + timedelta(minutes=15))
    assert night_ticks(dsn, "nightly") == [(cest, 1), (cet, 1)]
    # This release alone, from before the fold to after it: the first occurrence only.
    alone.cursors = {"nightly-new": cest - timedelta(hours=1)}
    await alone.fire(nightly_new, cet + timedelta(minutes=15))
    await close(new, alone)
    assert night_ticks(dsn, "nightly-new") == [(cest, 1)]


async def test_ticks_of_a_queue_no_worker_serves_pile_up_as_queued_jobs(dsn: str) -> None:
    """A worker's scheduler fires every schedule of its app, whatever queues it serves: the
    jobs of a schedule on a queue no worker serves wait there, one more per tick, and a
    worker that serves it later runs them all."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("* * * * * *", name="report", queue="reports")(app.task(_noop))
    worker = app.worker(queues=["default"], poll_interval=0.05)
    waiting = "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'reports' AND state = 'queued'"
    await run_worker_until(worker, lambda: query(dsn, waiting)[0][0] >= 3)
    [(piled,)] = query(dsn, waiting)
    assert states(dsn) == {"queued": piled}
    await app.worker(queues=["reports"], scheduler=False, burst=True, poll_interval=0.05).run()
    assert states(dsn) == {"succeeded": piled}  # a worker of the queue runs every one


async def test_a_schedule_the_database_refuses_is_reported_once_at_start_and_left_out(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A schedule whose job the database refuses (kwargs over the stored 1 MiB) is found when
    the scheduler starts, nightly ones too, not at their first tick: one ERROR each, naming
    it, and no other attempt. The other schedules fire. Before, every pass failed anew."""
    app = pgqueue.PgQueue(dsn)
    zeros = {"zeros": [0] * 100_000}

    @app.periodic("* * * * * *", name="big", kwargs=zeros)
    async def big(zeros: list[int]) -> None: ...

    @app.periodic("0 2 * * *", name="nightly", kwargs=zeros)
    async def nightly(zeros: list[int]) -> None: ...

    @app.periodic("* * * * * *", name="small")
    async def small() -> None: ...

    [sched] = await schedulers(app, 1)
    with caplog.at_level(logging.ERROR, logger="pgqueue.scheduler"):
        await sched.start()
        for _ in range(3):
            sched.cursors = {name: cursor - timedelta(seconds=2)
                             for name, cursor in sched.cursors.items()}  # fmt: skip
            await sched.step()
    await close(sched)
    errors = [(r.action, r.periodic) for r in caplog.records]  # type: ignore[attr-defined]
    assert errors == [("periodic_refused", "big"), ("periodic_refused", "nightly")]
    assert "active_jobs_payload_check" in caplog.text
    assert [p.name for p in sched.periodics] == ["small"]
    fired = "SELECT DISTINCT meta->>'periodic' FROM pgqueue.jobs"
    assert query(dsn, fired) == [("small",)]


async def test_a_prune_stalled_between_its_statements_does_not_hold_the_schedule_back(
    dsn: str,
) -> None:
    """A prune takes its names' locks, then its client stops before the delete (SIGSTOP, an
    event loop blocked by a task), its transaction open. The server ends that transaction
    after a few seconds idle, so another scheduler's insert of the name, which waits for the
    lock, goes on and fires its ticks. Before, it waited as long as the stalled process lived,
    and so did every scheduler's: none of that schedule's ticks fired."""
    app = make_app(dsn)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s),"
               " ('beat', %s)", (now - timedelta(hours=3), now - timedelta(seconds=3)))  # fmt: skip
    prune = _store.ticks_prune({"beat": 10}, 10, 10)
    with psycopg.connect(dsn) as stalled:
        with stalled.cursor() as cur:
            assert _store.run(cur, prune.first) == ["beat"]  # and then nothing
        sched.cursors = {"beat": now - timedelta(seconds=3)}
        fire = sched.fire(app.periodics["beat"], now)
        await asyncio.wait_for(fire, 60)  # a guard against hanging, not a measure
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            stalled.execute("SELECT 1")
    await close(sched)
    assert [n for _tick, n in tick_jobs(dsn)] == [1, 1, 1]


async def test_a_rare_schedule_another_app_pruned_still_catches_up_its_missed_tick(
    dsn: str,
) -> None:
    """Another app on the database (which does not know the name) prunes all ticks of a yearly
    schedule once older than 7 days, its latest too. Its workers then restart just after its
    tick, within catch_up: that tick still fires, as it does when the latest tick is kept.
    Before, the schedule started afresh at now() and the year's tick was lost, unlogged; and
    ``cron list`` showed no last tick, as for a schedule that never fired."""
    [pruner] = await schedulers(make_app(dsn), 1)
    now = (await db_now(pruner.db)).replace(second=0, microsecond=0)
    due = now - timedelta(minutes=2)
    app = pgqueue.PgQueue(dsn)
    expression = f"{due.minute} {due.hour} {due.day} {due.month} *"
    app.periodic(expression, name="yearly", catch_up=600)(app.task(_noop))
    last_year = normalize(app.periodics["yearly"].cron, due - timedelta(seconds=1))
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('yearly', %s)",
          (last_year,))  # fmt: skip
    assert await pruner.prune() == 1
    assert query(dsn, WATERMARKS) == [("yearly", last_year)]
    assert [s.last_tick for s in pgqueue.cron_list(app)] == [last_year]  # not "-": never fired
    [sched] = await schedulers(app, 1)
    await sched.step()
    await close(pruner, sched)
    fired = "SELECT meta->>'tick' FROM pgqueue.jobs WHERE meta->>'periodic' = 'yearly'"
    assert query(dsn, fired) == [(due.isoformat(),)]


async def test_an_insert_stalled_holding_its_lock_holds_back_no_other_scheduler(dsn: str) -> None:
    """A scheduler stops (SIGSTOP) between its two pipelined statements: it holds the name's
    lock shared, its transaction open and not idle. A prune then asks for the lock, and gives
    up after 5 s instead of waiting in the queue, where every later insert of the name
    waited behind it: another scheduler's ticks fire. Before, none did while the first lived."""
    app = make_app(dsn)
    [sched, pruner] = await schedulers(app, 2)
    now = (await db_now(sched.db)).replace(microsecond=0)
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s),"
               " ('beat', %s)", (now - timedelta(hours=3), now - timedelta(seconds=3)))  # fmt: skip
    with psycopg.connect(dsn) as stalled:
        _store.run(
            stalled.cursor(), _store.ticks_insert(app.periodics["beat"].tick_job(), [], 1).first
        )
        prune = asyncio.create_task(pruner.prune())
        await until_waiting(dsn, 1, prune)
        sched.cursors = {"beat": now - timedelta(seconds=3)}
        fire = sched.fire(app.periodics["beat"], now)
        await asyncio.wait_for(fire, 60)  # a guard against hanging, not a measure
        assert await asyncio.wait_for(prune, 60) == 0  # postponed: the next prune deletes
    await close(sched, pruner)
    assert [n for _tick, n in tick_jobs(dsn)] == [1, 1, 1]


async def test_a_watermark_written_by_hand_for_the_far_future_does_not_stop_the_start(
    dsn: str,
) -> None:
    """A schedule without tick rows goes on from its watermark; one SQL wrote for year 9999,
    from which no next tick can be computed, is left out as a future tick is (the insert
    still refuses ticks below it): the scheduler starts, at now()."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("0 0 1 1 *", name="yearly")(app.task(_noop))
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks VALUES ('yearly', '9999-12-30 00:00+00')")
    [sched] = await schedulers(app, 1)
    await sched.start()
    now = await db_now(sched.db)
    await close(sched)
    assert sched.cursors["yearly"] <= now
    assert [s.last_tick for s in pgqueue.cron_list(app)] == [None]


async def test_kwargs_the_connections_encoding_cannot_carry_are_refused_like_the_databases(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On a connection in LATIN1 (a LATIN1 database's default, or client_encoding in the DSN),
    a euro sign in kwargs cannot even be sent: that schedule is refused at start, once, and
    the others fire. The start's trial raised psycopg's UnicodeEncodeError out of the start
    itself, so that no schedule of the worker fired."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("* * * * * *", name="euro", kwargs={"price": "9 €"})(app.task(_price))
    app.periodic("* * * * * *", name="small")(app.task(_noop))
    sched = Scheduler(app.periodics.values(), Db(make_conninfo(dsn, client_encoding="LATIN1"), "t"))
    with caplog.at_level(logging.ERROR, logger="pgqueue.scheduler"):
        await sched.start()
        sched.cursors["small"] -= timedelta(seconds=2)
        await sched.step()
    await close(sched)
    errors = [(r.action, r.periodic) for r in caplog.records]  # type: ignore[attr-defined]
    assert errors == [("periodic_refused", "euro")]
    assert "'latin-1' codec can't encode" in caplog.text
    assert query(dsn, "SELECT DISTINCT meta->>'periodic' FROM pgqueue.jobs") == [("small",)]


async def _price(price: str) -> None:
    """A periodic task's body, with an argument."""


async def test_a_job_id_taken_at_start_does_not_leave_the_schedule_out(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The jobs' id sequence is behind the ids in the table (a copy by logical replication,
    which leaves sequences behind; ids written by hand): the start's trial drew a taken id and
    the schedule was refused, for the process's life, although the next id drawn is free. A
    unique violation depends on the rows there, not on the schedule's fixed arguments: the
    schedule is kept, and fires."""
    app = make_app(dsn)
    query(dsn, "SELECT pgqueue.enqueue('other', queue => 'q')")
    query(dsn, "SELECT setval(pg_get_serial_sequence('pgqueue.active_jobs', 'id'), 1, false)")
    [sched] = await schedulers(app, 1)
    with caplog.at_level(logging.ERROR, logger="pgqueue.scheduler"):
        await sched.start()
        sched.cursors["beat"] -= timedelta(seconds=2)
        await sched.step()
    await close(sched)
    assert [getattr(r, "action", None) for r in caplog.records] == []
    assert {n for _tick, n in tick_jobs(dsn)} == {1}  # it fired: one job per tick


async def test_a_prune_that_filled_its_batches_goes_on_at_the_next_pass(dsn: str) -> None:
    """A prune that deleted all it may in one pass (4 batches of 500) prunes again at the next
    pass, not 30-60 s later: a backlog drains, and schedules making more rows than 2,000 a
    minute (40 per-second ones) no longer outgrow the pruning."""
    app = make_app(dsn, catch_up=10)
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " SELECT 'gone', now() - interval '8 days' - s * interval '1 second'"
        " FROM generate_series(1, 2600) s",
    )
    [sched] = await schedulers(app, 1)
    sched.pruner.next_run = 0.0
    await sched.step()
    await sched.step()
    await close(sched)
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE name = 'gone'") == [(0,)]


async def test_after_a_database_outage_the_scheduler_retries_within_half_its_catch_up(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database refuses connections, the scheduler retries at most half its shortest
    ``catch_up`` apart: one that waited the 10 s of the claimer's backoff found, with
    ``catch_up=3``, the ticks of up to 7 s after the database came back already too old."""
    waits: list[float] = []

    async def wait_for(awaitable: Any, timeout: float) -> None:
        awaitable.close()
        waits.append(timeout)

    monkeypatch.setattr("pgqueue._worker._scheduler.asyncio.wait_for", wait_for)
    app = make_app(dsn, catch_up=3)
    missing = make_conninfo(dsn, dbname="h85_no_such_database")
    sched = Scheduler(app.periodics.values(), Db(missing, "test"))
    for _ in range(12):
        await sched._pass(asyncio.Event())
    await close(sched)
    assert len(waits) == 12
    assert max(waits) == 1.5


def ticks_read(plan: dict[str, Any]) -> int:
    """Rows the scans of pgqueue.periodic_ticks in an EXPLAIN (ANALYZE) plan read, filtered
    out or not, over all their loops."""
    own = 0
    if plan.get("Relation Name") == "periodic_ticks":
        rows = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        own = rows * plan["Actual Loops"]
    return own + sum(ticks_read(child) for child in plan.get("Plans", []))


def test_a_prune_reads_the_ticks_it_deletes_not_the_whole_table(dsn: str) -> None:
    """With 20,000 old ticks of one schedule, a prune's lock reads a few rows and its search
    for a batch about its 500: both read every tick, and looked up the schedule's latest tick
    again for each old one, so that one prune pass took 24 s on a table of 1,000,000 ticks
    (390,000 old), and held the scheduler's firing up for as long."""
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " SELECT 'beat', now() - interval '2 hours' - s * interval '1 second'"
        " FROM generate_series(0, 19999) s UNION ALL SELECT 'beat', now()",
    )
    query(dsn, "ANALYZE pgqueue.periodic_ticks")
    params: dict[str, Any] = {
        "names": ["beat"], "keeps": [3610.0], "default_keep": 608400.0, "forget": FORGET_AFTER,
        "limit": 500,
    }  # fmt: skip
    explain: Any = "EXPLAIN (ANALYZE, FORMAT JSON) "
    with psycopg.connect(dsn) as conn:
        [[[lock]]] = conn.execute(explain + q.TICKS_PRUNE_LOCK, params).fetchall()
        prune_params = {**params, "locked": ["beat"]}
        [[[prune]]] = conn.execute(explain + q.TICKS_PRUNE, prune_params).fetchall()
        conn.rollback()
    [doomed] = [p for p in prune["Plan"]["Plans"] if p.get("Subplan Name") == "CTE doomed"]
    assert ticks_read(lock["Plan"]) < 100
    assert ticks_read(doomed) < 1000  # the delete of what it found may scan a small table


def test_a_prune_of_many_names_reads_about_its_batch_not_a_batch_per_name(dsn: str) -> None:
    """With 200 schedules of 600 old ticks each, the search for a batch read and locked up to
    a batch (500) of every name's ticks, 100,000 rows, to keep the oldest 500 of them: a
    pass of four batches took 4 to 7 s with 1,000 names of 1,000 old ticks (measured), in a
    scheduler's pass or a worker's maintenance, every pass until the backlog was gone. It
    reads about its batch; each name still loses its oldest ticks only, up to its
    watermark."""
    names = [f"n{i:03}" for i in range(200)]
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " SELECT n, now() - interval '2 hours' - s * interval '1 second'"
        " FROM unnest(%s::text[]) n, generate_series(0, 599) s"
        " UNION ALL SELECT n, now() FROM unnest(%s::text[]) n",
        [names, names],
    )
    query(dsn, "ANALYZE pgqueue.periodic_ticks")
    params: dict[str, Any] = {
        "names": names, "keeps": [3610.0] * len(names), "default_keep": 608400.0,
        "forget": FORGET_AFTER, "locked": names, "limit": 500,
    }  # fmt: skip
    with psycopg.connect(dsn) as conn:
        [[[prune]]] = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + q.TICKS_PRUNE, params)
        conn.rollback()
        assert len(conn.execute(q.TICKS_PRUNE, params).fetchall()) == 500
    [doomed] = [p for p in prune["Plan"]["Plans"] if p.get("Subplan Name") == "CTE doomed"]
    assert ticks_read(doomed) < 1000
    below = query(
        dsn,
        "SELECT count(*) FROM pgqueue.periodic_ticks AS t JOIN pgqueue.periodic_watermarks"
        " AS w USING (name) WHERE t.tick <= w.pruned_through",
    )
    assert below == [(0,)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(200 * 601 - 500,)]


def test_cron_list_escapes_control_characters_of_schedule_names(dsn: str) -> None:
    """A schedule name is printed with its control characters escaped, as the other tables
    of the CLI print theirs: an escape sequence in a tick row's name (SQL can write one, and
    name= takes one) retitled the operator's terminal, and a tab pushed the columns apart."""
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " VALUES (E'evil\\x1b]0;owned\\x07\\tname', now() - interval '1 minute')",
    )
    result = CliRunner().invoke(cli, ["--dsn", dsn, "cron", "list"])
    assert result.exit_code == 0, result.output
    # click < 8.2's runner writes the "no app given" note (stderr) after the table into stdout
    header, line = result.stdout.splitlines()[:2]
    assert line.startswith("evil\\x1b]0;owned\\x07\\tname  -  ")
    assert header.index("SCHEDULE") == line.index("-  ")


def test_the_latest_ticks_are_read_from_the_index_not_the_whole_table(dsn: str) -> None:
    """With 300,000 ticks of 30 names, the latest tick of each is found with a probe per name
    and a probe for the next name: a GROUP BY read every tick, 130 ms on a million, at every
    scheduler's start and in ``pgqueue cron list``. Ticks after now are still left out."""
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " SELECT 'n' || n, now() - s * interval '1 second'"
        " FROM generate_series(1, 30) n, generate_series(0, 9999) s"
        " UNION ALL SELECT 'n1', now() + interval '1 day'"
        " UNION ALL SELECT 'later', now() + interval '1 day'",
    )
    query(dsn, "ANALYZE pgqueue.periodic_ticks")
    by_group = query(
        dsn,
        "SELECT name, max(tick) FROM pgqueue.periodic_ticks WHERE tick <= now()"
        " GROUP BY name ORDER BY name",
    )
    explain: Any = "EXPLAIN (ANALYZE, FORMAT JSON) "
    with psycopg.connect(dsn) as conn:
        [[[plan]]] = conn.execute(explain + q.TICKS_LAST).fetchall()
        assert conn.execute(q.TICKS_LAST).fetchall() == by_group
    assert len(by_group) == 30
    assert ticks_read(plan["Plan"]) < 200


async def test_a_watermark_goes_once_its_name_has_no_tick_no_schedule_and_years_past(
    dsn: str,
) -> None:
    """A watermark is kept while its schedule is in the pruning code, while its name has
    ticks, and for 2,930 days and an hour after the tick it marks (any schedule of
    another app this code pruned resumes from it); then it goes. Before, every name ever
    pruned kept its row for good."""
    app = make_app(dsn, catch_up=10)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    old = now - timedelta(seconds=FORGET_AFTER + 60)
    marks = [("beat", old), ("gone", old), ("recent", now - timedelta(days=300)), ("ticking", old)]
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks SELECT * FROM unnest(%s::text[],"
               " %s::timestamptz[])", ([n for n, _ in marks], [t for _, t in marks]))  # fmt: skip
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('ticking', %s)", (now,))
    assert await sched.prune() == 0
    await close(sched)
    assert query(dsn, WATERMARKS) == [m for m in marks if m[0] != "gone"]


async def test_the_watermark_of_a_29_february_schedule_outlives_its_gap_between_ticks(
    dsn: str,
) -> None:
    """A 29 February schedule ticks every 4 years (8 from 2096 to 2104). Its ticks pruned by
    another app (a worker without schedules, say), its watermark went once a year and 7 days
    and an hour old: restarted just after its next tick, it then started afresh and never
    fired that tick, though within catch_up. The watermark of its last tick (2024) is kept,
    and so is one of up to 8 years and a day ago."""
    db = Db(dsn, "test")
    now = (await db_now(db)).replace(microsecond=0)
    marks = [("leap", datetime(2024, 2, 29, tzinfo=UTC)),
             ("longest", now - timedelta(days=2922))]  # fmt: skip
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks SELECT * FROM unnest(%s::text[],"
               " %s::timestamptz[])", ([n for n, _ in marks], [t for _, t in marks]))  # fmt: skip
    assert await TickPruner().run(db) == 0
    await db.close()
    assert query(dsn, WATERMARKS) == marks


async def test_a_watermark_is_kept_when_an_insert_of_its_name_commits_during_the_prune(
    dsn: str,
) -> None:
    """A prune that would forget a name's watermark takes the name's lock first: an insert of
    a tick of that name in progress holds it shared, the prune waits, then finds the tick and
    keeps the mark; the tick has its one job."""
    app = make_app(dsn)
    [sched, pruner] = await schedulers(app, 2)
    pruner.periodics = []  # code that does not know 'beat'
    now = (await db_now(sched.db)).replace(microsecond=0)
    mark = now - timedelta(seconds=FORGET_AFTER + 60)
    query(dsn, "INSERT INTO pgqueue.periodic_watermarks VALUES ('beat', %s)", (mark,))
    with psycopg.connect(dsn) as inserting:
        insert = _store.ticks_insert(app.periodics["beat"].tick_job(), [now], 60)
        _store.run(inserting.cursor(), insert.first)
        prune = asyncio.create_task(pruner.prune())
        await until_waiting(dsn, 1, prune)
        assert isinstance(insert.then, _store.Query)
        assert len(_store.run(inserting.cursor(), insert.then)) == 1
        inserting.commit()
        assert await asyncio.wait_for(prune, 60) == 0  # a guard against hanging
    await close(sched, pruner)
    assert query(dsn, WATERMARKS) == [("beat", mark)]
    assert [n for _tick, n in tick_jobs(dsn)] == [1]


async def test_a_worker_without_schedules_prunes_the_ticks_of_removed_ones(dsn: str) -> None:
    """The last schedule of an app removed, its workers still prune its ticks (in their
    maintenance, as any scheduler prunes names it does not know: after 7 days and an hour);
    the ticks of another app's schedule stay. Before, only a worker with a schedule pruned,
    and such rows stayed until deleted by hand. A worker with --no-scheduler prunes none."""
    query(dsn, OLD_TICKS)
    query(dsn, "UPDATE pgqueue.periodic_ticks SET tick = tick - interval '8 days'"
               " WHERE name = 'gone'")  # fmt: skip
    app = pgqueue.PgQueue(dsn)
    assert app.worker(scheduler=False)._tick_pruner is None
    worker = app.worker(poll_interval=0.05, rescue_interval=0.05)
    assert worker._tick_pruner is not None
    worker._tick_pruner.next_run = 0.0
    gone = "SELECT count(*) FROM pgqueue.periodic_ticks WHERE name = 'gone'"
    await run_worker_until(worker, lambda: query(dsn, gone) == [(0,)], 20)
    left = query(dsn, "SELECT name, count(*) FROM pgqueue.periodic_ticks GROUP BY 1")
    assert left == [("beat", 4)]


async def test_a_scheduler_whose_every_schedule_the_database_refused_still_prunes(
    dsn: str,
) -> None:
    """A scheduler left with no schedule (the database refused each one's job at its start)
    returned from each pass before its prune, and its worker, whose app has schedules, does
    not prune in its maintenance: with only such workers, the ticks of removed schedules
    stayed for ever. It prunes as a worker without schedules does."""
    query(dsn, OLD_TICKS)
    query(dsn, "UPDATE pgqueue.periodic_ticks SET tick = tick - interval '8 days'"
               " WHERE name = 'gone'")  # fmt: skip
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="big", kwargs={"zeros": [0] * 100_000})
    async def big(zeros: list[int]) -> None: ...

    [sched] = await schedulers(app, 1)
    await sched.step()
    assert sched.periodics == []
    sched.pruner.next_run = 0.0
    await sched.step()
    await close(sched)
    left = query(dsn, "SELECT name, count(*) FROM pgqueue.periodic_ticks GROUP BY 1")
    assert left == [("beat", 4)]


def overlapped(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ticks the periodic_overlapped records name, in order."""
    records = caplog.records
    return [r.tick for r in records if getattr(r, "action", "") == "periodic_overlapped"]  # type: ignore[attr-defined]


async def test_without_overlap_a_tick_is_skipped_while_a_job_of_the_schedule_is_unfinished(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """overlap=False: a tick won while the job of an earlier tick is queued (or running) is
    recorded, gets no job and is logged (periodic_overlapped); fired again, it does nothing,
    so it is never retried. Once that job has ended, the next tick gets its job."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = make_app(dsn, overlap=False)
    beat = app.periodics["beat"]
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    ticks = [now - timedelta(seconds=s) for s in (3, 2, 1)]
    sched.cursors = {"beat": ticks[0] - timedelta(seconds=1)}
    await sched.fire(beat, ticks[0])
    await sched.fire(beat, ticks[1])
    sched.cursors = {"beat": ticks[0]}
    await sched.fire(beat, ticks[1])  # the skipped tick again: recorded, so nothing happens
    [[job_id]] = query(dsn, "SELECT id FROM pgqueue.jobs")
    query(dsn, "SELECT pgqueue.cancel(%s)", (job_id,))
    await sched.fire(beat, ticks[2])
    await close(sched)
    assert [t for t, _n in tick_jobs(dsn)] == [ticks[0].isoformat(), ticks[2].isoformat()]
    assert overlapped(caplog) == [ticks[1].isoformat()]
    recorded = query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE name = 'beat'")
    assert recorded == [(3,)]
    keys = query(dsn, "SELECT DISTINCT unique_key FROM pgqueue.jobs")
    assert keys == [("periodic:beat",)]


async def test_without_overlap_racing_schedulers_make_one_job_for_the_oldest_tick(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Four schedulers catching up the same 20 ticks at once: each tick is recorded once,
    the oldest gets the one job, and the 19 others are logged as skipped, once each."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = make_app(dsn, overlap=False)
    scheds = await schedulers(app, 4)
    now = (await db_now(scheds[0].db)).replace(microsecond=0)
    for s in scheds:
        s.cursors = {"beat": now - timedelta(seconds=20)}
    await asyncio.gather(*(s.fire(app.periodics["beat"], now) for s in scheds))
    await close(*scheds)
    oldest = now - timedelta(seconds=19)
    assert tick_jobs(dsn) == [(oldest.isoformat(), 1)]
    assert sorted(overlapped(caplog)) == [
        (now - timedelta(seconds=s)).isoformat() for s in range(18, -1, -1)
    ]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(20,)]
    assert query(dsn, LINKED) == [(1,)]


@pytest.mark.parametrize("first_ends", ["commit", "rollback"])
def test_without_overlap_two_schedulers_firing_different_ticks_at_once_make_one_job(
    dsn: str, first_ends: str
) -> None:
    """Two schedulers of an overlap=False schedule fire two different ticks at the same time
    (no tick row for either to conflict on): the second's job waits for the first's
    uncommitted one. If that commits, the second tick is recorded with no job; if it rolls
    back, the second tick gets the job. Never two jobs."""
    job = make_app(dsn, overlap=False).periodics["beat"].tick_job()
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        [(now,)] = first.execute("SELECT date_trunc('second', now())").fetchall()
        first.rollback()
        ticks = [now - timedelta(seconds=2), now - timedelta(seconds=1)]
        [(first_id, _)] = _store.run_together(first, _store.ticks_insert(job, ticks[:1], 600))
        second_pid = second.info.backend_pid
        won: list[Any] = []
        racer = threading.Thread(target=lambda: won.extend(
            _store.run_together(second, _store.ticks_insert(job, ticks[1:], 600))
        ))  # fmt: skip
        racer.start()
        waits = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        while query(dsn, waits, [second_pid]) != [("Lock",)]:
            assert racer.is_alive()
            time.sleep(0.01)
        first.commit() if first_ends == "commit" else first.rollback()
        racer.join(30)
        second.commit()
    [(second_id, tick)] = won
    assert tick == ticks[1].isoformat()
    jobs = query(dsn, "SELECT id FROM pgqueue.jobs")
    if first_ends == "commit":
        assert second_id is None and jobs == [(first_id,)]
    else:
        assert second_id is not None and jobs == [(second_id,)]


async def test_without_overlap_the_runs_of_a_slow_task_never_overlap(dsn: str) -> None:
    """A per-second schedule with overlap=False whose task takes 1.5 s, on a worker of 4
    slots: no two of its runs overlap in time, and ticks fired while one is unfinished get no
    job. With overlap=True (the default) they ran side by side."""
    app = pgqueue.PgQueue(dsn)

    @app.periodic("* * * * * *", name="slow", overlap=False)
    async def slow() -> None:
        await asyncio.sleep(1.5)

    worker = app.worker(concurrency=4, poll_interval=0.05)
    await run_worker_until(worker, lambda: states(dsn).get("succeeded", 0) >= 3, 30)
    runs = query(
        dsn,
        "SELECT started_at, finished_at FROM pgqueue.jobs WHERE state = 'succeeded'"
        " ORDER BY started_at",
    )
    for (_start, end), (start, _end) in itertools.pairwise(runs):
        assert end <= start
    ticks = query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE name = 'slow'")
    jobs = query(dsn, "SELECT count(*) FROM pgqueue.jobs")
    assert ticks[0][0] > jobs[0][0]


async def test_without_overlap_a_skipped_ticks_row_names_no_job(dsn: str) -> None:
    """overlap=False: the row of a tick skipped while an earlier tick's job is unfinished has
    a NULL job_id; it held the id drawn for a job that was never inserted, which named no job
    (and read as one that had been deleted). The fired tick's row still names its job."""
    app = make_app(dsn, overlap=False)
    [sched] = await schedulers(app, 1)
    now = (await db_now(sched.db)).replace(microsecond=0)
    sched.cursors = {"beat": now - timedelta(seconds=3)}
    await sched.fire(app.periodics["beat"], now)
    await close(sched)
    rows = query(
        dsn,
        "SELECT t.job_id IS NULL, j.id IS NOT NULL FROM pgqueue.periodic_ticks AS t"
        " LEFT JOIN pgqueue.jobs AS j ON j.id = t.job_id ORDER BY t.tick",
    )
    assert rows == [(False, True), (True, False), (True, False)]


def test_a_prune_locks_no_more_names_than_its_batch_can_delete_from(dsn: str) -> None:
    """A prune's lock statement locks at most its batch's number of names, since each name
    locked has a tick to delete: it locked every name with an old tick, one advisory lock
    each, a slot per schedule in the server's shared lock table (12,000 to 15,000 slots on a
    default server, shared with the application's transactions, which fail with "out of
    shared memory" once it is full). The names left over go in the next batches."""
    names = [f"n{i:02}" for i in range(30)]
    query(
        dsn,
        "INSERT INTO pgqueue.periodic_ticks (name, tick)"
        " SELECT n, now() - interval '2 hours' FROM unnest(%s::text[]) n"
        " UNION ALL SELECT n, now() FROM unnest(%s::text[]) n",
        [names, names],
    )
    keep = dict.fromkeys(names, 3610.0)
    advisory = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"
    counts = []
    with psycopg.connect(dsn) as conn:
        for _ in range(4):
            prune = _store.ticks_prune(keep, 608400.0, FORGET_AFTER, limit=10)
            deleted = _store.run_together(conn, prune)
            counts.append((deleted, query(dsn, advisory, [conn.info.backend_pid])[0][0]))
            conn.commit()
    assert counts == [(10, 10), (10, 10), (10, 10), (0, 0)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(30,)]


@pytest.mark.parametrize("autocommit", [True, False])
async def test_a_failing_last_statement_of_a_together_fails_it_all(
    dsn: str, autocommit: bool
) -> None:
    """A tick insert's third statement (TICKS_UNLINK, ``Together.after``) is sent in the
    pipeline of the first two, or run in the caller's transaction: its error is raised, sync
    and async, and the tick the second wrote goes with it."""
    insert = "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('x', now()) RETURNING name"
    together = _store.Together(
        _store.Query("SELECT 1", None, list),
        _store.Query(insert, None, list),
        _store.Query("SELECT 1 / 0", None, list),
    )
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            _store.run_together(conn, together)
        conn.rollback()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit) as aconn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await _store.arun_together(aconn, together)
        await aconn.rollback()
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(0,)]


def minutely_app(dsn: str, coalesce: bool, overlap: bool = True) -> pgqueue.PgQueue:
    """An app with a per-minute schedule 'refresh' (catch_up 10 minutes)."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("* * * * *", name="refresh", coalesce=coalesce, overlap=overlap)(app.task(_noop))
    return app


async def after_downtime(app: pgqueue.PgQueue, minutes: int, n: int = 1) -> list[Scheduler]:
    """``n`` started schedulers of ``app``, whose 'refresh' last fired ``minutes`` ticks ago
    (its last tick written back): as after a deploy that stopped every worker that long."""
    scheds = await schedulers(app, n)
    now = await db_now(scheds[0].db)
    last = normalize(app.periodics["refresh"].cron, now) - timedelta(minutes=minutes)
    query(app.dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('refresh', %s)",
          (last,))  # fmt: skip
    for s in scheds:
        await s.start()
    return scheds


def refresh_jobs(dsn: str) -> list[datetime]:
    """The ticks of the jobs of 'refresh', oldest first."""
    rows = query(dsn, "SELECT meta->>'tick' FROM pgqueue.jobs WHERE meta->>'periodic' = 'refresh'"
                      " ORDER BY 1")  # fmt: skip
    return [datetime.fromisoformat(tick) for (tick,) in rows]


def coalesced(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The periodic_coalesced records."""
    return [r for r in caplog.records if getattr(r, "action", "") == "periodic_coalesced"]


@pytest.mark.parametrize(("coalesce", "jobs"), [(True, 1), (False, 9)])
async def test_nine_missed_minutes_give_one_job_with_coalesce_and_nine_without(
    dsn: str, coalesce: bool, jobs: int
) -> None:
    """After 9 minutes of downtime (inside catch_up), a per-minute schedule ran 9 jobs back
    to back; with coalesce=True it runs one, for the latest tick, and the 8 others are
    recorded without a job. Without it every missed tick still runs, once."""
    app = minutely_app(dsn, coalesce)
    [sched] = await after_downtime(app, 9)
    now = await db_now(sched.db)
    await sched.fire(app.periodics["refresh"], now)
    await close(sched)
    latest = normalize(app.periodics["refresh"].cron, now)
    missed = [latest - timedelta(minutes=m) for m in range(8, -1, -1)]
    assert refresh_jobs(dsn) == missed[-jobs:]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE tick > now() - "
                      "interval '9 minutes' AND job_id IS NULL") == [(9 - jobs,)]  # fmt: skip


async def test_coalesced_ticks_are_not_fired_by_a_later_scheduler(dsn: str) -> None:
    """The coalesced ticks are recorded: a scheduler stalled before the catch-up (its cursor
    still before them), coalescing or not (old code, or coalesce changed), fires none."""
    app = minutely_app(dsn, coalesce=True)
    [first] = await after_downtime(app, 9)
    stale = dict(first.cursors)
    now = await db_now(first.db)
    await first.fire(app.periodics["refresh"], now)
    plain = minutely_app(dsn, coalesce=False)
    [late, old] = await schedulers(app, 1) + await schedulers(plain, 1)
    late.cursors, old.cursors = dict(stale), dict(stale)
    await late.fire(app.periodics["refresh"], now)
    await old.fire(plain.periodics["refresh"], now)
    await close(first, late, old)
    assert refresh_jobs(dsn) == [normalize(app.periodics["refresh"].cron, now)]


async def test_racing_coalescing_schedulers_fire_the_latest_tick_once(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Four schedulers coalescing the same 9 missed ticks at once: one job, for the latest
    tick; each tick recorded once; the 8 others said coalesced once in all."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True)
    scheds = await after_downtime(app, 9, n=4)
    now = await db_now(scheds[0].db)
    await asyncio.gather(*(s.fire(app.periodics["refresh"], now) for s in scheds))
    await close(*scheds)
    assert refresh_jobs(dsn) == [normalize(app.periodics["refresh"].cron, now)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks") == [(10,)]
    assert sum(r.count for r in coalesced(caplog)) == 8  # type: ignore[attr-defined]


async def test_coalescing_says_how_many_ticks_and_which_in_one_info_record(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO record (periodic_coalesced) gives the count and range of the coalesced ticks
    and the tick fired, also when the catch-up takes several passes (limit 3 here)."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True)
    [sched] = await after_downtime(app, 9)
    sched.limit = 3
    now = await db_now(sched.db)
    while await sched.fire(app.periodics["refresh"], now):
        pass
    await close(sched)
    latest = normalize(app.periodics["refresh"].cron, now)
    assert refresh_jobs(dsn) == [latest]
    [record] = coalesced(caplog)
    first, last = latest - timedelta(minutes=8), latest - timedelta(minutes=1)
    assert (record.levelno, record.count, record.first, record.last) == (  # type: ignore[attr-defined]
        logging.INFO,
        8,
        first.isoformat(),
        last.isoformat(),
    )
    assert record.getMessage() == (
        f"periodic 'refresh': coalesced 8 missed ticks, from {first.isoformat()} to"
        f" {last.isoformat()}, into tick {latest.isoformat()} (coalesce=True)"
    )


async def test_an_on_time_tick_of_a_coalescing_schedule_fires_as_any_other(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without downtime, coalesce=True changes nothing: each tick gets its job, and nothing
    is said coalesced."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True)
    [sched] = await after_downtime(app, 1)
    now = await db_now(sched.db)
    await sched.fire(app.periodics["refresh"], now)
    await close(sched)
    assert refresh_jobs(dsn) == [normalize(app.periodics["refresh"].cron, now)]
    assert coalesced(caplog) == []


def test_cron_list_shows_whether_a_schedule_coalesces(dsn: str) -> None:
    """`pgqueue cron list` says how each schedule catches up missed ticks: each, or the latest
    only (coalesce=True); "-" for a schedule the code does not define."""
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('removed', now())")
    app = ["--app", "tests.integration.periodic_app:app", "--dsn", dsn, "cron", "list"]
    lines = CliRunner().invoke(cli, app).output.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["NAME", "nightly", "refresh", "removed"]
    assert [line.rsplit("  ", 1)[-1] for line in lines] == [
        "MISSED TICKS", "each", "latest only", "-"
    ]  # fmt: skip
    statuses = pgqueue.cron_list(minutely_app(dsn, coalesce=True))
    assert [(s.name, s.coalesce) for s in statuses] == [("refresh", True), ("removed", None)]


def test_cron_list_shows_whether_a_schedule_may_overlap_and_how_far_it_catches_up(
    dsn: str,
) -> None:
    """`pgqueue cron list` did not say whether a schedule may overlap its own runs, nor how far
    it catches up after downtime. OVERLAP says yes, or no (overlap=False), and CATCH-UP the
    window in seconds, as catch_up takes it, before MISSED TICKS; "-" for a schedule the code
    does not define. --json adds them after the keys it had, as overlap and catch_up (seconds),
    null for such a schedule; cron_list() gives them too (catch_up as the timedelta)."""
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('removed', now())")
    args = ["--app", "tests.integration.periodic_app:app", "--dsn", dsn, "cron", "list"]
    lines = CliRunner().invoke(cli, args).output.splitlines()
    assert [[row[0], *row[-3:]] for row in (re.split(r"\s{2,}", line) for line in lines)] == [
        ["NAME", "OVERLAP", "CATCH-UP", "MISSED TICKS"],
        ["nightly", "yes", "21600 s", "each"],
        ["refresh", "no", "90.5 s", "latest only"],
        ["removed", "-", "-", "-"],
    ]
    rows = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert [list(row) for row in rows] == 3 * [
        ["name", "schedule", "last_tick", "next_tick", "in_code", "coalesce", "overlap", "catch_up"]
    ]
    assert [(r["name"], r["overlap"], r["catch_up"]) for r in rows] == [
        ("nightly", True, 21600), ("refresh", False, 90.5), ("removed", None, None)
    ]  # fmt: skip
    statuses = pgqueue.cron_list(make_app(dsn, catch_up=30, overlap=False))
    assert [(s.name, s.overlap, s.catch_up) for s in statuses] == [
        ("beat", False, timedelta(seconds=30)), ("removed", None, None)
    ]  # fmt: skip


async def test_coalescing_into_a_tick_overlap_skipped_does_not_say_it_fired(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """coalesce=True with overlap=False, an earlier tick's job still queued: the latest missed
    tick gets no job either. The periodic_coalesced record said the ticks were coalesced
    "into tick" the latest, which the periodic_overlapped record next to it said was skipped:
    it says that the latest got no job either."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True, overlap=False)
    [sched] = await after_downtime(app, 9)
    refresh = app.periodics["refresh"]
    with psycopg.connect(dsn) as conn:
        refresh.task.using(unique_key=refresh.tick_job().unique_key).enqueue(conn)
    now = await db_now(sched.db)
    await sched.fire(refresh, now)
    await close(sched)
    latest = normalize(refresh.cron, now)
    assert refresh_jobs(dsn) == []
    assert overlapped(caplog) == [latest.isoformat()]
    [record] = coalesced(caplog)
    assert record.count == 8  # type: ignore[attr-defined]
    assert "into tick" not in record.getMessage()
    assert record.getMessage().endswith(
        f"; the latest, {latest.isoformat()}, got no job either, an earlier tick's job being"
        " unfinished (coalesce=True, overlap=False)"
    )


async def test_a_catch_up_split_over_passes_and_cut_short_is_finished_by_the_next_scheduler(
    dsn: str,
) -> None:
    """A catch-up longer than a pass (limit 3 here) records the first passes' ticks without a
    job in statements of their own, before the one that fires the latest: a scheduler
    stopped after one pass leaves 3 ticks recorded and no job; the next scheduler to start
    resumes after them and fires the latest tick, once, and nothing else."""
    app = minutely_app(dsn, coalesce=True)
    refresh = app.periodics["refresh"]
    [first] = await after_downtime(app, 9)
    first.limit = 3
    now = await db_now(first.db)
    assert await first.fire(refresh, now)  # more due: the pass fired nothing
    await close(first)
    assert refresh_jobs(dsn) == []
    [second] = await schedulers(app, 1)
    await second.start()
    await second.fire(refresh, now)
    await close(second)
    assert refresh_jobs(dsn) == [normalize(refresh.cron, now)]
    assert query(dsn, "SELECT count(*) FROM pgqueue.periodic_ticks WHERE job_id IS NULL") == [(9,)]


def per_second_app(dsn: str, name: str, catch_up: float) -> pgqueue.PgQueue:
    """An app with a coalescing per-second schedule ``name``."""
    app = pgqueue.PgQueue(dsn)
    app.periodic("* * * * * *", name=name, coalesce=True, catch_up=catch_up)(app.task(_noop))
    return app


async def drive(
    sched: Scheduler, periodic: pgqueue.Periodic, lag: float, floor: datetime
) -> datetime:
    """Run passes of ``sched`` until none leaves ticks due, on a clock ``lag`` seconds behind
    the database's (a scheduler that read it, then stalled); returns its last pass's tick."""
    now = floor
    while True:
        now = max(now, await db_now(sched.db) - timedelta(seconds=lag))
        if not await sched.fire(periodic, now):
            return normalize(periodic.cron, now)


@pytest.mark.parametrize("seed", range(6))
async def test_schedulers_racing_with_other_clocks_limits_and_windows_fire_only_latest_ticks(
    dsn: str, caplog: pytest.LogCaptureFixture, seed: int
) -> None:
    """2 to 5 coalescing schedulers of one per-second schedule race after 5 to 250 missed
    ticks, each with a clock behind by up to 3 s, its own pass limit (3, 7 or 100) and
    catch_up (30 or 600 s; one 600): every missed tick is recorded once; only ticks that were
    the latest of some scheduler's last pass have a job, the latest tick of all has one; the
    periodic_coalesced records count each jobless tick once."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    rnd, name = random.Random(seed), f"beat{seed}"
    apps = [
        per_second_app(dsn, name, c)
        for c in [600] + [rnd.choice([30, 600]) for _ in range(rnd.randint(1, 4))]
    ]
    scheds = [Scheduler(a.periodics.values(), Db(dsn, f"s{i}")) for i, a in enumerate(apps)]
    for s in scheds:
        s.limit = rnd.choice([3, 7, 100])
    last = normalize(apps[0].periodics[name].cron, await db_now(scheds[0].db))
    last -= timedelta(seconds=rnd.randint(5, 250))
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES (%s, %s)", (name, last))
    for s in scheds:
        await s.start()
    lags = [rnd.random() * 3 for _ in scheds]
    finals = await asyncio.gather(
        *(
            drive(s, a.periodics[name], lag, last)
            for s, a, lag in zip(scheds, apps, lags, strict=True)
        )
    )
    await close(*scheds)
    rows = query(dsn, "SELECT t.tick, j.id FROM pgqueue.periodic_ticks AS t"
                      " LEFT JOIN pgqueue.jobs AS j ON j.id = t.job_id"
                      " WHERE t.name = %s AND t.tick > %s ORDER BY t.tick",
                 (name, last))  # fmt: skip
    assert [tick for tick, _ in rows] == [last + timedelta(seconds=s + 1) for s in range(len(rows))]
    fired = [tick for tick, job_id in rows if job_id is not None]
    assert rows[-1][1] is not None and set(fired) <= set(finals)
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(len(fired),)]
    assert sum(r.count for r in coalesced(caplog)) == len(rows) - len(fired)  # type: ignore[attr-defined]
    jobless = jobless_ticks(dsn, name)
    for r in coalesced(caplog):  # its range holds no other scheduler's tick
        assert r.count == len([t for t in jobless if r.first <= t <= r.last])  # type: ignore[attr-defined]


def jobless_ticks(dsn: str, name: str) -> list[str]:
    """The ticks of ``name`` a scheduler recorded without a job (after the first, which the
    test wrote), oldest first, as the records give them."""
    rows = query(dsn, "SELECT tick FROM pgqueue.periodic_ticks WHERE name = %s"
                      " AND job_id IS NULL ORDER BY tick OFFSET 1", (name,))  # fmt: skip
    return [tick.astimezone(UTC).isoformat() for (tick,) in rows]


@pytest.mark.parametrize("stop_early", [True, False])
async def test_a_scheduler_stopped_between_the_passes_of_a_catch_up_says_what_it_coalesced(
    dsn: str, caplog: pytest.LogCaptureFixture, stop_early: bool
) -> None:
    """A catch-up longer than a pass (limit 3 here) gathers its coalesced ticks over its
    passes, said in one record once the latest is fired: a scheduler stopped between those
    passes recorded 3 ticks without a job and said nothing of them. It says them at its stop,
    once; one stopped after the catch-up ended says nothing more than its one record."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True)
    [sched] = await after_downtime(app, 9)
    sched.limit = 3
    stopping, fire = asyncio.Event(), sched.fire

    async def fire_then_stop(periodic: pgqueue.Periodic, now: datetime) -> bool:
        """The pass; the worker stops during the first (stop_early) or once none is due."""
        more = await fire(periodic, now)
        if stop_early or not more:
            stopping.set()
        return more

    sched.fire = fire_then_stop  # type: ignore[method-assign]
    await sched.run(stopping)
    await close(sched)
    jobless = jobless_ticks(dsn, "refresh")
    [record] = coalesced(caplog)
    said = (record.count, record.first, record.last)  # type: ignore[attr-defined]
    assert said == (len(jobless), jobless[0], jobless[-1])
    if stop_early:
        assert (len(jobless), refresh_jobs(dsn)) == (3, [])
        assert record.getMessage().endswith(
            "; the scheduler stopped before it fired the latest due tick (coalesce=True)"
        )
    else:
        assert len(refresh_jobs(dsn)) == 1 and "into tick" in record.getMessage()


async def falling_behind(dsn: str, missed: int) -> tuple[datetime, Scheduler, Scheduler]:
    """The latest tick of the per-second schedule 'beat' (by the database's clock), its last
    tick written ``missed`` seconds before, and two started schedulers of it: one with
    catch_up 5 s and a pass limit of 3, one with catch_up 600 s."""
    short, long = per_second_app(dsn, "beat", 5), per_second_app(dsn, "beat", 600)
    behind, other = (Scheduler(a.periodics.values(), Db(dsn, "t")) for a in (short, long))
    behind.limit = 3
    now = normalize(short.periodics["beat"].cron, await db_now(behind.db))
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s)",
          (now - timedelta(seconds=missed),))  # fmt: skip
    for sched in (behind, other):
        await sched.start()
    return now, behind, other


async def test_a_catch_up_whose_last_pass_finds_no_tick_left_says_what_it_coalesced(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler (catch_up 5 s, limit 3) records 3 missed ticks without a job and stalls,
    more being due; another (catch_up 600 s) fires the rest meanwhile. Its next pass resumes
    after those and finds no tick due: its 3 ticks were never said coalesced. That pass says
    them, once, and why no tick of its own follows: the records count each tick recorded
    without a job once."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    now, stalled, other = await falling_behind(dsn, 10)
    assert await stalled.fire(stalled.periodics[0], now - timedelta(seconds=6))
    assert not await other.fire(other.periodics[0], now)
    assert not await stalled.fire(stalled.periodics[0], now)
    await close(stalled, other)
    jobless = jobless_ticks(dsn, "beat")
    assert len(jobless) == 9
    assert sorted((r.first, r.last, r.count) for r in coalesced(caplog)) == [  # type: ignore[attr-defined]
        (jobless[0], jobless[2], 3), (jobless[3], jobless[8], 6)
    ]  # fmt: skip
    [said] = [r.getMessage() for r in coalesced(caplog) if r.count == 3]  # type: ignore[attr-defined]
    assert said.endswith(
        "; the ticks after them were fired by another scheduler, or skipped, while this one fell"
        " behind (coalesce=True)"
    )


async def test_a_catch_up_whose_next_pass_finds_nothing_due_on_a_clock_gone_back_says_it(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The database's clock stepped back between two passes of a catch-up (limit 3): the
    second finds no tick due after the 3 the first recorded without a job. It says them."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = per_second_app(dsn, "beat", 600)
    [sched] = await schedulers(app, 1)
    sched.limit = 3
    now = normalize(app.periodics["beat"].cron, await db_now(sched.db))
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('beat', %s)",
          (now - timedelta(seconds=10),))  # fmt: skip
    await sched.start()
    assert await sched.fire(app.periodics["beat"], now)
    assert coalesced(caplog) == []
    assert not await sched.fire(app.periodics["beat"], now - timedelta(seconds=8))
    await close(sched)
    jobless = jobless_ticks(dsn, "beat")
    [record] = coalesced(caplog)
    assert (record.first, record.last, record.count) == (jobless[0], jobless[2], 3)  # type: ignore[attr-defined]
    assert record.getMessage().endswith(
        "; the next pass found no tick due after them (coalesce=True)"
    )


async def test_a_coalesced_record_spans_only_the_ticks_it_counts(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A scheduler (catch_up 5 s, limit 3) records 3 missed ticks without a job and falls
    behind, more being due; another fires the next 7 meanwhile, the last with a job. The first
    then resumes after those and coalesces 2 new ticks into a third: its one record said 5
    ticks "from" its first "to" its last, a range that held the other's 7, a fired one
    among them. Each record's range now holds only the ticks it counts: the 3 are said on
    their own, when the gap is found."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    now, behind, other = await falling_behind(dsn, 13)
    assert await behind.fire(behind.periodics[0], now - timedelta(seconds=9))
    assert not await other.fire(other.periodics[0], now - timedelta(seconds=3))
    assert not await behind.fire(behind.periodics[0], now)
    await close(behind, other)
    jobless = jobless_ticks(dsn, "beat")
    assert len(jobless) == 11
    said = sorted((r.first, r.last, r.count) for r in coalesced(caplog))  # type: ignore[attr-defined]
    assert [n for first, last, n in said] == [
        len([t for t in jobless if first <= t <= last]) for first, last, _n in said
    ]
    assert said == [(jobless[0], jobless[2], 3), (jobless[3], jobless[8], 6),
                    (jobless[9], jobless[10], 2)]  # fmt: skip


async def test_schedulers_taking_turns_through_a_catch_up_each_say_their_own_runs(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two schedulers (limit 3) take turns through 9 missed minutes: the first records 3
    ticks, the second the next 3, the first the last 3, firing the latest. The first said 5
    ticks from its first to its 8th minute, a range holding the other's 3: each says each
    run of its own, ending where the other's ticks begin."""
    caplog.set_level(logging.INFO, logger="pgqueue.scheduler")
    app = minutely_app(dsn, coalesce=True)
    first, second = await after_downtime(app, 9, n=2)
    first.limit = second.limit = 3
    refresh, now = app.periodics["refresh"], await db_now(first.db)
    for sched in (first, second, second, first, first, second):
        await sched.fire(refresh, now)
    await close(first, second)
    jobless = jobless_ticks(dsn, "refresh")
    assert len(jobless) == 8 and len(refresh_jobs(dsn)) == 1
    said = [(r.first, r.last, r.count) for r in coalesced(caplog)]  # type: ignore[attr-defined]
    assert said == [(jobless[0], jobless[2], 3), (jobless[6], jobless[7], 2),
                    (jobless[3], jobless[5], 3)]  # fmt: skip
    others = "; the tick after them was recorded by another scheduler (coalesce=True)"
    fired = f", into tick {refresh_jobs(dsn)[0].isoformat()} (coalesce=True)"
    messages = [r.getMessage() for r in coalesced(caplog)]
    assert [m.endswith(end) for m, end in zip(messages, [others, fired, others], strict=True)] == [
        True, True, True
    ]  # fmt: skip
