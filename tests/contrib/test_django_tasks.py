"""The django.tasks backend: atomic enqueue, results from any process, signals, options."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.contrib.conftest import subprocess_env
from tests.contrib.test_django import MANAGE
from tests.helpers import query, run_worker_until, states


@pytest.fixture
def shop(tasks_flavour: str, django_db: str):
    """The test shop's tasks (django.tasks ones included), with its Order table created."""
    from django.core.management import call_command

    call_command("migrate", "shop", verbosity=0)
    from tests.contrib.django_project.shop import tasks

    return tasks


async def _run_all(dsn: str, count: int) -> None:
    """Run an in-process worker on both queues until ``count`` jobs are finished."""
    from pgqueue.contrib.django import app

    def finished() -> bool:
        done = states(dsn)
        return sum(done.get(s, 0) for s in ("succeeded", "failed", "cancelled")) == count

    worker = app.worker(dsn=dsn, queues=["default", "emails"], poll_interval=0.05)
    await run_worker_until(worker, finished)


def test_enqueue_inside_atomic_rolls_back_with_the_orm_writes(shop, django_db: str) -> None:
    """A django.tasks enqueue inside a rolled-back atomic() leaves no job (and no order)."""
    from django.db import transaction

    from tests.contrib.django_project.shop.models import Order

    with pytest.raises(RuntimeError), transaction.atomic():
        order = Order.objects.create(email="x@example.com")
        shop.mark_sent.enqueue(order.id)
        raise RuntimeError("rolled back")
    assert states(django_db) == {}


async def test_committed_task_runs_and_get_result_round_trips(shop, django_db: str) -> None:
    """commit → the worker runs it; get_result (a fresh read) shows SUCCESSFUL and the value."""
    from asgiref.sync import sync_to_async

    result = await sync_to_async(shop.add.enqueue)(2, 3)
    assert result.status == "READY"
    assert result.enqueued_at is not None
    assert (result.args, result.kwargs, result.backend) == ([2, 3], {}, "default")
    await _run_all(django_db, 1)
    fresh = await sync_to_async(shop.add.get_result)(result.id)
    assert fresh.status == "SUCCESSFUL"
    assert fresh.return_value == 5
    assert fresh.attempts == 1
    assert fresh.started_at <= fresh.finished_at
    await result.arefresh()
    assert result.return_value == 5


async def test_async_tasks_and_context_run(shop, django_db: str) -> None:
    """An async task runs on the worker's loop; takes_context gets the attempt and result id."""
    from asgiref.sync import sync_to_async

    doubled = await shop.async_double.aenqueue(21)
    labelled = await sync_to_async(shop.which_attempt.enqueue)("first")
    await _run_all(django_db, 2)
    await asyncio.gather(doubled.arefresh(), labelled.arefresh())
    assert doubled.return_value == 42
    assert labelled.return_value == ["first", 1, labelled.id]


async def test_failures_are_failed_results_with_the_exception_class(shop, django_db) -> None:
    """A raising task is FAILED at once (no retry by default), with its exception's class."""
    from asgiref.sync import sync_to_async

    result = await sync_to_async(shop.explode.enqueue)()
    await _run_all(django_db, 1)
    await result.arefresh()
    assert result.status == "FAILED"
    assert [e.exception_class for e in result.errors] == [KeyError]
    assert "boom" in result.errors[0].traceback
    assert (result.is_finished, result.attempts, len(result.worker_ids)) == (True, 1, 1)
    assert result.enqueued_at <= result.last_attempted_at <= result.finished_at
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018 - Django raises rather than return None


def test_run_after_priority_and_queue_become_the_jobs_options(shop, django_db: str) -> None:
    """run_after → run_at, Django priority → pgqueue priority, queue_name → queue."""
    from django.utils import timezone

    later = timezone.now() + timedelta(hours=1)
    result = shop.mark_sent.using(run_after=later, priority=-7).enqueue(1)
    [(queue, priority, run_at)] = query(
        django_db, "SELECT queue, priority, run_at FROM pgqueue.jobs WHERE id = %s", [result.id]
    )
    assert (queue, priority, run_at) == ("emails", -7, later)
    assert shop.mark_sent.enqueue(2).status == "READY"
    assert query(django_db, "SELECT max(priority) FROM pgqueue.jobs") == [(50,)]


def test_whole_float_and_bool_priorities_django_accepts_are_enqueued(shop, django_db) -> None:
    """Django accepts any whole number (5.0, True) as a priority: so does the backend."""
    five = shop.add.using(priority=5.0).enqueue(1, 1)
    one = shop.add.using(priority=True).enqueue(1, 1)
    rows = query(django_db, "SELECT id, priority FROM pgqueue.jobs ORDER BY id")
    assert rows == [(int(five.id), 5), (int(one.id), 1)]


def test_a_bad_max_attempts_option_is_refused_when_the_backend_is_made(tasks_flavour) -> None:
    """OPTIONS["MAX_ATTEMPTS"] out of 1..1000, or not a whole number, is ImproperlyConfigured
    naming the option, instead of failing every enqueue; a string of digits is accepted."""
    from django.core.exceptions import ImproperlyConfigured

    from pgqueue.contrib.django import PgQueueBackend

    for bad in (0, 1001, 2.5, True, None, "three"):
        with pytest.raises(ImproperlyConfigured, match=r"\['MAX_ATTEMPTS'\] must be a whole"):
            PgQueueBackend("jobs", {"OPTIONS": {"MAX_ATTEMPTS": bad}})
    assert PgQueueBackend("jobs", {"OPTIONS": {"MAX_ATTEMPTS": "3"}}).max_attempts == 3


def test_an_unknown_option_is_refused_when_the_backend_is_made(tasks_flavour) -> None:
    """An OPTIONS key the backend does not know (a typo: "MAX_ATEMPTS") was ignored, and its
    tasks ran with the default (one attempt) without a word; it is ImproperlyConfigured
    naming it and the known ones. So is OPTIONS that is not a dict."""
    from django.core.exceptions import ImproperlyConfigured

    from pgqueue.contrib.django import PgQueueBackend

    known = "known: DATABASE, MAX_ATTEMPTS"
    with pytest.raises(ImproperlyConfigured, match=rf"'MAX_ATEMPTS', 'retries'; {known}$"):
        PgQueueBackend("jobs", {"OPTIONS": {"retries": 2, "MAX_ATEMPTS": 5}})
    with pytest.raises(ImproperlyConfigured, match=r"\['OPTIONS'\] must be a dict, got 'x'"):
        PgQueueBackend("jobs", {"OPTIONS": "x"})
    assert PgQueueBackend("jobs", {"OPTIONS": {"DATABASE": None}}).max_attempts == 1


def test_a_backend_on_another_database_than_pgqueues_is_a_system_check_error(
    tasks_flavour: str,
) -> None:
    """Workers run the jobs of PGQUEUE["DATABASE"]: a backend whose OPTIONS["DATABASE"] names
    another alias would enqueue where no worker looks. manage.py check (and every command that
    runs the checks, manage.py pgqueue worker too) refuses it, naming both; so does its
    enqueue, for a process started without the checks. The same alias is fine."""
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    from pgqueue.contrib.django import PgQueueBackend

    backend = "pgqueue.contrib.django.PgQueueBackend"
    tasks = {
        "default": {"BACKEND": backend, "OPTIONS": {"DATABASE": "default"}},
        "elsewhere": {"BACKEND": backend, "OPTIONS": {"DATABASE": "replica"}},
    }
    with override_settings(TASKS=tasks), pytest.raises(SystemCheckError) as refused:
        call_command("check")
    assert "pgqueue.E001" in str(refused.value)
    assert "TASKS['elsewhere']['OPTIONS']['DATABASE'] is 'replica'" in str(refused.value)
    assert "TASKS['default']" not in str(refused.value)
    with override_settings(TASKS={"default": tasks["default"]}):
        call_command("check")
    elsewhere = PgQueueBackend("elsewhere", tasks["elsewhere"])
    with pytest.raises(ImproperlyConfigured, match=r"PGQUEUE\['DATABASE'\] \('default'\)"):
        elsewhere.enqueue(None, [], {})


def test_run_after_pgqueue_cannot_hold_is_an_invalid_task_and_writes_nothing(shop, django_db):
    """A run_after Python could not read back (year 10000 in UTC) is refused by using(),
    before any SQL: it used to be inserted, then fail enqueue while reading the job back."""
    from datetime import datetime, timezone

    from pgqueue.contrib.django import _compat as dt

    far = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(dt.InvalidTask, match="run_at must be from 0001-01-02"):
        shop.add.using(run_after=far)
    assert states(django_db) == {}


async def test_signals_are_sent_on_enqueue_start_and_finish(shop, django_db: str) -> None:
    """task_enqueued at enqueue; task_started and task_finished around the run in the worker."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import _compat as dt

    seen: list[tuple[str, str]] = []

    def recorder(name: str):
        def receive(sender, task_result, **kwargs) -> None:
            seen.append((name, str(task_result.status)))

        return receive

    receivers = {s: recorder(n) for n, s in [("enqueued", dt.task_enqueued),
                 ("started", dt.task_started), ("finished", dt.task_finished)]}  # fmt: skip
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        await sync_to_async(shop.add.enqueue)(1, 1)
        await _run_all(django_db, 1)
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)
    assert [name for name, _ in seen] == ["enqueued", "started", "finished"]
    assert [status for _, status in seen] == ["READY", "RUNNING", "SUCCESSFUL"]


def test_get_result_of_an_unknown_id_does_not_exist(shop, django_db: str) -> None:
    """get_result of a missing id (or a non-numeric one) raises TaskResultDoesNotExist."""
    from pgqueue.contrib.django import _compat as dt

    for missing in ("424242", "not-a-number"):
        with pytest.raises(dt.TaskResultDoesNotExist):
            shop.add.get_result(missing)


async def test_a_row_naming_an_unregistered_path_imports_nothing(shop, django_db, tmp_path):
    """Invariant 8: a job naming a module path no task registered fails; nothing is imported."""
    marker = tmp_path / "imported"
    module = tmp_path / "evil_tasks.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef run():\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        query(django_db, "INSERT INTO pgqueue.active_jobs (task, max_attempts) "
                         "VALUES ('evil_tasks.run', 1)")  # fmt: skip
        await _run_all(django_db, 1)
    finally:
        sys.path.remove(str(tmp_path))
    assert query(django_db, "SELECT state, last_error FROM pgqueue.jobs") == [
        ("failed", "unknown task 'evil_tasks.run'")
    ]
    assert not marker.exists()


def test_worker_in_another_process_runs_the_task_and_this_one_reads_it(shop, django_db) -> None:
    """manage.py pgqueue worker (subprocess) runs a django.tasks task; get_result here sees it."""
    from django.db import transaction

    from tests.contrib.django_project.shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(email="sub@example.com")
        result = shop.mark_sent.enqueue(order.id)
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "-q", "default,emails", "--burst"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result.refresh()
    assert (result.status, result.return_value) == ("SUCCESSFUL", order.id)
    order.refresh_from_db()
    assert order.receipt_sent


def test_manage_py_pgqueue_enqueue_keeps_a_django_tasks_options(shop, django_db) -> None:
    """manage.py pgqueue enqueue of a django.tasks task with its own queue_name enqueued to
    the app's default queue, where a worker of its queue never looks, with the app's
    priority and attempts: the task was registered without its options. It is enqueued as
    the task itself enqueues (queue_name, priority, the backend's MAX_ATTEMPTS)."""
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "enqueue",
         "tests.contrib.django_project.shop.tasks.mark_sent", "--args", "[1]"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    own = shop.mark_sent.enqueue(1)  # the task's own enqueue, for comparison
    options = "SELECT queue, priority, max_attempts FROM pgqueue.jobs WHERE id = %s"
    assert query(django_db, options, [int(done.stdout)]) == [("emails", 50, 1)]
    assert query(django_db, options, [int(own.id)]) == [("emails", 50, 1)]


def test_eager_mode_refuses_django_tasks_with_a_clear_error(shop, django_db: str) -> None:
    """pgqueue's eager mode writes no row, and a django.tasks result is read from its job's
    row: the enqueue failed on an assert, or described whatever job held the eager call's
    number. It now says what to use instead, and runs nothing."""
    import pgqueue.contrib.django
    import pgqueue.testing

    query(django_db, "SELECT pgqueue.enqueue('someone.else')")  # job 1: not this call's
    refused = pytest.raises(RuntimeError, match=r"eager\(\) cannot run .*ImmediateBackend")
    with pgqueue.testing.eager(pgqueue.contrib.django.app) as calls, refused:
        shop.add.enqueue(2, 3)
    assert calls.jobs == []
    assert query(django_db, "SELECT task FROM pgqueue.jobs") == [("someone.else",)]


def test_arguments_too_large_as_jsonb_raise_the_apps_size_error(shop, django_db: str) -> None:
    """A django.tasks enqueue whose arguments pass max_payload_bytes as JSON but not the
    table's check as jsonb raises pgqueue's ValueError, not a raw CheckViolation, and its
    atomic() block rolls back."""
    from django.db import transaction

    with pytest.raises(ValueError, match="over 1048576 bytes as stored"), transaction.atomic():
        shop.add.enqueue([0] * 100_000, 0)
    assert states(django_db) == {}


def test_get_result_of_an_id_no_job_has_does_not_exist(shop, django_db: str) -> None:
    """A result id is str(job.id): a number beyond bigint raised pgqueue's ValueError instead
    of TaskResultDoesNotExist, and other spellings of a number (" 7", "07", "+7", "7_0")
    read whichever job that number named, under an id the backend never issued."""
    from pgqueue.contrib.django import _compat as dt

    job_id = int(shop.add.enqueue(1, 2).id)
    for other in ("99999999999999999999", f" {job_id}", f"0{job_id}", f"+{job_id}",
                  f"{job_id}\n", f"{job_id}_0", "٣", "0", "-1", ""):  # fmt: skip
        with pytest.raises(dt.TaskResultDoesNotExist):
            shop.add.get_result(other)
    assert shop.add.get_result(str(job_id)).args == [1, 2]


@pytest.mark.parametrize("name", ["returns_nan", "async_returns_nan"])
async def test_a_return_value_postgres_cannot_store_is_failed_in_the_signal_too(
    shop, django_db: str, name: str
) -> None:
    """A task (sync or async) returning NaN fails its job (PostgreSQL's JSON has no NaN):
    task_finished said SUCCESSFUL, with the value, while get_result said FAILED. Both say
    FAILED, with the error."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import _compat as dt

    finished: list[object] = []

    def receive(sender, task_result, **kwargs) -> None:
        finished.append(task_result)

    dt.task_finished.connect(receive)
    try:
        result = await sync_to_async(getattr(shop, name).enqueue)()
        await _run_all(django_db, 1)
    finally:
        dt.task_finished.disconnect(receive)
    await result.arefresh()
    [signalled] = finished
    assert (signalled.status, result.status) == ("FAILED", "FAILED")
    assert [e.exception_class for e in signalled.errors] == [TypeError]
    assert [e.exception_class for e in result.errors] == [TypeError]


def test_a_views_enqueue_under_atomic_requests_is_in_the_requests_transaction(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ATOMIC_REQUESTS, a view's enqueue commits with its response and rolls back with
    its error, as the view's ORM writes do."""
    from django.db import connections
    from django.test import Client

    from tests.contrib.django_project.shop.models import Order

    monkeypatch.setitem(connections["default"].settings_dict, "ATOMIC_REQUESTS", True)
    client = Client()
    assert client.get("/shop/order/").status_code == 200
    with pytest.raises(RuntimeError, match="declined"):
        client.get("/shop/order/?fail=1")
    assert Order.objects.count() == 1
    assert query(django_db, "SELECT task, state FROM pgqueue.jobs") == [
        ("tests.contrib.django_project.shop.tasks.mark_sent", "queued")
    ]


def test_the_request_after_an_enqueue_found_the_connection_dropped_gets_a_new_one(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enqueue that found a persistent connection dropped by the server (a restart) did
    not mark it failed for Django: the request boundary kept it, and the next request's
    first ORM query failed on it too. The boundary closes it, as one a query found dropped."""
    from django.db import connections
    from django.test import Client

    from tests.contrib.test_django import _drop_djangos_connection

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    _drop_djangos_connection(django_db)
    with pytest.raises(psycopg.OperationalError):
        shop.mark_sent.enqueue(1)
    assert Client().get("/shop/order/").status_code == 200
    assert states(django_db) == {"queued": 1}


async def test_an_async_views_aenqueue_is_committed_at_once(shop, django_db: str) -> None:
    """An async view runs outside any transaction (Django refuses ATOMIC_REQUESTS for
    them): its aenqueue() is committed at once, as an ORM write there is."""
    from django.test import AsyncClient

    response = await AsyncClient().get("/shop/add-later/")
    assert response.status_code == 200
    assert query(django_db, "SELECT id::text, state FROM pgqueue.jobs") == [
        (response.content.decode(), "queued")
    ]


def test_a_rolled_back_inner_atomic_drops_its_job_and_the_outer_commits(shop, django_db):
    """An enqueue inside a nested atomic() (a savepoint) that rolls back leaves no job, while
    the outer block's order and job commit."""
    from django.db import transaction

    from tests.contrib.django_project.shop.models import Order

    with transaction.atomic():
        order = Order.objects.create(email="kept@example.com")
        with pytest.raises(RuntimeError), transaction.atomic():
            shop.add.enqueue(1, 1)
            raise RuntimeError("the savepoint is rolled back")
        kept = shop.mark_sent.enqueue(order.id)
    assert query(django_db, "SELECT id, task FROM pgqueue.jobs") == [
        (int(kept.id), "tests.contrib.django_project.shop.tasks.mark_sent")
    ]
    assert Order.objects.filter(email="kept@example.com").exists()


async def test_a_return_value_that_is_not_json_fails_without_a_retry(shop, django_db) -> None:
    """A task returning a date did its work, then failed as its value is not JSON: with
    attempts left, it was run again (and again) for nothing, as a plain pgqueue task never
    is. It fails at once, as pgqueue fails such a task."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(shop.returns_a_date.enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 3")
    worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)
    tried = "SELECT count(*) FROM pgqueue.jobs WHERE attempts = 1 AND state <> 'running'"
    await run_worker_until(worker, lambda: query(django_db, tried) == [(1,)])
    await result.arefresh()
    assert result.status == "FAILED"
    assert [e.exception_class for e in result.errors] == [TypeError]


def test_a_naive_run_after_is_refused_with_use_tz_and_local_time_without(shop, django_db):
    """With USE_TZ, Django refuses a naive run_after (InvalidTask) and nothing is written;
    without it, a naive run_after is the current time zone's wall-clock time."""
    from datetime import UTC, datetime

    from django.test import override_settings

    from pgqueue.contrib.django import _compat as dt
    from tests.contrib.conftest import close_connections

    naive = datetime(2030, 1, 1, 12, 0)
    with pytest.raises(dt.InvalidTask, match="aware"):
        shop.add.using(run_after=naive)
    assert states(django_db) == {}
    close_connections()
    try:
        with override_settings(USE_TZ=False, TIME_ZONE="America/New_York"):
            result = shop.add.using(run_after=naive).enqueue(1, 1)
            assert result.status == "READY"
    finally:
        close_connections()
    run_at = "SELECT run_at FROM pgqueue.jobs WHERE id = %s"
    assert query(django_db, run_at, [int(result.id)]) == [
        (datetime(2030, 1, 1, 17, 0, tzinfo=UTC),)
    ]


async def test_an_attempt_pgqueue_retries_sends_no_task_finished(
    shop, django_db, monkeypatch
) -> None:
    """With attempts left (MAX_ATTEMPTS > 1), a failed attempt is not the task's end: its
    result is READY again. task_finished said FAILED for it (and Django logged the task as
    failed); it is sent once the task is finished, FAILED after its last attempt."""
    import dataclasses

    from asgiref.sync import sync_to_async

    from pgqueue import RetryPolicy
    from pgqueue.contrib.django import _compat as dt
    from pgqueue.contrib.django import app

    # The retry a minute away, not up to 2 s (full jitter): one due within the 20 ms the stop
    # condition is read at ran before it, the job never seen queued (flaky on a loaded host).
    registered = app.get_task(shop.fails.module_path)
    assert registered is not None
    later = RetryPolicy(base=60, jitter=False)
    monkeypatch.setattr(registered, "options", dataclasses.replace(registered.options, retry=later))
    finished: list[str] = []

    def receive(sender, task_result, **kwargs) -> None:
        finished.append(str(task_result.status))

    result = await sync_to_async(shop.fails.enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 2")
    worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)
    tried = "SELECT attempts, state FROM pgqueue.jobs"
    dt.task_finished.connect(receive)
    try:
        await run_worker_until(worker, lambda: query(django_db, tried) == [(1, "queued")])
        later_sql = "SELECT run_at > now() + interval '30 seconds' FROM pgqueue.active_jobs"
        assert query(django_db, later_sql) == [(True,)]  # the retry policy above was used
        await result.arefresh()
        assert (result.status, len(result.errors), finished) == ("READY", 1, [])
        query(django_db, "UPDATE pgqueue.active_jobs SET run_at = now()")
        await _run_all(django_db, 1)
    finally:
        dt.task_finished.disconnect(receive)
    await result.arefresh()
    assert (result.status, len(result.errors), finished) == ("FAILED", 2, ["FAILED"])


def test_invalid_tasks_and_foreign_results_raise_djangos_exceptions(shop, django_db) -> None:
    """The backend refuses what Django's contract refuses (priority outside -100..100 or not
    whole, a queue not in QUEUES, a function not at module level) with InvalidTask; the
    result of another task's job is TaskResultMismatch, and a plain pgqueue job is no
    Django task's result; an unfinished result has no return_value."""
    import importlib

    from pgqueue.contrib.django import _compat as dt
    from pgqueue.contrib.django import connection

    framework = importlib.import_module(dt.FLAVOUR)
    mismatch = importlib.import_module(f"{dt.FLAVOUR}.exceptions").TaskResultMismatch
    for priority in (101, -101, 1.5):
        with pytest.raises(dt.InvalidTask, match="priority"):
            shop.add.using(priority=priority)
    with pytest.raises(dt.InvalidTask, match="Queue 'elsewhere'"):
        shop.add.using(queue_name="elsewhere")

    def nested() -> None:
        """Not at module level."""

    with pytest.raises(dt.InvalidTask, match="module level"):
        framework.task()(nested)
    result = shop.add.enqueue(1, 2)
    with pytest.raises(mismatch):
        shop.mark_sent.get_result(result.id)
    with pytest.raises(ValueError, match="not finished"):
        result.return_value  # noqa: B018
    native = shop.send_receipt.enqueue(connection(), 1)
    with pytest.raises(dt.TaskResultDoesNotExist):
        shop.add.get_result(str(native))
    assert states(django_db) == {"queued": 2}


@contextlib.contextmanager
def _finished_signals() -> Iterator[list[Any]]:
    """The TaskResults task_finished is sent with while the block runs."""
    from pgqueue.contrib.django import _compat as dt

    finished: list[Any] = []

    def receive(sender, task_result, **kwargs) -> None:
        finished.append(task_result)

    dt.task_finished.connect(receive)
    try:
        yield finished
    finally:
        dt.task_finished.disconnect(receive)


@pytest.mark.parametrize("name", ["exits_at_first", "stalls_at_first"])
async def test_an_attempt_retried_after_a_base_exception_or_timeout_sends_no_signal(
    shop, django_db: str, name: str
) -> None:
    """A first attempt that raises SystemExit (sync) or outlasts its job's timeout (async: the
    runner sees a CancelledError) is retried by pgqueue like any failure, but task_finished
    said FAILED for it; the second attempt succeeds. One signal, SUCCESSFUL."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(getattr(shop, name).enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 2, timeout = 0.3")
    tried = "SELECT attempts, state FROM pgqueue.jobs"
    with _finished_signals() as finished:
        worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)
        await run_worker_until(worker, lambda: query(django_db, tried) == [(1, "queued")])
        query(django_db, "UPDATE pgqueue.active_jobs SET run_at = now()")
        await _run_all(django_db, 1)
    await result.arefresh()
    assert (result.status, result.return_value) == ("SUCCESSFUL", "second")
    assert [str(r.status) for r in finished] == ["SUCCESSFUL"]
    assert finished[0].return_value == "second"


@pytest.mark.parametrize("name", ["outlives_its_timeout", "stalls_at_first"])
async def test_a_last_attempt_cut_by_its_timeout_signals_a_timeout_error(
    shop, django_db: str, name: str
) -> None:
    """A job whose last attempt outlasts its timeout is FAILED with a TimeoutError. A sync
    task (a thread cannot be stopped) that returned afterwards sent task_finished SUCCESSFUL,
    with the value nobody stored; an async one sent the CancelledError its runner saw. Both
    say FAILED with a TimeoutError, as get_result does."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(getattr(shop, name).enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET timeout = 0.2")
    with _finished_signals() as finished:
        worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)
        await run_worker_until(
            worker, lambda: bool(finished) and states(django_db) == {"failed": 1}
        )
    await result.arefresh()
    [signalled] = finished
    assert (str(signalled.status), str(result.status)) == ("FAILED", "FAILED")
    assert [e.exception_class for e in signalled.errors] == [TimeoutError]
    assert [e.exception_class for e in result.errors] == [TimeoutError]


async def test_a_value_not_stored_is_successful_in_the_signal_as_in_the_row(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With store_result=False, pgqueue does not encode the return value and the job
    succeeds; task_finished said FAILED (TypeError) for a value that is not JSON. Both say
    SUCCESSFUL, with no return value (None, as get_result reads it)."""
    import dataclasses

    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    task = app.tasks["tests.contrib.django_project.shop.tasks.returns_a_set"]
    monkeypatch.setattr(task, "options", dataclasses.replace(task.options, store_result=False))
    monkeypatch.setattr(app, "_wrapped", {})  # DjangoPgQueue's wrappers copy the options
    result = await sync_to_async(shop.returns_a_set.enqueue)()
    with _finished_signals() as finished:
        await _run_all(django_db, 1)
    await result.arefresh()
    [signalled] = finished
    assert (str(signalled.status), str(result.status)) == ("SUCCESSFUL", "SUCCESSFUL")
    assert (signalled.return_value, result.return_value) == (None, None)


async def test_the_signals_return_value_is_the_one_get_result_reads(shop, django_db) -> None:
    """JSON makes a dict's int keys strings: task_finished gave {1: "one"} while get_result
    (and refresh) read {"1": "one"}. The signal carries the value as stored."""
    from asgiref.sync import sync_to_async

    result = await sync_to_async(shop.returns_int_keys.enqueue)()
    with _finished_signals() as finished:
        await _run_all(django_db, 1)
    await result.arefresh()
    [signalled] = finished
    assert result.return_value == {"1": "one", "2": [3]}
    assert signalled.return_value == result.return_value


@pytest.mark.parametrize(
    ("name", "signals"), [("stalls_at_first", []), ("returns_when_cancelled", ["SUCCESSFUL"])]
)
async def test_an_async_attempt_a_shutdown_stops_signals_as_the_worker_records_it(
    shop, django_db: str, name: str, signals: list[str]
) -> None:
    """An async task still running when a worker's shutdown cancels it goes back to the
    queue (READY) and runs again, but task_finished said FAILED (a CancelledError): none is
    sent. One that catches the cancellation and returns is SUCCESSFUL, as the worker writes
    it: so is its signal (the first fix sent none)."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(getattr(shop, name).enqueue)()
    with _finished_signals() as finished:
        # The signal is sent within the shutdown's drain of callbacks, shutdown_timeout long:
        # 2 s, not 0.1, so that a loaded machine's row read still makes it.
        worker = app.worker(
            dsn=django_db, queues=["default"], poll_interval=0.05, shutdown_timeout=2.0
        )
        await run_worker_until(worker, lambda: states(django_db) == {"running": 1})
    await result.arefresh()
    assert [str(r.status) for r in finished] == signals
    assert str(result.status) == (signals or ["READY"])[0]
    if signals:
        assert finished[0].return_value == result.return_value == "stopped"


async def test_a_retry_of_a_job_asked_to_cancel_is_its_end_in_the_signal(shop, django_db):
    """An attempt that fails with attempts left, after its job was asked to cancel (before
    the worker's heartbeat learnt of it), is recorded cancelled (FAILED), not retried: it
    sent no task_finished at all. It sends FAILED, with the attempt's error, as the row."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(shop.fails_once_cancelled.enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 2")
    with _finished_signals() as finished:
        worker = app.worker(
            dsn=django_db, queues=["default"], poll_interval=0.05, lease=600, heartbeat=300
        )
        await run_worker_until(worker, lambda: states(django_db) == {"cancelled": 1})
    await result.arefresh()
    assert [str(r.status) for r in finished] == [str(result.status)] == ["FAILED"]
    assert [e.exception_class for e in finished[0].errors] == [ValueError]
    assert [e.exception_class for e in result.errors] == [ValueError]


async def test_an_unreadable_row_leaves_a_retried_attempts_error_its_own(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before taking a failed attempt for retried, the runner reads whether its job was asked
    to cancel. That read failing (here: the task left its persistent connection unable to
    read pgqueue's schema) replaced the task's error in the row: the attempt is retried,
    unsignalled, with its own error."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    from pgqueue.contrib.django import app

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    result = await sync_to_async(shop.fails_unable_to_read_its_job.enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 2")
    tried = "SELECT attempts, state FROM pgqueue.jobs"
    try:
        with _finished_signals() as finished:
            worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)
            await run_worker_until(worker, lambda: query(django_db, tried) == [(1, "queued")])
    finally:
        while shop.left_open:
            shop.left_open.pop().close()
    await result.arefresh()
    assert (str(result.status), finished) == ("READY", [])
    assert [e.exception_class for e in result.errors] == [ValueError]


async def test_a_cancel_committed_after_the_attempt_ended_is_its_end_in_the_signal(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel requested once a failed attempt with attempts left has ended (here by a
    middleware, after the task raised), but before the worker writes it, cancels the job:
    the runner had read no request and sent nothing. task_finished says FAILED, as the row."""
    import psycopg
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    async def cancel_after_failure(job, call_next):
        try:
            return await call_next()
        except ValueError:
            # On the loop, blocking it: the worker cannot hear of the request before the end.
            with psycopg.connect(django_db, autocommit=True) as conn:
                app.cancel(conn, job.id)
            raise

    monkeypatch.setattr(app.hooks, "middleware", [cancel_after_failure])
    result = await sync_to_async(shop.fails.enqueue)()
    query(django_db, "UPDATE pgqueue.active_jobs SET max_attempts = 2")
    with _finished_signals() as finished:
        await _run_all(django_db, 1)
    await result.arefresh()
    assert states(django_db) == {"cancelled": 1}
    assert [str(r.status) for r in finished] == [str(result.status)] == ["FAILED"]
    assert [e.exception_class for e in finished[0].errors] == [ValueError]


@pytest.mark.parametrize(("name", "status"), [("fails", "SUCCESSFUL"), ("add", "FAILED")])
async def test_a_middleware_changing_the_outcome_is_what_the_signal_says(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch, name: str, status: str
) -> None:
    """Middleware around the attempt may turn the task's error into a value, or its value
    into an error: task_finished said what the task did. It says what was written."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    async def turn_over(job, call_next):
        try:
            await call_next()
        except ValueError:
            return "rescued"
        raise LookupError("refused")

    monkeypatch.setattr(app.hooks, "middleware", [turn_over])
    task = getattr(shop, name)
    result = await sync_to_async(task.enqueue)(*([1, 2] if name == "add" else []))
    with _finished_signals() as finished:
        await _run_all(django_db, 1)
    await result.arefresh()
    assert [str(r.status) for r in finished] == [str(result.status)] == [status]
    if status == "SUCCESSFUL":
        assert finished[0].return_value == result.return_value == "rescued"
    else:
        assert [e.exception_class for e in finished[0].errors] == [LookupError]


async def test_a_receiver_that_raises_leaves_the_job_as_it_ended(
    shop, django_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A task_finished receiver raising failed the job it was told had succeeded. The signal
    is sent once the end is written: the job stays SUCCESSFUL and the worker logs the error."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import _compat as dt

    def receive(sender, task_result, **kwargs) -> None:
        raise RuntimeError("receiver broke")

    result = await sync_to_async(shop.add.enqueue)(1, 2)
    dt.task_finished.connect(receive)
    try:
        await _run_all(django_db, 1)
    finally:
        dt.task_finished.disconnect(receive)
    await result.arefresh()
    assert (str(result.status), result.return_value) == ("SUCCESSFUL", 3)
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "callback_error"]
    assert record.exc_info is not None and "receiver broke" in str(record.exc_info[1])


async def test_a_slow_receiver_does_not_hold_the_worker(shop, django_db: str) -> None:
    """Receivers run off the event loop: one blocked until another job's task_finished
    arrives lets the worker run that job and send its signal meanwhile."""
    import threading

    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import _compat as dt

    arrived: list[int] = []
    second = threading.Event()
    released: list[bool] = []

    def receive(sender, task_result, **kwargs) -> None:
        arrived.append(task_result.return_value)
        if len(arrived) == 1:
            released.append(second.wait(timeout=60))
        else:
            second.set()

    async def enqueue_the_second_once_the_first_is_signalled() -> None:
        while not arrived:
            await asyncio.sleep(0.02)
        await sync_to_async(shop.add.enqueue)(2, 2)

    await sync_to_async(shop.add.enqueue)(1, 1)
    dt.task_finished.connect(receive)
    try:
        feeder = asyncio.ensure_future(enqueue_the_second_once_the_first_is_signalled())
        await _run_all(django_db, 2)
        await feeder
    finally:
        feeder.cancel()
        dt.task_finished.disconnect(receive)
    assert (released, arrived) == ([True], [2, 4])


@pytest.mark.parametrize("name", ["stalls_at_first", "outlives_its_timeout"])
async def test_a_job_cancelled_while_it_runs_is_signalled_failed_once(
    shop, django_db: str, name: str
) -> None:
    """A job cancelled while its attempt runs (async: the coroutine is cancelled; sync: the
    thread is asked to stop, and returns later) ends cancelled, FAILED: task_finished says so
    once, whatever the task does afterwards."""
    import psycopg
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(getattr(shop, name).enqueue)()
    with _finished_signals() as finished:
        worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05)

        def cancelled() -> bool:
            if states(django_db) == {"running": 1}:
                with psycopg.connect(django_db, autocommit=True) as conn:
                    app.cancel(conn, int(result.id))
            return states(django_db) == {"cancelled": 1} and bool(finished)

        await run_worker_until(worker, cancelled)
    await result.arefresh()
    assert [str(r.status) for r in finished] == [str(result.status)] == ["FAILED"]


async def test_a_sync_attempt_a_shutdown_stops_sends_no_signal(shop, django_db: str) -> None:
    """A sync task still running at a worker's shutdown (its thread cannot be stopped; it
    returns once asked to stop) goes back to the queue, READY: no task_finished."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(shop.outlives_its_timeout.enqueue)()
    with _finished_signals() as finished:
        worker = app.worker(
            dsn=django_db, queues=["default"], poll_interval=0.05, shutdown_timeout=0.5
        )
        await run_worker_until(worker, lambda: states(django_db) == {"running": 1})
    await result.arefresh()
    assert (str(result.status), finished) == ("READY", [])


async def test_a_job_asked_to_cancel_that_a_shutdown_stops_is_signalled_failed(
    shop, django_db: str
) -> None:
    """A job asked to cancel while it runs, before its worker learns of it, then stopped by
    the worker's shutdown, is not put back: the shutdown ends it cancelled (FAILED), and sent
    no task_finished. It sends one, FAILED, as the row."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    result = await sync_to_async(shop.stalls_at_first.enqueue)()
    ask = "UPDATE pgqueue.active_jobs SET cancel_requested = true"  # no hint: a heartbeat's news

    def running_then_asked() -> bool:
        return states(django_db) == {"running": 1} and query(django_db, ask) == []

    with _finished_signals() as finished:
        worker = app.worker(
            dsn=django_db, queues=["default"], poll_interval=0.05, lease=600, heartbeat=300,
            shutdown_timeout=2.0,
        )  # fmt: skip
        await run_worker_until(worker, running_then_asked)
    await result.arefresh()
    assert [str(r.status) for r in finished] == [str(result.status)] == ["FAILED"]


def test_arguments_are_normalized_as_djangos_own_backends_normalize_them(shop, django_db):
    """Django's backends take any argument normalize_json takes (bytes as UTF-8 text, any
    mapping or sequence): the tests' ImmediateBackend enqueued b"ab" or range(2), and
    PgQueueBackend raised TypeError for them. It stores, and reads back, what Django would;
    a value neither takes is still pgqueue's TypeError naming the argument."""
    import datetime

    with pytest.raises(TypeError, match=r"argument 0 of task .* not JSON-serialisable"):
        shop.add.enqueue(datetime.date(2026, 1, 1), 1)
    result = shop.add.enqueue(b"ab", b=range(2))
    assert (result.args, result.kwargs) == (["ab"], {"b": [0, 1]})
    assert query(django_db, "SELECT args, kwargs FROM pgqueue.jobs") == [(["ab"], {"b": [0, 1]})]


def test_a_queue_name_django_allows_but_pgqueue_cannot_hold_is_an_invalid_task(shop, django_db):
    """With any queue allowed (QUEUES empty, as Django's contract has it), a queue_name that is
    no pgqueue queue name is refused by using() with Django's InvalidTask, saying why, and
    nothing is written; a valid one becomes the job's queue."""
    from django.test import override_settings

    from pgqueue.contrib.django import _compat as dt

    backend = {"BACKEND": "pgqueue.contrib.django.PgQueueBackend", "QUEUES": []}
    with override_settings(TASKS={"default": backend}):
        with pytest.raises(dt.InvalidTask, match="invalid queue name 'a b'"):
            shop.add.using(queue_name="a b")
        result = shop.add.using(queue_name="any.other").enqueue(1, 2)
    assert query(django_db, "SELECT id, queue FROM pgqueue.jobs") == [(int(result.id), "any.other")]


async def test_drain_in_tests_sends_task_finished_once_per_task(shop, django_db: str) -> None:
    """pgqueue.testing's drain (what the docs point tests at instead of eager mode) runs the
    jobs with a real worker: each task's task_finished is sent once, before it returns."""
    from asgiref.sync import sync_to_async

    import pgqueue.testing
    from pgqueue.contrib.django import app

    ok = await sync_to_async(shop.add.enqueue)(1, 2)
    bad = await sync_to_async(shop.explode.enqueue)()
    with _finished_signals() as finished:
        totals = await pgqueue.testing.adrain(app, dsn=django_db)
    assert (totals["succeeded"], totals["failed"]) == (1, 1)
    assert sorted((r.id, str(r.status)) for r in finished) == sorted(
        [(ok.id, "SUCCESSFUL"), (bad.id, "FAILED")]
    )


@pytest.mark.parametrize(("signal", "name"), [("task_finished", "add"),
                                              ("task_started", "async_double")])  # fmt: skip
async def test_a_receiver_using_the_orm_leaves_no_connection_open(
    shop, django_db: str, signal: str, name: str
) -> None:
    """A receiver that uses the ORM opens a Django connection in the worker's thread that sends
    the signal: task_finished's (a callback thread) and an async task's task_started (a thread
    of its own) stayed open past CONN_MAX_AGE (0 here), until that thread's next use. They are
    released as Django releases a request's, and the worker a sync task's."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    from pgqueue.contrib.django import _compat as dt
    from tests.contrib.django_project.shop.models import Order

    used: list[Any] = []

    def receive(sender, task_result, **kwargs) -> None:
        Order.objects.count()
        used.append(connections["default"])  # this thread's wrapper

    getattr(dt, signal).connect(receive)
    try:
        await sync_to_async(getattr(shop, name).enqueue)(*((1, 2) if name == "add" else (2,)))
        await _run_all(django_db, 1)
    finally:
        getattr(dt, signal).disconnect(receive)
    [wrapper] = used
    assert wrapper.connection is None


async def test_persistent_connections_the_server_dropped_lose_no_start_and_no_signal(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CONN_MAX_AGE None a worker's task thread and callback thread keep their Django
    connections from job to job. Once the server dropped them (a restart, a failover), the
    next Django task failed before it ran, its start's read failing (FAILED at once), and
    its task_finished was lost; so did every later one in those threads, psycopg's error
    never marking Django's connection as failed. Each read is made again on a new one."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    from pgqueue.contrib.django import _compat as dt
    from pgqueue.contrib.django import app

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    first = await sync_to_async(shop.keeps_its_connection.enqueue)(1)
    second: list[Any] = []

    def receive(sender, task_result, **kwargs) -> None:
        shop.left_open.append(connections["default"].connection)  # the callback thread's

    def drop_connections_then_enqueue_once_one_ended() -> bool:
        if not second and states(django_db) == {"succeeded": 1} and len(finished) == 1:
            query(django_db, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                             " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                             " AND application_name NOT LIKE 'pgqueue %'")  # fmt: skip
            connections["default"].close()
            second.append(shop.keeps_its_connection.enqueue(2))
            connections["default"].close()
        ended = states(django_db)
        return bool(second) and ended.get("succeeded", 0) + ended.get("failed", 0) == 2

    dt.task_finished.connect(receive)
    try:
        with _finished_signals() as finished:
            worker = app.worker(dsn=django_db, queues=["default"], poll_interval=0.05,
                                concurrency=1)  # fmt: skip
            await run_worker_until(worker, drop_connections_then_enqueue_once_one_ended)
    finally:
        dt.task_finished.disconnect(receive)
        while shop.left_open:
            shop.left_open.pop().close()
    signalled = [(r.id, str(r.status)) for r in finished]
    assert signalled == [(first.id, "SUCCESSFUL"), (second[0].id, "SUCCESSFUL")]
    assert states(django_db) == {"succeeded": 2}


async def test_a_django_tasks_job_reads_no_schema_revision_to_enqueue_or_start(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend reads each job back after enqueueing it, and the worker reads it again as
    it starts (task_started), on Django's connection, new for each request and each job: a
    schema check there added a statement to every enqueue and every job. The enqueue reads no
    revision, as app.enqueue does not, and the worker reads it once, as it starts."""
    from asgiref.sync import sync_to_async

    from pgqueue import _store

    ran: list[str] = []
    run, arun = _store.run, _store.arun

    def counted(cur: Any, statement: Any) -> Any:
        ran.append(statement.sql)
        return run(cur, statement)

    async def acounted(cur: Any, statement: Any) -> Any:
        ran.append(statement.sql)
        return await arun(cur, statement)

    monkeypatch.setattr(_store, "run", counted)
    monkeypatch.setattr(_store, "arun", acounted)
    revision = _store.schema_revision_get().sql
    for value in (1, 2):
        await sync_to_async(shop.add.enqueue)(value, 1)
    assert revision not in ran
    await _run_all(django_db, 2)
    assert ran.count(revision) == 1
