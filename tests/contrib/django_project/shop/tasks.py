"""Tasks of the test shop: native pgqueue tasks and django.tasks tasks, found by autodiscovery.

The django.tasks ones exist only when a tasks framework is installed (django.tasks on
Django >= 6, the django_tasks backport on 5.2), so the rest of the suite runs without one.
"""

import importlib
import os

import psycopg

from pgqueue.contrib.django import app, dsn
from tests.contrib.django_project.shop.models import Order


def _tasks_framework():
    for name in ("django.tasks", "django_tasks"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


@app.task
def send_receipt(order_id: int) -> str:
    """A native pgqueue task using the ORM."""
    order = Order.objects.get(id=order_id)
    order.receipt_sent = True
    order.save()
    return order.email


@app.task(executor="process")
def count_orders() -> int:
    """A process-pool task using the ORM: its child process must set Django up first."""
    return Order.objects.count()


@app.task(executor="process")
def child_connection() -> list:
    """The child's pid and its Django connection's backend pid."""
    import os

    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return [os.getpid(), cur.fetchone()[0]]


@app.task
async def async_child_connection() -> list:
    """The process's pid and the backend pid of the Django connection its ORM calls use, in
    asgiref's thread (an async task: in a child only when isolated after a crash)."""
    from asgiref.sync import sync_to_async

    return [os.getpid(), await sync_to_async(_backend_pid)(False, 0)]


@app.task
async def leaves_an_orm_call_running(seconds: float) -> list:
    """As ``async_child_connection``, then it times out an ORM call of ``seconds`` asleep in
    asgiref's thread, catches that and returns: the call still runs there."""
    import asyncio
    import contextlib
    import time

    from asgiref.sync import sync_to_async

    pids = [os.getpid(), await sync_to_async(_backend_pid)(False, 0)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sync_to_async(time.sleep)(seconds), 0.1)
    return pids


@app.task
async def does_nothing() -> None:
    """An async pgqueue task that makes no ORM call."""


@app.task
async def count_orders_async() -> int:
    """An async pgqueue task using the ORM's async API (in the thread asgiref gives it)."""
    return await Order.objects.acount()


@app.task(timeout=0.3, max_attempts=1)
async def hold_the_orm_thread(seconds: float) -> None:
    """An async task whose sync call (an ORM query stuck on a lock, say) outlives its timeout."""
    import time

    from asgiref.sync import sync_to_async

    await sync_to_async(time.sleep, thread_sensitive=True)(seconds)


@app.task(max_attempts=1)
async def orm_backend_pid(break_it: bool = False, wait: float = 0) -> int:
    """The backend pid of the Django connection an async task's ORM calls use. With
    ``break_it``, a query on it fails first (``errors_occurred``), then the server ends it
    behind psycopg's back: the task returns, leaving a connection Django would close. It
    sleeps ``wait`` seconds first, in the ORM's thread."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(_backend_pid)(break_it, wait)


@app.task(timeout=0.3, max_attempts=1)
async def breaks_the_orm_connection_after_its_timeout() -> int:
    """An async task whose ORM call, still running once its timeout ended it, breaks the
    connection it runs on (as ``orm_backend_pid(True, 0.6)``)."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(_backend_pid)(True, 0.6)


@app.task(max_attempts=1)
async def times_out_its_own_orm_call() -> None:
    """An async task that times out its own ORM call, which then breaks its connection (as
    ``orm_backend_pid(True, 0.6)``), and returns normally: the call still runs."""
    import asyncio
    import contextlib

    from asgiref.sync import sync_to_async

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(sync_to_async(_backend_pid)(True, 0.6), 0.2)


def _backend_pid(break_it: bool, wait: float) -> int:
    import time

    from django.db import DatabaseError, connection

    time.sleep(wait)
    if break_it:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT * FROM no_such_table")
        except DatabaseError:
            pass
        pid = connection.connection.info.backend_pid
        with psycopg.connect(dsn(), autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        return pid
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


set_up: dict = {}  # what the process set-up saw, in a child


@app.process_setup
def set_up_child():
    """The project's own process set-up: Django's must already have run (the ORM works)."""
    set_up["orders"] = Order.objects.count()
    set_up["pid"] = os.getpid()


@app.task(executor="process")
def child_set_up() -> dict:
    """What this child's process set-up saw."""
    return {**set_up, "here": os.getpid()}


tasks = _tasks_framework()
left_open: list = []  # psycopg connections of worker threads that a test must close

if tasks is not None:

    @tasks.task()
    def add(a: int, b: int) -> int:
        """A django.tasks task."""
        return a + b

    @tasks.task(queue_name="emails", priority=50)
    def mark_sent(order_id: int) -> int:
        """A django.tasks task using the ORM, on its own queue."""
        Order.objects.filter(id=order_id).update(receipt_sent=True)
        return order_id

    @tasks.task()
    async def async_double(x: int) -> int:
        """An async django.tasks task."""
        return 2 * x

    @tasks.task(takes_context=True)
    def which_attempt(context, label: str) -> list:
        """A django.tasks task receiving its context."""
        return [label, context.attempt, context.task_result.id]

    @tasks.task()
    def explode() -> None:
        """A django.tasks task that fails."""
        raise KeyError("boom")

    @tasks.task()
    def returns_nan() -> float:
        """A django.tasks task whose return value PostgreSQL cannot store (NaN)."""
        return float("nan")

    @tasks.task()
    def returns_a_date() -> object:
        """A django.tasks task whose return value is not JSON."""
        import datetime

        return datetime.date(2026, 1, 1)

    @tasks.task()
    async def async_returns_nan() -> float:
        """An async django.tasks task whose return value PostgreSQL cannot store."""
        return float("nan")

    @tasks.task()
    def fails() -> None:
        """A django.tasks task that fails on every attempt."""
        raise ValueError("not yet")

    @tasks.task(takes_context=True)
    def exits_at_first(context) -> str:
        """A django.tasks task whose first attempt raises SystemExit."""
        if context.attempt == 1:
            raise SystemExit(3)
        return "second"

    @tasks.task(takes_context=True)
    async def stalls_at_first(context) -> str:
        """An async django.tasks task whose first attempt outlasts any timeout."""
        import asyncio

        if context.attempt == 1:
            await asyncio.sleep(60)
        return "second"

    @tasks.task()
    def outlives_its_timeout() -> str:
        """A django.tasks task that returns once the worker has given up on it."""
        from pgqueue import current_job

        current_job().cancelled.wait(60)
        return "too late"

    @tasks.task()
    def returns_a_set() -> object:
        """A django.tasks task whose return value is not JSON."""
        return {1, 2}

    @tasks.task()
    def returns_int_keys() -> dict:
        """A django.tasks task returning a dict whose keys JSON makes strings."""
        return {1: "one", 2: [3]}

    @tasks.task()
    async def returns_when_cancelled() -> str:
        """An async django.tasks task that returns a value when the worker cancels it."""
        import asyncio

        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "stopped"
        return "slept"

    @tasks.task()
    def fails_once_cancelled() -> None:
        """A django.tasks task whose job is asked to cancel (no hint is sent: the worker
        learns of it at its next heartbeat) before the task fails."""
        from django.db import connection

        from pgqueue import current_job

        with connection.cursor() as cur:
            cur.execute(
                "UPDATE pgqueue.active_jobs SET cancel_requested = true WHERE id = %s",
                [current_job().id],
            )
        raise ValueError("failed once asked to cancel")

    @tasks.task()
    def fails_unable_to_read_its_job() -> None:
        """A django.tasks task that leaves its Django connection unable to read pgqueue's
        tables (SET ROLE to a role with no access to the schema), then fails."""
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("SET ROLE pg_monitor")
        left_open.append(connection.connection)  # a persistent one, for the test to close
        raise ValueError("the task's own error")

    @tasks.task()
    def keeps_its_connection(x: int) -> int:
        """A django.tasks task that leaves its thread's Django connection for the test to
        close (a persistent one, CONN_MAX_AGE None)."""
        from django.db import connection

        connection.ensure_connection()
        left_open.append(connection.connection)
        return x
