"""The real CLI in subprocesses: migrate, errors, and workers under signals and crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue._embed import install_revision
from pgqueue._schema import SCHEMA_REVISION
from pgqueue._testdb import Server
from tests.acceptance.conftest import APP, ROOT, cli, cli_env, usage_error, wait_for
from tests.helpers import query, states

CREATED = f"pgqueue schema is up to date (revision {SCHEMA_REVISION}: created)"
NOTHING_TO_DO = f"pgqueue schema is up to date (revision {SCHEMA_REVISION}: nothing to do)"


def running(dsn: str) -> int:
    """Jobs currently in state running."""
    return states(dsn).get("running", 0)


def test_migrate_is_idempotent_and_safe_when_run_twice_at_once(empty_dsn: str) -> None:
    """Two concurrent `pgqueue migrate` both succeed; --check then agrees the schema is current."""
    assert cli(empty_dsn, "migrate", "--check").returncode == 1
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: cli(empty_dsn, "migrate"), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert cli(empty_dsn, "migrate").returncode == 0
    check = cli(empty_dsn, "migrate", "--check")
    assert (check.returncode, check.stdout.strip()) == (0, "pgqueue schema is up to date")


def test_migrate_says_what_it_did(empty_dsn: str) -> None:
    """A deploy's log said "pgqueue schema is up to date" whether the run created the schema,
    upgraded it or found nothing to do: it now says which, after the same first words."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0008", lambda text: cur.execute(text.encode()))
    said = [cli(empty_dsn, "migrate").stdout for _ in range(2)]
    assert said == [
        f"pgqueue schema is up to date (revision {SCHEMA_REVISION}: upgraded from 0008)\n",
        f"{NOTHING_TO_DO}\n",
    ]


def test_migrate_with_a_lock_timeout_gives_up_behind_a_long_transaction(empty_dsn: str) -> None:
    """production.md's recipe for a busy database: behind a transaction holding
    pgqueue.active_jobs, an upgrade that needs its exclusive lock waits, and every claim, ack
    and enqueue queues behind its request; with a lock_timeout in the DSN it fails instead,
    changing nothing, and a run once the transaction is over upgrades."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0003", lambda text: cur.execute(text.encode()))
    impatient = make_conninfo(empty_dsn, options="-c lock_timeout=300ms")
    with psycopg.connect(empty_dsn) as holder:
        holder.execute("SELECT count(*) FROM pgqueue.active_jobs")  # its lock, to the end
        refused = cli(impatient, "migrate")
    assert refused.returncode == 1
    assert "lock timeout (LockNotAvailable)" in refused.stderr
    revision = "SELECT version_num FROM pgqueue.alembic_version"
    assert query(empty_dsn, revision) == [("0003",)]
    assert cli(impatient, "migrate").returncode == 0
    assert query(empty_dsn, revision) == [(SCHEMA_REVISION,)]


def test_migrate_check_names_the_command_to_run(empty_dsn: str) -> None:
    """On an empty database --check exits 1 with one line naming `pgqueue migrate`."""
    result = cli(empty_dsn, "migrate", "--check")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "pgqueue's schema is not installed in this database: run `pgqueue migrate`"
    ]


def test_migrate_sql_prints_the_schema_for_other_tooling(empty_dsn: str) -> None:
    """--sql prints SQL that, applied with psql-like tooling, creates a current schema."""
    result = cli(empty_dsn, "migrate", "--sql")
    assert result.returncode == 0
    assert "CREATE TABLE pgqueue.active_jobs" in result.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(result.stdout.encode())
    assert cli(empty_dsn, "migrate", "--check").returncode == 0


def refusal(dsn: str, sql: str) -> str:
    """The message of the exception that ``sql`` (printed by the CLI) raises on ``dsn``."""
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.RaiseException) as refused,
    ):
        conn.execute(sql.encode())
    return str(refused.value.diag.message_primary)


def test_migrate_sql_from_a_revision_prints_what_that_database_needs(empty_dsn: str) -> None:
    """--sql printed the SQL from nothing, which fails on a database already migrated (here
    to 0006): --from 0006 prints only the upgrade from there, which applies and leaves the
    schema current. The SQL of another revision refuses to run on it, changing nothing (it
    would skip the revisions in between). --from takes only revisions this version knows,
    and only with --sql."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0006", lambda text: cur.execute(text.encode()))
    other = cli(empty_dsn, "migrate", "--sql", "--from", "0007").stdout
    assert refusal(empty_dsn, other) == (
        "pgqueue: this SQL upgrades a schema at revision 0007, this database's is 0006"
        " (`pgqueue migrate --check` names it); nothing was changed"
    )
    assert query(empty_dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0006",)]
    result = cli(empty_dsn, "migrate", "--sql", "--from", "0006")
    assert result.returncode == 0, result.stderr
    assert "Running upgrade 0006 -> 0007" in result.stdout
    assert "Running upgrade 0005" not in result.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(result.stdout.encode())
    assert cli(empty_dsn, "migrate", "--check").returncode == 0
    unknown = cli(empty_dsn, "migrate", "--sql", "--from", "0042")
    assert unknown.returncode == 2
    assert usage_error(unknown.stderr).startswith(
        "Error: Invalid value for '--from': '0042' is not one of '0001', '0002',"
    )
    alone = cli(empty_dsn, "migrate", "--from", "0006")
    assert (alone.returncode, usage_error(alone.stderr)) == (
        2, "Error: --from only goes with --sql"
    )  # fmt: skip


def test_migrate_sql_from_a_revision_on_a_new_database_says_it_has_none(
    empty_dsn: str,
) -> None:
    """The SQL of --sql --from, run on a database without pgqueue's schema (where the SQL
    of plain --sql was meant), failed on its revision check's own read, "relation
    pgqueue.alembic_version does not exist": it says, as on a database at another revision,
    which revision it upgrades and that this one has none, changing nothing."""
    upgrade = cli(empty_dsn, "migrate", "--sql", "--from", "0006").stdout
    assert refusal(empty_dsn, upgrade) == (
        "pgqueue: this SQL upgrades a schema at revision 0006, this database's is none"
        " (`pgqueue migrate --check` names it); nothing was changed"
    )
    assert query(empty_dsn, "SELECT 1 FROM pg_namespace WHERE nspname = 'pgqueue'") == []


def test_migrate_from_in_the_environment_is_only_for_sql(empty_dsn: str) -> None:
    """PGQUEUE_MIGRATE_FROM, set for the runs of `migrate --sql`, made every plain `pgqueue
    migrate` and `migrate --check` in that environment a usage error, "--from only goes with
    --sql", naming an option nobody had passed, with the schema left as it was (and one
    holding no revision this version knows, such as a ConfigMap's "0006\\n", failed as an
    invalid --from): the variable is read only with --sql (the option, given without it, is
    still refused)."""
    for args, revision, said in [
        (["migrate"], "0006", CREATED),
        (["migrate", "--check"], "0006\n", "pgqueue schema is up to date"),
    ]:
        env = cli_env(empty_dsn, PGQUEUE_MIGRATE_FROM=revision)
        result = subprocess.run(
            [sys.executable, "-m", "pgqueue", *args], env=env, cwd=ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert (result.returncode, result.stdout.strip()) == (0, said), result.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", "--sql"],
        env=cli_env(empty_dsn, PGQUEUE_MIGRATE_FROM="0042"), cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert usage_error(refused.stderr).startswith(
        "Error: Invalid value for '--from': '0042' is not one of '0001', '0002',"
    )


def migrate_with(dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``pgqueue migrate ARGS`` on ``dsn`` with the variables ``env`` set too."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", "migrate", *args], env=cli_env(dsn, **env), cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "option", "does"),
    [("PGQUEUE_SQL", "--sql", "print the SQL"),
     ("PGQUEUE_CHECK", "--check", "only check the schema"),
     ("PGQUEUE_ROLES", "--roles", "print the GRANTs")],
)  # fmt: skip
def test_a_switch_of_migrate_left_in_the_environment_does_not_skip_the_migration(
    empty_dsn: str, variable: str, option: str, does: str
) -> None:
    """PGQUEUE_SQL left set made a deploy's `pgqueue migrate` print the SQL and exit 0
    without migrating (PGQUEUE_ROLES printed GRANTs, PGQUEUE_CHECK only checked): a switch
    is taken from the command line only, and a variable still set is a usage error naming
    it, with nothing printed nor migrated. Set to a false value, it is no switch at all; with
    the option given, it is not in the way."""
    result = migrate_with(empty_dsn, **{variable: "1"})
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert usage_error(result.stderr) == (
        f"Error: {variable} is set, but migrate reads {option} from the command line only"
        f" (one left set would make every `pgqueue migrate` {does}"
        f" instead of migrating): pass {option}, or unset {variable}"
    )
    assert query(empty_dsn, "SELECT 1 FROM pg_namespace WHERE nspname = 'pgqueue'") == []
    switched, alone = (
        migrate_with(empty_dsn, option, **{variable: "yes"}),
        cli(empty_dsn, "migrate", option),
    )
    assert (switched.returncode, switched.stdout) == (alone.returncode, alone.stdout)
    migrated = migrate_with(empty_dsn, **{variable: "off"})
    assert (migrated.returncode, migrated.stdout) == (0, f"{CREATED}\n")


@pytest.mark.parametrize(
    "switches", [("--sql", "--check"), ("--check", "--roles"), ("--sql", "--roles")]
)
def test_two_switches_of_migrate_are_a_usage_error(
    empty_dsn: str, switches: tuple[str, str]
) -> None:
    """Each switch does something instead of migrating, and one silently won: `migrate
    --check --sql` printed the SQL and exited 0 on a database without the schema, so a
    deploy gate that meant to check passed. Two together are a usage error naming both."""
    result = cli(empty_dsn, "migrate", *reversed(switches))  # named in --help's order
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert usage_error(result.stderr) == (
        f"Error: {switches[0]} and {switches[1]} cannot be combined: each makes migrate do"
        " something instead of migrating"
    )


def read_only(dsn: str) -> str:
    """``dsn`` in sessions that may not write (as on a standby, or without the grants)."""
    return make_conninfo(dsn, options="-c default_transaction_read_only=on")


def test_migrate_on_a_current_schema_needs_no_write(dsn: str) -> None:
    """On a current schema `pgqueue migrate` has nothing to do, so a session that may not
    write (a read-only one, or a worker role without CREATE on the database) succeeds; it
    ran CREATE SCHEMA IF NOT EXISTS anyway and exited 1 with an SQLAlchemy traceback."""
    result = cli(read_only(dsn), "migrate")
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, NOTHING_TO_DO, "")


_LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
)


def test_a_killed_migrate_lets_go_of_its_locks(empty_dsn: str) -> None:
    """A migrate killed (SIGKILL, a deploy's timeout) while it waits for a table's lock behind
    a long transaction: its backend waited on, the migration lock held, and every read and
    write of active_jobs queued behind its pending ACCESS EXCLUSIVE request, until that
    transaction ended. The backend now sees its client gone within a second or so."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, "0003", lambda text: cur.execute(text.encode()))
    with psycopg.connect(empty_dsn) as holder:  # a long transaction, on the table 0004 locks
        holder.execute("SELECT count(*) FROM pgqueue.active_jobs")
        migrate = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "migrate"], env=cli_env(empty_dsn), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: query(empty_dsn, _LOCK_WAITERS) == [(1,)], 60, "migrate waiting")
        migrate.kill()
        migrate.wait(30)
        wait_for(lambda: query(empty_dsn, _LOCK_WAITERS) == [(0,)], 10, "its backend gone")
        with psycopg.connect(empty_dsn, autocommit=True) as reader:
            reader.execute("SET statement_timeout = '5s'")
            assert reader.execute("SELECT count(*) FROM pgqueue.active_jobs").fetchone() == (0,)
    assert query(empty_dsn, "SELECT version_num FROM pgqueue.alembic_version") == [("0003",)]


def test_migrate_the_database_refuses_is_one_line(empty_dsn: str) -> None:
    """A migration the database refuses (here: read-only) exits 1 with one line naming the
    reason, not an SQLAlchemy traceback, and leaves no schema behind."""
    result = cli(read_only(empty_dsn), "migrate")
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "Error: the database refused: cannot execute CREATE SCHEMA in a read-only transaction"
        " (ReadOnlySqlTransaction)"
    ])  # fmt: skip
    assert cli(empty_dsn, "migrate", "--check").returncode == 1


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    """A wrong DSN gives a one-line error and exit status 1, not a traceback."""
    result = cli("postgresql://nobody@127.0.0.1:1/none", "migrate")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot reach the database:")


def test_a_refused_connection_asks_whether_the_server_runs() -> None:
    """A server refusing connections said only psycopg's first line ("Connection refused"),
    leaving out libpq's next one, the question a newcomer needs: is the server running?"""
    result = cli("postgresql://nobody@127.0.0.1:1/none", "migrate", "--check")
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        'Error: cannot reach the database: connection failed: connection to server at'
        ' "127.0.0.1", port 1 failed: Connection refused (is the server running on that host'
        " and accepting TCP/IP connections?)"
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("name", "argument"), [("h112 absent", "'h112 absent'"), ("-h115", "-- -h115")]
)
def test_a_database_that_does_not_exist_says_how_to_create_it(
    dsn: str, name: str, argument: str
) -> None:
    """A DSN naming a database not created yet (the tutorial's first step skipped) says to
    create it, with the command, and then to install the schema. A name starting with a
    dash follows ``--``: ``createdb -h115`` read it as options ("invalid option")."""
    absent = make_conninfo(dsn, dbname=name)
    result = cli(absent, "migrate", "--check")
    [line] = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert line.endswith(
        f"""FATAL:  database "{name}" does not exist (create it: createdb {argument},"""
        " with the DSN's host, port and user, then run pgqueue migrate)"
    )


@pytest.mark.parametrize(
    "command", [("migrate",), ("worker", "--burst"), ("stats",), ("cron", "list"), ("healthcheck",)]
)
def test_no_database_names_every_way_the_cli_takes_one(command: tuple[str, ...]) -> None:
    """Without --dsn, PGQUEUE_DSN or DATABASE_URL the error said "pass PgQueue(dsn=...) or set
    PGQUEUE_DSN", leaving out the option and the other variable the CLI reads."""
    result = cli("", *command, unset=("PGQUEUE_DSN", "DATABASE_URL"), timeout=60)
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "Error: no database configured: pass --dsn DSN, or set PGQUEUE_DSN or DATABASE_URL"
    ])  # fmt: skip


def test_database_url_is_read_as_pgqueue_dsn_is(dsn: str) -> None:
    """The CLI reads DATABASE_URL when PGQUEUE_DSN is unset, and ignored only PGQUEUE_DSN's
    whitespace: DATABASE_URL's newline from a ConfigMap named a database "test\\n" that does
    not exist, and a blank one connected to libpq's default database (PGHOST, PGDATABASE...)
    without a word. Its newline is ignored too, and a blank one is an error naming it."""
    env = {k: v for k, v in cli_env(dsn).items() if k != "PGQUEUE_DSN"}
    run = [sys.executable, "-m", "pgqueue", "migrate", "--check"]
    for url, out, err in [
        (f"{as_url(dsn)}\n", "pgqueue schema is up to date\n", ""),
        (" \n", "", "Error: DATABASE_URL is blank (' \\n'): set it to a DSN, or unset it\n"),
    ]:
        done = subprocess.run(
            run, env={**env, "DATABASE_URL": url, **libpq_env(dsn)}, cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (done.returncode, done.stdout, done.stderr) == (0 if out else 1, out, err)


def as_url(dsn: str) -> str:
    """``dsn`` as a URL (as DATABASE_URL is), its dbname last: libpq keeps a trailing
    newline in a URL's last value."""
    given = conninfo_to_dict(dsn)
    dbname = given.pop("dbname")
    return f"postgresql://?{urlencode({**given, 'dbname': dbname})}"


def libpq_env(dsn: str) -> dict[str, str]:
    """The PG* variables that make libpq's defaults ``dsn``'s database."""
    given = conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE"}
    return {names[k]: str(v) for k, v in given.items() if k in names}


@pytest.mark.parametrize("command", [("migrate",), ("worker", "--burst"), ("stats",)])
def test_a_malformed_dsn_is_one_line_without_its_password(command: tuple[str, ...]) -> None:
    """A DSN libpq cannot parse used to be reported as "the database refused: ..." (nothing
    was asked), quoting the DSN, password and all."""
    result = cli("mysql://user:secret@db.example/shop", *command)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith('Error: invalid database DSN: missing "=" after "<DSN>"')
    assert "secret" not in result.stderr


def test_a_dsn_that_is_not_utf8_names_the_option_without_its_password(dsn: str) -> None:
    """A DSN with a byte the locale cannot decode ($'\\xff' in a shell, in --dsn or
    PGQUEUE_DSN) failed with "'utf-8' codec can't encode character '\\udcff' in position
    24: surrogates not allowed", naming neither the DSN nor the option: it is a usage error
    naming --dsn, and its text, password and all, is not shown."""
    bad = b"postgresql://user:secret\xff@db.example/shop"
    env = {k: v for k, v in cli_env(dsn).items() if k != "PGQUEUE_DSN"}
    for args, variables in [([b"--dsn", bad], env), ([], {**env, "PGQUEUE_DSN": bad})]:
        result = subprocess.run(
            [sys.executable, "-m", "pgqueue", *args, "stats"], env=variables, cwd=ROOT,
            capture_output=True, text=True, errors="surrogateescape", timeout=60,
        )  # fmt: skip
        assert result.returncode == 2
        assert usage_error(result.stderr) == (
            "Error: Invalid value for '--dsn': it is not valid UTF-8 (a byte the locale cannot"
            " decode, such as $'\\xff' in a shell); the DSN is not shown, as it may hold a password"
        )
        assert "secret" not in result.stderr


def test_worker_on_a_missing_schema_stops_with_the_command_to_run(empty_dsn: str) -> None:
    """`pgqueue worker` without the schema exits 1 with one line naming `pgqueue migrate`."""
    result = cli(empty_dsn, "worker", "--queues", "io")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: pgqueue's schema is not installed in this database: run `pgqueue migrate`"
    )


@pytest.mark.parametrize(
    ("dsn_of", "command", "says"),
    [("empty", ("worker", "--queues", "io"), "run `pgqueue migrate`"),
     ("down", ("worker", "--queues", "io"), "cannot reach the database"),
     ("down", ("healthcheck",), "cannot reach the database")],
)  # fmt: skip
def test_with_json_logs_the_error_a_command_ends_on_is_a_json_record(
    empty_dsn: str, dsn_of: str, command: tuple[str, ...], says: str
) -> None:
    """With --log-format json, a worker that could not start (or a healthcheck that failed)
    ended its log stream with "Error: ..." as text, the one line a JSON log pipeline could not
    read, and the one that says why the worker is down. It is now a JSON record like the
    others: action command_failed, level error, and the exit status kept."""
    where = empty_dsn if dsn_of == "empty" else "postgresql://nobody@127.0.0.1:1/none"
    result = cli(where, "--log-format", "json", *command)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines()]
    last = records[-1]
    said = (last["action"], last["level"], last["logger"])
    assert said == ("command_failed", "error", "pgqueue.cli")
    assert says in last["message"] and not last["message"].startswith("Error:")


def test_with_json_logs_migrate_check_says_a_schema_behind_as_a_json_record(
    empty_dsn: str,
) -> None:
    """migrate --check on a database without the schema exits 1 with the problem on stderr:
    with --log-format json that line was text, the one line of an init container's JSON log
    a pipeline could not read. It is a command_failed record, as a failed healthcheck's is."""
    result = cli(empty_dsn, "--log-format", "json", "migrate", "--check")
    assert result.returncode == 1
    [record] = [json.loads(line) for line in result.stderr.splitlines()]
    said = (record["action"], record["level"], record["exit_code"])
    assert said == ("command_failed", "error", 1)
    assert "pgqueue migrate" in record["message"]


def test_with_json_logs_a_worker_that_crashes_ends_on_a_json_record(
    dsn: str, tmp_path: Path
) -> None:
    """A worker whose error is none pgqueue expects (a bug, here in the start's registration)
    ended its JSON log stream with Python's traceback, a dozen lines of text a JSON log
    pipeline could not read, and the ones that say why the worker is down. It is now one
    record, level critical, the traceback in its exception field; the exit status stays 1."""
    (tmp_path / "crashapp.py").write_text(
        "from pgqueue import _store\n"
        "from tests.acceptance.app_under_test import app\n"
        "def _broken(*args, **kwargs):\n"
        "    raise RuntimeError('planted bug in the registration')\n"
        "_store.workers_register = _broken\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", "crashapp", "--log-format", "json", "worker",
         "--burst"],
        env={**cli_env(dsn), "PYTHONPATH": f"{ROOT}:{tmp_path}"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stderr.splitlines()]
    last = records[-1]
    assert (last["action"], last["level"]) == ("uncaught_exception", "critical")
    assert "RuntimeError: planted bug in the registration" in last["message"]
    assert last["exception"].startswith("Traceback") and "_broken" in last["exception"]


def test_with_json_logs_a_crash_past_an_abandoned_thread_is_a_json_record(
    ledger: str, tmp_path: Path
) -> None:
    """A worker whose stop raised a bug while a sync task's thread still ran exits at once
    (os._exit: it would wait for the thread), and printed that error with
    traceback.print_exception, as text in a JSON log stream. It goes through sys.excepthook
    now, as an error reaching the top would: one uncaught_exception record; exit status 1."""
    (tmp_path / "stopcrash.py").write_text(
        "from pgqueue import _store\n"
        "from tests.acceptance.app_under_test import app\n"
        "def _broken(*args, **kwargs):\n"
        "    raise RuntimeError('planted bug in the deregistration')\n"
        "_store.workers_delete = _broken\n"
    )
    enqueue(ledger, "sleeps", [(60,)])
    worker = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--app", "stopcrash", "--log-format", "json", "worker",
         "-q", "io", "--poll-interval", "0.1", "--shutdown-timeout", "0.5"],
        env={**cli_env(ledger), "PYTHONPATH": f"{ROOT}:{tmp_path}"}, cwd=tmp_path,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: running(ledger) == 1, what="a running job")
        worker.send_signal(signal.SIGTERM)
        stderr = worker.communicate(timeout=60)[1]
    finally:
        worker.kill()
    assert worker.returncode == 1
    records = [json.loads(line) for line in stderr.splitlines()]
    last = records[-1]
    assert (last["action"], last["level"]) == ("uncaught_exception", "critical")
    assert "RuntimeError: planted bug in the deregistration" in last["message"]
    assert query(ledger, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]


@pytest.mark.parametrize(
    ("command", "says"),
    [(("jobs", "retry"), "Error: give either a JOB_ID or --failed"),
     (("migrate", "--from", "0001"), "Error: --from only goes with --sql")],
)  # fmt: skip
def test_with_json_logs_a_usage_error_a_command_finds_stays_text(
    dsn: str, command: tuple[str, ...], says: str
) -> None:
    """A usage error the command itself raised (options that do not go together) became a
    command_failed record with exit_code 2, without click's usage and hint, although usage
    errors stay text: one click finds while parsing did. Both are now click's usage error."""
    result = cli(dsn, "--log-format", "json", *command)
    assert (result.returncode, usage_error(result.stderr)) == (2, says)


OPERATIONS = [
    ("jobs", "list"), ("jobs", "show", "1"), ("jobs", "retry", "1"), ("jobs", "cancel", "1"),
    ("jobs", "retry", "--failed"), ("stats",), ("workers",), ("cron", "list"),
    ("enqueue", "tests.acceptance.app_under_test.once"), ("prune",),
    ("prune", "--older-than", "1d", "--dry-run"),
]  # fmt: skip


@pytest.mark.parametrize("command", OPERATIONS)
def test_commands_on_a_missing_schema_say_so_in_one_line(
    empty_dsn: str, command: tuple[str, ...]
) -> None:
    """Every operations command, run before `pgqueue migrate`, exits 1 with one line that
    says the schema is missing and the command to run, not a traceback."""
    result = cli(empty_dsn, *command)
    assert (result.returncode, result.stderr) == (
        1, "Error: pgqueue's schema is not installed in this database: run `pgqueue migrate`\n"
    )  # fmt: skip


@pytest.mark.parametrize("revision", ["0001", "0009"])
def test_commands_on_an_older_schema_say_its_revision_and_to_migrate(
    empty_dsn: str, revision: str
) -> None:
    """On a schema a revision (or many) behind, every operations command stops, as a worker
    does, saying the revision found, the one needed and to migrate: they answered as if it
    were current (`enqueue` wrote a job, `jobs retry --failed` requeued) without a word."""
    with psycopg.connect(empty_dsn) as conn, conn.cursor() as cur:
        install_revision(cur, revision, lambda text: cur.execute(text.encode()))
    expected = (f"Error: pgqueue's schema is at revision {revision}, this version needs"
                f" {SCHEMA_REVISION}: run `pgqueue migrate`\n")  # fmt: skip
    for command in OPERATIONS:
        result = cli(empty_dsn, *command)
        assert (result.returncode, result.stderr) == (1, expected), command
    assert query(empty_dsn, "SELECT count(*) FROM pgqueue.jobs") == [(0,)]


def test_commands_on_a_newer_schema_run_when_it_serves_this_code_as_workers_do(
    dsn: str,
) -> None:
    """A schema a later pgqueue migrated (a rolled-back deploy) that still serves this code
    (pgqueue.compatible_since()) is used, with the INFO line a worker logs; one that does
    not is refused, saying to upgrade pgqueue."""
    from tests.integration.test_schema_compat import from_the_future

    from_the_future(dsn, SCHEMA_REVISION)
    listed = cli(dsn, "jobs", "list")
    assert (listed.returncode, listed.stdout) == (0, "no jobs\n")
    assert "schema is at revision 0042, newer than this version's" in listed.stderr
    assert "so this command runs" in listed.stderr
    from_the_future(dsn, "0042")
    for command in OPERATIONS:
        result = cli(dsn, *command)
        assert (result.returncode, result.stderr) == (1, (
            "Error: pgqueue's schema is at revision 0042, newer than this version: upgrade"
            " pgqueue\n"
        )), command  # fmt: skip


def test_bad_app_path_is_one_line(dsn: str) -> None:
    """--app pointing at nothing importable gives a one-line error."""
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", "no.such.module:app", "worker"],
        env=cli_env(dsn), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot import app module 'no.such.module'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("source", "app_path", "error"),
    [('raise RuntimeError("boom")\n', "broken",
      "cannot import app module 'broken': RuntimeError: boom ({dir}/broken.py, line 1)"),
     ("def f(:\n", "broken", "cannot import app module 'broken': SyntaxError: "),
     ("app = 5\n", "broken",
      "'broken' is of type 'int', not a pgqueue.PgQueue (use MODULE:ATTRIBUTE)"),
     ("import pgqueue\napp = pgqueue.PgQueue()\n", "broken:other",
      "module 'broken' has no attribute 'other' (--app 'broken:other'; use MODULE:ATTRIBUTE)"),
     ("", ":app", "invalid app path ':app': use MODULE:ATTRIBUTE, e.g. myproject.tasks:app"),
     ("import pgqueue\napp = pgqueue.PgQueue()\n", "broken",
      "the app 'broken' has no tasks: the module that creates it must import the modules that"
      " define them")],
)  # fmt: skip
def test_an_app_that_cannot_be_used_is_one_line(
    dsn: str, tmp_path: Path, source: str, app_path: str, error: str
) -> None:
    """--app naming a module whose import raises (a traceback, before), an attribute that is
    missing or not a PgQueue, no module at all ("Empty module name"), or an app without tasks
    (whose worker used to fail every job it claimed as unknown) exits 1 with one line."""
    (tmp_path / "broken.py").write_text(source)
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", app_path, "worker", "--burst"],
        env=cli_env(dsn), cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: " + error.format(dir=tmp_path))
    assert "SyntaxError" not in line or line.endswith(f"({tmp_path / 'broken.py'}, line 1)")


SLOW_APP = """
import pathlib, time
import pgqueue
gate = pathlib.Path(__file__).with_name("go")
for _ in range(1200):  # at most a minute: until the test has seen the notice
    if gate.exists():
        break
    time.sleep(0.05)
app = pgqueue.PgQueue()
"""


def test_an_app_module_slow_to_import_is_said_after_a_few_seconds(dsn: str, tmp_path: Path) -> None:
    """An app module that waits at import time (a connection to a host that does not answer,
    say) held up any command without a word; after IMPORT_SLOW_AFTER seconds one INFO line
    says so, and the command goes on once the import ends."""
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    process = subprocess.Popen(
        [sys.executable, "-m", "pgqueue", "--app", "slow_app", "cron", "list"],
        env={**cli_env(dsn), "PYTHONPATH": str(ROOT)}, cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    first = process.stderr.readline()
    (tmp_path / "go").touch()
    out, rest = process.communicate(timeout=60)
    assert "still importing the app module 'slow_app' after 5 s (--app)" in first, first + rest
    assert (process.returncode, rest) == (0, "")
    assert out.startswith("no schedules: the app declares none")


def test_a_worker_without_an_app_is_refused(dsn: str) -> None:
    """Without --app or PGQUEUE_APP the worker knew no task and failed every job it claimed
    (attempt after attempt, as unknown); now it says what to pass."""
    env = {k: v for k, v in cli_env(dsn).items() if k != "PGQUEUE_APP"}
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--burst"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr.strip().splitlines()) == (1, [
        "Error: no app given: pass --app MODULE:ATTRIBUTE (or set PGQUEUE_APP) naming the"
        " PgQueue your tasks are registered on"
    ])  # fmt: skip


def enqueue(dsn: str, task: str, calls: list[tuple]) -> list[int]:
    """Enqueue jobs of the acceptance app in one committed transaction."""
    from tests.acceptance import app_under_test as a

    with psycopg.connect(dsn) as conn:
        return a.app.get_task(f"tests.acceptance.app_under_test.{task}").enqueue_many(
            conn, [(c, {}) for c in calls]
        )


def test_four_workers_run_two_thousand_jobs_exactly_once(ledger: str, spawn_worker) -> None:
    """4 worker processes x 2,000 jobs: each job executed once, all succeeded, attempts = 1."""
    ids = enqueue(ledger, "once", [(i,) for i in range(2000)])
    workers = [spawn_worker("--burst", "--concurrency", "8") for _ in range(4)]
    for w in workers:
        w.wait(timeout=300)
    assert [w.returncode for w in workers] == [0, 0, 0, 0]
    assert query(ledger, "SELECT count(*), count(DISTINCT job_id) FROM ledger") == [(2000, 2000)]
    assert query(ledger, "SELECT count(DISTINCT pid) > 1 FROM ledger") == [(True,)]
    assert states(ledger) == {"succeeded": 2000}
    assert query(ledger, "SELECT min(id), max(id), max(attempts) FROM pgqueue.jobs") == [
        (min(ids), max(ids), 1)
    ]


def test_sigkill_mid_job_is_rescued_after_the_lease(ledger: str, spawn_worker) -> None:
    """A worker killed mid-job: its job runs again on another worker once the lease expires."""
    [job_id] = enqueue(ledger, "slow_first_attempt", [(60,)])
    doomed = spawn_worker("--lease", "1", "--rescue-interval", "0.2")
    wait_for(lambda: query(ledger, "SELECT count(*) FROM ledger") == [(1,)], what="first attempt")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    rescuer = spawn_worker("--lease", "1", "--rescue-interval", "0.2")
    wait_for(lambda: states(ledger) == {"succeeded": 1}, what="rescue")
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0
    assert query(ledger, "SELECT job_id, attempt FROM ledger ORDER BY attempt") == [
        (job_id, 1), (job_id, 2)
    ]  # fmt: skip
    assert query(ledger, "SELECT attempts, errors->0->>'error' FROM pgqueue.jobs") == [
        (2, "worker lost")
    ]


def test_sigterm_lets_running_jobs_finish_and_exits_zero(ledger: str, spawn_worker) -> None:
    """SIGTERM: running jobs finish, nothing is left running, no new claims, exit status 0."""
    enqueue(ledger, "sleeps", [(1.0,)] * 4)
    worker = spawn_worker("--concurrency", "4", "--shutdown-timeout", "30")
    wait_for(lambda: running(ledger) == 4, what="4 running jobs")
    enqueue(ledger, "once", [(1,)])
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert states(ledger) == {"succeeded": 4, "queued": 1}


def test_sigterm_past_the_timeout_requeues_without_spending_an_attempt(
    ledger: str, spawn_worker
) -> None:
    """Jobs still running at the shutdown timeout go back to queued, attempts unchanged."""
    enqueue(ledger, "sleeps", [(30,)] * 2)
    worker = spawn_worker("--concurrency", "2", "--shutdown-timeout", "0.5")
    wait_for(lambda: running(ledger) == 2, what="2 running jobs")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert query(ledger, "SELECT state, attempts, count(*) FROM pgqueue.jobs GROUP BY 1, 2") == [
        ("queued", 0, 2)
    ]


def test_sigterm_stops_a_worker_whose_task_swallows_its_cancellation(
    ledger: str, spawn_worker
) -> None:
    """A coroutine that catches CancelledError and goes on cannot hold the worker: a few seconds
    after the shutdown timeout it is abandoned, its job goes back to queued with its attempt
    not counted (as for any job stopped at shutdown), and the worker exits with status 0."""
    [job_id] = enqueue(ledger, "ignores_cancellation", [(120,)])
    worker = spawn_worker("--shutdown-timeout", "0.5")
    wait_for(lambda: running(ledger) == 1, what="a running job")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - started < 10
    assert query(ledger, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]
    output = worker.stdout.read() if worker.stdout else ""
    assert f"job {job_id}: its task ignored its cancellation" in output


def test_a_worker_whose_heartbeat_loop_fails_puts_its_job_back_and_exits_1(ledger: str) -> None:
    """A bug in the heartbeat loop used to leave the worker running without heartbeats: the
    lease of its running job expired and the job ran again (here, by the same worker) while
    it still ran. Now the worker stops it at once and puts it back, attempt not counted,
    and exits 1 (its sync task's thread abandoned), so that its supervisor restarts it."""
    enqueue(ledger, "sleeps", [(60,)])
    done = cli(
        ledger, "--app", "tests.acceptance.broken_heartbeat_app:app", "worker", "--queues",
        "io", "--lease", "6", "--rescue-interval", "0.5", "--poll-interval", "0.1", timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "its heartbeat loop raised RuntimeError: planted bug" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("Error: worker ")
    assert query(ledger, "SELECT state, attempts FROM pgqueue.jobs") == [("queued", 0)]
    assert query(ledger, "SELECT count(*) FROM ledger") == [(1,)]


def test_second_sigint_forces_exit(ledger: str, spawn_worker) -> None:
    """A second SIGINT exits at once, even with a job that would run much longer."""
    enqueue(ledger, "sleeps", [(60,)])
    worker = spawn_worker("--shutdown-timeout", "60")
    wait_for(lambda: running(ledger) == 1, what="a running job")
    worker.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in (worker.stdout.readline() if worker.stdout else ""),
             what="stopping log line")  # fmt: skip
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 130


@pytest.mark.parametrize(
    ("queues", "error"),
    [("bad queue", "invalid queue name 'bad queue': use 1-64 characters from A-Z a-z 0-9 _ . -"),
     ("io:0", "concurrency of queue 'io' must be an int >= 1, got 0"),
     ("io,", "invalid queue name '': use 1-64 characters from A-Z a-z 0-9 _ . -"),
     ("io:abc", "concurrency of queue 'io' must be a whole number >= 1, got 'abc'"),
     ("io:2,io:3", "queue 'io' is given twice: name each queue once"),
     ("io:10001", "concurrency of queue 'io' must be at most 10000 (jobs run at once per"
      " queue by one worker; run more workers for more), got 10001"),
     ("", "'' names no queue: leave the option out for the app's default queue"),
     (" \n", "' \\n' names no queue: leave the option out for the app's default queue"),
     ("io:1_0", "concurrency of queue 'io' must be a whole number >= 1, got '1_0'"),
     ("io:+2", "concurrency of queue 'io' must be a whole number >= 1, got '+2'"),
     ("io:\u0661\u0662",
      "concurrency of queue 'io' must be a whole number >= 1, got '\u0661\u0662'")],
)  # fmt: skip
def test_bad_queue_option_is_a_usage_error_naming_it(dsn: str, queues: str, error: str) -> None:
    """An invalid --queues value is refused with one line naming it and saying what is
    allowed ('io:abc' used to say only "invalid literal for int()"; 'io:2,io:3' used to run
    io with 3 slots, silently; int() read 'io:1_0' as 10 slots, '+2' and Arabic-Indic '١٢'
    too). It is a bad option value: exit 2, as for the others, where it was 1. An empty one
    (-q "$QUEUES", with QUEUES unset) ran the app's default queue, silently, where an empty
    --args or --delay is refused: it is refused too."""
    result = cli(dsn, "worker", "--burst", "--queues", queues, timeout=30)
    assert result.returncode == 2
    assert usage_error(result.stderr) == f"Error: Invalid value for '--queues' / '-q': {error}"


def test_an_empty_queues_variable_is_an_unset_one(dsn: str) -> None:
    """PGQUEUE_QUEUES="" is no value, as an empty variable is for every option (click reads
    it so): the worker serves the app's default queue, as without the variable."""
    env = cli_env(dsn, PGQUEUE_QUEUES="", PGQUEUE_LOG_FORMAT="json")
    worker = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--burst"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    assert [line["queues"] for line in lines if line["action"] == "worker_started"] == [
        {"default": 10}
    ]


def test_the_start_record_says_which_settings_came_from_where(dsn: str) -> None:
    """A PGQUEUE_BURST=1 left in an environment makes a worker exit once idle, and nothing in
    its log said why: worker_started states every setting off its default, and where the
    CLI got it from (a variable, the command line)."""
    env = cli_env(dsn, PGQUEUE_BURST="1", PGQUEUE_NO_SCHEDULER="1", PGQUEUE_LOG_FORMAT="json")
    worker = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--lease", "20"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    [started] = [line for line in lines if line["action"] == "worker_started"]
    assert started["settings"] == {"lease": 20.0, "burst": True, "scheduler": False}
    assert started["sources"] == {
        "lease": "command line", "burst": "env PGQUEUE_BURST",
        "scheduler": "env PGQUEUE_NO_SCHEDULER",
    }  # fmt: skip
    assert started["message"].endswith(
        "; settings lease=20.0 (command line), burst=True (env PGQUEUE_BURST),"
        " scheduler=False (env PGQUEUE_NO_SCHEDULER)"
    )


# Every option and argument the CLI reads a number from, and the label click names it by.
NUMBER_PARAMETERS = [
    (("worker", "--burst", "--concurrency"), "'--concurrency' / '-c'"),
    (("worker", "--burst", "--batch-size"), "'--batch-size'"),
    (("worker", "--burst", "--processes"), "'--processes'"),
    (("worker", "--burst", "--metrics-port"), "'--metrics-port'"),
    (("worker", "--burst", "--lease"), "'--lease'"),
    (("worker", "--burst", "--shutdown-timeout"), "'--shutdown-timeout'"),
    (("demo", "--orders"), "'--orders'"),
    (("jobs", "list", "--limit"), "'--limit'"),
    (("jobs", "show"), "'JOB_ID'"),
    (("jobs", "retry"), "'[JOB_ID]'"),
    (("jobs", "cancel"), "'JOB_ID'"),
    (("enqueue", "tests.acceptance.app_under_test.once", "--priority"), "'--priority'"),
    (("enqueue", "tests.acceptance.app_under_test.once", "--max-attempts"), "'--max-attempts'"),
    (("enqueue", "tests.acceptance.app_under_test.once", "--delay"), "'--delay'"),
    (("prune", "--older-than"), "'--older-than'"),
    (("stats", "--interval"), "'--interval'"),
]


@pytest.mark.parametrize("value", ["1_0", "+10", "1 0", "\u0661\u0662"])
@pytest.mark.parametrize(("command", "label"), NUMBER_PARAMETERS)
def test_a_number_int_reads_but_nobody_writes_is_a_usage_error(
    dsn: str, command: tuple[str, ...], label: str, value: str
) -> None:
    """click's INT and FLOAT are int() and float(), which read "1_0" as 10 and take "+10"
    and other scripts' digits (Arabic-Indic "١٢" is 12): `jobs cancel 1_0` cancelled job 10.
    Each is refused before anything is done, exit 2, naming the value ("1 0" too)."""
    result = cli(dsn, *command, value, timeout=60)
    assert result.returncode == 2, result.stderr
    line = usage_error(result.stderr)
    assert line.startswith(f"Error: Invalid value for {label}: ") and repr(value) in line
    assert states(dsn) == {}


@pytest.mark.parametrize("command", [("stats", "--interval"), ("prune", "--older-than")])
def test_a_long_number_that_is_not_one_is_refused_at_once(
    dsn: str, command: tuple[str, ...]
) -> None:
    """The pattern of a number of seconds split a long run of digits every way before
    refusing it: 100,000 digits and an "x" kept the command busy for minutes (quadratic), not
    an instant, and so would a pasted log line. It is a usage error like any other."""
    value = "1" * 100_000 + "x"
    result = cli(dsn, *command, value, timeout=60)
    assert result.returncode == 2, result.stderr[-300:]
    assert usage_error(result.stderr).startswith(f"Error: Invalid value for '{command[-1]}': ")


LONG = "9" * 5000  # more digits than int() reads (4,300)
OUT_OF_RANGE = "a number of 5000 digits is out of range."


@pytest.mark.parametrize(
    ("args", "error"),
    [(("worker", "--burst", "--concurrency", LONG), f"'--concurrency' / '-c': {OUT_OF_RANGE}"),
     (("jobs", "list", "--limit", LONG), f"'--limit': {OUT_OF_RANGE}"),
     (("jobs", "show", LONG), f"'JOB_ID': {OUT_OF_RANGE}"),
     (("worker", "--burst", "--queues", f"io:{LONG}"),
      "'--queues' / '-q': concurrency of queue 'io' is out of range: a number of 5000 digits")],
    ids=["concurrency", "limit", "job id", "queues"],
)  # fmt: skip
def test_a_number_longer_than_python_reads_is_out_of_range(
    dsn: str, args: tuple[str, ...], error: str
) -> None:
    """A whole number of more digits than int() reads was "not a valid integer range" (or
    "not a valid job id"), and in --queues Python's advice to call
    sys.set_int_max_str_digits(): it is out of range, said without its 5,000 digits."""
    result = cli(dsn, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert usage_error(result.stderr) == f"Error: Invalid value for {error}"


@pytest.mark.parametrize(
    ("args", "error"),
    [(("worker", "--burst", "--lease", "1e99999"),
      "'--lease': 1e99999 is not in the range 0.1<=x<=31557600000."),
     (("worker", "--burst", "--shutdown-timeout", " -1E400\n"),
      "'--shutdown-timeout': -1E400 is not in the range 0<=x<=31557600000."),
     (("stats", "--interval", "1e309"), "'--interval': 1e309 is not in the range 0.1<=x<=86400."),
     (("enqueue", "t", "--delay", "1e99999"),
      "'--delay': invalid duration '1e99999': must be from 0 to 1000 years")],
)  # fmt: skip
def test_a_number_of_seconds_past_every_float_is_named_as_given(
    dsn: str, args: tuple[str, ...], error: str
) -> None:
    """--lease 1e99999, a float too large, said "inf is not in the range ...": a value
    nobody wrote. The error names the value as given."""
    result = cli(dsn, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert usage_error(result.stderr) == f"Error: Invalid value for {error}"


def test_a_worker_refuses_more_slots_than_it_runs_naming_the_limit(dsn: str) -> None:
    """--concurrency took any whole number (10**20): it is at most 10,000 per queue, as the
    figure of a queue in --queues is."""
    result = cli(dsn, "worker", "--burst", "--concurrency", "10001", timeout=60)
    assert result.returncode == 2, result.stderr
    assert usage_error(result.stderr) == (
        "Error: Invalid value for '--concurrency' / '-c': 10001 is not in the range 1<=x<=10000."
    )


def test_numbers_from_the_environment_may_end_in_a_newline(ledger: str) -> None:
    """A value from a ConfigMap or an .env file often ends in a newline or spaces, which
    int() and float(), and so click, ignore: the digits-only check refused them, exit 2, so
    workers that had run with PGQUEUE_CONCURRENCY="10\\n" no longer started. Whitespace around
    a number (or a duration) is ignored again, as it is around --queues' names and figures."""
    ids = enqueue(ledger, "once", [(1,)])
    env = cli_env(
        ledger, PGQUEUE_QUEUES=" io:2 \n", PGQUEUE_CONCURRENCY="4\n", PGQUEUE_LEASE=" 30\r\n",
        PGQUEUE_BATCH_SIZE="10 ", PGQUEUE_POLL_INTERVAL="0.1\n",
    )  # fmt: skip
    worker = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--burst"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert query(ledger, "SELECT job_id FROM ledger") == [(ids[0],)]
    pruned = cli(ledger, "prune", "--older-than", " 7d\n")
    assert (pruned.returncode, pruned.stdout.strip()) == (0, "deleted 0 finished jobs")


def test_text_and_choices_from_the_environment_may_end_in_a_newline(ledger: str) -> None:
    """Whitespace around a number from a ConfigMap or an .env file was ignored, but
    PGQUEUE_LOG_LEVEL="info\n" (and PGQUEUE_LOG_FORMAT) was not one of the choices, and
    PGQUEUE_APP's and PGQUEUE_WORKER_NAME's newline made an app that did not import and a
    name refused as padded, PGQUEUE_MIGRATE_FROM's a revision unknown: whitespace around
    them is ignored too, and a value blank or with whitespace within where none can be is
    still refused."""
    ids = enqueue(ledger, "once", [(1,)])
    env = {
        **cli_env(ledger, PGQUEUE_QUEUES="io", PGQUEUE_LOG_LEVEL="INFO\r\n",
                  PGQUEUE_LOG_FORMAT="json\n", PGQUEUE_WORKER_NAME=" w1\n"),
        "PGQUEUE_APP": f"{APP}\n", "PGQUEUE_DSN": f" {ledger}\n",
    }  # fmt: skip
    worker = subprocess.run(
        [sys.executable, "-m", "pgqueue", "worker", "--burst"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    assert query(ledger, "SELECT id, worker_id FROM pgqueue.jobs") == [(ids[0], "w1")]
    started = [json.loads(line) for line in worker.stderr.splitlines() if "worker_started" in line]
    assert [line["worker"] for line in started] == ["w1"]
    sql = migrate_with(ledger, "--sql", PGQUEUE_MIGRATE_FROM="0006\n")
    assert (sql.returncode, sql.stdout) == (
        0,
        cli(ledger, "migrate", "--sql", "--from", "0006").stdout,
    )
    for variable, value, error in [
        ("PGQUEUE_LOG_FORMAT", "js on\n", "Error: Invalid value for '--log-format': 'js on'"
         " is not one of 'text', 'json'."),
        ("PGQUEUE_WORKER_NAME", " \n", "Error: Invalid value for '--name': ' \\n' is blank:"
         " give a value, or leave the option out"),
    ]:  # fmt: skip
        refused = subprocess.run(
            [sys.executable, "-m", "pgqueue", "worker", "--burst"], cwd=ROOT,
            env={**env, variable: value}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert (refused.returncode, usage_error(refused.stderr)) == (2, error)


def test_every_choice_is_read_whatever_its_case(dsn: str, empty_dsn: str) -> None:
    """--log-level took INFO but --log-format refused JSON, and --state (of jobs list and of
    prune) refused FAILED and " failed" although whitespace around a value is ignored
    everywhere else: every choice is now read whatever its case, whitespace around it
    ignored."""
    logged = cli(empty_dsn, "--log-format", "JSON", "migrate", "--check")
    [record] = [json.loads(line) for line in logged.stderr.splitlines()]
    assert (logged.returncode, record["action"]) == (1, "command_failed")
    [job_id] = enqueue(dsn, "once", [(1,)])
    listed = cli(dsn, "jobs", "list", "--state", " Queued\n", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
    pruned = cli(dsn, "prune", "--state", "FAILED", "--older-than", "1d")
    assert (pruned.returncode, pruned.stdout.strip()) == (0, "deleted 0 finished jobs")


@pytest.mark.parametrize(("written", "read"), [("\\ ", " "), ("\xa0", "\xa0")])
def test_a_dsn_keeps_the_end_libpq_reads(pg_server: Server, written: str, read: str) -> None:
    """Whitespace around --dsn (PGQUEUE_DSN) is ignored, as libpq ignores it; but a value may
    end in a space escaped as libpq reads it (`password=secret\\ `), or in a character only
    Python calls whitespace (a no-break space): stripping either connected with another
    password or database. The DSN keeps them, and its newline from a ConfigMap is still
    dropped."""
    name = f"pgqueue_test_{uuid.uuid4().hex[:8]}{read}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        server = {k: v for k, v in conninfo_to_dict(pg_server.dsn).items() if k != "dbname"}
        given = f" {make_conninfo(**server)} dbname={name[:-1]}{written}\n"
        result = cli(given, "migrate")
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{CREATED}\n", "")
        created = "SELECT to_regclass('pgqueue.jobs') IS NOT NULL"
        assert query(pg_server.dsn_for(name), created) == [(True,)]
    finally:
        pg_server.drop(name)


def test_healthcheck_finds_a_worker_by_the_name_it_was_given(dsn: str, spawn_worker) -> None:
    """A worker's --name (PGQUEUE_WORKER_NAME) is stripped: " w1\\n" from a ConfigMap runs
    as w1. The probe the docs give, `healthcheck --worker "$PGQUEUE_WORKER_NAME"`, looked for
    " w1\\n" and failed while w1 beat: an orchestrator restarted a healthy worker forever. It
    reads the name as the worker does, and a blank one is refused as --name's is."""
    worker = spawn_worker("--name", " w1\n")
    wait_for(lambda: query(dsn, "SELECT id FROM pgqueue.worker_processes") == [("w1",)],
             what="worker w1 registered")  # fmt: skip
    probe = cli(dsn, "healthcheck", "--worker", " w1\n")
    assert (probe.returncode, probe.stdout, probe.stderr) == (0, "ok\n", "")
    blank = cli(dsn, "healthcheck", "--worker", " \n")
    assert (blank.returncode, usage_error(blank.stderr)) == (
        2,
        "Error: Invalid value for '--worker': ' \\n' is blank: give a value, or leave the"
        " option out",
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--lease", "nan"), ("--lease", "inf"), ("--lease", "1e300"), ("--poll-interval", "nan"),
     ("--rescue-interval", "nan"), ("--shutdown-timeout", "nan")],
)  # fmt: skip
def test_worker_refuses_a_duration_that_is_not_a_number_of_seconds(
    dsn: str, option: str, value: str
) -> None:
    """NaN passes click's ranges: --lease nan (or inf, or 1e300) used to start a worker whose
    every claim failed in SQL, logging a traceback per retry, with its jobs left queued."""
    result = cli(dsn, "worker", "--burst", "--queues", "io", option, value, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"Error: Invalid value for '{option}': " in result.stderr.strip().splitlines()[-1]


def own_dsn_stats(dsn: str, tmp_path: Path, body: str) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``pgqueue --app owndsn stats``, without PGQUEUE_DSN
    or DATABASE_URL, for an app whose class's ``dsn`` property runs ``body``."""
    (tmp_path / "owndsn.py").write_text(
        "import pgqueue\n"
        "class App(pgqueue.PgQueue):\n"
        "    @property\n"
        "    def dsn(self):\n"
        f"        {body}\n"
        "app = App()\n"
    )
    env = {k: v for k, v in cli_env(dsn).items() if k not in ("PGQUEUE_DSN", "DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", "owndsn", "stats"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.returncode, result.stderr.strip().splitlines()


def test_an_app_whose_own_dsn_raises_is_one_line(dsn: str, tmp_path: Path) -> None:
    """The CLI asks an app whose class defines dsn for it (DjangoPgQueue reads Django's
    DATABASES): one that raised, as Django does for a database without a NAME, ended in a
    traceback. It is one line, as an app module that raises is, naming --dsn."""
    assert own_dsn_stats(dsn, tmp_path, "raise RuntimeError('no NAME')") == (1, [
        f"Error: the app 'owndsn' gives no DSN: RuntimeError: no NAME ({tmp_path}/owndsn.py,"
        " line 5); pass --dsn DSN"
    ])  # fmt: skip


def test_an_app_whose_own_dsn_falls_back_to_pgqueues_names_the_dsn_option(
    dsn: str, tmp_path: Path
) -> None:
    """An app whose class's dsn ends in ``super().dsn`` with nothing configured said "pass
    PgQueue(dsn=...)", which the CLI's user cannot do: it names --dsn, as for a plain app."""
    assert own_dsn_stats(dsn, tmp_path, "return super().dsn") == (1, [
        "Error: no database configured: pass --dsn DSN, or set PGQUEUE_DSN or DATABASE_URL"
    ])  # fmt: skip


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_with_json_logs_a_tasks_warnings_and_records_are_json_records(
    dsn: str, tmp_path: Path, executor: str
) -> None:
    """A warning (warnings.warn in a task, a library's DeprecationWarning) was printed by
    Python as two lines of text, file and source line, in the middle of the JSON log stream.
    With --log-format json it is now a record of its own (logger py.warnings). A task run in
    a child process (executor="process") logged through a process whose logging nobody had
    set up: its warnings stayed text, and its records were bare messages. The children log
    as the worker does."""
    (tmp_path / "warnapp.py").write_text(
        "import logging\n"
        "import warnings\n"
        "import pgqueue\n"
        "app = pgqueue.PgQueue()\n"
        f"@app.task(name='warns', executor={executor!r})\n"
        "def warns():\n"
        "    warnings.warn('this call is going away', UserWarning)\n"
        "    logging.getLogger('user').warning('warned')\n"
    )
    query(dsn, "SELECT pgqueue.enqueue('warns')")
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "--app", "warnapp", "--log-format", "json", "worker",
         "--burst"],
        env=cli_env(dsn), cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    [warned] = [r for r in records if r["logger"] == "py.warnings"]
    assert "UserWarning: this call is going away" in warned["message"]
    assert [r["message"] for r in records if r["logger"] == "user"] == ["warned"]
    assert states(dsn) == {"succeeded": 1}


def test_a_burst_worker_exits_beside_a_job_another_transaction_holds(ledger: str) -> None:
    """`pgqueue worker --burst` with a runnable job row-locked by another transaction (a
    test's open transaction, a long SELECT ... FOR UPDATE) runs the rest and exits 0, warning
    of what it left: it counted the job as runnable and never exited."""
    held, free = enqueue(ledger, "once", [(1,), (2,)])
    with psycopg.connect(ledger) as holder:
        holder.execute("SELECT FROM pgqueue.active_jobs WHERE id = %s FOR UPDATE", [held])
        result = cli(ledger, "worker", "--burst", "-q", "io", "--poll-interval", "0.1", timeout=120)
        holder.rollback()
    assert result.returncode == 0, result.stderr
    assert "burst: ending with 1 runnable jobs left that other transactions hold" in result.stderr
    assert query(ledger, "SELECT id, state FROM pgqueue.jobs ORDER BY id") == [
        (held, "queued"), (free, "succeeded"),
    ]  # fmt: skip
