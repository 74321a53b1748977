"""Claims that skip the jobs not yet due: the claim index is ordered by priority before run_at,
so a claim from the head steps over every job scheduled for later that sits before the jobs
it can take, or after them when it wants more than are due. A worker whose claim read many
such pages switches to claims that read each priority's due jobs only."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import pytest

from pgqueue import _store
from pgqueue._store import _queries as q
from tests.helpers import query, raise_at, run_worker_until
from tests.integration import tasks_app as t
from tests.integration.test_claim_resume import (
    ENTRIES_READ,
    dirty_the_head,
    enqueue,
    held,  # noqa: F401  (a fixture, used by name)
    take_in_order,
    trickle,
)

PAGES_READ = "SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)"
SKIPPING = (q.JOBS_CLAIM_ONE_SKIP, q.JOBS_CLAIM_SKIP)


@pytest.fixture(autouse=True)
def own_statistics(dsn: str) -> None:
    """The planner plans the claims with the statistics the test took (VACUUM ANALYZE), or
    none: an autovacuum landing during a test (the likelier the slower a loaded machine
    runs it) changed the plan of the claims, and the pages they read, as it pleased."""
    query(dsn, "ALTER TABLE pgqueue.active_jobs SET (autovacuum_enabled = false)")


def schedule(dsn: str, queue: str, n: int, priority: int, ahead: str = "1 day") -> None:
    """``n`` jobs of ``queue`` due ``ahead`` from now, a microsecond apart."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
               "SELECT %s, 'x', %s, now() + %s::interval + i * interval '1 us' "
               "FROM generate_series(1, %s) i", [queue, priority, ahead, n])  # fmt: skip


def pages_of(dsn: str, claim: _store.Query[_store.Claim]) -> tuple[int, _store.Claim]:
    """The claim-index pages ``claim`` reads, and what it claimed (rolled back)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        before = cur.execute(PAGES_READ).fetchone()
        got = _store.run(cur, claim)
        after = cur.execute(PAGES_READ).fetchone()
        conn.rollback()
    assert before is not None and after is not None
    return after[0] - before[0], got


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_skipping_claims_take_the_due_jobs_in_claim_order_and_no_other(
    dsn: str, queues: list[str]
) -> None:
    """Jobs due at three priorities, jobs scheduled for later at a higher, the same and a
    lower priority, and a due job another transaction holds locked: claims that skip take
    every due job but the locked one exactly once, in the order claims from the head would,
    batches filled across priorities, and none of the jobs not yet due."""
    for queue in queues:
        for priority in (0, 5, 2):
            enqueue(dsn, queue, 7, priority)
        for priority in (9, 5, 0, -3):
            schedule(dsn, queue, 50, priority)
    expected = {}
    for queue in queues:
        due = query(dsn, "SELECT id FROM pgqueue.active_jobs WHERE queue = %s AND run_at <= now()"
                         " ORDER BY priority DESC, run_at, id", [queue])  # fmt: skip
        expected[queue] = [r[0] for r in due]
    locked = expected[queues[0]].pop(3)
    got: dict[str, list[int]] = {queue: [] for queue in queues}
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as conn:
        holder.execute("SELECT 1 FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE", [locked])
        for _ in range(10):
            wanted = dict.fromkeys(queues, 4)
            claim = _store.run(conn.cursor(), _store.jobs_claim("w", wanted, 30, skip=True))
            assert not claim.counted and claim.pages == 0
            take_in_order(claim, expected, got, 4)
            if not claim.rows:
                break
        holder.rollback()
    assert got == expected
    [(left,)] = query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'queued' "
                           "AND run_at > now()")  # fmt: skip
    assert left == 200 * len(queues)
    [(state,)] = query(dsn, "SELECT state FROM pgqueue.active_jobs WHERE id = %s", [locked])
    assert state == "queued"


@pytest.mark.parametrize("where", ["higher", "same"])
@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_a_claim_from_the_head_counts_the_pages_of_jobs_not_yet_due_and_a_skipping_one_reads_few(
    dsn: str, queues: list[str], where: str
) -> None:
    """30,000 jobs due tomorrow at a higher priority than the 10 due jobs (the claim steps over
    them before taking any), or at the same one (the claim wants more than are due, and steps
    over them after): a claim from the head reads their pages, about 150, and reports them
    while walking next to no entries; a claim that skips reads a few pages and takes the same
    jobs."""
    for queue in queues:
        schedule(dsn, queue, 30_000, 5 if where == "higher" else 0)
        enqueue(dsn, queue, 10, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    wanted = dict.fromkeys(queues, 100)
    head_pages, head = pages_of(dsn, _store.jobs_claim("w", wanted, 30))
    skip_pages, skipped = pages_of(dsn, _store.jobs_claim("w", wanted, 30, skip=True))
    assert sorted(r[0] for r in head.rows) == sorted(r[0] for r in skipped.rows)
    assert len(head.rows) == 10 * len(queues)
    assert head.counted and head.walked < 50, head
    assert head_pages >= 100 * len(queues), head_pages
    assert abs(head.pages - head_pages) <= 2, (head.pages, head_pages)
    assert skip_pages <= 20 * len(queues), skip_pages


class Spy:
    """Records, for each claim a worker makes: whether it skipped, resumed, the pages it
    counted (0: not counted), how many jobs it took, and of which queues.

    A claim waits for the probe an earlier claim asked for (Worker._probe), which takes a few
    ms, or as long as the maintenance connection is busy: the tests pin down what the probe
    decides, not how many claims from the head a loaded machine lets in meanwhile."""

    def __init__(self, worker: Any) -> None:
        self.queues: list[list[str]] = []
        self.skipping: list[bool] = []
        self.resumed: list[bool] = []
        self.pages: list[int] = []
        self.took: list[int] = []
        run = worker._claim_db.run

        async def spy(claim: _store.Query[Any]) -> Any:
            while worker._probe and not worker.stopping.is_set():
                await asyncio.sleep(0.005)
            result = await run(claim)
            if isinstance(result, _store.Claim):
                params: dict[str, Any] = claim.params  # type: ignore[assignment]
                self.skipping.append(claim.sql in SKIPPING)
                self.resumed.append(bool(params.get("ids") or params.get("id")))
                self.pages.append(result.pages)
                self.took.append(len(result.rows))
                self.queues.append(params.get("queues") or [params["queue"]])
            return result

        worker._claim_db.run = spy


def first_over(spy: Spy) -> int:
    """The first of the spied claims that read 100 pages or more."""
    over = [i for i, pages in enumerate(spy.pages) if pages >= 100]
    assert over, ("no claim read the pages of the jobs not yet due", spy.pages)
    return over[0]


async def drain(dsn: str, conn: psycopg.Connection[Any], jobs: int = 2_000) -> Spy:
    """Enqueue ``jobs`` jobs, run a worker (batches of 50) until they are done; its claims."""
    t.add.enqueue_many(conn, [((i, 1), {}) for i in range(jobs)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 100}, batch_size=50)
    worker._skip_rate = 10  # pages saved per second of skipping: a long one, for the test
    spy = Spy(worker)
    finished = "SELECT count(*) FROM pgqueue.finished_jobs WHERE task = %s"
    await run_worker_until(worker, lambda: query(dsn, finished, [t.add.name])[0][0] == jobs)
    return spy


async def test_a_worker_whose_claim_reads_pages_of_jobs_not_yet_due_skips_them(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Behind 30,000 jobs due tomorrow at a higher priority, a worker drains 2,000 due jobs:
    its first claim from the head reads their pages, and the claims after it skip them."""
    schedule(dsn, "io", 30_000, 5)
    spy = await drain(dsn, conn)
    assert spy.pages[0] >= 100 and not spy.skipping[0], spy.pages
    # The next claim waits for the probe (see Spy); a skipping period that ends before the
    # drain does lets a claim from the head in, which asks for the next probe.
    first = spy.skipping.index(True)
    assert sum(spy.took[first:]) >= 1_000, (spy.skipping, spy.took)
    assert spy.skipping[first:].count(False) <= 3, spy.skipping
    [(left,)] = query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'queued'")
    assert left == 30_000


async def test_a_caught_up_worker_behind_jobs_not_yet_due_skips_them(dsn: str) -> None:
    """An idle worker of a queue holding 30,000 jobs due tomorrow at its jobs' own priority
    claims each job as it arrives, wanting more than are due, so that its claims from the
    head read the scheduled jobs' pages; from the first that counts them on, claims skip."""
    schedule(dsn, "io", 30_000, 0)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    spy = Spy(worker)
    worker._skip_rate = 10  # pages saved per second of skipping: a long one, for the test
    await trickle(dsn, worker, 100, 0.005)
    assert sum(spy.took) == 100, spy.took
    counted = first_over(spy)
    assert not any(spy.skipping[: counted + 1]), spy.skipping
    first = spy.skipping.index(True)
    assert all(spy.skipping[first:]), spy.skipping
    assert sum(n for n, s in zip(spy.took, spy.skipping, strict=True) if s) >= 50, spy.took


async def test_a_bug_in_the_skipping_probe_is_logged_and_later_claims_still_probe(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop that probes whether claims should skip (Worker._watch_skipping) raising once
    (a bug) used to end it for good, with one service_error, and the probe it was asked for
    stayed asked: the worker never probed, nor skipped, again. Now the bug is a loop_error
    with its traceback, and a later claim's probe makes the claims skip."""
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    schedule(dsn, "io", 30_000, 0)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4)
    spy = Spy(worker)
    asked = raise_at(monkeypatch, worker, "_still_over")
    await trickle(dsn, worker, 300, 0.01)
    assert any(spy.skipping), (asked, spy.pages)
    [crashed] = [r for r in caplog.records if getattr(r, "action", None) == "loop_error"]
    assert crashed.loop == "watch_skipping" and crashed.exc_info is not None  # type: ignore[attr-defined]
    assert "RuntimeError: injected bug in _still_over" in crashed.getMessage()


@pytest.mark.usefixtures("held")
async def test_a_worker_beside_dead_entries_resumes_and_does_not_skip(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """8,000 entries a held snapshot keeps at the head make the claims resume, not skip: the
    pages that hold them are explained by the entries the claims walked."""
    enqueue(dsn, "io", 8_000)
    dirty_the_head(dsn, ["io"], 8_000)
    spy = await drain(dsn, conn)
    assert not any(spy.skipping), spy.pages
    assert any(spy.resumed), spy.resumed


async def test_a_worker_on_a_clean_queue_never_skips(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Without jobs scheduled for later, claims read a few pages each and never skip."""
    spy = await drain(dsn, conn)
    assert len(spy.pages) >= 40 and not any(spy.skipping), spy.pages
    assert max(spy.pages) < 50, spy.pages


@pytest.mark.parametrize("queues", [["io"], ["io", "cpu"]], ids=["one", "two"])
def test_a_claim_that_looks_reports_its_counts_even_when_it_takes_nothing(
    dsn: str, queues: list[str]
) -> None:
    """With no job due and 30,000 due tomorrow, a claim that looks takes nothing and still
    reports the pages it read; with a job due it takes it, counted as claims from the head are."""
    schedule(dsn, "io", 30_000, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    wanted = dict.fromkeys(queues, 10)
    head_pages, empty = pages_of(dsn, _store.jobs_claim("w", wanted, 30, look=True))
    assert empty.rows == [] and empty.ends == {} and empty.counted, empty
    assert empty.pages >= 100 and abs(empty.pages - head_pages) <= 2, (empty, head_pages)
    assert empty.walked < 50, empty
    _, plain = pages_of(dsn, _store.jobs_claim("w", wanted, 30))
    assert plain.rows == [] and not plain.counted  # an UPDATE returning no row carries nothing
    enqueue(dsn, "io", 1, 0)
    _, one = pages_of(dsn, _store.jobs_claim("w", wanted, 30, look=True))
    assert len(one.rows) == 1 and one.counted and one.pages >= 100, one


async def test_a_worker_polling_a_queue_with_nothing_due_skips_the_jobs_scheduled_for_later(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """An idle worker of a queue holding only 30,000 jobs due tomorrow: its polls find nothing,
    and the first that counts reports their pages, so that the polls after it skip them; a job
    enqueued then is run by a claim that skips."""
    schedule(dsn, "io", 30_000, 0)
    worker = t.app.worker(dsn=dsn, queues={"io": 4}, batch_size=4, poll_interval=0.05)
    worker._skip_rate = 10  # pages saved per second of skipping: a long one, for the test
    spy = Spy(worker)
    job: list[int] = []

    def done() -> bool:
        if not job and len(spy.took) >= 10:
            job.append(t.add.enqueue(conn, 1, 2))
            conn.commit()
        finished = "SELECT count(*) FROM pgqueue.finished_jobs WHERE id = %s"
        return bool(job) and query(dsn, finished, job)[0][0] == 1

    await run_worker_until(worker, done)
    # The worker starts as if its queue had a backlog: its first claim does not look.
    counted = first_over(spy)
    assert counted <= 1 and spy.took[counted] == 0, spy.pages
    first = spy.skipping.index(True)
    assert all(spy.skipping[first:]), spy.skipping
    assert sum(spy.took) == 1, spy.took
    assert [s for n, s in zip(spy.took, spy.skipping, strict=True) if n] == [True], spy.took


_HEAD = (
    "SELECT count(*) FROM (SELECT id FROM pgqueue.active_jobs WHERE state = 'queued'"
    " AND queue = 'io' AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 10) AS s"
)


def kill_the_head(dsn: str, jobs: int) -> None:
    """``jobs`` jobs claimed and acknowledged, and their claim-index entries then visited by a
    scan, which finds their rows dead to every snapshot and marks the entries so: later scans
    step over them inside the index, as over jobs not yet due, until a vacuum removes them.

    A scan marks them only once no transaction of the whole cluster that began before the
    acknowledgements holds an xid: PostgreSQL's quick check of a snapshot's horizon counts
    those of every database, another test's included. One held meanwhile (a test of another
    suite in its open transaction, on a loaded machine) left the entries unmarked: the claims
    then returned them, counted them as their own reading, and the worker never probed. The
    scan is repeated until the index returns none of them."""
    enqueue(dsn, "io", jobs)
    dirty_the_head(dsn, ["io"], jobs)
    deadline = time.monotonic() + 300
    with psycopg.connect(dsn) as conn:
        while True:
            [(before,)] = conn.execute(ENTRIES_READ).fetchall()
            conn.execute(_HEAD).fetchall()
            [(after,)] = conn.execute(ENTRIES_READ).fetchall()
            conn.rollback()
            if after - before < 10:  # the entries of jobs due since, if any, are not its
                return
            assert time.monotonic() < deadline, "a transaction kept the entries alive for 300 s"
            time.sleep(0.1)


def test_a_probe_tells_jobs_not_yet_due_from_entries_found_dead(dsn: str) -> None:
    """Both make a claim from the head read pages of entries it does not return; only the jobs
    not yet due are stepped over by a claim that skips."""
    kill_the_head(dsn, 30_000)
    enqueue(dsn, "io", 10)
    with psycopg.connect(dsn, autocommit=True) as conn:
        dead = _store.run(conn.cursor(), _store.jobs_claim_probe("io", 100))
        schedule(dsn, "cpu", 30_000, 5)
        enqueue(dsn, "cpu", 10)
        later = _store.run(conn.cursor(), _store.jobs_claim_probe("cpu", 100))
    assert dead[0] >= 100 and dead[1] >= dead[0] - 10, dead
    assert later[0] >= 100 and later[1] <= 20, later


async def test_a_worker_whose_claims_step_over_entries_found_dead_does_not_skip(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """30,000 entries of jobs claimed earlier, found dead and marked so, at the head of the
    queue (a fast drain leaves such, until a vacuum): the worker's claims read their pages,
    its probe finds that skipping would read them too, and no claim skips."""
    kill_the_head(dsn, 30_000)
    t.add.enqueue_many(conn, [((i, 1), {}) for i in range(2_000)])
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"io": 100}, batch_size=50, vacuum_threshold=10**9)
    spy = Spy(worker)
    finished = "SELECT count(*) FROM pgqueue.finished_jobs WHERE task = %s"
    await run_worker_until(worker, lambda: query(dsn, finished, [t.add.name])[0][0] == 2_000)
    seen = list(zip(spy.pages, spy.took, spy.skipping, spy.resumed, strict=True))
    assert max(spy.pages) >= 100, seen
    assert not any(spy.skipping), seen
    assert worker._skip_quiet_until > 0, ("the worker never probed", seen)


def scatter(dsn: str, queue: str, n: int) -> None:
    """``n`` jobs of ``queue`` due tomorrow, each at a priority of its own (1 to ``n``)."""
    query(dsn, "INSERT INTO pgqueue.active_jobs (queue, task, priority, run_at) "
               "SELECT %s, 'x', i, now() + interval '1 day' FROM generate_series(1, %s) i",
          [queue, n])  # fmt: skip


async def test_a_worker_of_two_queues_does_not_skip_when_skipping_reads_more_pages_in_all(
    dsn: str,
) -> None:
    """Queue "a" holds 30,000 jobs due tomorrow at one priority (skipping saves it about 150
    pages a claim); queue "b" holds 3,000 due tomorrow at 3,000 priorities (skipping costs it
    a descent per priority, thousands of pages a claim). Skipping is decided for both queues
    together, so it must pay for both together: the worker's probe must not make it skip."""
    schedule(dsn, "a", 30_000, 0)
    scatter(dsn, "b", 3_000)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    wanted = {"a": 4, "b": 4}
    head_pages, _ = pages_of(dsn, _store.jobs_claim("w", wanted, 30))
    skip_pages, _ = pages_of(dsn, _store.jobs_claim("w", wanted, 30, skip=True))
    assert skip_pages > 10 * head_pages, (head_pages, skip_pages)  # skipping costs more here
    worker = t.app.worker(dsn=dsn, queues=wanted, batch_size=4, poll_interval=0.05)
    spy = Spy(worker)
    await run_worker_until(worker, lambda: worker._skip_until or worker._skip_quiet_until)
    assert max(spy.pages) >= 100, spy.pages  # a claim from the head asked for the probe
    assert worker._skip_until == 0, (head_pages, skip_pages, spy.skipping)


async def test_a_worker_does_not_skip_for_a_queue_its_probe_did_not_measure(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """Queue "b" holds 3,000 jobs due tomorrow at 3,000 priorities (skipping costs it thousands
    of pages a claim) and one due job that keeps its only slot busy; meanwhile 30,000 jobs due
    tomorrow in queue "a" make the worker probe "a" alone, and skip. When "b"'s slot frees up
    (its job cancelled then), its claims must not skip: the probe that decided skipping did
    not measure it."""
    scatter(dsn, "b", 3_000)
    busy = t.sleepy.using(queue="b", priority=5_000).enqueue(conn, 3600)
    conn.commit()
    worker = t.app.worker(dsn=dsn, queues={"a": 4, "b": 1}, batch_size=4, poll_interval=0.05)
    worker._skip_rate = 10  # pages saved per second of skipping: a long one, for the test
    spy = Spy(worker)
    ended = "SELECT count(*) FROM pgqueue.finished_jobs WHERE id = %s"
    steps: list[str] = []

    def done() -> bool:
        if sum(spy.took) and not steps:  # once "b"'s slot is busy
            schedule(dsn, "a", 30_000, 0)
            steps.append("scheduled")
        alone = [s for s, queues in zip(spy.skipping, spy.queues, strict=True) if queues == ["a"]]
        if any(alone) and steps == ["scheduled"]:  # "a" skips: free "b"'s slot
            assert t.app.cancel(conn, busy) == "requested"
            conn.commit()
            steps.append("cancelled")
        if steps != ["scheduled", "cancelled"] or not query(dsn, ended, [busy])[0][0]:
            return False
        return sum("b" in queues for queues in spy.queues) >= 20

    await run_worker_until(worker, done, timeout=60)
    with_b = [s for s, queues in zip(spy.skipping, spy.queues, strict=True) if "b" in queues]
    assert not any(with_b), with_b
    wanted = {"a": 4, "b": 1}
    head_pages, _ = pages_of(dsn, _store.jobs_claim("w", wanted, 30))
    skip_pages, _ = pages_of(dsn, _store.jobs_claim("w", wanted, 30, skip=True))
    assert skip_pages > 10 * head_pages, (head_pages, skip_pages)  # what skipping would cost


async def test_a_worker_whose_claims_scan_the_table_past_jobs_not_yet_due_skips_them(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """30,000 jobs due tomorrow at ten priorities above the due ones, and statistics taken
    while none was due: the planner reads the claim from the head as a scan of the whole
    table, which reads no page of the claim index. The worker must still find that skipping
    pays, and skip."""
    for priority in range(1, 11):
        schedule(dsn, "io", 3_000, priority)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    spy = await drain(dsn, conn)
    # The scenario: the first claim's plan scanned the table (PostgreSQL 15 plans it so).
    assert spy.pages[0] == 0 and not spy.skipping[0], ("the claim read the index", spy.pages)
    assert any(spy.skipping), spy.skipping
    [(left,)] = query(dsn, "SELECT count(*) FROM pgqueue.active_jobs WHERE state = 'queued'")
    assert left == 30_000


@pytest.mark.parametrize("many", [50, 100])
async def test_a_worker_of_many_queues_on_a_deep_index_does_not_probe_for_their_descents(
    dsn: str, many: int
) -> None:
    """100,000 jobs of another queue make the claim index three levels deep: a claim of 50
    (or 100) empty queues descends it 50 (100) times, about 150 (300) pages, and steps over no
    job not yet due. Those pages are the claim's own, for each queue it claims: the worker
    must not probe. (300 pages are over what 100 descents of one page would read: the worker
    measures a descent before it probes, and finds them its own.)"""
    schedule(dsn, "other", 100_000, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    queues = {f"q{i:02}": 1 for i in range(many)}
    worker = t.app.worker(dsn=dsn, queues=queues, poll_interval=0.05)
    spy = Spy(worker)
    probes: list[str] = []
    run = worker._maint_db.run

    async def maintenance(statement: _store.Query[Any]) -> Any:
        if statement.sql == q.JOBS_CLAIM_PROBE:
            probes.append(statement.params["queue"])  # type: ignore[index]
        return await run(statement)

    worker._maint_db.run = maintenance  # type: ignore[method-assign]
    await run_worker_until(worker, lambda: sum(pages > 0 for pages in spy.pages) >= 3)
    # The scenario: the claims' descents alone read more than the allowance of one queue.
    assert min(p for p in spy.pages if p) > 10 + 100, spy.pages
    assert probes == [], (len(probes), spy.pages)
    assert worker._descent == (3 if many == 100 else 1), worker._descent  # measured if asked


async def test_a_worker_of_many_queues_on_a_shallow_index_probes_for_one_queues_jobs_not_yet_due(
    dsn: str,
) -> None:
    """30,000 jobs due tomorrow in one of 50 queues: a claim of the 50 reads their pages,
    about 150, beside a descent of two pages per queue (the claim index is two levels deep).
    The worker must count each descent as the two pages it reads, see the 150 pages beyond
    them, probe, and skip. (Counting 5 pages a descent, it never probed.)"""
    schedule(dsn, "q00", 30_000, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    queues = {f"q{i:02}": 1 for i in range(50)}
    worker = t.app.worker(dsn=dsn, queues=queues, poll_interval=0.05)
    worker._skip_rate = 10  # pages saved per second of skipping: a long one, for the test
    spy = Spy(worker)
    await run_worker_until(
        worker, lambda: any(spy.skipping) or sum(pages > 0 for pages in spy.pages) >= 4
    )
    counted = [pages for pages in spy.pages if pages]
    # The scenario: over 100 pages beyond 2 a descent, not beyond 5 a descent.
    assert 10 + 2 * 49 + 100 < counted[0] <= 10 + 5 * 49 + 100, spy.pages
    assert any(spy.skipping), spy.pages
    assert worker._descent == 2, worker._descent


@pytest.mark.parametrize(("jobs", "levels"), [(30_000, 2), (100_000, 3)])
def test_a_measured_descent_is_what_each_queue_of_a_claim_reads(
    dsn: str, jobs: int, levels: int
) -> None:
    """An index of 30,000 entries is two levels deep, one of 100,000 three: a measured descent
    reads that many pages, and a claim of 50 empty queues as many per queue. 5,000 entries
    found dead at the left edge of the index, where the measuring descent lands, add none."""
    schedule(dsn, "other", jobs, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    queues = {f"q{i:02}": 1 for i in range(50)}
    _, claim = pages_of(dsn, _store.jobs_claim("w", queues, 30, look=True))
    with psycopg.connect(dsn, autocommit=True) as conn:
        descent = _store.run(conn.cursor(), _store.jobs_claim_descent())
        kill_the_head(dsn, 5_000)  # "io" sorts first: its entries fill the leftmost leaves
        after = _store.run(conn.cursor(), _store.jobs_claim_descent())
    assert descent == levels, descent
    assert abs(claim.pages - 50 * levels) <= 2, claim.pages
    assert after == levels, after


def test_a_measured_descent_counts_for_a_minute(dsn: str) -> None:
    """A claim of 50 queues that read 200 pages is over with descents of one page (the fewest,
    before any is measured), not with a measured descent of three; once that measurement is a
    minute old, a descent counts one page again, until it is measured anew."""
    worker = t.app.worker(dsn=dsn, queues={f"q{i:02}": 1 for i in range(50)})
    now = time.monotonic()
    assert worker._over(200, 0, 50, now)
    worker._descent, worker._descent_until = 3, now + 60
    assert not worker._over(200, 0, 50, now + 59)
    assert worker._over(200, 0, 50, now + 60)
    assert worker._over(0, 0, 50, now)  # no page read: a table scan


async def test_the_probe_that_measured_a_queue_decides_how_long_its_claims_skip(dsn: str) -> None:
    """A probe of queue "a" found that skipping saves it thousands of pages: its claims skip
    for a minute. A later probe of "b" alone finds that skipping saves "b" about 150 pages
    a claim, a second or two of skipping, and claims of "b" skip as that probe says: not for
    what is left of the minute that "a"'s probe set, which measured nothing of "b"."""
    schedule(dsn, "b", 30_000, 5)
    enqueue(dsn, "b", 10, 0)
    query(dsn, "VACUUM ANALYZE pgqueue.active_jobs")
    worker = t.app.worker(dsn=dsn, queues={"a": 4, "b": 4})
    now = time.monotonic()
    worker._skip_until, worker._skip_saved = now + 60, {"a": 6_000}
    worker._probe = {"b": 4}
    worker._probe_wanted.set()
    watching = asyncio.create_task(worker._watch_skipping())
    try:
        async with asyncio.timeout(10):
            while "b" not in worker._skip_saved and not worker._skip_quiet_until:
                await asyncio.sleep(0.01)
    finally:
        watching.cancel()
        await worker._maint_db.close()
    assert worker._skip_saved.get("b", 0) > 100, worker._skip_saved  # the scenario
    assert worker._skip_until < now + 10, worker._skip_until - now
