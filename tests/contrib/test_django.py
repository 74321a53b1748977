"""Django: enqueue on Django's connection, migrations, manage.py pgqueue, the admin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.contrib.catalog import catalog as _catalog
from tests.contrib.conftest import (
    close_connections,
    django_settings_for,
    subprocess_env,
    use_database,
)
from tests.helpers import query, run_worker_until, states

MANAGE = "tests/contrib/django_project/manage.py"


@pytest.fixture
def shop(django_db: str):
    """The test shop's tasks module, with its Order table created."""
    from django.core.management import call_command

    call_command("migrate", "shop", verbosity=0)
    from tests.contrib.django_project.shop import tasks

    return tasks


def _order(email: str = "a@example.com"):
    from tests.contrib.django_project.shop.models import Order

    return Order.objects.create(email=email)


def test_rollback_with_the_orm_writes_leaves_no_job(shop, django_db: str) -> None:
    """An enqueue inside atomic() on Django's connection rolls back with the ORM writes."""
    from django.db import connection, transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        order = _order()
        shop.send_receipt.enqueue(connection, order.id)
        raise RuntimeError("checkout failed")
    assert query(django_db, "SELECT count(*) FROM shop_order") == [(0,)]
    assert states(django_db) == {}


async def test_committed_job_runs_on_a_worker_and_sees_the_orm_data(shop, django_db) -> None:
    """commit → the job exists and a worker runs it, reading the order through the ORM."""
    from asgiref.sync import sync_to_async

    from pgqueue.contrib.django import app

    def checkout() -> int:
        from django.db import transaction

        from pgqueue.contrib.django import connection

        with transaction.atomic():
            order = _order("paid@example.com")
            shop.send_receipt.enqueue(connection(), order.id)
        return order.id

    order_id = await sync_to_async(checkout)()
    worker = app.worker(dsn=django_db, poll_interval=0.05)
    await run_worker_until(worker, lambda: states(django_db).get("succeeded") == 1)
    assert query(django_db, "SELECT result FROM pgqueue.jobs") == [("paid@example.com",)]
    assert query(django_db, "SELECT receipt_sent FROM shop_order WHERE id = %s", [order_id]) == [
        (True,)
    ]


async def test_aenqueue_on_a_django_connection_says_to_use_enqueue(shop, django_db) -> None:
    """Django connections are sync: aenqueue() explains what to call instead."""
    from django.db import connection

    with pytest.raises(TypeError, match="synchronous"):
        await shop.send_receipt.aenqueue(connection, 1)


def test_django_cursor_and_connections_alias_are_accepted(shop, django_db: str) -> None:
    """connections[alias] and a Django cursor both enqueue in Django's transaction."""
    from django.db import connections, transaction

    with transaction.atomic():
        shop.send_receipt.enqueue(connections["default"], 1)
        with connections["default"].cursor() as cur:
            shop.send_receipt.enqueue(cur, 2)
    assert query(django_db, "SELECT args FROM pgqueue.jobs ORDER BY id") == [([1],), ([2],)]


def test_a_connection_of_another_thread_is_refused_as_django_refuses_it(shop, django_db):
    """A DatabaseWrapper taken in one thread (connections["default"], connection() of
    pgqueue) and enqueued on in another, inside that thread's atomic() block: the job was
    written on the first thread's connection, committed at once whatever the block did.
    As Django's own cursors do, enqueue refuses it with Django's DatabaseError."""
    import threading

    from django.db import DatabaseError, connections, transaction

    wrapper = connections["default"]  # this thread's
    raised: list[BaseException] = []

    def in_another_thread() -> None:
        try:
            with transaction.atomic():
                shop.send_receipt.enqueue(wrapper, 1)
                raise RuntimeError("rolled back")
        except BaseException as exc:
            raised.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=in_another_thread)
    thread.start()
    thread.join()
    assert [type(exc) for exc in raised] == [DatabaseError]
    assert "can only be used in that same thread" in str(raised[0])
    assert states(django_db) == {}


def test_a_django_proxy_of_something_else_than_a_database_is_refused(shop, django_db) -> None:
    """django.core.cache.cache is a ConnectionProxy too, of a cache: enqueue on it (or on
    django.tasks' default_task_backend) failed with an AttributeError on the cache; it is
    the TypeError of any object pgqueue cannot enqueue on."""
    from django.core.cache import cache

    with pytest.raises(TypeError, match=r"cannot enqueue on a django\.utils\.connection\."):
        shop.send_receipt.enqueue(cache, 1)


def test_a_subclass_of_djangos_database_wrapper_is_accepted(shop, django_db: str) -> None:
    """A project's own database backend (ENGINE subclassing Django's postgresql one, as
    django-tenants and django-prometheus do) enqueues in its transaction too."""
    from django.db import connections
    from django.db.backends.postgresql.base import DatabaseWrapper

    class ProjectWrapper(DatabaseWrapper):
        pass

    wrapper = ProjectWrapper(dict(connections["default"].settings_dict), alias="project")
    try:
        with wrapper.cursor():  # opened as Django opens it
            pass
        wrapper.set_autocommit(False)
        shop.send_receipt.enqueue(wrapper, 1)
        wrapper.rollback()
        shop.send_receipt.enqueue(wrapper, 2)
        wrapper.commit()
    finally:
        wrapper.close()
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == [([2],)]


def test_enqueue_in_an_atomic_block_marked_for_rollback_is_refused(shop, django_db) -> None:
    """As the ORM does, enqueue refuses a block that will roll back: the job is not lost."""
    from django.db import connection, transaction

    with transaction.atomic():
        try:
            with transaction.atomic(savepoint=False):
                _order()
                raise RuntimeError("caught below; the outer block must roll back")
        except RuntimeError:
            pass
        with pytest.raises(transaction.TransactionManagementError, match="atomic"):
            shop.send_receipt.enqueue(connection, 1)
    with transaction.atomic():
        transaction.set_rollback(True)
        with pytest.raises(transaction.TransactionManagementError):
            shop.send_receipt.enqueue(connection, 2)
    shop.send_receipt.enqueue(connection, 3)  # autocommit again: accepted
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == [([3],)]


def test_a_keyed_batch_in_atomic_and_in_autocommit_on_djangos_connection(shop, django_db):
    """enqueue_many with unique_keys on Django's connection: inside atomic(), a batch refused
    with DuplicateJob takes back its own jobs only (its savepoint), and the block's ORM write
    and earlier batch commit with it; outside atomic() a batch commits on its own."""
    from django.db import connection, transaction

    from pgqueue import DuplicateJob

    strict = shop.send_receipt.using(on_conflict="raise")
    with transaction.atomic():
        order = _order()
        first = shop.send_receipt.enqueue_many(connection, [((1,), {})], unique_keys=["a"])
        with pytest.raises(DuplicateJob):
            strict.enqueue_many(connection, [((2,), {}), ((3,), {})], unique_keys=["b", "a"])
    again = shop.send_receipt.enqueue_many(
        connection, [((4,), {}), ((5,), {})], unique_keys=["a", "c"]
    )
    assert again[0] == first[0]
    assert query(django_db, "SELECT count(*) FROM shop_order WHERE id = %s", [order.id]) == [(1,)]
    assert query(django_db, "SELECT args, unique_key FROM pgqueue.jobs ORDER BY id") == [
        ([1], "a"), ([5], "c"),
    ]  # fmt: skip


def _drop_djangos_connection(dsn: str) -> None:
    """The server ends this thread's Django connection (a restart, a failover, an idle
    session timeout would), and Django does not know yet."""
    from django.db import connection

    connection.close()  # opened anew, with the settings of the test (CONN_MAX_AGE)
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    assert query(dsn, "SELECT pg_terminate_backend(%s, 10000)", [pid]) == [(True,)]


def test_a_persistent_connection_the_server_dropped_is_replaced_at_the_next_request(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enqueue on a persistent connection the server ended fails, as an ORM query does. Its
    error, psycopg's on the raw connection, did not mark Django's connection as failed, so
    the request boundary kept it: with CONN_MAX_AGE None, every later enqueue in that
    thread failed on it too. The next one opens a new connection."""
    from django.db import close_old_connections, connection, connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    _drop_djangos_connection(django_db)
    with pytest.raises(psycopg.OperationalError):
        shop.send_receipt.enqueue(connection, 1)
    close_old_connections()  # a request ends, another starts
    shop.send_receipt.enqueue(connection, 2)
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == [([2],)]


def test_a_dropped_connection_is_not_replaced_in_a_transaction_outside_atomic(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With set_autocommit(False) a transaction is open outside any atomic() block: the
    server dropping the connection lost its writes. An enqueue retried after the first
    failed got a new connection, in autocommit: the job committed alone, and the caller's
    commit() then succeeded on the new connection, the order silently lost."""
    from django.db import connection, connections, transaction

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    _drop_djangos_connection(django_db)
    transaction.set_autocommit(False)
    try:
        with pytest.raises(psycopg.OperationalError):
            shop.send_receipt.enqueue(connection, 1)
        with pytest.raises(psycopg.OperationalError):
            shop.send_receipt.enqueue(connection, 2)
    finally:
        connection.close()
        transaction.set_autocommit(True)
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == []


def test_a_dropped_connection_an_orm_query_failed_on_is_kept_until_the_requests_end(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction opened with a raw BEGIN is one Django does not know of (autocommit on,
    no atomic()). Once the server dropped the connection, Django's own queries kept failing
    until the request's end, but an enqueue replaced the connection: the job committed
    alone, and the caller's COMMIT then succeeded on the new connection, the order lost
    without a word. A connection Django saw fail is left to Django's request boundary."""
    from django.db import close_old_connections, connection, connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    with connection.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO shop_order (email, receipt_sent) VALUES ('a@b.c', false)")
    _drop_djangos_connection(django_db)
    from django.db import OperationalError

    for statement in ("SELECT 1", "enqueue", "COMMIT"):
        with pytest.raises((OperationalError, psycopg.OperationalError)):
            if statement == "enqueue":
                shop.send_receipt.enqueue(connection, 1)
            else:
                with connection.cursor() as cur:
                    cur.execute(statement)
    assert query(django_db, "SELECT count(*) FROM shop_order") == [(0,)]
    assert states(django_db) == {}
    close_old_connections()  # a request ends, another starts
    shop.send_receipt.enqueue(connection, 2)
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == [([2],)]


def test_conn_health_checks_apply_to_enqueue_as_to_the_orm(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CONN_HEALTH_CHECKS, Django checks a persistent connection before a request's
    first query and replaces a dead one. An enqueue first in its request skipped the check
    (it took the raw connection, not a Django cursor) and failed on the dead connection."""
    from django.db import close_old_connections, connection, connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_HEALTH_CHECKS", True)
    _drop_djangos_connection(django_db)
    close_old_connections()  # a request ends, another starts
    shop.send_receipt.enqueue(connection, 1)
    assert query(django_db, "SELECT args FROM pgqueue.jobs") == [([1],)]


def test_django_migrations_give_the_same_schema_as_pgqueue_migrate(
    django_setup: None, dsn: str, empty_dsn: str
) -> None:
    """manage.py migrate on an empty database == pgqueue migrate (alembic), catalog for catalog."""
    from django.core.management import call_command

    import pgqueue

    use_database(empty_dsn)
    call_command("migrate", "pgqueue", verbosity=0)
    django_schema = _catalog(empty_dsn)
    assert django_schema["tables"], "the Django migration created nothing"
    assert django_schema == _catalog(dsn)
    assert pgqueue.schema_check(empty_dsn) is None
    pgqueue.migrate(empty_dsn)  # alembic finds its revision recorded: nothing to do
    assert _catalog(empty_dsn) == django_schema


def test_django_migrate_after_pgqueue_migrate_is_a_no_op(django_db: str) -> None:
    """A database already migrated by pgqueue migrate passes Django's migrate untouched."""
    from django.core.management import call_command

    before = _catalog(django_db)
    call_command("migrate", "pgqueue", verbosity=0)
    assert _catalog(django_db) == before


def test_makemigrations_check_is_clean(django_db: str) -> None:
    """The shipped migrations match the models: makemigrations --check finds nothing to do."""
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_manage_py_pgqueue_worker_runs_jobs_in_a_subprocess(shop, django_db: str) -> None:
    """manage.py pgqueue worker --burst (tasks.py discovered) runs a committed job and exits."""
    from django.db import connection, transaction

    with transaction.atomic():
        shop.send_receipt.enqueue(connection, _order("cli@example.com").id)
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "--queues", "default,emails", "--burst",
         "--poll-interval", "0.05"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert query(django_db, "SELECT state, result FROM pgqueue.jobs") == [
        ("succeeded", "cli@example.com")
    ]


def test_manage_py_pgqueue_enqueue_of_an_unknown_task_names_no_app_option(django_db) -> None:
    """manage.py pgqueue enqueue of a name no task has said "without --app, a task is
    enqueued by any name", though no --app was given (manage.py supplies the app) and there
    is none to leave out: it names the task and the closest one only."""
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "enqueue",
         "tests.contrib.django_project.shop.tasks.send_reciept"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr.strip().splitlines()) == (1, [
        "Error: the app 'pgqueue.contrib.django:app' registers no task"
        " 'tests.contrib.django_project.shop.tasks.send_reciept' (did you mean"
        " 'tests.contrib.django_project.shop.tasks.send_receipt'?)"
    ])  # fmt: skip
    assert query(django_db, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


NOWHERE = "postgresql://postgres@127.0.0.1:5432/pgqueue_no_such_database"
IGNORED_DSN = (
    "Warning: PGQUEUE_DSN is ignored: manage.py pgqueue uses Django's database"
    ' (PGQUEUE["DSN"], else DATABASES["default"]); pass --dsn DSN to use another'
)
IGNORED_APP = (
    "Warning: PGQUEUE_APP is ignored: manage.py pgqueue runs Django's app"
    ' (PGQUEUE["APP"], else pgqueue.contrib.django.app); pass --app MODULE:ATTR to use another'
)


@pytest.mark.parametrize(
    ("variables", "warnings"),
    [
        ({"PGQUEUE_DSN": NOWHERE}, [IGNORED_DSN]),
        ({"PGQUEUE_APP": "nowhere:app"}, [IGNORED_APP]),
        ({"PGQUEUE_DSN": NOWHERE, "PGQUEUE_APP": "nowhere:app"}, [IGNORED_APP, IGNORED_DSN]),
    ],
)
def test_manage_py_pgqueue_ignores_pgqueue_dsn_and_app_left_in_the_environment(
    shop, django_db: str, variables: dict[str, str], warnings: list[str]
) -> None:
    """click reads variables before its default_map, so a PGQUEUE_DSN or PGQUEUE_APP left in
    the environment won over Django's database and app: the worker served another database
    (or failed to load another app) while Django's jobs waited. manage.py pgqueue ignores
    both, and says so in one line each."""
    from django.db import connection

    shop.send_receipt.enqueue(connection, _order("env@example.com").id)  # autocommit
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "--burst", "--poll-interval", "0.05"],
        env={**subprocess_env(django_db), **variables}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[: len(warnings)] == warnings
    assert query(django_db, "SELECT state FROM pgqueue.jobs") == [("succeeded",)]


def test_manage_py_pgqueue_says_a_variable_ignored_as_a_json_record_with_json_logs(
    django_db: str,
) -> None:
    """With --log-format json, the warnings that PGQUEUE_APP and PGQUEUE_DSN are ignored
    were lines of text in the JSON stream, which a log pipeline could not read. Each is a
    WARNING record with the action env_ignored and the variable it names."""
    variables = {"PGQUEUE_DSN": NOWHERE, "PGQUEUE_APP": "nowhere:app"}
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "--log-format", "json", "migrate", "--check"],
        env={**subprocess_env(django_db), **variables}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "pgqueue schema is up to date\n"), done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["level"], r["action"], r["variable"], r["message"]) for r in records] == [
        ("warning", "env_ignored", "PGQUEUE_APP", IGNORED_APP.removeprefix("Warning: ")),
        ("warning", "env_ignored", "PGQUEUE_DSN", IGNORED_DSN.removeprefix("Warning: ")),
    ]


@pytest.mark.parametrize(("port", "end"), [("spelled", ""), ("left out", ""), ("spelled", "\n")])
def test_manage_py_pgqueue_says_nothing_of_variables_naming_djangos_own(
    django_db: str, port: str, end: str
) -> None:
    """PGQUEUE_DSN spelling Django's database another way (a URL, not key=value pairs) and
    PGQUEUE_APP naming Django's app are what manage.py pgqueue uses anyway: no warning. Nor
    when Django's settings leave the port out (PORT "", libpq's default) and the URL spells
    it: that warned of another database. Nor when they end in a newline, which the plain
    CLI ignores: that warned of another database and app."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(django_db)
    url = "postgresql://{user}@{host}:{port}/{dbname}".format(**info)
    django = {key: value for key, value in info.items() if key != "port" or port == "spelled"}
    env = {**subprocess_env(make_conninfo(**django)), "PGPORT": info["port"],
           "PGQUEUE_DSN": url + end, "PGQUEUE_APP": "pgqueue.contrib.django:app" + end}  # fmt: skip
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "migrate", "--check"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def test_manage_py_pgqueue_dsn_option_wins_over_djangos_database(django_db) -> None:
    """An explicit --dsn is the one way to point manage.py pgqueue elsewhere."""
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "--dsn", NOWHERE, "migrate", "--check"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "pgqueue_no_such_database" in done.stderr, done.stderr


NO_NAME = """
from tests.contrib.django_project.settings import *  # noqa: F403

DATABASES = {"default": {**DATABASES["default"], "NAME": ""}}  # noqa: F405
"""


def manage_without_a_name(
    django_db: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``manage.py pgqueue *args`` on the test project's settings, with a database that has
    no NAME."""
    (tmp_path / "no_name_settings.py").write_text(NO_NAME)
    env = {**subprocess_env(django_db), "DJANGO_SETTINGS_MODULE": "no_name_settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return subprocess.run(
        [sys.executable, MANAGE, "pgqueue", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("command", [("migrate", "--check"), ("worker", "--burst")])
def test_manage_py_pgqueue_on_a_database_without_a_name_is_one_line(
    django_db: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A DATABASES entry without NAME made manage.py pgqueue end in Django's traceback: the
    command read the DSN before pgqueue's command line, which says expected failures in one
    line, had started. It is one line, with Django's reason, and exit status 1."""
    done = manage_without_a_name(django_db, tmp_path, *command)
    assert (done.returncode, done.stderr.splitlines()) == (1, [
        "Error: Django's settings give pgqueue no database: ImproperlyConfigured:"
        " settings.DATABASES is improperly configured. Please supply the NAME or"
        " OPTIONS['service'] value. Fix them, or pass --dsn DSN"
    ])  # fmt: skip


def test_manage_py_pgqueue_dsn_option_needs_no_usable_django_database(
    django_db: str, tmp_path: Path
) -> None:
    """With --dsn given, Django's database settings are not read: a DATABASES entry without
    NAME made even `manage.py pgqueue --dsn DSN ...` end in Django's traceback."""
    done = manage_without_a_name(django_db, tmp_path, "--dsn", django_db, "migrate", "--check")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("migrate", "--sql"), "CREATE SCHEMA"),
        (("migrate", "--roles"), "GRANT"),
        (("worker", "--help"), "Usage: manage.py pgqueue worker"),
        (("migrate", "--help"), "Usage: manage.py pgqueue migrate"),
    ],
)
def test_manage_py_pgqueue_commands_that_read_no_dsn_need_no_django_database(
    django_db: str, tmp_path: Path, command: tuple[str, ...], expected: str
) -> None:
    """Django's DSN is read when a command needs it: `migrate --sql` or `worker --help` on
    settings without a database NAME (a build step's, say) work as with the plain CLI, where
    they said "Django's settings give pgqueue no database" (the DSN was read while click
    parsed the group's options)."""
    done = manage_without_a_name(django_db, tmp_path, *command)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert expected in done.stdout, done.stdout


def test_the_pgqueue_cli_with_the_django_app_reads_djangos_database(django_db) -> None:
    """`pgqueue --app pgqueue.contrib.django:app stats` without --dsn said "no database
    configured": the CLI read the DSN as a plain PgQueue reads it (PGQUEUE_DSN, DATABASE_URL),
    past DjangoPgQueue.dsn, which reads Django's DATABASES. An app's own dsn is read again."""
    env = {k: v for k, v in subprocess_env(django_db).items()
           if k not in ("PGQUEUE_DSN", "DATABASE_URL", "PGQUEUE_APP")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", "pgqueue.contrib.django:app", "stats"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def test_manage_py_pgqueue_migrate_check_uses_djangos_database(django_setup, empty_dsn) -> None:
    """manage.py pgqueue migrate --check reads Django's database: missing, then current."""
    env = subprocess_env(empty_dsn)
    check = [sys.executable, MANAGE, "pgqueue", "migrate", "--check"]
    missing = subprocess.run(check, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert "not installed" in missing.stderr
    migrate = [sys.executable, MANAGE, "migrate", "pgqueue", "-v0"]
    subprocess.run(migrate, env=env, check=True, timeout=120)
    current = subprocess.run(check, env=env, capture_output=True, text=True, timeout=120)
    assert current.returncode == 0, current.stderr


def test_manage_py_pgqueue_accepts_djangos_settings_and_pythonpath_options(django_db) -> None:
    """--settings/--pythonpath, which manage.py applies itself, are not passed on to pgqueue."""
    from tests.contrib.conftest import SETTINGS

    check = [sys.executable, MANAGE, "pgqueue", "--pythonpath", ".", "migrate", "--check",
             f"--settings={SETTINGS}"]  # fmt: skip
    done = subprocess.run(check, env=subprocess_env(django_db), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_call_command_pgqueue_passes_options_and_raises_command_errors(
    django_setup: None, empty_dsn: str, dsn: str
) -> None:
    """call_command("pgqueue", "migrate", "--check") reaches click; failures are CommandError;
    the app's DSN still follows Django's settings afterwards (the CLI does not pin it)."""
    from django.core.management import CommandError, call_command
    from psycopg.conninfo import conninfo_to_dict

    from pgqueue.contrib.django import app

    use_database(empty_dsn)
    with pytest.raises(CommandError) as failed:
        call_command("pgqueue", "migrate", "--check")
    assert failed.value.returncode == 1
    with pytest.raises(CommandError, match="invalid queue name 'a b'"):
        call_command("pgqueue", "worker", "--queues", "a b", "--burst")
    call_command("pgqueue", "migrate")
    call_command("pgqueue", "migrate", "--check")
    use_database(dsn)
    assert conninfo_to_dict(app.dsn)["dbname"] == conninfo_to_dict(dsn)["dbname"]


def test_call_command_pgqueue_with_json_logs_still_raises_command_errors(
    django_setup: None, empty_dsn: str
) -> None:
    """With --log-format json, a command's error became a JSON record and click's Exit, which
    click hands back as a return value when not standalone: call_command returned as if
    pgqueue had succeeded. It raises CommandError, with the exit status, as with text logs."""
    import logging

    from django.core.management import CommandError, call_command

    use_database(empty_dsn)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(CommandError, match="pgqueue migrate") as failed:
            call_command("pgqueue", "--log-format", "json", "jobs", "show", "1")
    finally:
        root.handlers[:], root.level = handlers, level
        logging.captureWarnings(False)
    assert failed.value.returncode == 1


@pytest.fixture
def admin_client(django_db: str):
    """A Django test client logged in as a superuser (Django's own tables migrated)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    return client


def _finished_job(dsn: str, state: str) -> int:
    [(job_id,)] = query(
        dsn,
        "INSERT INTO pgqueue.finished_jobs (id, queue, task, args, kwargs, state, priority,"
        " attempts, max_attempts, run_at, created_at, last_error) VALUES (nextval("
        "pg_get_serial_sequence('pgqueue.active_jobs', 'id')), 'default', 't', '[1]', '{}',"
        " %s, 0, 3, 3, now(), now(), 'kaput') RETURNING id",
        [state],
    )
    return job_id


def test_admin_lists_jobs_read_only_and_retries_failed_ones(admin_client, django_db) -> None:
    """The admin shows jobs, cannot edit them, and its retry action queues a failed job again."""
    failed = _finished_job(django_db, "failed")
    url = "/admin/pgqueue/job/"
    listing = admin_client.get(url)
    assert listing.status_code == 200
    assert f">{failed}<" in listing.content.decode()
    assert admin_client.get(f"{url}add/").status_code == 403
    admin_client.post(url, {"action": "retry", "_selected_action": [failed]})
    assert query(django_db, "SELECT state, attempts, last_error FROM pgqueue.jobs") == [
        ("queued", 3, "kaput")
    ]


def test_the_admin_changelist_reads_a_bounded_part_of_the_history(
    admin_client, django_db, monkeypatch
) -> None:
    """The changelist counted every job (Django's paginator, and again for a filtered list)
    and read every job's queue for its queue filter: each page load read the whole history,
    a million finished jobs a million rows. The count now stops at admin.RECENT (saying so),
    and the queue filter lists the queues of the latest RECENT jobs (and the one selected):
    every query of a long list has a LIMIT. (Pages are smaller than RECENT, as by default.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pgqueue.contrib.django import admin

    monkeypatch.setattr(admin, "RECENT", 3)
    monkeypatch.setattr(admin.JobAdmin, "list_per_page", 2)
    monkeypatch.setattr(admin.JobAdmin, "list_max_show_all", 2)
    old = _finished_job(django_db, "failed")
    query(django_db, "UPDATE pgqueue.finished_jobs SET queue = 'old' WHERE id = %s", [old])
    for _ in range(4):
        _finished_job(django_db, "succeeded")
    url = "/admin/pgqueue/job/"
    for params in ("", "?state__exact=succeeded", "?q=t", "?all="):
        with CaptureQueriesContext(connection) as queries:
            listing = admin_client.get(url + params)
        page = listing.content.decode()
        reads = [q["sql"] for q in queries if '"pgqueue"."jobs"' in q["sql"]]
        assert reads and all(" LIMIT " in sql for sql in reads), reads
        assert ("queue__exact=default" in page, "queue__exact=old" in page) == (True, False)
        assert "3 jobs" in page and "Only the first 3 of these jobs" in page, page
    page = admin_client.get(url + "?queue__exact=old").content.decode()
    assert f">{old}<" in page and "queue__exact=old" in page and "Only the first" not in page


def test_the_admin_counts_a_sorted_list_without_sorting_it_and_says_which_jobs_it_pages(
    admin_client, django_db, monkeypatch
) -> None:
    """The capped count kept the list's order in its subquery: sorted by a column without an
    index (task, attempts), it sorted the whole history once more on each page load, for a
    count that does not depend on the order. And a list sorted oldest first said it paged
    through "the latest" jobs: it pages through the first ones of its order. The last page
    holds the jobs up to the cap; a page past it is Django's invalid-page redirect."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pgqueue.contrib.django import admin

    monkeypatch.setattr(admin, "RECENT", 3)
    monkeypatch.setattr(admin.JobAdmin, "list_per_page", 2)
    ids = [_finished_job(django_db, "failed") for _ in range(4)]
    url = "/admin/pgqueue/job/"
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(url + "?o=2").content.decode()  # sorted by task
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and not any("ORDER BY" in sql for sql in counts), counts
    assert "Only the first 3 of these jobs, in the list" in page, page
    last = admin_client.get(url + "?o=1&p=2").content.decode()  # by id, oldest first
    shown = [i for i in ids if f"/admin/pgqueue/job/{i}/change/" in last]
    assert shown == [ids[2]], shown
    assert admin_client.get(url + "?o=1&p=3")["Location"].endswith("?e=1")


def test_the_admin_actions_refuse_more_jobs_than_the_changelist_counts(
    admin_client, django_db, monkeypatch
) -> None:
    """ "Select all" offers the jobs the changelist counted (admin.RECENT at most), but an
    action ran on every job of the list: a retry of "all 10,000" requeued the whole history
    in one transaction. Past RECENT jobs an action changes none and says what to use."""
    from pgqueue.contrib.django import admin

    monkeypatch.setattr(admin, "RECENT", 2)
    ids = [_finished_job(django_db, "failed") for _ in range(3)]
    url = "/admin/pgqueue/job/"
    form = {"action": "retry", "select_across": "1", "index": "0", "_selected_action": ids[:1]}
    page = admin_client.post(url, form, follow=True).content.decode()
    assert "More than 2 jobs selected" in page and "pgqueue jobs retry --failed" in page
    assert states(django_db) == {"failed": 3}
    form["select_across"] = "0"
    page = admin_client.post(url, {**form, "_selected_action": ids[:2]}, follow=True)
    assert "2 job(s) queued again." in page.content.decode()
    assert states(django_db) == {"failed": 1, "queued": 2}


def test_the_admin_says_once_after_an_action_that_a_long_list_is_capped(
    admin_client, django_db, monkeypatch
) -> None:
    """An action's POST counts the list too (Django builds the changelist before running it)
    and its redirect's page counts it again: the page after an action on a long list said
    twice that only the first jobs are paged through. The POST, answered by a redirect, says
    nothing."""
    from pgqueue.contrib.django import admin

    monkeypatch.setattr(admin, "RECENT", 2)
    ids = [_finished_job(django_db, "failed") for _ in range(3)]
    form = {"action": "retry", "index": "0", "_selected_action": ids[:1]}
    page = admin_client.post("/admin/pgqueue/job/", form, follow=True).content.decode()
    assert "1 job(s) queued again." in page
    assert page.count("Only the first 2 of these jobs") == 1, page


def test_admin_cancel_action_cancels_queued_jobs(admin_client, shop, django_db) -> None:
    """The admin's cancel action ends a queued job as cancelled."""
    from django.db import connection

    job_id = shop.send_receipt.enqueue(connection, 1)
    admin_client.post("/admin/pgqueue/job/", {"action": "cancel", "_selected_action": [job_id]})
    assert query(django_db, "SELECT state FROM pgqueue.jobs") == [("cancelled",)]


def test_admin_cancel_action_locks_the_jobs_in_id_order(admin_client, shop, django_db) -> None:
    """The cancel action locks its jobs in id order, as the retry action does. In the
    changelist's order (newest first, or any column sorted) two admins cancelling
    overlapping selections could deadlock. Here the lower id is held: the action waits for
    it without having taken the higher one."""
    from django.db import connection, connections

    low, high = (shop.send_receipt.enqueue(connection, n) for n in (1, 2))

    def cancel() -> None:
        try:
            admin_client.post(url, {"action": "cancel", "_selected_action": [low, high]})
        finally:
            connections.close_all()

    url, held = "/admin/pgqueue/job/", "SELECT FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE"
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    with psycopg.connect(django_db) as blocker:
        blocker.execute(held, [low])
        thread = threading.Thread(target=cancel)
        thread.start()
        for _ in range(600):  # until the action waits for the lower id (30 s at most)
            if query(django_db, waiting) != [(0,)]:
                break
            time.sleep(0.05)
        with psycopg.connect(django_db) as probe:
            probe.execute(held + " NOWAIT", [high])  # LockNotAvailable if the action holds it
        blocker.rollback()
    thread.join(60)
    assert states(django_db) == {"cancelled": 2}


@pytest.mark.parametrize("max_age", [0, None])
async def test_an_async_tasks_orm_connection_is_released_as_a_requests_is(
    shop, django_db: str, max_age: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async task's ORM calls (``acount()``, ``sync_to_async``) run in asgiref's one
    thread for sync code, whose Django connection nothing released: it stayed open past
    CONN_MAX_AGE (0 here), and once the server dropped it every later async task's query
    failed on it, attempts and all, until the worker restarted. The worker releases it
    around each async task, as Django around each request, in that thread."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from pgqueue.contrib.django import app

    def shared_connection() -> object:
        return SyncToAsync.single_thread_executor.submit(
            lambda: connections["default"].connection
        ).result()

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", max_age)
    dropped: list[bool] = []
    with psycopg.connect(django_db, autocommit=True) as conn:
        shop.count_orders_async.enqueue(conn)

    def drop_connections_then_enqueue_once_one_ended() -> bool:
        if not dropped and states(django_db) == {"succeeded": 1}:
            dropped.append(shared_connection() is None)
            query(django_db, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                             " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                             " AND application_name NOT LIKE 'pgqueue %'")  # fmt: skip
            with psycopg.connect(django_db, autocommit=True) as conn:
                shop.count_orders_async.enqueue(conn)
        ended = states(django_db)
        return bool(dropped) and ended.get("succeeded", 0) + ended.get("failed", 0) == 2

    worker = app.worker(dsn=django_db, poll_interval=0.05, concurrency=1)
    await run_worker_until(worker, drop_connections_then_enqueue_once_one_ended)
    assert states(django_db) == {"succeeded": 2}
    assert dropped == [max_age == 0]


async def _pids(shop, django_db: str, breaks: list[bool], before_last=lambda: None) -> list:
    """orm_backend_pid jobs (``breaks``: each one's argument) run one after the other by one
    worker, ``before_last()`` called before the last is enqueued: each job's state, result
    (the pid of its connection) and error."""
    from pgqueue.contrib.django import app

    enqueued: list[int] = []

    def enqueue_next() -> None:
        if len(enqueued) == len(breaks) - 1:
            before_last()
        with psycopg.connect(django_db, autocommit=True) as conn:
            enqueued.append(shop.orm_backend_pid.enqueue(conn, breaks[len(enqueued)]))

    def each_once_the_last_ended() -> bool:
        ended = states(django_db)
        done = ended.get("succeeded", 0) + ended.get("failed", 0)
        if done == len(enqueued) < len(breaks):
            enqueue_next()
        return done == len(breaks)

    enqueue_next()
    worker = app.worker(dsn=django_db, poll_interval=0.05, concurrency=1)
    await run_worker_until(worker, each_once_the_last_ended)
    return query(django_db, "SELECT state, result, last_error FROM pgqueue.jobs ORDER BY id")


def _the_last_on_a_new_connection(jobs: list) -> None:
    """Of three orm_backend_pid jobs, the first two ran on one connection (the second broke
    it) and the third succeeded on another."""
    [(_, first, _), (_, broken, _), (state, third, error)] = jobs
    assert broken == first
    assert (state, error) == ("succeeded", None)
    assert third != first


def _terminate(django_db: str, pid: int) -> None:
    query(django_db, "SELECT pg_terminate_backend(%s, 10000)", [pid])


async def test_an_async_task_gets_a_new_connection_once_the_last_one_is_past_its_age(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async task hops to asgiref's thread to release its connections only when that
    would close one: a connection kept open after a task (CONN_MAX_AGE 0.3 s) and past its
    age when the next one starts is closed before it, as around each request."""
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0.3)
    [(_, first, _), (state, second, error)] = await _pids(
        shop, django_db, [False, False], lambda: time.sleep(0.4)
    )
    assert (state, error) == ("succeeded", None)
    assert second != first


async def test_an_async_task_gets_a_new_connection_after_one_opened_by_the_last_task(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection an async task opened in asgiref's thread, where none was open, is
    released after it: with CONN_MAX_AGE 0, the next task uses a connection of its own."""
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    [(_, first, _), (state, second, error)] = await _pids(shop, django_db, [False, False])
    assert (state, error) == ("succeeded", None)
    assert second != first


async def test_an_async_task_after_one_whose_orm_call_failed_gets_a_working_connection(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task whose ORM query failed (errors_occurred), on a persistent connection
    (CONN_MAX_AGE None) an earlier task opened, and that returned leaves a connection Django
    checks before reusing it: here the server ended it behind psycopg's back, and the next
    task got a new one."""
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    _the_last_on_a_new_connection(await _pids(shop, django_db, [False, True, False]))


async def test_an_async_task_health_checks_a_connection_ended_since_the_last_task(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CONN_HEALTH_CHECKS, a persistent connection that async tasks share, ended by the
    server between two of them (pg_terminate_backend), is found dead at the next task's
    first query and replaced, as in the next request: the task succeeds on a new one."""
    from django.db import connections

    settings = connections["default"].settings_dict
    monkeypatch.setitem(settings, "CONN_MAX_AGE", None)
    monkeypatch.setitem(settings, "CONN_HEALTH_CHECKS", True)
    ended: list[int] = []

    def terminate_the_last() -> None:
        [(pid,)] = query(django_db, "SELECT result FROM pgqueue.jobs ORDER BY id DESC LIMIT 1")
        _terminate(django_db, pid)
        ended.append(pid)

    [(_, first, _), (_, second, _), (state, third, error)] = await _pids(
        shop, django_db, [False, False, False], terminate_the_last
    )
    assert ended == [first] == [second]
    assert (state, error) == ("succeeded", None)
    assert third != first


async def test_an_async_task_started_while_another_ones_orm_call_runs_waits_to_release(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that starts while another one's ORM call still runs in asgiref's thread must
    not take the connection as it finds it: that call may yet break it. Here it fails a
    query and the server ends the connection; the task started meanwhile releases it once
    that call returned, before its own query, and succeeds on a new connection."""
    from django.db import connections

    from pgqueue.contrib.django import app

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    enqueued: list[int] = []

    def enqueue(*args: object) -> None:
        with psycopg.connect(django_db, autocommit=True) as conn:
            enqueued.append(shop.orm_backend_pid.enqueue(conn, *args))

    def one_breaking_the_connection_then_one_more_while_it_runs() -> bool:
        ended = states(django_db)
        if len(enqueued) == 1 and ended == {"succeeded": 1}:
            enqueue(True, 0.5)  # the connection the first one opened, broken in 0.5 s
        elif len(enqueued) == 2 and ended == {"succeeded": 1, "running": 1}:
            enqueue()
        return ended.get("succeeded", 0) + ended.get("failed", 0) == 3

    enqueue()
    worker = app.worker(dsn=django_db, poll_interval=0.02, concurrency=2)
    await run_worker_until(worker, one_breaking_the_connection_then_one_more_while_it_runs)
    _the_last_on_a_new_connection(
        query(django_db, "SELECT state, result, last_error FROM pgqueue.jobs ORDER BY id")
    )


@pytest.mark.parametrize(
    ("middle", "ends"),
    [("breaks_the_orm_connection_after_its_timeout", "failed"),
     ("times_out_its_own_orm_call", "succeeded")],
)  # fmt: skip
async def test_an_async_task_after_one_that_timed_out_waits_for_its_orm_call(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch, middle: str, ends: str
) -> None:
    """A task ended by its timeout may leave its ORM call running in asgiref's thread, where
    it may yet break the connection (here: a failed query, and the server ends it); so may
    a task that timed out its own ORM call, caught that and returned. The next task, even
    alone, releases the connections after that call returned, before its own query, and
    succeeds on a new connection."""
    from django.db import connections

    from pgqueue.contrib.django import app

    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)
    tasks = [shop.orm_backend_pid, getattr(shop, middle), shop.orm_backend_pid]
    enqueued: list[int] = []

    def each_once_the_last_ended() -> bool:
        ended = states(django_db)
        done = ended.get("succeeded", 0) + ended.get("failed", 0)
        if done == len(enqueued) < 3:
            with psycopg.connect(django_db, autocommit=True) as conn:
                enqueued.append(tasks[len(enqueued)].enqueue(conn))
        return done == 3

    worker = app.worker(dsn=django_db, poll_interval=0.02, concurrency=1)
    await run_worker_until(worker, each_once_the_last_ended)
    [(_, first, _), (timed_out, _, why), (state, third, error)] = query(
        django_db, "SELECT state, result, last_error FROM pgqueue.jobs ORDER BY id"
    )
    assert timed_out == ends
    assert ends == "succeeded" or "timed out" in why, why
    assert (state, error) == ("succeeded", None)
    assert third != first


async def test_async_tasks_one_at_a_time_skip_the_closings_that_change_nothing(
    shop, django_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Async tasks that make no ORM call, run one at a time, do not each close connections
    in asgiref's thread, which could change nothing there (a hop of 0.2-0.5 ms a job): of
    40, a few at most (the first, unless an earlier test's closing left that thread's
    connections recorded clean, when none; one started before the last one's count-out
    ran). With the skip broken, each task closes before and after it: 80."""
    from pgqueue.contrib.django import _conf, app

    closings: list[int] = []
    release = _conf.release_connections
    monkeypatch.setattr(_conf, "release_connections", lambda: [closings.append(1), release()])
    with psycopg.connect(django_db, autocommit=True) as conn:
        for _ in range(40):
            shop.does_nothing.enqueue(conn)
    await app.worker(dsn=django_db, burst=True, concurrency=1, scheduler=False).run()
    assert states(django_db) == {"succeeded": 40}
    assert len(closings) < 20, len(closings)


async def test_an_async_task_always_releases_when_asgirefs_thread_is_several(
    shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some apps put an executor of several threads in place of asgiref's one thread (for
    thread-sensitive calls): an ORM call may then run in a thread whose connections the last
    release there did not record, nor run first come first served. An async task then always
    releases, as when its ORM calls go to an outer ``async_to_sync``'s thread."""
    from concurrent.futures import ThreadPoolExecutor

    from asgiref.sync import SyncToAsync

    from pgqueue.contrib.django import _orm_thread

    assert _orm_thread.shared()
    with ThreadPoolExecutor(max_workers=2) as several:
        monkeypatch.setattr(SyncToAsync, "single_thread_executor", several)
        assert not _orm_thread.shared()


async def test_an_async_task_times_out_while_its_orm_call_still_runs(shop, django_db) -> None:
    """The connections an async task used are released after it in asgiref's one thread,
    and the release was awaited: a task cancelled by its timeout (or a shutdown) while its
    own ORM call still ran in that thread waited there until the call returned, so the
    timeout did not end the attempt, nor a shutdown the worker. It is started, not awaited:
    the attempt times out at its timeout, and the release runs once the thread is free."""
    from pgqueue.contrib.django import app

    with psycopg.connect(django_db, autocommit=True) as conn:
        shop.hold_the_orm_thread.enqueue(conn, 3.0)
    worker = app.worker(dsn=django_db, poll_interval=0.05, concurrency=1)
    started = time.monotonic()
    await run_worker_until(worker, lambda: states(django_db) == {"failed": 1})
    assert time.monotonic() - started < 2.5
    [(error,)] = query(django_db, "SELECT last_error FROM pgqueue.jobs")
    assert "timed out" in error, error


def test_a_process_task_uses_the_orm_in_its_child_process(shop, django_db: str) -> None:
    """A process-pool child imports the task's module, and a tasks.py that imports its models
    failed there ("Apps aren't loaded yet"): every job of an executor="process" task failed.
    Children now set Django up first. Sync tasks, which DjangoPgQueue wraps to release
    connections, can again be isolated in a child after a crash (their wrapper was taken
    for a function the child would not find)."""
    from django.db import connection

    from pgqueue._worker._executor import _importable
    from pgqueue.contrib.django import _conf
    from tests.contrib.django_project.shop.models import Order

    Order.objects.create(email="a@example.com")
    Order.objects.create(email="b@example.com")
    job_id = shop.count_orders.enqueue(connection)  # autocommit: committed at once
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "-q", "default", "--burst"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ended = "SELECT state, result, last_error FROM pgqueue.jobs WHERE id = %s"
    assert query(django_db, ended, [job_id]) == [("succeeded", 2, None)]
    send_receipt = _conf.get_app().get_task(shop.send_receipt.name)
    assert send_receipt is not None and send_receipt.fn is not shop.send_receipt.fn  # wrapped
    assert _importable(send_receipt)


def _one_child_two_connections(django_db: str, ids: list[int]) -> None:
    """Run the jobs ``ids`` (each returning its process's pid and its connection's) with a
    worker of one child: that child ran both, each on a connection of its own."""
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "-q", "default", "--burst",
         "--processes", "1", "--concurrency", "1"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = query(django_db, "SELECT result FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id",
                 [ids])  # fmt: skip
    [(first,), (second,)] = rows
    assert first[0] == second[0]  # one child ran both
    assert first[1] != second[1]  # each with a connection of its own


def test_a_process_task_releases_djangos_connections_as_a_thread_does(shop, django_db: str) -> None:
    """A child lives for many jobs, and it called the bare task function: its Django
    connection never aged out (CONN_MAX_AGE, broken after a database restart). It now
    releases connections around each call, as worker threads do: with Django's default
    CONN_MAX_AGE of 0, two jobs in one child use two connections."""
    from django.db import connection

    ids = [shop.child_connection.enqueue(connection) for _ in range(2)]
    _one_child_two_connections(django_db, ids)


def test_an_async_task_in_a_child_releases_djangos_connections_as_in_the_worker(
    shop, django_db: str
) -> None:
    """An async task runs in a child when isolated after a crash: its ORM calls ran in the
    child's asgiref thread, whose connections nothing released (the child releases those of
    its own thread around each call): they never aged out, and one broken stayed broken for
    every later job of that child. They are released there too: with Django's default
    CONN_MAX_AGE of 0, two jobs in one child use two connections."""
    from django.db import connection

    ids = [shop.async_child_connection.enqueue(connection) for _ in range(2)]
    query(django_db, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost'")
    _one_child_two_connections(django_db, ids)


def test_a_process_task_does_not_wait_for_an_orm_call_an_async_task_left_in_its_child(
    shop, django_db: str
) -> None:
    """A child released its asgiref thread's connections before each call and waited for
    that: a sync task, which uses none of them, waited behind an ORM call an async task
    isolated there had left running (a timeout it caught), 5 s here, without end for a call
    that never ends. The release is queued there, ahead of any later ORM call, not waited
    for."""
    from django.db import connection

    ids = [shop.leaves_an_orm_call_running.enqueue(connection, 5)]
    query(django_db, "UPDATE pgqueue.active_jobs SET attempts = 1, last_error = 'worker lost'")
    ids.append(shop.child_connection.enqueue(connection))
    _one_child_two_connections(django_db, ids)
    [(took,)] = query(django_db, "SELECT extract(epoch FROM finished_at - started_at)"
                                 " FROM pgqueue.jobs WHERE id = %s", [ids[1]])  # fmt: skip
    assert took < 2.5


def test_a_process_set_up_runs_after_djangos_in_each_child(shop, django_db: str) -> None:
    """The project's ``@app.process_setup`` does not replace Django's set-up of the child:
    Django's runs first (the user's set-up queries the ORM), then the user's, once."""
    from django.db import connection

    from tests.contrib.django_project.shop.models import Order

    Order.objects.create(email="a@example.com")
    job_id = shop.child_set_up.enqueue(connection)
    done = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "-q", "default", "--burst"],
        env=subprocess_env(django_db), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    ended = "SELECT state, result, last_error FROM pgqueue.jobs WHERE id = %s"
    [(state, result, error)] = query(django_db, ended, [job_id])
    assert (state, error) == ("succeeded", None)
    assert result["orders"] == 1 and result["pid"] == result["here"]


def test_the_admin_reads_jobs_from_pgqueues_own_database(
    django_setup: None, dsn: str, empty_dsn: str
) -> None:
    """With PGQUEUE["DATABASE"] naming another alias than "default", the admin queried
    "default", which has no pgqueue schema, and its page failed; it reads pgqueue's alias."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client, override_settings

    use_database(empty_dsn)  # "default": Django's own tables, no pgqueue schema
    connections.settings["queue"] = {
        **connections["default"].settings_dict,
        **django_settings_for(dsn),
    }
    try:
        with override_settings(PGQUEUE={"DATABASE": "queue", "QUEUE": "default"}):
            call_command("migrate", verbosity=0)  # pgqueue's migrations skip "default"
            failed = _finished_job(dsn, "failed")
            client = Client()
            client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
            listing = client.get("/admin/pgqueue/job/")
            assert listing.status_code == 200
            assert f">{failed}<" in listing.content.decode()
            client.post("/admin/pgqueue/job/", {"action": "retry", "_selected_action": [failed]})
        assert query(dsn, "SELECT state FROM pgqueue.jobs") == [("queued",)]
        assert query(empty_dsn, "SELECT to_regclass('pgqueue.jobs') IS NULL") == [(True,)]
    finally:
        connections["queue"].close()
        del connections.settings["queue"]
        close_connections()


def test_other_drivers_are_refused_with_the_drivers_name(django_setup: None) -> None:
    """A Django connection that is not psycopg 3 gets an error naming the driver."""
    from pgqueue.contrib.django._adapter import psycopg_connection

    class FakeWrapper:  # what a psycopg2-backed DatabaseWrapper exposes
        alias, vendor = "legacy", "postgresql"
        connection = type("connection", (), {"__module__": "psycopg2.extensions"})()

        def close_if_health_check_failed(self) -> None:
            pass

        def ensure_connection(self) -> None:
            pass

    with pytest.raises(TypeError, match="psycopg2"):
        psycopg_connection(FakeWrapper())


def test_unknown_pgqueue_settings_are_refused(django_setup: None) -> None:
    """A misspelt key in PGQUEUE is an ImproperlyConfigured naming it."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from pgqueue.contrib.django import _conf

    with (
        override_settings(PGQUEUE={"DATABSE": "other"}),
        pytest.raises(ImproperlyConfigured, match="DATABSE"),
    ):
        _conf.settings()


def test_worker_dsn_comes_from_djangos_database_settings(django_db: str) -> None:
    """Without PGQUEUE["DSN"], workers connect where Django's database points."""
    from psycopg.conninfo import conninfo_to_dict

    from pgqueue.contrib.django import app

    wanted = conninfo_to_dict(django_db)
    got = conninfo_to_dict(app.dsn)
    assert {k: got.get(k) for k in ("dbname", "host", "user")} == {
        k: wanted.get(k) for k in ("dbname", "host", "user")
    }


def test_a_pgqueue_dsn_setting_is_read_as_every_dsn_is(django_db: str) -> None:
    """PGQUEUE["DSN"] as a SQLAlchemy URL (postgresql+psycopg://), which PgQueue(dsn=...),
    workers and the CLI take, is what app.dsn gives libpq too, so app.connect(), app.wait()
    and app.run_worker() reach the database; the Django app handed the URL on as it was, and
    libpq refused it. A DSN libpq cannot parse is a ConfigurationError that does not quote it,
    as for PgQueue(dsn=...), not libpq's error quoting the password."""
    from urllib.parse import urlencode

    from django.test import override_settings
    from psycopg.conninfo import conninfo_to_dict

    from pgqueue import ConfigurationError
    from pgqueue.contrib.django import app

    url = "postgresql+psycopg:///?" + urlencode(conninfo_to_dict(django_db))
    with override_settings(PGQUEUE={"DSN": url}), app.connect() as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (
            conninfo_to_dict(django_db)["dbname"],
        )
    with (
        override_settings(PGQUEUE={"DSN": "postgresql://u:s3cret@[h/db"}),  # libpq quotes it
        pytest.raises(ConfigurationError) as refused,
    ):
        app.connect()
    assert "s3cret" not in str(refused.value)


def test_dsn_gives_a_pgqueue_dsn_setting_as_libpq_reads_it(django_db: str) -> None:
    """pgqueue.contrib.django.dsn() is "the libpq DSN workers and the CLI use", but it gave
    a PGQUEUE["DSN"] URL as written: postgresql+psycopg://, which libpq (psycopg.connect)
    refuses, while app.dsn, workers and the CLI read it as postgresql://."""
    from urllib.parse import urlencode

    import psycopg
    from django.test import override_settings
    from psycopg.conninfo import conninfo_to_dict

    from pgqueue.contrib.django import dsn

    url = "postgresql+psycopg:///?" + urlencode(conninfo_to_dict(django_db))
    with override_settings(PGQUEUE={"DSN": url}), psycopg.connect(dsn()) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (
            conninfo_to_dict(django_db)["dbname"],
        )


def test_call_command_pgqueue_takes_the_groups_options_before_the_subcommand(
    django_setup: None, empty_dsn: str, dsn: str
) -> None:
    """call_command("pgqueue", "--dsn", DSN, "migrate", "--check") said "unrecognized
    arguments: --dsn": Django's parser took pgqueue's group options (which manage.py hands to
    click untouched) for options of its own. They reach click, as on manage.py's command line,
    and as keywords too."""
    from django.core.management import CommandError, call_command

    use_database(dsn)  # Django's database has the schema; empty_dsn has none
    with pytest.raises(CommandError) as failed:
        call_command("pgqueue", "--log-level", "debug", "--dsn", empty_dsn, "migrate", "--check")
    assert (str(failed.value), failed.value.returncode) == ("pgqueue exited with status 1", 1)
    with pytest.raises(CommandError, match="pgqueue exited with status 1"):
        call_command("pgqueue", "migrate", "--check", dsn=empty_dsn)
    call_command(
        "pgqueue", "--app", "pgqueue.contrib.django:app", "--dsn", dsn, "migrate", "--check"
    )


def test_call_command_pgqueue_takes_skip_checks_where_manage_py_does(
    django_setup: None, dsn: str
) -> None:
    """call_command("pgqueue", ..., "--skip-checks") reads the flag before or after the
    subcommand, as manage.py does, rather than handing it to pgqueue's command line."""
    from django.core.management import call_command

    use_database(dsn)
    call_command("pgqueue", "--skip-checks", "migrate", "--check")
    call_command("pgqueue", "migrate", "--check", "--skip-checks")
