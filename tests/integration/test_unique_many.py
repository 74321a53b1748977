"""enqueue_many with unique keys: each job as a unique enqueue of its own would make it, in a
few statements, without deadlocks between batches that share keys."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._store import COPY_THRESHOLD
from pgqueue._unique import MAX_ROUNDS
from tests.helpers import query
from tests.integration.test_enqueue import listener, notifications
from tests.integration.test_unique_jobs import make_app, wait_until


def jobs(dsn: str) -> list[tuple[Any, ...]]:
    """Every job's id, arguments and key, by id."""
    return query(dsn, "SELECT id, args, unique_key FROM pgqueue.jobs ORDER BY id")


def calls(n: int) -> list[tuple[tuple[int], dict[str, Any]]]:
    """``n`` calls of ``charge``, with arguments 0 to n - 1."""
    return [((i,), {}) for i in range(n)]


def test_held_keys_get_their_holders_and_the_rest_go_in_in_input_order(dsn: str, conn) -> None:
    """Keys held by queued (committed) jobs return the holders' ids, a key twice in the call
    makes one job (the first call's) whose id both places get, jobs without a key go in; the
    new jobs' ids increase in input order, though they went in sorted by key."""
    _app, charge = make_app(dsn)
    held = charge.using(unique_key="m-held").enqueue(conn, -1)
    conn.commit()
    keys = ["z-new", None, "m-held", "a-new", "z-new", None]
    ids = charge.enqueue_many(conn, calls(6), unique_keys=keys)
    conn.commit()
    assert ids[2] == held and ids[4] == ids[0]
    new = [ids[0], ids[1], ids[3], ids[5]]
    assert new == sorted(new) and len(set(new)) == 4
    assert jobs(dsn) == [
        (held, [-1], "m-held"), (ids[0], [0], "z-new"), (ids[1], [1], None),
        (ids[3], [3], "a-new"), (ids[5], [5], None),
    ]  # fmt: skip


def test_a_key_held_in_the_callers_own_transaction_returns_that_job(dsn: str, conn) -> None:
    """As a unique enqueue does: the transaction sees its own uncommitted holder, and a
    second batch with the same keys inserts nothing."""
    _app, charge = make_app(dsn)
    first = charge.using(unique_key="k1").enqueue(conn, 1)
    ids = charge.enqueue_many(conn, calls(2), unique_keys=["k1", "k2"])
    assert ids[0] == first
    assert charge.enqueue_many(conn, calls(2), unique_keys=["k2", "k1"]) == [ids[1], first]
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(2,)]


def test_keys_that_are_all_none_make_plain_jobs(dsn: str, conn) -> None:
    """unique_keys of None only: plain jobs, as without unique_keys (COPY from 1,000)."""
    _app, charge = make_app(dsn)
    ids = charge.enqueue_many(conn, calls(COPY_THRESHOLD), unique_keys=[None] * COPY_THRESHOLD)
    conn.commit()
    assert ids == sorted(ids) and len(set(ids)) == COPY_THRESHOLD
    assert query(dsn, "SELECT count(*), count(unique_key) FROM pgqueue.jobs") == [(1000, 0)]


@pytest.mark.parametrize("autocommit", [False, True])
def test_on_conflict_raise_names_the_first_held_key_and_inserts_nothing(
    dsn: str, autocommit: bool
) -> None:
    """With on_conflict="raise", a batch one of whose keys an active job holds raises
    DuplicateJob naming the first such key (in input order) and its holder; none of the
    batch's jobs stays, the transaction goes on, and an autocommit connection commits none."""
    _app, charge = make_app(dsn)
    with psycopg.connect(dsn, autocommit=True) as setup:
        holders = charge.enqueue_many(setup, calls(2), unique_keys=["b-held", "a-held"])
    strict = charge.using(on_conflict="raise")
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        with pytest.raises(pgqueue.DuplicateJob) as raised:
            strict.enqueue_many(conn, calls(5), unique_keys=["new", None, "b-held", "a-held", "n"])
        assert (raised.value.unique_key, raised.value.job_id) == ("b-held", holders[0])
        assert conn.execute("SELECT count(*) FROM pgqueue.active_jobs").fetchone() == (2,)
        strict.enqueue_many(conn, calls(1), unique_keys=["new"])
        conn.commit()
    assert [row[2] for row in jobs(dsn)] == ["b-held", "a-held", "new"]


def test_on_conflict_raise_keeps_what_the_transaction_did_before(dsn: str, conn) -> None:
    """The batch's refusal takes back its own jobs only: jobs the transaction enqueued before
    the call stay."""
    _app, charge = make_app(dsn)
    before = charge.enqueue(conn, 100)
    charge.using(unique_key="held").enqueue(conn, 101)
    with pytest.raises(pgqueue.DuplicateJob, match="'held'"):
        charge.using(on_conflict="raise").enqueue_many(conn, calls(2), unique_keys=["x", "held"])
    conn.commit()
    assert [row[1] for row in jobs(dsn)] == [[100], [101]] and jobs(dsn)[0][0] == before


async def test_aenqueue_many_is_the_same(dsn: str, aconn) -> None:
    """The async twin: holders' ids, one job per repeated key, DuplicateJob with nothing
    inserted, and the transaction still usable."""
    _app, charge = make_app(dsn)
    held = await charge.using(unique_key="held").aenqueue(aconn, -1)
    ids = await charge.aenqueue_many(aconn, calls(4), unique_keys=["a", "held", None, "a"])
    assert ids[1] == held and ids[3] == ids[0] and ids[0] < ids[2]
    with pytest.raises(pgqueue.DuplicateJob) as raised:
        await charge.using(on_conflict="raise").aenqueue_many(
            aconn, calls(2), unique_keys=["fresh", "a"]
        )
    assert (raised.value.unique_key, raised.value.job_id) == ("a", ids[0])
    await aconn.commit()
    assert jobs(dsn) == [(held, [-1], "held"), (ids[0], [0], "a"), (ids[2], [2], None)]


def test_a_thousand_keyed_jobs_and_more_are_inserted_not_copied(dsn: str, conn) -> None:
    """From COPY_THRESHOLD jobs enqueue_many loads plain jobs with COPY, which cannot skip a
    held key: with keys the batch is inserted, keys stored, holders and repeats honoured,
    and on_conflict="raise" refuses the batch whole."""
    _app, charge = make_app(dsn)
    n = COPY_THRESHOLD + 500
    held = charge.using(unique_key="k-700").enqueue(conn, -1)
    keys = [None if i % 3 == 0 else f"k-{i % 1000}" for i in range(n)]
    ids = charge.enqueue_many(conn, calls(n), unique_keys=keys)
    conn.commit()
    assert ids[700] == held and ids[1001] == ids[1] != held
    first: dict[str | None, int] = {}
    new = [ids[i] for i, k in enumerate(keys) if k is None or first.setdefault(k, i) == i]
    new.remove(held)
    assert new == sorted(new) and len(set(new)) == len(new)
    expected = 1 + (n + 2) // 3 + len({k for k in keys if k is not None} - {"k-700"})
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(expected,)]
    assert query(dsn, "SELECT args FROM pgqueue.jobs WHERE unique_key = 'k-1'") == [([1],)]
    with pytest.raises(pgqueue.DuplicateJob, match="'k-1'"):
        charge.using(on_conflict="raise").enqueue_many(
            conn, calls(n), unique_keys=[f"new-{i}" for i in range(n - 1)] + ["k-1"]
        )
    conn.commit()
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(expected,)]


def test_a_keyed_batch_wakes_workers_once_and_a_held_one_not_at_all(dsn: str, conn) -> None:
    """One notification for the batch, as enqueue_many without keys; none when every key is
    held, as for a unique enqueue that inserts nothing."""
    _app, charge = make_app(dsn)
    with listener(dsn) as listen:
        charge.enqueue_many(conn, calls(3), unique_keys=["a", None, "b"])
        conn.commit()
        assert notifications(listen) == ["default"]
        charge.enqueue_many(conn, calls(2), unique_keys=["b", "a"])
        conn.commit()
        assert notifications(listen) == []


def test_a_keyed_batch_in_the_callers_pipeline(dsn: str) -> None:
    """Inside conn.pipeline() the batch's statements (savepoint included) are synced one by
    one, and its ids come back."""
    _app, charge = make_app(dsn)
    with psycopg.connect(dsn) as conn, conn.pipeline():
        held = charge.using(unique_key="h").enqueue(conn, -1)
        ids = charge.enqueue_many(conn, calls(3), unique_keys=["a", "h", "a"])
        conn.commit()
    assert ids[1] == held and ids[2] == ids[0] != held


BAD_KEYS = [
    (["a", 7], ValueError, r"^enqueue_many call 1: invalid unique_key 7: a unique_key is a str"),
    (["a", ""], ValueError, r"^enqueue_many call 1: invalid unique_key '': use 1-255"),
    (["a", "x" * 256], ValueError, r"^enqueue_many call 1: invalid unique_key 'x+': use 1-255"),
    (["a", "\x00"], ValueError, r"^enqueue_many call 1: .* it holds a NUL character"),
    (["a"], ValueError, r"^enqueue_many: unique_keys has 1 keys for 2 calls: give one per call"),
    (["a", "b", "c"], ValueError, r"^enqueue_many: unique_keys has 3 keys for 2 calls"),
    ("ab", TypeError, r"^enqueue_many: unique_keys must be a list of str \(or None\), one per"),
    (7, TypeError, r"^enqueue_many: unique_keys must be a list .* got 7"),
    ({"a", "b"}, TypeError, r"^enqueue_many: unique_keys must be a list .* got \{'.'"),
    ({"a": 0, "b": 1}.keys(), TypeError, r"^enqueue_many: unique_keys must be a list .* dict_keys"),
]


@pytest.mark.parametrize(("keys", "error", "message"), BAD_KEYS)
async def test_bad_unique_keys_are_refused_before_any_statement(
    dsn: str, conn, aconn, keys: Any, error: type[Exception], message: str
) -> None:
    """A key that is not a usable key is named by its call's index, unique_keys of another
    length than the calls (or a str, read as its characters, or a set, whose order is not the
    calls' and which paired keys with calls at random) is refused: before any statement, so
    nothing is written and the transactions go on."""
    app, charge = make_app(dsn)
    for task in (charge, app.using("charge")):
        with pytest.raises(error, match=message):
            task.enqueue_many(conn, calls(2), unique_keys=keys)
        with pytest.raises(error, match=message):
            await task.aenqueue_many(aconn, iter(calls(2)), unique_keys=keys)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_shared_unique_key_is_still_refused_and_says_what_to_use(dsn: str, conn) -> None:
    """using(unique_key=...) would give every job of the batch one key: still refused, now
    pointing at unique_keys."""
    _app, charge = make_app(dsn)
    with pytest.raises(ValueError, match=r"give each its own with unique_keys=\[\.\.\.\]$"):
        charge.using(unique_key="k").enqueue_many(conn, calls(2), unique_keys=["a", "b"])


@pytest.mark.parametrize("on_conflict", ["existing", "raise"])
def test_a_key_that_keeps_changing_hands_gives_up_with_nothing_inserted(
    dsn: str, on_conflict: str
) -> None:
    """A key whose insert goes nowhere and whose holder is never found (a test-only trigger
    drops its rows) is tried MAX_ROUNDS times, then UniqueKeyContended names it; the other
    jobs of the batch, inserted in the first round, are taken back, and the transaction goes
    on, as after a unique enqueue that gave up."""
    query(dsn, "CREATE SEQUENCE tries")
    query(dsn, "CREATE FUNCTION drop_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.unique_key = 'report-7' THEN PERFORM nextval('tries'); RETURN NULL;"
               " END IF; RETURN NEW; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_it()")  # fmt: skip
    _app, charge = make_app(dsn)
    task = charge.using(on_conflict=on_conflict)  # type: ignore[arg-type]
    with psycopg.connect(dsn) as conn:
        with pytest.raises(pgqueue.UniqueKeyContended) as raised:
            task.enqueue_many(conn, calls(3), unique_keys=["a", "report-7", None])
        assert raised.value.unique_key == "report-7"
        assert conn.execute("SELECT count(*) FROM pgqueue.active_jobs").fetchone() == (0,)
        conn.commit()
    assert query(dsn, "SELECT last_value FROM tries") == [(MAX_ROUNDS,)]


# A test-only trigger: a session that set pgq_test.pause_at waits, before inserting the row
# with that key, for the advisory lock the test holds.
PAUSE = """
CREATE FUNCTION pause_at() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF NEW.unique_key = current_setting('pgq_test.pause_at', true) THEN
        PERFORM pg_advisory_xact_lock_shared(4242);
    END IF;
    RETURN NEW;
END $$
"""


def batch_in_thread(
    dsn: str, keys: list[str], out: dict[str, Any], name: str, settings: dict[str, str]
) -> threading.Thread:
    """Start a thread enqueueing a batch with ``keys`` in a transaction of its own, on a
    connection given ``settings`` (the test-only triggers' pauses); ``out[name]`` gets its
    ids, or its error."""
    _app, charge = make_app(dsn)

    def run() -> None:
        with psycopg.connect(dsn) as conn:
            for setting, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", [setting, value])
            try:
                out[name] = charge.enqueue_many(conn, calls(len(keys)), unique_keys=keys)
                conn.commit()
            except psycopg.Error as exc:
                out[name] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_batches_with_keys_in_opposite_orders_do_not_deadlock(dsn: str) -> None:
    """Two transactions enqueue ["a", "b"] and ["b", "a"]. Inserted in input order, each took
    its first key and waited for the other's: PostgreSQL ended one with a deadlock. The
    trigger makes that interleaving certain: each batch pauses before its second key until
    both have begun. Sorted by key, the second batch waits for the first instead, and gets
    its jobs."""
    query(dsn, PAUSE)
    query(dsn, "CREATE TRIGGER zz_pause BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION pause_at()")  # fmt: skip
    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        threads = [
            batch_in_thread(dsn, keys, out, keys[1], {"pgq_test.pause_at": keys[1]})
            for keys in (["a", "b"], ["b", "a"])
        ]
        wait_until(lambda: _waiting(dsn) == 2)
        gate.execute("SELECT pg_advisory_unlock(4242)")
        for thread in threads:
            thread.join(60)
    assert not isinstance(out["a"], Exception), out["a"]
    assert not isinstance(out["b"], Exception), out["b"]
    assert out["b"] == out["a"][::-1]
    assert query(dsn, "SELECT count(*) FROM pgqueue.jobs") == [(2,)]


def _waiting(dsn: str) -> int:
    """How many backends of this database wait for a lock."""
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    return int(rows[0][0])


@pytest.mark.parametrize("autocommit", [False, True])
def test_a_job_without_a_key_that_a_trigger_drops_is_an_error_not_a_wrong_id(
    dsn: str, autocommit: bool
) -> None:
    """A user's BEFORE INSERT trigger returning NULL for a job without a key: its place got
    the next job's id and the last such place 0 (no job has it). The batch is refused with
    PgQueueError saying so, none of its jobs stays, and the transaction goes on."""
    query(dsn, "CREATE FUNCTION drop_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.args = '[1]' THEN RETURN NULL; END IF; RETURN NEW; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_it()")  # fmt: skip
    _app, charge = make_app(dsn)
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        kept = charge.enqueue(conn, 100)
        with pytest.raises(pgqueue.PgQueueError, match=r"^enqueue_many: 1 of the batch's jobs"):
            charge.enqueue_many(conn, calls(4), unique_keys=["k", None, None, "j"])
        assert conn.execute("SELECT count(*) FROM pgqueue.active_jobs").fetchone() == (1,)
        conn.commit()
    assert query(dsn, "SELECT id FROM pgqueue.jobs") == [(kept,)]


async def test_a_key_twice_with_on_conflict_raise_is_refused_before_any_statement(
    dsn: str, conn, aconn
) -> None:
    """With on_conflict="raise" a key given twice made one job of the first call and dropped
    the second's arguments without a word, where two unique enqueues raise DuplicateJob at
    the second. It is refused, naming both calls, before any statement; with "existing" the
    second call still gets the first's job."""
    _app, charge = make_app(dsn)
    strict = charge.using(on_conflict="raise")
    message = r"^enqueue_many call 3: unique_key 'a' is call 1's too: with on_conflict=\"raise\""
    keys = [None, "a", "b", "a"]
    with pytest.raises(ValueError, match=message):
        strict.enqueue_many(conn, calls(4), unique_keys=keys)
    with pytest.raises(ValueError, match=message):
        await strict.aenqueue_many(aconn, calls(4), unique_keys=iter(keys))
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert aconn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    ids = charge.enqueue_many(conn, calls(4), unique_keys=keys)
    assert ids[3] == ids[1] != ids[0]


def test_a_key_given_twice_is_sent_once(dsn: str, conn) -> None:
    """A key's later calls are not sent: only its first call's row is offered to the table,
    and the batch takes one id per job it makes. PostgreSQL's DO NOTHING would also skip a
    repeat within the statement, so only the rows offered (a test-only BEFORE INSERT trigger
    records each) tell whether the batch left its repeats out."""
    query(dsn, "CREATE TABLE offered (args jsonb, unique_key text)")
    query(dsn, "CREATE FUNCTION record_it() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT"
               " INTO offered VALUES (NEW.args, NEW.unique_key); RETURN NEW; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_record BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION record_it()")  # fmt: skip
    _app, charge = make_app(dsn)
    ids = charge.enqueue_many(conn, calls(5), unique_keys=["k", "k", None, "k", "j"])
    conn.commit()
    first = ids[0]
    assert ids == [first, first, first + 1, first, first + 2]
    assert query(dsn, "SELECT args, unique_key FROM offered ORDER BY args") == [
        ([0], "k"), ([2], None), ([4], "j"),
    ]  # fmt: skip


def test_a_key_freed_between_insert_and_look_up_goes_in_at_its_place(dsn: str, conn) -> None:
    """A key whose first insert goes nowhere and whose holder is then not found (a test-only
    trigger drops its first row, as if the holder finished between the two statements) is
    inserted in a second round; every place still gets its own call's job, the repeated
    key's later place included."""
    query(dsn, "CREATE SEQUENCE tries")
    query(dsn, "CREATE FUNCTION drop_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " IF NEW.unique_key = 'k' THEN IF nextval('tries') = 1 THEN RETURN NULL; END IF;"
               " END IF; RETURN NEW; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER zz_drop BEFORE INSERT ON pgqueue.active_jobs"
               " FOR EACH ROW EXECUTE FUNCTION drop_once()")  # fmt: skip
    _app, charge = make_app(dsn)
    held = charge.using(unique_key="h").enqueue(conn, -1)
    ids = charge.enqueue_many(conn, calls(6), unique_keys=["z", "k", None, "h", "a", "k"])
    conn.commit()
    assert ids[3] == held and ids[5] == ids[1]
    by_id = {job_id: (args, key) for job_id, args, key in jobs(dsn)}
    assert [by_id[job_id] for job_id in ids] == [
        ([0], "z"), ([1], "k"), ([2], None), ([-1], "h"), ([4], "a"), ([1], "k"),
    ]  # fmt: skip
    assert query(dsn, "SELECT last_value FROM tries") == [(2,)]


def test_a_holder_rolled_back_while_the_batch_waits_lets_the_batch_in(dsn: str) -> None:
    """A batch meeting a key held by an open transaction waits for it; when that transaction
    rolls back, the batch's own job goes in (no holder's id, no error), at its place."""
    _app, charge = make_app(dsn)
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as conn:
        charge.using(unique_key="b").enqueue(holder, -1)

        def run() -> None:
            out["ids"] = charge.enqueue_many(conn, calls(3), unique_keys=["c", "b", None])
            conn.commit()

        thread = threading.Thread(target=run)
        thread.start()
        wait_until(lambda: _waiting(dsn) == 1)
        holder.rollback()
        thread.join(60)
    by_id = {job_id: (args, key) for job_id, args, key in jobs(dsn)}
    assert [by_id[job_id] for job_id in out["ids"]] == [([0], "c"), ([1], "b"), ([2], None)]


# A test-only trigger: a statement of a session that set pgq_test.pause_after waits, once it
# has inserted its rows, for the advisory lock the test holds.
PAUSE_AFTER = """
CREATE FUNCTION pause_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF current_setting('pgq_test.pause_after', true) = 'on' THEN
        PERFORM pg_advisory_xact_lock_shared(4242);
    END IF;
    RETURN NULL;
END $$
"""


def test_a_key_freed_mid_batch_does_not_deadlock_a_batch_sharing_its_keys(dsn: str) -> None:
    """Batch A meets "a" held by a job that finishes before A looks for it, so A tries "a"
    again, after the "b" it holds; batch B took "a" meanwhile and waits for A's "b". A second
    round of the freed key alone took the keys out of order: A waited for B, B for A, and
    PostgreSQL ended one with a deadlock. A round now takes back the batch and inserts it all
    again, sorted: B gets "b", A waits for B and gets B's jobs."""
    query(dsn, PAUSE_AFTER)
    query(dsn, "CREATE TRIGGER zz_pause AFTER INSERT ON pgqueue.active_jobs"
               " FOR EACH STATEMENT EXECUTE FUNCTION pause_after()")  # fmt: skip
    _app, charge = make_app(dsn)
    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as gate:
        holder = charge.using(unique_key="a").enqueue(gate, -1)
        gate.execute("SELECT pg_advisory_lock(4242)")
        threads = [batch_in_thread(dsn, ["a", "b"], out, "A", {"pgq_test.pause_after": "on"})]
        wait_until(lambda: _waiting(dsn) == 1)  # A inserted "b", not "a", and waits
        gate.execute("SELECT pgqueue.cancel(%s)", [holder])  # "a" is free
        threads.append(batch_in_thread(dsn, ["a", "b"], out, "B", {}))
        wait_until(lambda: _waiting(dsn) == 2)  # B inserted "a" and waits for A's "b"
        gate.execute("SELECT pg_advisory_unlock(4242)")
        for thread in threads:
            thread.join(60)
    assert not isinstance(out["A"], Exception), out["A"]
    assert not isinstance(out["B"], Exception), out["B"]
    assert out["A"] == out["B"]
    assert query(dsn, "SELECT id, unique_key FROM pgqueue.active_jobs ORDER BY id") == [
        (out["B"][0], "a"), (out["B"][1], "b"),
    ]  # fmt: skip
