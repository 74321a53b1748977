"""The operations commands, run as a user would: ``python -m pgqueue ...`` in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.acceptance.conftest import usage_error
from tests.helpers import query, states

ROOT = Path(__file__).parents[2]


def pgqueue(dsn: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI against ``dsn``; checks the exit status is 0 (``ok``) or not."""
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def failed_job(dsn: str) -> int:
    """A failed job with two attempts' errors and tracebacks; returns its id."""
    errors = [{"attempt": n, "at": "2026-01-01T00:00:00", "error": f"KeyError: {n}",
               "traceback": f"Traceback (most recent call last):\n  line {n}\nKeyError: {n}"}
              for n in (1, 2)]  # fmt: skip
    [(job_id,)] = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, last_error, errors)"
        " VALUES (77, 'mail', 'send', '[\"a@b.c\"]', '{}', 'failed', 0, 2, 2, now(), now(),"
        " 'KeyError: 2', %s::jsonb) RETURNING id",
        [json.dumps(errors)],
    )
    return int(job_id)


def test_enqueue_then_list_as_table_and_json(dsn: str) -> None:
    """enqueue prints the new id; jobs list shows it as a table and as JSON, filtered."""
    out = pgqueue(dsn, "enqueue", "reports.build", "--args", "[1, 2]", "--kwargs", '{"x": 1}',
                  "--queue", "reports", "--priority", "5").stdout  # fmt: skip
    job_id = int(out)
    pgqueue(dsn, "enqueue", "other", "--delay", "1h")
    table = pgqueue(dsn, "jobs", "list", "--task", "reports.build").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "TASK", "QUEUE", "STATE"]
    assert table[1].split()[:4] == [str(job_id), "reports.build", "reports", "queued"]
    assert len(table) == 2
    [row] = json.loads(pgqueue(dsn, "jobs", "list", "--queue", "reports", "--json").stdout)
    assert (row["id"], row["args"], row["kwargs"], row["priority"]) == (job_id, [1, 2], {"x": 1}, 5)
    assert json.loads(pgqueue(dsn, "jobs", "list", "--state", "failed", "--json").stdout) == []


def test_enqueue_run_at_schedules_the_job_at_that_instant(dsn: str) -> None:
    """The CLI had only --delay: a job for a given time (a run at 09:00 tomorrow) could not be
    enqueued from a script. --run-at takes ISO 8601 with its offset, read as that instant."""
    job_id = int(pgqueue(dsn, "enqueue", "t", "--run-at", "2030-01-01T09:00+01:00").stdout)
    [(run_at,)] = query(dsn, "SELECT run_at FROM pgqueue.jobs WHERE id = %s", [job_id])
    assert run_at == datetime(2030, 1, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(("given", "error"), [
    (("--run-at", "2030-01-01T09:00"), "invalid time '2030-01-01T09:00': use ISO 8601 with a UTC"
     " offset, e.g. 2030-01-01T09:00:00+01:00 or 2030-01-01T08:00Z"),
    (("--run-at", "tomorrow"), "invalid time 'tomorrow': use ISO 8601 with a UTC offset, e.g."
     " 2030-01-01T09:00:00+01:00 or 2030-01-01T08:00Z"),
    (("--run-at", "9999-12-31T12:00Z"), "invalid time '9999-12-31T12:00Z': must be from"
     " 0001-01-02T00:00:00+00:00 to 9999-12-31T00:00:00+00:00"),
    (("--unique-key", ""), "invalid unique_key '': use 1-255 characters"),
])  # fmt: skip
def test_enqueue_refuses_a_bad_time_or_key_as_a_usage_error(
    dsn: str, given: tuple[str, str], error: str
) -> None:
    """A time without its offset (whose zone is not to be guessed), one no job can have, or
    an empty key: a usage error naming the option, nothing enqueued."""
    (option, _), done = given, pgqueue(dsn, "enqueue", "t", *given, ok=False)
    assert done.returncode == 2
    assert usage_error(done.stderr) == f"Error: Invalid value for '{option}': {error}"
    assert states(dsn) == {}


def test_enqueue_refuses_both_delay_and_run_at(dsn: str) -> None:
    """--delay and --run-at say two times: a usage error, as using() refuses both."""
    done = pgqueue(dsn, "enqueue", "t", "--delay", "5m", "--run-at", "2030-01-01T08:00Z", ok=False)
    assert done.returncode == 2
    assert usage_error(done.stderr) == "Error: give either --delay or --run-at, not both"
    assert states(dsn) == {}


def test_enqueue_unique_key_prints_the_holders_id_and_enqueues_nothing(dsn: str) -> None:
    """--unique-key: a second enqueue of the key while its job is queued prints that job's id
    (exit 0, for a script that reads it) and says on stderr that nothing was enqueued; once
    the job has ended, the key makes a new job."""
    first = pgqueue(dsn, "enqueue", "t", "--unique-key", "nightly", "--delay", "1h")
    job_id = int(first.stdout)
    again = pgqueue(dsn, "enqueue", "t", "--unique-key", "nightly")
    assert int(again.stdout) == job_id
    assert again.stderr.strip() == (
        f"job {job_id} is already queued or running with unique key 'nightly': nothing enqueued"
    )
    assert states(dsn) == {"queued": 1}
    pgqueue(dsn, "jobs", "cancel", str(job_id))
    assert int(pgqueue(dsn, "enqueue", "t", "--unique-key", "nightly").stdout) != job_id
    assert states(dsn) == {"queued": 1, "cancelled": 1}


def test_enqueue_with_an_app_refuses_a_task_it_does_not_register(dsn: str) -> None:
    """With --app, a misspelt task name was enqueued all the same, and the job failed later on
    a worker, attempt after attempt, as an unknown task. Now it is refused in one line naming
    the closest registered name, with nothing enqueued; a registered name takes its queue."""
    app = ("--app", "tests.acceptance.app_under_test:app")
    done = pgqueue(dsn, *app, "enqueue", "tests.acceptance.app_under_test.onse", ok=False)
    assert (done.returncode, done.stderr.strip().splitlines()) == (1, [
        "Error: the app 'tests.acceptance.app_under_test:app' registers no task"
        " 'tests.acceptance.app_under_test.onse' (did you mean"
        " 'tests.acceptance.app_under_test.once'?); without --app, a task is enqueued by any name"
    ])  # fmt: skip
    assert states(dsn) == {}
    job_id = int(pgqueue(dsn, *app, "enqueue", "tests.acceptance.app_under_test.once").stdout)
    assert query(dsn, "SELECT queue FROM pgqueue.jobs WHERE id = %s", [job_id]) == [("io",)]


def test_enqueue_by_a_function_name_suggests_the_task_name(dsn: str) -> None:
    """A task without name= is registered as module.qualname; the function's own name, as a
    newcomer types it (`enqueue build_report`), was refused with no suggestion, being too far
    from the full name for a spelling match. The registered name ending in it is suggested."""
    app = ("--app", "tests.acceptance.app_under_test:app")
    done = pgqueue(dsn, *app, "enqueue", "once", ok=False)
    assert done.stderr.strip().startswith(
        "Error: the app 'tests.acceptance.app_under_test:app' registers no task 'once'"
        " (did you mean 'tests.acceptance.app_under_test.once'?)"
    ), done.stderr
    assert states(dsn) == {}


def test_enqueue_by_a_name_several_tasks_end_in_suggests_them_all(dsn: str, tmp_path: Path) -> None:
    """Two modules may each register a `send`: `enqueue send` suggested the first registered
    of them only, so that the user enqueued that one, perhaps not the one meant. Each is
    named, for the user to choose; a dotted name is matched whole (`mail.send`, not `il.send`)."""
    (tmp_path / "twosends.py").write_text(
        "import pgqueue\n"
        "app = pgqueue.PgQueue()\n"
        "for name in ('shop.mail.send', 'shop.sms.send', 'shop.resend'):\n"
        "    app.task(name=name)(lambda: None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for task, hint in [
        ("send", "did you mean one of 'shop.mail.send', 'shop.sms.send'?"),
        ("mail.send", "did you mean 'shop.mail.send'?"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "twosends", "enqueue", task],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert (done.returncode, done.stderr) == (1, (
            f"Error: the app 'twosends' registers no task {task!r} ({hint}); without --app, a"
            " task is enqueued by any name\n"
        ))  # fmt: skip
    assert states(dsn) == {}


def test_enqueue_refuses_an_empty_delay(dsn: str) -> None:
    """`--delay ""` (an unset variable in a script) enqueued a job runnable at once; it is
    an invalid duration, as it is for prune --older-than, and nothing is enqueued."""
    done = pgqueue(dsn, "enqueue", "t", "--delay", "", ok=False)
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--delay': invalid duration '': {UNITS}"
    )
    assert states(dsn) == {}


UNITS = "use seconds, or a number with a unit s, m, h, d or w (e.g. 90s, 15m, 12h, 7d, 2w)"
DURATIONS = [("prune", "--older-than"), ("enqueue", "t", "--delay")]


@pytest.mark.parametrize("command", DURATIONS)
@pytest.mark.parametrize("value", ["1y", "soon", "7 days", "1e3x", "inf", "1_0d", "7 d"])
def test_a_duration_that_does_not_parse_is_a_usage_error_naming_every_unit(
    dsn: str, command: tuple[str, ...], value: str
) -> None:
    """`prune --older-than 1y` exited 1 (bad option values exit 2, as documented) with a
    message that left out the unit w; so did enqueue --delay. Nothing is deleted or enqueued."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '3 days'")
    result = pgqueue(dsn, *command, value, ok=False)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '{command[-1]}': invalid duration {value!r}: {UNITS}"
    )
    assert states(dsn) == {"failed": 1}


def test_a_duration_may_have_an_exponent_as_a_number_of_seconds_may(dsn: str) -> None:
    """Durations are read as the other numbers of seconds (--lease, --interval) are: with a
    `.` and an exponent, `1e3` (seconds) or `1.5E1m`; this was so, undocumented."""
    for delay, seconds in (("1e3", 1000), ("1.5E1m", 900)):
        job_id = pgqueue(dsn, "enqueue", "t", "--delay", delay).stdout.strip()
        assert query(
            dsn, "SELECT extract(epoch FROM run_at - created_at) FROM pgqueue.jobs WHERE id = %s",
            [job_id],
        ) == [(seconds,)]  # fmt: skip
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '3 days'")
    for age, said in (
        ("2e0d", "1 finished job (failed 1)"),
        ("5E0D", "0 finished jobs (failed 0)"),
    ):
        done = pgqueue(dsn, "prune", "--state", "failed", "--older-than", age, "--dry-run")
        assert done.stdout == f"would delete {said}\n"


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [("--args", "{not json",
      "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2"
      " (char 1)"),
     ("--kwargs", "{", "not valid JSON: Expecting property name enclosed in double quotes:"
      " line 1 column 2 (char 1)"),
     ("--args", "", "'' is empty: give an array, e.g. '[]', or leave the option out"),
     ("--kwargs", " ", "' ' is empty: give an object, e.g. '{}', or leave the option out"),
     ("--args", '{"a": 1}', """must be an array in JSON, got '{"a": 1}'"""),
     ("--kwargs", "[1]", "must be an object in JSON, got '[1]'"),
     ("--args", "[" * 3000 + "]" * 3000,
      "nested too deeply for Python to decode (more than about 1,000 levels)")],
)  # fmt: skip
def test_enqueue_refuses_bad_json_as_a_usage_error_naming_the_option(
    dsn: str, option: str, value: str, error: str
) -> None:
    """A malformed --args or --kwargs, or JSON of the other kind, exited 1 though it is a bad
    option value (exit 2, as for the others); JSON nested deeper than Python decodes was said
    to be "read from the database"; an empty --args (an unset variable in a script) meant no
    arguments, as an empty --delay meant no delay. Nothing is enqueued."""
    done = pgqueue(dsn, "enqueue", "t", option, value, ok=False)
    assert done.returncode == 2
    assert usage_error(done.stderr) == f"Error: Invalid value for '{option}': {error}"
    assert states(dsn) == {}


AUDIT_TRIGGER = """
CREATE FUNCTION audit_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_log (op) VALUES (TG_OP);
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_job AFTER INSERT OR UPDATE OR DELETE ON pgqueue.active_jobs
    FOR EACH ROW EXECUTE FUNCTION audit_job();
"""


@pytest.mark.parametrize("command", [("enqueue", "t"), ("jobs", "cancel", "{job_id}")])
def test_a_users_trigger_that_finds_no_table_is_shown_as_itself(
    dsn: str, command: tuple[str, ...]
) -> None:
    """A user's trigger on pgqueue's tables that refers to a missing table (audit_log) made
    the CLI ask whether pgqueue's schema was installed. Raised in a function, the error has a
    context, as enqueue already told apart: the CLI says what the database refused."""
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('t', '[]')")
    query(dsn, AUDIT_TRIGGER)
    done = pgqueue(dsn, *(part.format(job_id=job_id) for part in command), ok=False)
    assert (done.returncode, done.stderr.strip().splitlines()) == (1, [
        'Error: the database refused: relation "audit_log" does not exist (UndefinedTable)'
    ])  # fmt: skip
    assert states(dsn) == {"queued": 1}


def test_enqueue_rejects_an_argument_postgres_cannot_store_in_one_line(dsn: str) -> None:
    """Valid JSON with a NUL in a string (\\u0000) is refused in one line, naming the argument;
    it printed a TypeError traceback."""
    done = pgqueue(dsn, "enqueue", "t", "--args", '["ok", "a\\u0000b"]', ok=False)
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "positional argument 1 of task 't' is not JSON-serialisable" in done.stderr
    assert states(dsn) == {}


def test_a_job_python_cannot_decode_is_one_line_in_list_and_show(dsn: str) -> None:
    """args nested 3,000 deep (PostgreSQL takes them from SQL): jobs list and show exit 1
    with one line that says so, not a RecursionError traceback."""
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('t', %s::jsonb)", ["[" * 3000 + "]" * 3000])
    for command in (["jobs", "list"], ["jobs", "show", str(job_id)]):
        done = pgqueue(dsn, *command, ok=False)
        assert done.stderr.strip().count("\n") == 0, done.stderr
        assert "nested too deeply for Python to decode" in done.stderr


def test_jobs_show_prints_args_and_every_attempts_traceback(dsn: str) -> None:
    """jobs show: arguments, state, and each attempt's error with its traceback."""
    job_id = failed_job(dsn)
    out = pgqueue(dsn, "jobs", "show", str(job_id)).stdout
    assert f"job {job_id}: send on queue mail, failed" in out
    assert '["a@b.c"]' in out
    assert "attempt 1 failed" in out and "attempt 2 failed" in out
    assert "    KeyError: 1" in out and "    KeyError: 2" in out
    shown = json.loads(pgqueue(dsn, "jobs", "show", str(job_id), "--json").stdout)
    assert [e["attempt"] for e in shown["errors"]] == [1, 2]
    assert "there is no job 5" in pgqueue(dsn, "jobs", "show", "5", ok=False).stderr


def test_jobs_show_says_where_entries_of_errors_were_left_out(dsn: str) -> None:
    """errors keeps the first entry and the last nine, the oldest of which counts those left
    out before it: jobs show says so between them."""
    job_id = failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET errors = jsonb_set(errors, '{1,dropped}', '20')")
    out = pgqueue(dsn, "jobs", "show", str(job_id)).stdout
    assert "    KeyError: 1\n[... 20 entries not kept ...]\nattempt 2 failed" in out


def test_jobs_retry_by_id_and_all_failed_of_a_task(dsn: str) -> None:
    """jobs retry ID requeues one failed job; --failed --task requeues the task's failed jobs."""
    job_id = failed_job(dsn)
    assert f"job {job_id} requeued" in pgqueue(dsn, "jobs", "retry", str(job_id)).stdout
    refused = pgqueue(dsn, "jobs", "retry", str(job_id), ok=False).stderr
    assert "only failed or cancelled jobs can be retried" in refused
    query(dsn, "SELECT pgqueue.cancel(%s)", [job_id])
    query(dsn, "UPDATE pgqueue.finished_jobs SET state = 'failed'")
    assert "requeued 0 failed" in pgqueue(dsn, "jobs", "retry", "--failed", "--task", "x").stdout
    assert "requeued 1 failed" in pgqueue(dsn, "jobs", "retry", "--failed", "--task", "send").stdout
    assert states(dsn) == {"queued": 1}
    pgqueue(dsn, "jobs", "retry", ok=False)


def test_jobs_retry_failed_dry_run_says_how_many_it_would_requeue_and_requeues_none(
    dsn: str,
) -> None:
    """`jobs retry --failed` had no way to see what it would take before it took it, as
    prune's --dry-run does: it counts the failed jobs it would requeue, with the same --task
    filter, in prune's words, and requeues none; without --failed it is refused."""
    job_id = failed_job(dsn)  # of task "send"
    done = pgqueue(dsn, "jobs", "retry", "--failed", "--dry-run")
    assert (done.stdout, done.stderr) == (
        "would requeue 1 failed job\n", "dry run: nothing was requeued\n"
    )  # fmt: skip
    done = pgqueue(dsn, "jobs", "retry", "--failed", "--task", "other", "--dry-run")
    assert done.stdout == "would requeue 0 failed jobs\n"
    assert states(dsn) == {"failed": 1}
    refused = pgqueue(dsn, "jobs", "retry", str(job_id), "--dry-run", ok=False)
    assert (refused.returncode, refused.stderr.strip().splitlines()[-1]) == (
        2, "Error: --dry-run only goes with --failed"
    )  # fmt: skip
    assert states(dsn) == {"failed": 1}


def test_jobs_retry_refuses_a_task_filter_without_failed(dsn: str) -> None:
    """`jobs retry ID --task T` ignored --task and requeued job ID whatever its task; the
    filter only goes with --failed, and is now refused with the job left as it was."""
    job_id = failed_job(dsn)  # of task "send"
    done = pgqueue(dsn, "jobs", "retry", str(job_id), "--task", "other", ok=False)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (
        2, "Error: --task only goes with --failed"
    )  # fmt: skip
    assert states(dsn) == {"failed": 1}


def test_jobs_cancel_a_queued_job_and_refuse_a_finished_one(dsn: str) -> None:
    """jobs cancel: a queued job ends cancelled; cancelling it again fails with one line."""
    job_id = pgqueue(dsn, "enqueue", "t").stdout.strip()
    assert f"job {job_id} cancelled" in pgqueue(dsn, "jobs", "cancel", job_id).stdout
    assert states(dsn) == {"cancelled": 1}
    again = pgqueue(dsn, "jobs", "cancel", job_id, ok=False).stderr
    assert "already finished" in again


def test_stats_shows_each_queue_and_watch_stops_on_interrupt(dsn: str) -> None:
    """stats prints a row per queue (JSON with --json); --watch refreshes until SIGINT."""
    pgqueue(dsn, "enqueue", "t", "--queue", "a")
    failed_job(dsn)
    rows = json.loads(pgqueue(dsn, "stats", "--json").stdout)
    assert [(r["queue"], r["queued"], r["failed"]) for r in rows] == [("a", 1, 0), ("mail", 0, 1)]
    assert pgqueue(dsn, "stats").stdout.splitlines()[0].split()[:3] == [
        "QUEUE",
        "QUEUED",
        "SCHEDULED",
    ]
    watch = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "stats", "--watch", "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert watch.stdout is not None
    frames = 0
    for line in watch.stdout:
        frames += line.startswith("mail")
        if frames == 2:
            break
    watch.send_signal(signal.SIGINT)
    assert watch.wait(30) == 0
    watch.stdout.close()
    assert watch.stderr is not None
    watch.stderr.close()


def test_stats_watch_json_writes_one_json_array_per_line(dsn: str) -> None:
    """stats --watch --json wrote each refresh as an indented array over many lines, one after
    the other: a reader taking a line at a time got "[" and pieces. Each refresh is now one
    line holding the whole array."""
    pgqueue(dsn, "enqueue", "t", "--queue", "a")
    watch = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "stats", "--watch", "--json",
         "--interval", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert watch.stdout is not None and watch.stderr is not None
    try:
        frames = [json.loads(watch.stdout.readline()) for _ in range(2)]
    finally:
        watch.send_signal(signal.SIGINT)
        assert watch.wait(30) == 0
        watch.stdout.close()
        watch.stderr.close()
    assert [[(r["queue"], r["queued"]) for r in frame] for frame in frames] == [[("a", 1)]] * 2


_IDS = "job ids are whole numbers from 1 to 9223372036854775807"


@pytest.mark.parametrize(
    ("command", "error"),
    [(("jobs", "retry", "99999999999999999999"), f"invalid job id 99999999999999999999: {_IDS}"),
     (("jobs", "cancel", "99999999999999999999"), f"invalid job id 99999999999999999999: {_IDS}"),
     (("jobs", "cancel", "--", "-99999999999999999999"),
      f"invalid job id -99999999999999999999: {_IDS}"),
     (("jobs", "show", "99999999999999999999"), f"invalid job id 99999999999999999999: {_IDS}"),
     (("jobs", "show", "-5"), f"invalid job id -5: {_IDS}"),
     (("jobs", "show", "--json", "-5"), f"invalid job id -5: {_IDS}"),
     (("jobs", "retry", "-12"), f"invalid job id -12: {_IDS}"),
     (("jobs", "cancel", "-1"), f"invalid job id -1: {_IDS}"),
     (("jobs", "cancel", "--", "-5"), f"invalid job id -5: {_IDS}"),
     (("jobs", "show", "0"), f"invalid job id 0: {_IDS}"),
     (("jobs", "show", "-5x"), "'-5x' is not a whole number (digits 0-9)."),
     (("jobs", "cancel", "-1e3"), "'-1e3' is not a whole number (digits 0-9)."),
     (("jobs", "list", "--limit", "99999999999999999999"),
      "99999999999999999999 is not in the range 1<=x<=9223372036854775807.")],
)  # fmt: skip
def test_an_id_or_limit_past_bigint_is_a_usage_error_naming_it(
    dsn: str, command: tuple[str, ...], error: str
) -> None:
    """These used to say "the database refused: bigint out of range" or, for cancel, that
    function pgqueue.cancel(numeric) did not exist and the schema might be missing; then
    exited 1 naming the range, though a bad option value or argument exits 2. A negative id
    was "No such option: -5" (and, after --, a job there could be none of): job ids are
    positive, and one that is not is named as the id it is. So is a mistyped one that starts
    like a negative number (-5x was "No such option: -5", naming part of it)."""
    result = pgqueue(dsn, *command, ok=False)
    label = {"list": "'--limit'", "retry": "'[JOB_ID]'"}.get(command[1], "'JOB_ID'")
    assert result.returncode == 2
    assert usage_error(result.stderr) == f"Error: Invalid value for {label}: {error}"


def test_enqueue_refuses_a_priority_out_of_range_as_a_usage_error(dsn: str) -> None:
    """--priority 40000 exited 1 from the job options' check, though an option value out of
    its range exits 2; nothing is enqueued."""
    result = pgqueue(dsn, "enqueue", "t", "--priority", "40000", ok=False)
    assert (result.returncode, usage_error(result.stderr)) == (
        2, "Error: Invalid value for '--priority': 40000 is not in the range -32768<=x<=32767."
    )  # fmt: skip
    assert states(dsn) == {}


@pytest.mark.parametrize("interval", ["inf", "1e300", "nan"])
def test_stats_watch_refuses_an_interval_it_cannot_sleep(dsn: str, interval: str) -> None:
    """--interval inf used to end in a traceback from time.sleep (OverflowError), and nan in
    "Invalid value NaN (not a number)", after the first frame."""
    result = pgqueue(dsn, "stats", "--watch", "--interval", interval, ok=False)
    assert (result.returncode, result.stdout) == (2, "")
    assert (
        result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for '--interval': ")
    )


def test_workers_lists_live_workers(dsn: str) -> None:
    """workers shows every live worker with its queues; none is a plain message."""
    assert pgqueue(dsn, "workers").stdout.strip() == "no live workers"
    query(dsn, "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
               " heartbeat_s) VALUES ('w1', 'host', 42, '{\"io\": 5}', '0.1.0', 10)")  # fmt: skip
    [row] = json.loads(pgqueue(dsn, "workers", "--json").stdout)
    assert (row["id"], row["queues"], row["running"]) == ("w1", {"io": 5}, 0)
    assert pgqueue(dsn, "workers").stdout.splitlines()[1].split()[:3] == ["w1", "host", "42"]


def test_prune_older_than_deletes_old_finished_jobs_only(dsn: str) -> None:
    """prune --older-than deletes finished jobs past that age, never recent or active ones."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '3 days'")
    pgqueue(dsn, "enqueue", "t")
    assert "deleted 0" in pgqueue(dsn, "prune", "--older-than", "7d").stdout
    assert "deleted 1" in pgqueue(dsn, "prune", "--older-than", "2d", "--state", "failed").stdout
    assert states(dsn) == {"queued": 1}
    assert "invalid duration" in pgqueue(dsn, "prune", "--older-than", "soon", ok=False).stderr


@pytest.mark.parametrize("value", ["30", " 7\n", "0", "1.5"])
def test_prune_refuses_an_age_without_its_unit(dsn: str, value: str) -> None:
    """`prune --older-than 30`, meant as 30 days, deleted every job finished more than 30
    seconds ago, for good: a bare number was seconds. prune wants the unit written (usage
    error, exit 2, naming the spellings); --delay keeps bare seconds, harmless there."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '3 days'")
    result = pgqueue(dsn, "prune", "--older-than", value, ok=False)
    number = value.strip()
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--older-than': invalid duration {value!r}: write its unit,"
        f" as {number}s for seconds or {number}d for days (s, m, h, d or w): what prune deletes"
        " is gone for good"
    )
    assert states(dsn) == {"failed": 1}
    assert "deleted 1" in pgqueue(dsn, "prune", "--older-than", f"{number}s").stdout


def test_prune_dry_run_says_how_many_it_would_delete_and_deletes_none(dsn: str) -> None:
    """prune had no way to see what an age would take before it took it, for good (`--older-than
    30` is 30 seconds, not days). --dry-run counts the jobs it would delete, per state, and
    deletes none, with --older-than or with the app's retention."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '20 days'")
    done = pgqueue(dsn, "prune", "--older-than", "30s", "--dry-run")
    assert (done.stdout, done.stderr) == (
        "would delete 1 finished job (cancelled 0, failed 1, succeeded 0)\n",
        "dry run: nothing was deleted\n",
    )
    app = ("--app", "tests.acceptance.app_under_test:app")  # the default retention: 14 days
    done = pgqueue(dsn, *app, "prune", "--state", "succeeded", "--dry-run")
    assert done.stdout == "would delete 0 finished jobs (succeeded 0)\n"
    assert states(dsn) == {"failed": 1}
    assert pgqueue(dsn, *app, "prune").stdout == "deleted 1 finished job\n"


def test_prune_without_an_age_needs_the_app_whose_retention_it_applies(dsn: str) -> None:
    """Without --older-than nor --app, prune applied the default retention, deleting jobs
    that the user's app keeps longer (or for ever, with None); now it deletes nothing and
    says what to pass. With --app it applies that app's retention."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '20 days'")
    result = pgqueue(dsn, "prune", "--state", "failed", ok=False)
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "Error: no app given: pass --app MODULE:ATTRIBUTE (or set PGQUEUE_APP) to apply its"
        " retention, or --older-than DURATION"
    ])  # fmt: skip
    assert states(dsn) == {"failed": 1}
    app = ("--app", "tests.acceptance.app_under_test:app")  # the default retention: 14 days
    assert pgqueue(dsn, *app, "prune").stdout.strip() == "deleted 1 finished job"
    shown = " ".join(pgqueue(dsn, "prune", "--help").stdout.split())  # it said "retention"
    assert (
        "--older-than DURATION Age, with its unit, e.g. 12h, 7d (default: the --app's"
        " retention)." in shown
    )


@pytest.mark.parametrize("command", DURATIONS)
@pytest.mark.parametrize("value", ["1e400", "99999999999w", "-1d"])
def test_a_duration_out_of_range_is_a_usage_error_naming_the_range(
    dsn: str, command: tuple[str, ...], value: str
) -> None:
    """It used to say "the database refused: interval (or timestamp) out of range", then
    exited 1 naming the range; a bad option value exits 2."""
    result = pgqueue(dsn, *command, value, ok=False)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (
        2, f"Error: Invalid value for '{command[-1]}': invalid duration {value!r}: must be from"
        " 0 to 1000 years"
    )  # fmt: skip


def test_cron_list_without_an_app_says_it_shows_only_the_database_schedules(dsn: str) -> None:
    """Without --app, cron list printed an empty table and no hint, and called a schedule with
    ticks "not in code: no longer fires", which it cannot know without the code. Now stderr
    says so and how to pass the app, and the table leaves the next tick unknown."""
    assert pgqueue(dsn, "cron", "list").stderr.strip().splitlines() == [NO_APP_FOR_CRON]
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick) VALUES ('nightly', now())")
    done = pgqueue(dsn, "cron", "list")
    assert done.stderr.strip().splitlines() == [NO_APP_FOR_CRON]
    [header, row] = done.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "SCHEDULE"]
    assert row.split()[:2] == ["nightly", "-"]
    assert row.endswith("unknown: no app given")


def test_cron_list_with_no_schedules_says_there_are_none(dsn: str) -> None:
    """An app that declares no schedule, on a database without ticks, printed the table's
    header alone; now one line says there are none (and where they would come from)."""
    app = ("--app", "tests.acceptance.app_under_test:app")  # tasks, no schedule
    assert pgqueue(dsn, *app, "cron", "list").stdout.splitlines() == [
        "no schedules: the app declares none (@app.periodic) and no ticks are stored"
    ]
    assert pgqueue(dsn, "cron", "list").stdout.splitlines() == [
        "no schedules with ticks in the database"
    ]


def test_cron_list_json_gives_each_schedule_for_scripts(dsn: str) -> None:
    """cron list had no --json, where every other listing has one: a script watching that a
    schedule ticks had to parse the table. --json prints an array of objects, times with their
    offset; without --app, whether a schedule is in code is unknown (null), as are its next tick
    and its options (coalesce, overlap, catch_up); one the code does not define has no
    schedule (null, not the table's "-")."""
    query(dsn, "INSERT INTO pgqueue.periodic_ticks (name, tick)"
               " VALUES ('nightly', '2026-01-02 03:04:05+00')")  # fmt: skip
    done = pgqueue(dsn, "cron", "list", "--json")
    assert done.stderr.strip().splitlines() == [NO_APP_FOR_CRON]
    [row] = json.loads(done.stdout)
    tick = datetime.fromisoformat(row.pop("last_tick"))  # in the session's time zone
    assert tick == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row == {
        "name": "nightly", "schedule": None, "next_tick": None, "in_code": None, "coalesce": None,
        "overlap": None, "catch_up": None,
    }  # fmt: skip
    app = ("--app", "tests.acceptance.periodic_app:app")
    rows = json.loads(pgqueue(dsn, *app, "cron", "list", "--json").stdout)
    assert [
        (r["name"], r["schedule"], r["in_code"], r["coalesce"], r["overlap"], r["catch_up"])
        for r in rows
    ] == [
        ("beat", "* * * * * * (UTC)", True, False, True, 600),
        ("nightly", None, False, None, None, None),
    ]  # fmt: skip
    assert rows[0]["last_tick"] is None and rows[0]["next_tick"].endswith("+00:00")
    query(dsn, "DELETE FROM pgqueue.periodic_ticks")
    assert json.loads(pgqueue(dsn, "cron", "list", "--json").stdout) == []


NO_APP_FOR_CRON = (
    "no app given: pass --app MODULE:ATTRIBUTE (or set PGQUEUE_APP) to list the schedules its"
    " code defines, with their next ticks; shown here are only the schedules with ticks in the"
    " database"
)


def test_healthcheck_checks_database_schema_and_worker(dsn: str, empty_dsn: str) -> None:
    """healthcheck exits 0 when all is well, 1 with one line when the schema, worker or DB isn't."""
    assert pgqueue(dsn, "healthcheck").stdout.strip() == "ok"
    assert "pgqueue migrate" in pgqueue(empty_dsn, "healthcheck", ok=False).stderr
    assert "w1" in pgqueue(dsn, "healthcheck", "--worker", "w1", ok=False).stderr
    query(dsn, "INSERT INTO pgqueue.worker_processes (id, hostname, pid, queues, version,"
               " heartbeat_s) VALUES ('w1', 'host', 42, '{}', '0.1.0', 10)")  # fmt: skip
    pgqueue(dsn, "healthcheck", "--worker", "w1")
    query(dsn, "UPDATE pgqueue.worker_processes SET last_seen_at = now() - interval '1 min'")
    pgqueue(dsn, "healthcheck", "--worker", "w1", ok=False)
    down = pgqueue("postgresql://postgres@127.0.0.1:1/x", "healthcheck", ok=False).stderr
    assert down.startswith("Error: cannot reach the database") and down.count("\n") == 1


def healthcheck_behind_a_lock(dsn: str, table: str, *args: str, via: str = "") -> str:
    """What ``healthcheck ARGS`` (on ``via``, else ``dsn``) ends with while another connection
    holds an ACCESS EXCLUSIVE lock on ``pgqueue.<table>``; it must exit 1."""
    with psycopg.connect(dsn) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier("pgqueue", table)))  # fmt: skip
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pgqueue", "--dsn", via or dsn, "healthcheck", *args],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise AssertionError("healthcheck waits for the lock") from None
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("table", "args"),
    [("worker_processes", ("--worker", "w1")), ("alembic_version", ())],
)
def test_healthcheck_held_up_by_a_lock_ends_with_one_line_naming_the_timeout(
    dsn: str, table: str, args: tuple[str, ...]
) -> None:
    """A lock held on a table healthcheck reads (a migration, a VACUUM FULL, a LOCK TABLE)
    made it wait for as long as the lock was held, until the orchestrator killed it: a
    timeout, not an answer. It now gives up after a few seconds, exit 1 with one line that
    says which timeout ended it."""
    stderr = healthcheck_behind_a_lock(dsn, table, *args)
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("Error: no answer within 3 s (canceling statement due to lock"
                             " timeout)"), stderr  # fmt: skip


def test_healthcheck_through_pgbouncer_gives_up_on_a_held_lock(dsn: str, pgbouncer: str) -> None:
    """Through PgBouncer in transaction mode too: the timeouts are set for the check's own
    transaction (SET LOCAL), which the pooler keeps on one server connection."""
    stderr = healthcheck_behind_a_lock(dsn, "worker_processes", "--worker", "w1", via=pgbouncer)
    assert "canceling statement due to lock timeout" in stderr, stderr


def test_worker_json_logs_and_metrics_port(dsn: str, conn: Any) -> None:
    """A CLI worker logs JSON lines, serves /metrics on its port and passes its healthcheck;
    its metrics_serving record names the address it bound beside the port (it had no addr)."""
    pytest.importorskip("prometheus_client")
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "tests.integration.tasks_app",
         "--log-format", "json", "--log-level", "debug", "worker", "-q", "io",
         "--metrics-port", "0", "--name", "w-json"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert worker.stderr is not None
    records: list[dict[str, Any]] = []
    try:
        for line in worker.stderr:
            records.append(json.loads(line))
            if {r.get("action") for r in records} >= {"metrics_serving", "job_succeeded"}:
                break
        serving = next(r for r in records if r.get("action") == "metrics_serving")
        assert serving["addr"] == "0.0.0.0"
        url = f"http://127.0.0.1:{serving['port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        assert pgqueue(dsn, "healthcheck", "--worker", "w-json").stdout.strip() == "ok"
    finally:
        worker.send_signal(signal.SIGTERM)
        rest = worker.stderr.read()
        worker.stderr.close()
        assert worker.wait(30) == 0, rest
    started = next(r for r in records if r.get("action") == "worker_started")
    assert (started["worker"], started["queues"]) == ("w-json", {"io": 10})
    done = next(r for r in records if r.get("action") == "job_succeeded")
    assert {"job_id", "task", "queue", "attempt", "duration_ms"} <= set(done)
    assert 'pgqueue_jobs_finished_total{queue="io",state="succeeded",task=' in text


def test_worker_whose_metrics_port_is_in_use_exits_1_before_claiming(dsn: str) -> None:
    """A worker asked for metrics on a port another socket holds used to log a service_error
    and run on without them (with --burst, run its jobs and exit 0): an operator who asked for
    metrics silently got none. Now it exits 1 before claiming anything, with one line naming
    the port and the OS's error."""
    pytest.importorskip("prometheus_client")
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = pgqueue(dsn, "--app", "tests.integration.tasks_app", "worker", "-q", "io",
                       "--burst", "--metrics-port", str(port), ok=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot serve metrics on 0.0.0.0 port {port}: [Errno {errno.EADDRINUSE}]"
        f" {os.strerror(errno.EADDRINUSE)}"
    ]
    assert states(dsn) == {"queued": 1}
    assert query(dsn, "SELECT attempts FROM pgqueue.jobs") == [(0,)]
    assert query(dsn, "SELECT id FROM pgqueue.worker_processes") == []


def test_worker_binds_its_metrics_to_the_address_given(dsn: str) -> None:
    """The metrics port was bound on every interface, whatever the host: --metrics-addr
    binds it to one address (here one this host does not have: TEST-NET-3, so the bind
    fails), and the error names it; nothing is claimed."""
    pytest.importorskip("prometheus_client")
    query(dsn, "SELECT pgqueue.enqueue('tests.integration.tasks_app.add', '[1, 2]', queue => 'io')")
    done = pgqueue(dsn, "--app", "tests.integration.tasks_app", "worker", "-q", "io", "--burst",
                   "--metrics-port", "0", "--metrics-addr", "203.0.113.7", ok=False)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: cannot serve metrics on 203.0.113.7 port 0: [Errno {errno.EADDRNOTAVAIL}]"
        f" {os.strerror(errno.EADDRNOTAVAIL)}"
    ]
    assert states(dsn) == {"queued": 1}
    served = pgqueue(dsn, "--app", "tests.integration.tasks_app", "--log-level", "info",
                     "worker", "-q", "io", "--burst", "--metrics-port", "0",
                     "--metrics-addr", "127.0.0.1")  # fmt: skip
    assert "serving metrics on 127.0.0.1 port " in served.stderr
    assert states(dsn) == {"succeeded": 1}


def test_jobs_list_table_shortens_long_errors_json_keeps_them(dsn: str) -> None:
    """A long or multi-line error is cut to one short line in the table, whole in JSON."""
    job_id = failed_job(dsn)
    long_error = "ValueError: " + "x" * 200 + "\nsecond line"
    query(dsn, "UPDATE pgqueue.finished_jobs SET last_error = %s", [long_error])
    [_, row] = pgqueue(dsn, "jobs", "list").stdout.splitlines()
    assert row.startswith(str(job_id)) and row.endswith("...") and len(row) < 200
    [job] = json.loads(pgqueue(dsn, "jobs", "list", "--json").stdout)
    assert job["last_error"] == long_error


def test_jobs_show_says_a_running_job_was_asked_to_cancel_and_its_unique_key(dsn: str) -> None:
    """After `jobs cancel` said a running job's worker would stop it, `jobs show` showed it
    running as before, and never its unique key (which a retry of it may find held): both are
    shown now."""
    [(job_id,)] = query(dsn, "SELECT pgqueue.enqueue('t', queue => 'q', unique_key => 'k-1')")
    query(dsn, "UPDATE pgqueue.active_jobs SET state = 'running', attempts = 1,"
               " worker_id = 'w', lease_expires_at = now() + interval '1 h'")  # fmt: skip
    said = pgqueue(dsn, "jobs", "cancel", str(job_id)).stdout
    assert said == f"job {job_id} is running: its worker will stop it at its next heartbeat\n"
    shown = pgqueue(dsn, "jobs", "show", str(job_id)).stdout.splitlines()
    assert shown[0] == f"job {job_id}: t on queue q, running, asked to cancel"
    assert '  unique key    "k-1"' in shown


def test_control_characters_of_a_job_are_shown_escaped_not_sent_to_the_terminal(
    dsn: str,
) -> None:
    """An error text, traceback or task name holding control characters (an ANSI colour, a
    terminal's title sequence, a bell, a tab) went raw to the operator's terminal: `jobs list`
    and `jobs show` could retitle or clear it, and a tab pushed the row's columns out of line.
    They are written as escapes (``\\x1b``, ``\\t``); JSON keeps the text as it is."""
    job_id = failed_job(dsn)
    error = "Boom \x1b]0;pwned\x07 \x1b[31mred\ttab"
    query(dsn, "UPDATE pgqueue.finished_jobs SET task = 'se\tnd', last_error = %s,"
               " errors = jsonb_build_array(jsonb_build_object('attempt', 1, 'error', %s::text,"
               " 'traceback', %s::text))",
          [error, error, "Traceback\n  \x1b[2J\r\nBoom"])  # fmt: skip
    for command in (["jobs", "list"], ["jobs", "show", str(job_id)]):
        out = pgqueue(dsn, *command).stdout
        assert not {"\x1b", "\x07", "\r", "\t"} & set(out), repr(out)
        assert "Boom \\x1b]0;pwned\\x07 \\x1b[31mred\\ttab" in out
    header, row = pgqueue(dsn, "jobs", "list").stdout.splitlines()
    assert row.index("Boom") == header.index("LAST_ERROR")
    assert row.split()[1] == "se\\tnd"
    shown = pgqueue(dsn, "jobs", "show", str(job_id)).stdout.splitlines()
    assert shown[0] == f"job {job_id}: se\\tnd on queue mail, failed"
    assert "      \\x1b[2J" in shown and "    Boom" in shown
    [job] = json.loads(pgqueue(dsn, "jobs", "list", "--json").stdout)
    assert job["last_error"] == error


def test_prune_by_an_apps_retention_says_which_states_it_keeps_forever(
    dsn: str, tmp_path: Path
) -> None:
    """With an app that keeps failed jobs forever (retention None), `prune --state failed`
    said "deleted 0 finished jobs" as if none were old enough. It still deletes none, and says
    on stderr that the app keeps them forever and what prunes them all the same."""
    failed_job(dsn)
    query(dsn, "UPDATE pgqueue.finished_jobs SET finished_at = now() - interval '400 days'")
    (tmp_path / "keeper.py").write_text(
        "import pgqueue\napp = pgqueue.PgQueue(retention={'failed': None})\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "--app", "keeper", "prune", "--state",
         "failed"], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "deleted 0 finished jobs\n", (
        "the app 'keeper' keeps failed jobs forever (its retention is None): pass --older-than"
        " DURATION to prune them\n"
    ))  # fmt: skip
    assert states(dsn) == {"failed": 1}


def _failed_jobs(dsn: str, count: int) -> list[int]:
    """``count`` failed jobs of task ``t``, ids 1 to ``count``."""
    rows = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at) SELECT n, 'q', 't', '[]', '{}', 'failed',"
        " 0, 1, 1, now(), now() FROM generate_series(1, %s) AS n RETURNING id",
        [count],
    )
    return [int(r[0]) for r in rows]


def _wait_for_lock_wait(dsn: str, text: str) -> None:
    """Wait until another session runs a statement holding ``text`` and waits for a lock."""
    for _ in range(3000):
        waiting = query(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s AND pid <> pg_backend_pid()",
            [f"%{text}%"],
        )
        if waiting == [(1,)]:
            return
        time.sleep(0.01)
    raise AssertionError(f"no statement of {text!r} waited for a lock")


def _retry_held_at_job_3(
    dsn: str, holder: psycopg.Connection[Any], preexec_fn: Any = None
) -> subprocess.Popen[str]:
    """`jobs retry --failed --batch-size 2` once its first batch is done and its second waits
    for job 3, which ``holder`` locks."""
    holder.execute("SELECT 1 FROM pgqueue.finished_jobs WHERE id = 3 FOR UPDATE")
    run = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "jobs", "retry", "--failed",
         "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, preexec_fn=preexec_fn,
    )  # fmt: skip
    assert run.stderr is not None
    assert run.stderr.readline() == "requeued 2 failed jobs so far\n"
    _wait_for_lock_wait(dsn, "pgqueue.retry")
    return run


def _first_ctrl_c(run: subprocess.Popen[str]) -> None:
    """A first SIGINT to ``run``, once it says it stops after the batch running."""
    run.send_signal(signal.SIGINT)
    assert run.stderr is not None
    assert run.stderr.readline().startswith("stopping after the batch running")


def test_jobs_retry_failed_commits_batches_and_stops_after_one_on_ctrl_c(dsn: str) -> None:
    """`jobs retry --failed` was one transaction (86 s for 400,000 jobs), silent until done,
    and Ctrl-C rolled it all back. It commits a batch at a time in id order, says on stderr how
    many so far, and on SIGINT stops after the batch running, saying how many it requeued and
    that a re-run continues, which requeues the rest."""
    ids = _failed_jobs(dsn, 5)
    with psycopg.connect(dsn) as holder:  # holds job 3: the second batch (3, 4) waits for it
        run = _retry_held_at_job_3(dsn, holder)
        run.send_signal(signal.SIGINT)
        said = "stopping after the batch running (Ctrl-C again to abandon it)\n"
        assert run.stderr.readline() == said
        holder.rollback()
        out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, "requeued 4 failed jobs\n")
    assert err == (
        "requeued 4 failed jobs so far\ninterrupted after a batch, whose jobs stay requeued:"
        " run the command again to requeue the rest\n"
    )
    assert query(dsn, "SELECT id FROM pgqueue.finished_jobs") == [(ids[4],)]
    done = pgqueue(dsn, "jobs", "retry", "--failed", "--batch-size", "2")
    assert (done.stdout, done.stderr) == (
        "requeued 1 failed job\n",
        "requeued 1 failed job so far\n",
    )
    assert states(dsn) == {"queued": 5}


def test_jobs_retry_failed_says_what_it_requeued_before_an_error(dsn: str) -> None:
    """A batch that fails (here on a statement timeout while a job is held) ends the command
    with the error, after a line saying how many jobs the batches before requeued for good."""
    _failed_jobs(dsn, 3)
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM pgqueue.finished_jobs WHERE id = 3 FOR UPDATE")
        done = subprocess.run(
            [sys.executable, "-m", "pgqueue", "--dsn", dsn, "jobs", "retry", "--failed",
             "--batch-size", "2"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PGOPTIONS": "-c lock_timeout=200"},
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines()[-2:] == [
        "requeued 2 failed jobs (they stay requeued); run the command again to requeue the rest",
        "Error: the database refused: canceling statement due to lock timeout (LockNotAvailable)",
    ]
    assert states(dsn) == {"queued": 2, "failed": 1}


@pytest.mark.parametrize(
    ("command", "error"),
    [(("jobs", "list", "--queue", ""), "'--queue': invalid queue name ''"),
     (("jobs", "list", "--queue", "  "), "'--queue': invalid queue name ''"),
     (("jobs", "list", "--queue", "a b"), "'--queue': invalid queue name 'a b'"),
     (("jobs", "list", "--task", ""), "'--task': invalid task name ''"),
     (("jobs", "list", "--task", "x" * 256), "'--task': invalid task name 'xxx"),
     (("jobs", "retry", "--failed", "--task", ""), "'--task': invalid task name ''"),
     (("jobs", "retry", "--failed", "--batch-size", "0"), "'--batch-size': 0 is not in the range"),
     (("jobs", "retry", "--failed", "--batch-size", "-3"),
      "'--batch-size': -3 is not in the range"),
     (("enqueue", ""), "'TASK': invalid task name ''"),
     (("enqueue", " t"), "'TASK': invalid task name ' t': it is blank, or begins or ends"),
     (("enqueue", "t", "--queue", ""), "'--queue': invalid queue name ''"),
     (("enqueue", "t", "--queue", "mail/x"), "'--queue': invalid queue name 'mail/x'")],
)  # fmt: skip
def test_an_empty_or_invalid_name_is_a_usage_error(
    dsn: str, command: tuple[str, ...], error: str
) -> None:
    """`--queue ''` exited 1 after connecting ("invalid queue name"), where `--state ''` is a
    usage error (exit 2): every option's or argument's value that cannot be a name is one now,
    before any SQL, and nothing is enqueued."""
    result = pgqueue(dsn, *command, ok=False)
    assert result.returncode == 2, result.stderr
    assert usage_error(result.stderr).startswith(f"Error: Invalid value for {error}")
    assert states(dsn) == {}


def test_a_queue_filter_ignores_whitespace_around_it(dsn: str) -> None:
    """`--queue "$QUEUE"` with a trailing newline finds the queue, as `--dsn` or a number would."""
    job_id = int(pgqueue(dsn, "enqueue", "t", "--queue", " mail\n").stdout)
    [row] = json.loads(pgqueue(dsn, "jobs", "list", "--queue", "mail\n", "--json").stdout)
    assert (row["id"], row["queue"]) == (job_id, "mail")


def test_jobs_retry_refuses_a_batch_size_without_failed(dsn: str) -> None:
    """--batch-size, like --task, only goes with --failed: a usage error, not ignored."""
    done = pgqueue(dsn, "jobs", "retry", "5", "--batch-size", "3", ok=False)
    assert (done.returncode, usage_error(done.stderr)) == (
        2, "Error: --batch-size only goes with --failed"
    )  # fmt: skip


def test_wide_characters_keep_a_tables_columns_in_line(dsn: str) -> None:
    """A task name or error of CJK characters or emoji (two columns each on a terminal) pushed
    the columns after it out of line, by one column per such character, and a long one was cut
    to 60 characters, up to 120 columns. Columns are padded and cut by display width, combining
    marks and zero-width joiners taking none."""
    insert = (
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, finished_at, last_error)"
        " VALUES (%s, 'q', %s, '[]', '{}', 'failed', 0, 1, 1, now(), '2026-01-01', '2026-01-01',"
        " %s)"
    )
    for row in ((1, "send", "plain"), (2, "送信メール", "📧 失敗"),
                (3, "cafe\u0301👩\u200d💻", "エラー" * 30)):  # fmt: skip
        query(dsn, insert, row)
    env = {**os.environ, "PGTZ": "UTC"}
    out = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "jobs", "list"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env, check=True,
    ).stdout.splitlines()  # fmt: skip
    day = "2026-01-01 00:00:00"
    header = "ID  TASK        QUEUE  STATE   ATTEMPTS  CREATED_AT           FINISHED_AT"
    assert out == [
        f"{header}          LAST_ERROR",
        f"3   cafe\u0301👩\u200d💻    q      failed  1         {day}  {day}  {'エラー' * 9}エ...",
        f"2   送信メール  q      failed  1         {day}  {day}  📧 失敗",
        f"1   send        q      failed  1         {day}  {day}  plain",
    ]


def test_bidirectional_controls_in_a_table_are_shown_escaped(dsn: str) -> None:
    """A task name holding U+202E (right-to-left override) made a terminal that applies it
    show the rest of the row reversed; it is written as an escape, as control characters are."""
    pgqueue(dsn, "enqueue", "evil\u202etxt.exe")
    [_, row] = pgqueue(dsn, "jobs", "list").stdout.splitlines()
    assert row.split()[1] == "evil\\u202etxt.exe"


def test_prune_says_what_it_deleted_before_an_error(dsn: str) -> None:
    """prune commits a batch of 1000 at a time, but a failure in a later batch ended it with
    the error alone, as though nothing had been deleted. A line on stderr now says how many
    jobs the batches before deleted for good, then the error; before it, each batch's
    progress line (none was said: a prune of millions was silent for minutes)."""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'q', 't',"
               " '[]', '{}', 'succeeded', 0, 1, 1, now(), now(),"
               " now() - interval '30 days' + make_interval(secs => n)"
               " FROM generate_series(1, 1001) AS n")  # fmt: skip
    query(dsn, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " RAISE EXCEPTION 'job % is kept', OLD.id; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER keep BEFORE DELETE ON pgqueue.finished_jobs FOR EACH ROW"
               " WHEN (OLD.id = 1001) EXECUTE FUNCTION refuse()")  # fmt: skip
    done = pgqueue(dsn, "prune", "--older-than", "7d", ok=False)
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (1, "", [
        "deleted 1000 finished jobs so far",
        "deleted 1000 finished jobs (they stay deleted); run the command again to delete the"
        " rest",
        "Error: the database refused: job 1001 is kept (RaiseException)",
    ])  # fmt: skip
    assert states(dsn) == {"succeeded": 1}


def _prune_held_at_job_1001(dsn: str, holder: psycopg.Connection[Any]) -> subprocess.Popen[str]:
    """`prune --older-than 7d` of 1001 old jobs once its first batch (1000) is done, which it
    says on stderr, and its second, job 1001, waits for a lock ``holder`` takes."""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'q', 't',"
               " '[]', '{}', 'succeeded', 0, 1, 1, now(), now(),"
               " now() - interval '30 days' + make_interval(secs => n)"
               " FROM generate_series(1, 1001) AS n")  # fmt: skip
    query(dsn, "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " PERFORM pg_advisory_xact_lock_shared(120); RETURN OLD; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER hold BEFORE DELETE ON pgqueue.finished_jobs FOR EACH ROW"
               " WHEN (OLD.id = 1001) EXECUTE FUNCTION hold()")  # fmt: skip
    holder.execute("SELECT pg_advisory_xact_lock(120)")
    run = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--dsn", dsn, "prune", "--older-than", "7d"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.stderr is not None
    assert run.stderr.readline() == "deleted 1000 finished jobs so far\n"
    _wait_for_lock_wait(dsn, "DELETE FROM pgqueue.finished_jobs")
    return run


def test_prune_interrupted_says_what_it_deleted_and_exits_130(dsn: str) -> None:
    """Ctrl-C during a prune of a big history ended it with click's "Aborted!" and exit 1,
    saying nothing of the batches it had committed. As `jobs retry --failed`: a first Ctrl-C
    stops after the batch running, a second abandons it (rolled back); it says how many jobs
    it deleted (they stay deleted), that a new run deletes the rest, and exits 130."""
    with psycopg.connect(dsn) as holder:  # the second batch (job 1001) waits for it
        run = _prune_held_at_job_1001(dsn, holder)
        _first_ctrl_c(run)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, "deleted 1000 finished jobs\n")
    assert err == (
        "interrupted: the batch running was rolled back, the jobs deleted before it stay"
        " deleted; run the command again to delete the rest\n"
    )
    assert states(dsn) == {"succeeded": 1}


def test_prune_interrupted_after_a_batch_committed_counts_it(dsn: str) -> None:
    """A Ctrl-C once the server had committed the batch running, but before its reply was
    read (here: the command stopped until then), said "deleted 1000" and that a batch running
    was rolled back unless it had just ended, though all 1001 jobs were deleted. It stops after
    the batch running, counted."""
    with psycopg.connect(dsn) as holder:
        run = _prune_held_at_job_1001(dsn, holder)
        run.send_signal(signal.SIGSTOP)
        holder.rollback()  # the batch (1001) commits while the command cannot read its reply
        while query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs") != [(0,)]:
            time.sleep(0.01)
        run.send_signal(signal.SIGINT)
        run.send_signal(signal.SIGCONT)
        out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, "deleted 1001 finished jobs\n")
    assert err.endswith("interrupted after a batch, whose jobs stay deleted: run the command"
                        " again to delete the rest\n"), err  # fmt: skip


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (its SigIgn mask in /proc), rather than catch it."""
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":\t" in line)  # fmt: skip
    return bool(int(status["SigIgn"], 16) >> (signal.SIGINT - 1) & 1)


def test_a_second_ctrl_c_after_the_batch_committed_counts_it(dsn: str) -> None:
    """A second SIGINT raised KeyboardInterrupt wherever the command was: once the server had
    committed the batch running but before its reply was read (here: the command stopped
    until then), it said the batch was rolled back and left its jobs out of the count, though
    they were requeued. It cancels the statement instead: one that already ended is counted."""
    _failed_jobs(dsn, 5)
    with psycopg.connect(dsn) as holder:
        run = _retry_held_at_job_3(dsn, holder)
        _first_ctrl_c(run)
        run.send_signal(signal.SIGSTOP)
        holder.rollback()  # the batch (3, 4) commits while the command cannot read its reply
        while query(dsn, "SELECT count(*) FROM pgqueue.finished_jobs") != [(1,)]:
            time.sleep(0.01)
        run.send_signal(signal.SIGINT)
        run.send_signal(signal.SIGCONT)
        out, err = run.communicate(timeout=60)
    assert query(dsn, "SELECT id FROM pgqueue.finished_jobs") == [(5,)]
    assert (run.returncode, out) == (130, "requeued 4 failed jobs\n")
    assert err.endswith("interrupted after a batch, whose jobs stay requeued: run the command"
                        " again to requeue the rest\n")  # fmt: skip


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_jobs_retry_failed_leaves_an_ignored_sigint_ignored(dsn: str) -> None:
    """A command started with SIGINT ignored (`cmd &` in a script, as nohup-like wrappers
    do) must not be stopped by the terminal's Ctrl-C: retry --failed installed its own
    handler whatever it replaced, and a Ctrl-C meant for the script stopped the run."""
    _failed_jobs(dsn, 5)
    with psycopg.connect(dsn) as holder:
        run = _retry_held_at_job_3(
            dsn, holder, lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
        )
        assert _ignores_sigint(run.pid)
        run.send_signal(signal.SIGINT)
        holder.rollback()
        out, _ = run.communicate(timeout=60)
    assert (run.returncode, out) == (0, "requeued 5 failed jobs\n")
    assert states(dsn) == {"queued": 5}


def test_a_second_ctrl_c_abandons_the_batch_running_which_rolls_back(dsn: str) -> None:
    """A second SIGINT does not wait for the batch running (here on a job another session
    holds): the batch is cancelled and rolled back, the batches before stay requeued, and it
    says so and exits 130."""
    _failed_jobs(dsn, 5)
    with psycopg.connect(dsn) as holder:
        run = _retry_held_at_job_3(dsn, holder)
        _first_ctrl_c(run)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
        holder.rollback()
    assert (run.returncode, out) == (130, "requeued 2 failed jobs\n")
    assert err == (
        "interrupted: the batch running was rolled back, the jobs requeued before it stay"
        " requeued; run the command again to requeue the rest\n"
    )
    assert query(dsn, "SELECT id FROM pgqueue.finished_jobs ORDER BY id") == [(3,), (4,), (5,)]


def test_a_role_that_may_not_read_the_schema_revision_runs_what_it_may(dsn: str) -> None:
    """A custom read-only role (SELECT on pgqueue.jobs, not on alembic_version) listed jobs
    until every command read the revision first: then each refused with "permission denied
    for table alembic_version". The check is left out for it, on a connection left usable
    (not aborted) for the command's own statements; what it may not do is still refused."""
    job_id = int(pgqueue(dsn, "enqueue", "x").stdout)
    role = f"pgq_ro_{os.urandom(5).hex()}"
    name = sql.Identifier(role)
    query(dsn, sql.SQL("CREATE ROLE {0} LOGIN; GRANT USAGE ON SCHEMA pgqueue TO {0};"
                       " GRANT SELECT ON pgqueue.jobs TO {0}").format(name))  # fmt: skip
    try:
        as_role = psycopg.conninfo.make_conninfo(dsn, user=role)
        listed = json.loads(pgqueue(as_role, "jobs", "list", "--json").stdout)
        assert [row["id"] for row in listed] == [job_id]
        refused = pgqueue(as_role, "stats", ok=False)
        assert "permission denied for table active_jobs" in refused.stderr
        # enqueue runs in a transaction, which the refused read had left aborted.
        grant = sql.SQL("GRANT SELECT, INSERT ON pgqueue.active_jobs TO {0};"
                        " GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgqueue TO {0}")  # fmt: skip
        query(dsn, grant.format(name))
        second = int(pgqueue(as_role, "enqueue", "x").stdout)
        assert query(dsn, "SELECT task FROM pgqueue.jobs WHERE id = %s", [second]) == [("x",)]
    finally:
        query(dsn, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(name))


def _records(stderr: str) -> list[tuple[str, str, str]]:
    """Each line of ``stderr`` read as a JSON record: its action, level and message."""
    return [(r["action"], r["level"], r["message"]) for r in map(json.loads, stderr.splitlines())]


def test_notes_on_stderr_are_json_records_with_json_logs(dsn: str) -> None:
    """With --log-format json, what a command says on stderr is a JSON record a log pipeline
    can read, with an action: its notes stayed lines of text in the stream (a unique key held,
    a dry run, the progress of batches on a pipe). Stdout, the answer, stays as it was."""
    as_json = ("--log-format", "json")
    _failed_jobs(dsn, 2)
    query(dsn, "SELECT setval(pg_get_serial_sequence('pgqueue.active_jobs', 'id'), 2)")
    job_id = int(pgqueue(dsn, "enqueue", "t", "--unique-key", "k").stdout)
    again = pgqueue(dsn, *as_json, "enqueue", "t", "--unique-key", "k")
    assert int(again.stdout) == job_id
    held = f"job {job_id} is already queued or running with unique key 'k': nothing enqueued"
    assert _records(again.stderr) == [("enqueue_duplicate", "info", held)]
    dry = pgqueue(dsn, *as_json, "jobs", "retry", "--failed", "--dry-run")
    assert (dry.stdout, _records(dry.stderr)) == (
        "would requeue 2 failed jobs\n", [("dry_run", "info", "dry run: nothing was requeued")]
    )  # fmt: skip
    done = pgqueue(dsn, *as_json, "jobs", "retry", "--failed", "--batch-size", "1")
    assert (done.stdout, _records(done.stderr)) == ("requeued 2 failed jobs\n", [
        ("batch_committed", "info", "requeued 1 failed job so far"),
        ("batch_committed", "info", "requeued 2 failed jobs so far"),
    ])  # fmt: skip


def _throttled(
    dsn: str, every: float, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI run as :func:`pgqueue` runs it, with progress lines on a pipe at most one
    every ``every`` seconds (a run of a few seconds then shows how they are held back, with
    no test waiting for them)."""
    code = (f"import pgqueue._cli as c, pgqueue._cli_ops as o; o.PROGRESS_EVERY = {every!r};"
            " c.main()")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", code, "--dsn", dsn, *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def test_progress_on_a_pipe_is_the_first_batch_then_the_total(dsn: str) -> None:
    """On a pipe, prune and `jobs retry --failed` wrote a progress line per batch (10,000 lines
    for a prune of 10 million jobs). They say the first batch at once, then at most a line
    every PROGRESS_EVERY seconds, and last the exact total: within an interval, two lines."""
    _failed_jobs(dsn, 60)
    done = _throttled(dsn, 3600, "jobs", "retry", "--failed", "--batch-size", "1")
    assert (done.stdout, done.stderr) == (
        "requeued 60 failed jobs\n",
        "requeued 1 failed job so far\nrequeued 60 failed jobs so far\n",
    )
    assert states(dsn) == {"queued": 60}
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'q', 't',"
               " '[]', '{}', 'succeeded', 0, 1, 1, now(), now(), now() - interval '30 days'"
               " FROM generate_series(100, 5599) AS n")  # fmt: skip
    pruned = _throttled(dsn, 3600, "--log-format", "json", "prune", "--older-than", "7d")
    assert (pruned.stdout, _records(pruned.stderr)) == ("deleted 5500 finished jobs\n", [
        ("batch_committed", "info", "deleted 1000 finished jobs so far"),
        ("batch_committed", "info", "deleted 5500 finished jobs so far"),
    ])  # fmt: skip


def test_progress_on_a_pipe_every_batch_when_the_interval_has_passed(dsn: str) -> None:
    """With the interval passed at each batch (here 0 s), a pipe sees each batch's line, and
    the total once: the throttle holds lines back, it neither drops nor repeats the last."""
    _failed_jobs(dsn, 5)
    done = _throttled(dsn, 0, "jobs", "retry", "--failed", "--batch-size", "2")
    assert (done.stdout, done.stderr.splitlines()) == ("requeued 5 failed jobs\n", [
        "requeued 2 failed jobs so far",
        "requeued 4 failed jobs so far",
        "requeued 5 failed jobs so far",
    ])  # fmt: skip


def test_progress_on_a_pipe_says_no_count_twice(dsn: str) -> None:
    """A last batch that requeues nothing (a failed job whose unique key a queued job holds)
    repeated the count so far: held back, it was said again as the total. The last line is
    the total, said once."""
    query(dsn, "SELECT setval(pg_get_serial_sequence('pgqueue.active_jobs', 'id'), 10)")
    _failed_jobs(dsn, 2)
    query(dsn, "UPDATE pgqueue.finished_jobs SET unique_key = 'k' WHERE id = 2")
    query(dsn, "SELECT pgqueue.enqueue('t', queue => 'q', unique_key => 'k')")
    done = _throttled(dsn, 3600, "jobs", "retry", "--failed", "--batch-size", "1")
    assert (done.stdout, done.stderr) == (
        "requeued 1 failed job\n",
        "requeued 1 failed job so far\n",
    )


def _old_jobs(dsn: str, count: int) -> None:
    """Succeeded jobs 1 to ``count``, finished 30 days ago (in id order): pruned by
    ``--older-than 7d`` in batches of 1000."""
    query(dsn, "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
               " attempts, max_attempts, run_at, created_at, finished_at) SELECT n, 'q', 't',"
               " '[]', '{}', 'succeeded', 0, 1, 1, now(), now(),"
               " now() - interval '30 days' + make_interval(secs => n)"
               " FROM generate_series(1, %s) AS n", [count])  # fmt: skip


def test_progress_on_a_pipe_says_the_count_held_back_before_an_error(dsn: str) -> None:
    """A batch that fails after batches whose counts were held back: the last of them is said
    before the line saying what stays deleted and the error, so the log's last count is the
    exact total."""
    _old_jobs(dsn, 3001)
    query(dsn, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " RAISE EXCEPTION 'job % is kept', OLD.id; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER keep BEFORE DELETE ON pgqueue.finished_jobs FOR EACH ROW"
               " WHEN (OLD.id = 3001) EXECUTE FUNCTION refuse()")  # fmt: skip
    done = _throttled(dsn, 3600, "prune", "--older-than", "7d", ok=False)
    assert (done.returncode, done.stdout, done.stderr.splitlines()) == (1, "", [
        "deleted 1000 finished jobs so far",
        "deleted 3000 finished jobs so far",
        "deleted 3000 finished jobs (they stay deleted); run the command again to delete the"
        " rest",
        "Error: the database refused: job 3001 is kept (RaiseException)",
    ])  # fmt: skip


def test_progress_on_a_pipe_says_the_count_held_back_at_a_ctrl_c(dsn: str) -> None:
    """A first Ctrl-C while a batch runs, the count of the one before held back: it is said
    before "stopping after the batch running", and the batch running's after it, before the
    total: the last count on stderr is the exact total."""
    _old_jobs(dsn, 2001)
    query(dsn, "CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
               " PERFORM pg_advisory_xact_lock_shared(120); RETURN OLD; END $$")  # fmt: skip
    query(dsn, "CREATE TRIGGER hold BEFORE DELETE ON pgqueue.finished_jobs FOR EACH ROW"
               " WHEN (OLD.id = 2001) EXECUTE FUNCTION hold()")  # fmt: skip
    code = "import pgqueue._cli as c, pgqueue._cli_ops as o; o.PROGRESS_EVERY = 3600; c.main()"
    with psycopg.connect(dsn) as holder:  # the third batch (job 2001) waits for it
        holder.execute("SELECT pg_advisory_xact_lock(120)")
        run = subprocess.Popen(
            [sys.executable, "-c", code, "--dsn", dsn, "prune", "--older-than", "7d"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert run.stderr is not None
        assert run.stderr.readline() == "deleted 1000 finished jobs so far\n"
        _wait_for_lock_wait(dsn, "DELETE FROM pgqueue.finished_jobs")
        run.send_signal(signal.SIGINT)
        assert run.stderr.readline() == "deleted 2000 finished jobs so far\n"
        assert run.stderr.readline().startswith("stopping after the batch running")
        holder.rollback()
        out, err = run.communicate(timeout=60)
    assert (run.returncode, out) == (130, "deleted 2001 finished jobs\n")
    assert err == (
        "deleted 2001 finished jobs so far\ninterrupted after a batch, whose jobs stay deleted:"
        " run the command again to delete the rest\n"
    )
