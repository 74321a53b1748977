"""A job's ``errors`` keep its first entry and its last nine, whichever statement appends."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pgqueue import _store
from pgqueue._cli import cli
from pgqueue._store import Outcome
from tests.helpers import query


def _job(dsn: str, max_attempts: int, errors: Any = ()) -> int:
    """A queued job of queue io, with ``errors`` as its column holds them."""
    [(job_id,)] = query(
        dsn, "INSERT INTO pgqueue.active_jobs (queue, task, max_attempts, errors)"
        " VALUES ('io', 't', %s, %s::jsonb) RETURNING id", [max_attempts, json.dumps(errors)],
    )  # fmt: skip
    return int(job_id)


def _fail(dsn: str, job_id: int, times: int, last: str = "queued") -> None:
    """Claim the job and fail its attempt ``times`` times, the last outcome ``last``."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for n in range(times):
            [row] = _store.run(cur, _store.jobs_claim("w", {"io": 1}, 30)).rows
            state = last if n == times - 1 else "queued"
            outcome = Outcome(job_id, row[5], state, error=f"E{row[5]}", traceback="tb")
            assert _store.run(cur, _store.jobs_ack([outcome])).ids == [job_id]


def _errors(dsn: str, job_id: int) -> Any:
    [(errors,)] = query(dsn, "SELECT errors FROM pgqueue.jobs WHERE id = %s", [job_id])
    return errors


def _kept(errors: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """``(attempt, dropped)`` of each entry."""
    return [(e["attempt"], e.get("dropped")) for e in errors]


@pytest.mark.parametrize("last", ["queued", "failed"])
def test_an_ack_keeps_the_first_entry_the_last_nine_and_how_many_it_left_out(
    dsn: str, last: str
) -> None:
    """30 failed attempts kept 30 entries (each up to 2 x 64 KiB), read by every `jobs show`
    and written again by every ack: now the first, the last nine, and on the oldest of those
    the number left out between, as a retry and as the last failure write them."""
    job_id = _job(dsn, max_attempts=30)
    _fail(dsn, job_id, 30, last)
    errors = _errors(dsn, job_id)
    assert _kept(errors) == [(1, None), (22, 20), *((n, None) for n in range(23, 31))]
    assert [e["error"] for e in errors] == ["E1", *(f"E{n}" for n in range(22, 31))]
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [(last,)]


def test_a_longer_history_shrinks_to_ten_at_its_next_entry(dsn: str) -> None:
    """A job whose errors were written before the bound (40 entries) keeps ten once it fails
    again, the count saying what went: 31 entries, attempts 2 to 32."""
    old = [{"attempt": n, "at": "2026-01-01", "error": f"E{n}", "traceback": None}
           for n in range(1, 41)]  # fmt: skip
    job_id = _job(dsn, max_attempts=100, errors=old)
    _fail(dsn, job_id, 1)
    assert _kept(_errors(dsn, job_id)) == [
        (1, None),
        (33, 31),
        *((n, None) for n in range(34, 41)),
        (1, None),
    ]


@pytest.mark.parametrize(("max_attempts", "state"), [(13, "queued"), (12, "failed")])
def test_a_rescue_keeps_ten_entries_too(dsn: str, max_attempts: int, state: str) -> None:
    """A lease that expired after eleven failed attempts: its 'worker lost' entry, whether the
    job goes back to the queue or to history, makes the twelfth, and two are left out."""
    job_id = _job(dsn, max_attempts)
    _fail(dsn, job_id, 11)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        _store.run(cur, _store.jobs_claim("w", {"io": 1}, 0.05))
        time.sleep(0.1)
        _store.run(cur, _store.leases_rescue())
    errors = _errors(dsn, job_id)
    assert _kept(errors) == [(1, None), (4, 2), *((n, None) for n in range(5, 13))]
    assert errors[-1]["error"] == "worker lost"
    assert query(dsn, "SELECT state FROM pgqueue.jobs") == [(state,)]


def test_a_job_failed_as_uncountable_keeps_ten_entries(dsn: str) -> None:
    """A queued job whose attempts cannot be counted up fails with its errors bounded too."""
    old = [{"attempt": n, "at": "2026-01-01", "error": f"E{n}", "traceback": None}
           for n in range(1, 13)]  # fmt: skip
    job_id = _job(dsn, max_attempts=100, errors=old)
    query(dsn, "UPDATE pgqueue.active_jobs SET attempts = 2147483647")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        assert _store.run(cur, _store.jobs_fail_uncountable(["io"])) == [job_id]
    assert [e.get("dropped") for e in _errors(dsn, job_id)] == [None, 3, *[None] * 8]


@pytest.mark.parametrize(
    "errors",
    [{"not": "an array"}, "text", [1, "two", None, [3], True, {"dropped": "x"}, 7, 8, 9, 10],
     [{"attempt": 1}, {"dropped": 1e30}, *range(8)]],
)  # fmt: skip
def test_whatever_sql_wrote_in_errors_an_ack_appends_to_it(dsn: str, errors: Any) -> None:
    """errors written by SQL as anything at all: the ack still writes the attempt's entry
    (a statement that raised on one row would fail the batch, and the rescue's with it)."""
    job_id = _job(dsn, max_attempts=5, errors=errors)
    _fail(dsn, job_id, 1)
    after = _errors(dsn, job_id)
    assert isinstance(after, list) and after[-1]["error"] == "E1"
    assert len(after) <= 10


def test_an_entry_sql_wrote_as_no_object_is_counted_among_those_left_out(dsn: str) -> None:
    """Ten entries, the third a number (SQL's): the count of those left out went onto it,
    5 || {"dropped": 1} making the array [5, {"dropped": 1}], where the next shrink did not
    find it, and the count restarted at 1. The number is now counted as left out, and the
    count stands in its place, an object that the next shrinks add to."""
    old: list[Any] = [{"attempt": n, "at": "2026-01-01", "error": f"E{n}", "traceback": None}
                      for n in range(1, 11)]  # fmt: skip
    old[2] = 5
    job_id = _job(dsn, max_attempts=100, errors=old)
    _fail(dsn, job_id, 1)
    assert _errors(dsn, job_id)[1] == {"dropped": 2}
    result = CliRunner().invoke(cli, ["--dsn", dsn, "jobs", "show", str(job_id)])
    assert "[... 2 entries not kept ...]\nattempt 4 failed" in result.output, result.output
    _fail(dsn, job_id, 1)
    errors = _errors(dsn, job_id)
    assert all(isinstance(e, dict) for e in errors)
    assert _kept(errors) == [(1, None), (4, 3), *((n, None) for n in range(5, 11)), (1, None),
                             (2, None)]  # fmt: skip
