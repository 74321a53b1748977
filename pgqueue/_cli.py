"""The ``pgqueue`` command: click commands that parse options and call the Python API."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import re
import shlex
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

import click
import psycopg

from pgqueue._app import PgQueue
from pgqueue._connections import normalize_dsn, strip_dsn
from pgqueue._errors import (
    NoDatabaseError,
    PgQueueError,
    SchemaError,
    error_line,
    first_line,
    unreachable,
)
from pgqueue._logging import configure_logging, json_logging
from pgqueue._options import DECIMAL_NUMBER, MAX_CONCURRENCY, WHOLE_NUMBER, too_long_a_number
from pgqueue._retry import MAX_DELAY
from pgqueue._schema import KNOWN_REVISIONS, UNDEFINED, schema_missing
from pgqueue._worker._config import CHILD_START_TIMEOUT

if TYPE_CHECKING:
    from pgqueue._worker import Worker

log = logging.getLogger("pgqueue.cli")

F = TypeVar("F", bound=Callable[..., Any])

PASS_DSN = "pass --dsn DSN"


class State:
    """What the group options resolved to, shared with every command."""

    def __init__(self, app_path: str | None, dsn: str | None) -> None:
        self.app_path = app_path
        self.given_dsn = dsn

    @property
    def _dsn(self) -> str | None:
        """``--dsn`` (manage.py pgqueue's State reads Django's without it, when first asked)."""
        return self.given_dsn

    @functools.cached_property
    def app(self) -> PgQueue:
        """The user's app (``--app``), or an empty one when none is given."""
        app = load_app(self.app_path) if self.app_path else PgQueue()
        if self._dsn:
            app._dsn = self._dsn
        return app

    @property
    def dsn(self) -> str:
        """The database to use: ``--dsn``, else the app's: its own ``dsn`` if its class has
        one (``DjangoPgQueue`` reads Django's settings), else as PgQueue reads it, with a
        message that says to pass ``--dsn`` when there is none."""
        if self._dsn:
            return normalize_dsn(self._dsn)
        if type(self.app).dsn is not PgQueue.dsn:
            return self._own_dsn()
        return self.app._configured_dsn(PASS_DSN)

    def _own_dsn(self) -> str:
        """The app's own ``dsn``; one that raises (Django's ImproperlyConfigured for a
        database without a NAME) is said in one line, as an app module that raises is."""
        try:
            return self.app.dsn
        except NoDatabaseError:  # it fell back to PgQueue's, which said "PgQueue(dsn=...)"
            return self.app._configured_dsn(PASS_DSN)  # raises again, naming --dsn
        except (PgQueueError, ValueError):
            raise  # friendly_errors says these
        except Exception as exc:
            raise click.ClickException(
                f"the app {self.app_path!r} gives no DSN: {_raised_at(exc)}; {PASS_DSN}"
            ) from exc


class Seconds(click.FloatRange):
    """A number of seconds from ``minimum`` to ``maximum`` (1,000 years): never NaN, which
    click's ranges let through, nor infinite."""

    name = "seconds"

    def __init__(self, minimum: float, maximum: float = MAX_DELAY) -> None:
        super().__init__(minimum, maximum)
        self.lowest, self.highest = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The float, or a usage error naming the value and the range."""
        if isinstance(value, str):
            text = value.strip()  # as float() does: a variable's trailing newline, say
            if not DECIMAL_NUMBER.fullmatch(text):
                self.fail(
                    f"{value!r} is not a number of seconds (digits 0-9, e.g. 2.5).", param, ctx
                )
            if not self.lowest <= float(text) <= self.highest:  # said as given: 1e999 is inf
                self.fail(
                    f"{text} is not in the range {self.lowest:g}<=x<={self.highest:.0f}.",
                    param,
                    ctx,
                )
            value = text
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds

    def _describe_range(self) -> str:
        # What --help shows in brackets: click's "0<=x<=31557600000.0" said in words.
        highest = "1000 years" if self.highest == MAX_DELAY else f"{self.highest:g} s"
        return f"{self.lowest:g} s to {highest}"


class Whole(click.IntRange):
    """A whole number (from ``min`` to ``max``, if given) written in digits 0-9, with an
    optional ``-`` and whitespace around it, as ``int()`` takes: click's INT, being ``int()``,
    also reads ``1_0`` as 10, and ``+5`` and other scripts' digits (``١٢``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The int, or a usage error naming the value (and the range)."""
        if isinstance(value, str):
            text = value.strip()  # a variable's trailing newline (a ConfigMap's, say)
            if not WHOLE_NUMBER.fullmatch(text):
                self.fail(f"{value!r} is not a whole number (digits 0-9).", param, ctx)
            if too_long_a_number(text):  # click would call it "not a valid integer range"
                self.fail(
                    f"a number of {len(text.lstrip('-'))} digits is out of range.", param, ctx
                )
            value = text
        return super().convert(value, param, ctx)


class Text(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """Text, with whitespace around it ignored as numbers' is (a variable's trailing newline,
    from a ConfigMap or an .env file); a blank value is a usage error, not the option's
    default: ``--dsn "$DSN"``, with DSN unset, must not quietly use another database."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The text stripped, or a usage error saying it is blank."""
        if not isinstance(value, str):
            return value
        text = self.strip(value)
        if not text:
            self.fail(f"{value!r} is blank: give a value, or leave the option out", param, ctx)
        return text

    def strip(self, value: str) -> str:
        """``value`` without the whitespace around it."""
        return value.strip()


class Dsn(Text):
    """A DSN, as :class:`Text`; one that is not UTF-8 (a byte such as ``$'\\xff'``, which
    Python keeps as a lone surrogate) is a usage error that does not show it: it may hold a
    password."""

    name = "dsn"

    def strip(self, value: str) -> str:
        """``value`` without the whitespace libpq ignores around it."""
        return strip_dsn(value)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The DSN stripped, or a usage error saying what is wrong with it."""
        dsn = super().convert(value, param, ctx)
        try:
            dsn.encode()
        except UnicodeEncodeError:
            self.fail(
                "it is not valid UTF-8 (a byte the locale cannot decode, such as $'\\xff'"
                " in a shell); the DSN is not shown, as it may hold a password",
                param,
                ctx,
            )
        return dsn


class Choice(click.Choice):  # type: ignore[type-arg]  # generic from click 8.2 on
    """click's Choice, with whitespace around the value ignored, as :class:`Text` does."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The choice, or a usage error listing them."""
        return super().convert(value.strip() if isinstance(value, str) else value, param, ctx)


class QueueList(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.4 on
    """Comma-separated queues, each ``NAME`` or ``NAME:SLOTS``, checked as the worker checks
    them: a bad one is a usage error naming it (the text is passed on as it is)."""

    name = "queues"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``value`` unchanged, or a usage error saying what is wrong with it."""
        from pgqueue._worker import parse_queues

        if isinstance(value, str) and not value.strip():  # -q "$QUEUES", QUEUES unset, say
            self.fail(
                f"{value!r} names no queue: leave the option out for the app's default queue",
                param,
                ctx,
            )
        try:
            parse_queues(value, 1)  # --concurrency, the figure of queues without one, too
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


def load_app(path: str) -> PgQueue:
    """Import ``module:attribute`` (or ``module``, attribute ``app``) and return the PgQueue."""
    module_name, _, attribute = path.partition(":")
    if not module_name or module_name.startswith("."):
        raise click.ClickException(
            f"invalid app path {path!r}: use MODULE:ATTRIBUTE, e.g. myproject.tasks:app"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        with _said_if_slow(module_name):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.ClickException(
            f"cannot import app module {module_name!r}: {exc}{_not_found(module_name, exc)}"
        ) from exc
    except Exception as exc:  # the module itself raised: say what, and where
        raise click.ClickException(
            f"cannot import app module {module_name!r}: {_raised_at(exc)}"
        ) from exc
    if not hasattr(module, attribute or "app"):
        raise click.ClickException(
            f"module {module_name!r} has no attribute {attribute or 'app'!r} (--app {path!r};"
            f" use MODULE:ATTRIBUTE{_namespace_hint(module, attribute)})"
        )
    app = getattr(module, attribute or "app")
    if not isinstance(app, PgQueue):
        raise click.ClickException(
            f"{path!r} is of type {type(app).__name__!r}, not a pgqueue.PgQueue"
            " (use MODULE:ATTRIBUTE)"
        )
    return app


IMPORT_SLOW_AFTER = 5.0  # seconds: a command says nothing until the app's module is imported


@contextlib.contextmanager
def _said_if_slow(module_name: str) -> Iterator[None]:
    """Log once, at INFO, that the app's module is still importing after IMPORT_SLOW_AFTER
    seconds: one that waits at import time (a connection to a host that does not answer, a
    lock) held up any command without a word."""
    timer = threading.Timer(IMPORT_SLOW_AFTER, _say_slow, (module_name,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _say_slow(module_name: str) -> None:
    log.info(
        "still importing the app module %r after %g s (--app): an import that waits, for a"
        " connection or a lock, holds up the command; it goes on when the import ends",
        module_name, IMPORT_SLOW_AFTER,
        extra={"action": "app_import_slow", "app_module": module_name},
    )  # fmt: skip


def _not_found(module_name: str, exc: ImportError) -> str:
    """Where to look when the app's module, or a module it imports, cannot be found; for
    another ImportError (``from helpers import missing``), the line that raised it."""
    where = _app_line(exc)
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return f" ({where})" if where else ""
    if f"{module_name}.".startswith(f"{exc.name}."):  # the app's module, or its package
        parent, _, child = exc.name.rpartition(".")
        if parent in sys.modules:  # found, but without this submodule
            return _found_without(sys.modules[parent], child)
        return (
            f" (not in the current directory, {os.getcwd()}, nor on PYTHONPATH: run pgqueue from"
            " the folder that holds it, or add that folder to PYTHONPATH)"
        )
    return f" ({where}{': ' if where else ''}is it installed in this environment?)"


def _app_line(exc: ImportError) -> str:
    """``file, line N`` of the app's code that raised ``exc``, past the import machinery."""
    ours = (__file__, importlib.__file__, "<")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(ours)]
    return f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else ""


def _found_without(parent: ModuleType, child: str) -> str:
    """Where ``parent`` was found, lacking ``child``: a package without it, or a module of
    the same name (a ``myproject.py`` in the current directory) hiding the package meant."""
    if hasattr(parent, "__path__"):
        return (
            f" (package {parent.__name__!r}, found in {', '.join(parent.__path__)}, has no"
            f" module {child!r})"
        )
    return (
        f" ({parent.__name__!r} is {parent.__file__}: if it hides the package you meant, rename it)"
    )


def _namespace_hint(module: ModuleType, attribute: str) -> str:
    """For a folder without ``__init__.py`` (a namespace package, which defines nothing): name
    a module in it, as the app path to give."""
    if getattr(module, "__file__", None) is not None or not hasattr(module, "__path__"):
        return ""
    inside = sorted(p.stem for folder in module.__path__ for p in Path(folder).glob("*.py"))
    example = f", e.g. {module.__name__}.{inside[0]}:{attribute or 'app'}" if inside else ""
    return (
        f"; {module.__name__!r} is a folder without __init__.py: name the module in it that"
        f" defines the app{example}"
    )


def _raised_at(exc: Exception) -> str:
    """``Type: message`` and where: the innermost line of the traceback, or for a SyntaxError
    the line that does not parse, by the file's path (its own message names the base name
    only, ``(tasks.py, line 3)``, which several packages of an app may hold)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = error_line(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        text += f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return text


def _not_installed(exc: psycopg.Error) -> str:
    return (
        f"{first_line(exc)}: is pgqueue's schema installed and current in this "
        "database? `pgqueue migrate --check` tells, `pgqueue migrate` installs it"
    )


def _database_error(exc: psycopg.Error) -> str:
    if unreachable(exc):  # a lock or statement timeout said "cannot reach the database"
        return f"cannot reach the database: {first_line(exc)}{_unreachable_hint(exc)}"
    if schema_missing(exc):  # not a missing table of a user's trigger on pgqueue's tables
        return _not_installed(exc)
    return f"the database refused: {first_line(exc)} ({type(exc).__name__})"


# libpq's own text (English unless lc_messages says otherwise: then no hint is added).
_NO_DATABASE = re.compile(r'database "(.*)" does not exist')


def _unreachable_hint(exc: BaseException) -> str:
    """What a newcomer does next: libpq's question on its second line ("Is the server
    running...?"), which the first line alone left out, or the command creating a database
    that does not exist yet."""
    if found := _NO_DATABASE.search(first_line(exc)):
        name = shlex.quote(found[1])  # after "--" if it starts with "-", else an option
        return (
            f" (create it: createdb {'-- ' if name.startswith('-') else ''}{name}, with the"
            " DSN's host, port and user, then run pgqueue migrate)"
        )
    asked = [line.strip() for line in str(exc).splitlines()[1:] if "server running" in line]
    return f" ({asked[0][0].lower()}{asked[0][1:]})" if asked else ""


def friendly_errors(fn: F) -> F:
    """Turn expected failures into one line on stderr and exit status 1, not a traceback;
    with JSON logs, into one JSON record (see :func:`show_error`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                friendly = _friendly(exc)
                if friendly is None:
                    raise
                raise friendly from None
        except click.ClickException as exc:
            if not json_logging() or isinstance(exc, click.UsageError):  # usage stays text
                raise
            # Still raised: click shows it (as a record) and exits with its status when
            # standalone, and a caller of main(standalone_mode=False), such as Django's
            # call_command, gets the error rather than a return value.
            raise LoggedError(exc.format_message(), exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


class LoggedError(click.ClickException):
    """A command's final error under JSON logs, which click shows as a record of the log."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click sets it per class: the original's

    def show(self, file: Any = None) -> None:
        """Log the ``command_failed`` record (``file`` is click's, unused)."""
        log.error(self.message, extra={"action": "command_failed", "exit_code": self.exit_code})


def show_error(exc: click.ClickException) -> None:
    """Say the error a command ends on: ``Error: ...`` as click does, or with JSON logs a
    record of the stream like the others, which a JSON log pipeline can read."""
    if json_logging():
        exc = LoggedError(exc.format_message(), exc.exit_code)
    exc.show()


def _friendly(exc: Exception) -> click.ClickException | None:
    """The one line that says an expected failure (see friendly_errors), or ``None``."""
    if isinstance(exc, psycopg.Error):
        return click.ClickException(_database_error(exc))
    if isinstance(exc, SchemaError) and isinstance(exc.__cause__, UNDEFINED):
        return click.ClickException(_not_installed(exc.__cause__))  # enqueue's
    if isinstance(exc, PgQueueError | ValueError):
        return click.ClickException(str(exc))
    if isinstance(exc, RecursionError):  # JSON that PostgreSQL accepted and Python cannot decode
        return click.ClickException(
            "a JSON value read from the database is nested too deeply for Python to decode"
            " (more than about 1,000 levels); read it with SQL"
        )
    return None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--app",
    "app_path",
    envvar="PGQUEUE_APP",
    type=Text(),
    metavar="MODULE:ATTR",
    help="Your PgQueue object, e.g. myproject.tasks:app  [env PGQUEUE_APP]",
)
@click.option(
    "--dsn",
    envvar="PGQUEUE_DSN",
    type=Dsn(),
    metavar="DSN",
    help="PostgreSQL DSN or URL  [env PGQUEUE_DSN, else DATABASE_URL]",
)
@click.option(
    "--log-level",
    envvar="PGQUEUE_LOG_LEVEL",
    default="info",
    show_default=True,
    type=Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="The least severe records logged.  [env PGQUEUE_LOG_LEVEL]",
)
@click.option(
    "--log-format",
    envvar="PGQUEUE_LOG_FORMAT",
    default="text",
    show_default=True,
    type=Choice(["text", "json"], case_sensitive=False),
    help="json: one object per line, with job_id, task, queue, attempt, duration_ms, action."
    "  [env PGQUEUE_LOG_FORMAT]",
)
@click.version_option(package_name="pgqueue")
@click.pass_context
def cli(
    ctx: click.Context, app_path: str | None, dsn: str | None, log_level: str, log_format: str
) -> None:
    """pgqueue: a job queue for Python that needs nothing but PostgreSQL."""
    configure_logging(log_level, log_format)
    ctx.obj = State(app_path, dsn)


# The variables migrate once read for its switches, each of which does something instead of
# migrating: one left set made every deploy's `pgqueue migrate` print, and exit 0. They are
# refused while set, so that a script relying on one does not migrate by surprise either.
MODE_VARIABLES = {
    "PGQUEUE_SQL": ("--sql", "print the SQL"),
    "PGQUEUE_CHECK": ("--check", "only check the schema"),
    "PGQUEUE_ROLES": ("--roles", "print the GRANTs"),
}


@cli.command()
@click.option("--sql", "print_sql", is_flag=True, help="Print the SQL instead of running it.")
@click.option(
    "--from",
    "since",
    envvar="PGQUEUE_MIGRATE_FROM",
    metavar="REVISION",
    help="With --sql: only the SQL that upgrades a schema at this revision (`migrate --check`"
    " tells a database's).  [env PGQUEUE_MIGRATE_FROM, read only with --sql]",
)
@click.option("--check", is_flag=True, help="Exit 1 if the schema is missing or behind.")
@click.option(
    "--roles", "print_roles", is_flag=True, help="Print the least-privilege GRANTs instead."
)
@click.pass_obj
@friendly_errors
def migrate(
    state: State, print_sql: bool, since: str | None, check: bool, print_roles: bool
) -> None:
    """Create or upgrade pgqueue's schema (idempotent; concurrent runs are safe)."""
    from pgqueue import _migrate

    _refuse_mode_variables(_switches(sql=print_sql, check=check, roles=print_roles))
    since = _revision_from(since, print_sql)
    if print_roles:
        click.echo(_migrate.roles_sql())
        return
    if print_sql:
        click.echo(_migrate.migration_sql(since))
        return
    if check:
        problem = _migrate.schema_check(state.dsn)
        if problem and json_logging():  # the error it ends on, as friendly_errors logs one
            raise LoggedError(problem, 1)
        if problem:
            click.echo(problem, err=True)
            sys.exit(1)
        click.echo("pgqueue schema is up to date")
        return
    click.echo(_migrated(*_migrate.migrate(state.dsn)))


def _migrated(before: str | None, after: str | None) -> str:
    """What ``pgqueue migrate`` did, for a deploy's log: the first words never change."""
    if before == after:
        return f"pgqueue schema is up to date (revision {after}: nothing to do)"
    if before is None:
        return f"pgqueue schema is up to date (revision {after}: created)"
    return f"pgqueue schema is up to date (revision {after}: upgraded from {before})"


def _switches(**given: bool) -> bool:
    """Whether one of migrate's switches is given; a usage error for two, of which one
    silently won (`migrate --check --sql` printed the SQL and exited 0 on any schema)."""
    named = [f"--{name}" for name, on in given.items() if on]
    if len(named) > 1:
        raise click.UsageError(
            f"{' and '.join(named)} cannot be combined: each makes migrate do something"
            " instead of migrating"
        )
    return bool(named)


def _refuse_mode_variables(switched: bool) -> None:
    """Unless a switch is given, a usage error naming the first of MODE_VARIABLES that is
    set to anything but a false value ("0", "false", "no", "off"), which never switched."""
    for variable, (option, does) in MODE_VARIABLES.items():
        if _switched_on(os.environ.get(variable, "")) and not switched:
            raise click.UsageError(
                f"{variable} is set, but migrate reads {option} from the command line only"
                f" (one left set would make every `pgqueue migrate` {does} instead of"
                f" migrating): pass {option}, or unset {variable}"
            )


def _switched_on(value: str) -> bool:
    if not value:  # click reads an empty variable as an unset one
        return False
    try:
        return bool(click.BOOL.convert(value, None, None))
    except click.BadParameter:  # it used to be a usage error: it still is
        return True


def _revision_from(since: str | None, print_sql: bool) -> str | None:
    """``--from``'s revision, one this version knows. PGQUEUE_MIGRATE_FROM, left set for the
    runs of ``--sql``, is theirs alone: the others neither read nor check it."""
    if since is None:
        return None
    ctx = click.get_current_context()
    if print_sql:
        param = next(p for p in ctx.command.params if p.name == "since")
        return str(Choice(KNOWN_REVISIONS).convert(since, param, ctx))
    if ctx.get_parameter_source("since") is click.core.ParameterSource.ENVIRONMENT:
        return None
    raise click.UsageError("--from only goes with --sql")


@cli.command()
@click.option(
    "--queues",
    "-q",
    envvar="PGQUEUE_QUEUES",
    type=QueueList(),
    default=None,
    help="Comma-separated queues, each optionally NAME:CONCURRENCY  [default: the app's"
    " default queue; env PGQUEUE_QUEUES]",
)
@click.option(
    "--concurrency",
    "-c",
    envvar="PGQUEUE_CONCURRENCY",
    type=Whole(1, MAX_CONCURRENCY),
    default=10,
    show_default=True,
    help="Jobs at once per queue without its own figure.  [env PGQUEUE_CONCURRENCY]",
)
@click.option(
    "--burst",
    envvar="PGQUEUE_BURST",
    is_flag=True,
    help="Exit once nothing is runnable.  [env PGQUEUE_BURST]",
)
@click.option(
    "--shutdown-timeout",
    envvar="PGQUEUE_SHUTDOWN_TIMEOUT",
    type=Seconds(0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get after SIGTERM.  [env PGQUEUE_SHUTDOWN_TIMEOUT]",
)
@click.option(
    "--poll-interval",
    envvar="PGQUEUE_POLL_INTERVAL",
    type=Seconds(0.01),
    default=1.0,
    show_default=True,
    help="Seconds between polls when no notification.  [env PGQUEUE_POLL_INTERVAL]",
)
@click.option(
    "--lease",
    envvar="PGQUEUE_LEASE",
    type=Seconds(0.1),
    default=30.0,
    show_default=True,
    help="Seconds a claim is held without a heartbeat.  [env PGQUEUE_LEASE]",
)
@click.option(
    "--batch-size",
    envvar="PGQUEUE_BATCH_SIZE",
    type=Whole(1, 10_000),
    default=100,
    show_default=True,
    help="Most jobs one claim takes per queue; with concurrency >= 2x this, the next batch is"
    " claimed while one runs.  [env PGQUEUE_BATCH_SIZE]",
)
@click.option(
    "--rescue-interval",
    envvar="PGQUEUE_RESCUE_INTERVAL",
    type=Seconds(0.05),
    default=5.0,
    show_default=True,
    help="Seconds between sweeps for expired leases.  [env PGQUEUE_RESCUE_INTERVAL]",
)
@click.option(
    "--processes",
    envvar="PGQUEUE_PROCESSES",
    type=Whole(1),
    default=None,
    help="Size of the process pool for executor='process' tasks"
    "  [default: CPUs; env PGQUEUE_PROCESSES]",
)
@click.option(
    "--max-tasks-per-child",
    envvar="PGQUEUE_MAX_TASKS_PER_CHILD",
    type=Whole(1),
    default=None,
    help="Replace a process-pool child after it has run this many jobs  [default: no limit;"
    " env PGQUEUE_MAX_TASKS_PER_CHILD]",
)
@click.option(
    "--child-start-timeout",
    envvar="PGQUEUE_CHILD_START_TIMEOUT",
    type=Seconds(1.0),
    default=CHILD_START_TIMEOUT,
    show_default=True,
    help="Seconds a new process-pool child has to start and run the app's process set-up."
    "  [env PGQUEUE_CHILD_START_TIMEOUT]",
)
@click.option(
    "--no-listen",
    envvar="PGQUEUE_NO_LISTEN",
    is_flag=True,
    help="Poll only (for poolers that cannot LISTEN).  [env PGQUEUE_NO_LISTEN]",
)
@click.option(
    "--synchronous-commit",
    envvar="PGQUEUE_SYNCHRONOUS_COMMIT",
    is_flag=True,
    help="Acks, heartbeats and maintenance wait for the WAL flush too (claims always do, but"
    " behind a pooler on a database whose default is off; default: no; see"
    " docs/performance.md).  [env PGQUEUE_SYNCHRONOUS_COMMIT]",
)
@click.option(
    "--name",
    envvar="PGQUEUE_WORKER_NAME",
    type=Text(),
    default=None,
    help="Worker name.  [env PGQUEUE_WORKER_NAME]",
)
@click.option(
    "--isolate-crashed/--no-isolate-crashed",
    envvar="PGQUEUE_ISOLATE_CRASHED",
    default=True,
    show_default=True,
    help="Run a job whose last attempt lost its worker in a child process."
    "  [env PGQUEUE_ISOLATE_CRASHED]",
)
@click.option(
    "--no-scheduler",
    envvar="PGQUEUE_NO_SCHEDULER",
    is_flag=True,
    help="Do not enqueue periodic tasks from this worker (others still do)."
    "  [env PGQUEUE_NO_SCHEDULER]",
)
@click.option(
    "--metrics-port",
    envvar="PGQUEUE_METRICS_PORT",
    type=Whole(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (needs pgqueue[prometheus])."
    "  [env PGQUEUE_METRICS_PORT]",
)
@click.option(
    "--metrics-addr",
    envvar="PGQUEUE_METRICS_ADDR",
    type=Text(),
    default="0.0.0.0",
    show_default=True,
    help="The address the metrics port is bound to (127.0.0.1: this host only)."
    "  [env PGQUEUE_METRICS_ADDR]",
)
@click.pass_obj
@friendly_errors
def worker(state: State, queues: str | None, concurrency: int, burst: bool, shutdown_timeout: float,
           poll_interval: float, lease: float, batch_size: int, rescue_interval: float,
           processes: int | None, max_tasks_per_child: int | None,
           child_start_timeout: float, no_listen: bool,
           synchronous_commit: bool, name: str | None, isolate_crashed: bool, no_scheduler: bool,
           metrics_port: int | None, metrics_addr: str) -> None:  # fmt: skip
    """Run a worker: claim jobs of QUEUES and run them until SIGTERM/SIGINT."""
    if not state.app.tasks:  # it would fail every job it claims as an unknown task
        raise click.ClickException(_no_tasks(state.app_path))
    w = state.app.worker(
        queues=queues, concurrency=concurrency, dsn=state.dsn, burst=burst,
        shutdown_timeout=shutdown_timeout, poll_interval=poll_interval, lease=lease,
        rescue_interval=rescue_interval, processes=processes, listen=not no_listen, name=name,
        batch_size=batch_size,
        synchronous_commit=synchronous_commit, scheduler=not no_scheduler,
        metrics_port=metrics_port, metrics_addr=metrics_addr, isolate_crashed=isolate_crashed,
        max_tasks_per_child=max_tasks_per_child, child_start_timeout=child_start_timeout,
    )  # fmt: skip
    w._sources = _sources(click.get_current_context())  # stated by its worker_started record
    asyncio.run(_run_worker(w))


# The worker command's options named otherwise by Worker, which takes their opposites.
_WORKER_OPTION = {"no_listen": "listen", "no_scheduler": "scheduler"}


def _sources(ctx: click.Context) -> dict[str, str]:
    """Where each option of ``ctx``'s command given a value came from ("env PGQUEUE_BURST",
    "command line"), by Worker's name for it."""
    found = {}
    for param in ctx.command.params:
        assert param.name is not None
        source = ctx.get_parameter_source(param.name)
        if source is click.core.ParameterSource.ENVIRONMENT:
            found[_WORKER_OPTION.get(param.name, param.name)] = f"env {param.envvar}"
        elif source is click.core.ParameterSource.COMMANDLINE:
            found[_WORKER_OPTION.get(param.name, param.name)] = "command line"
    return found


async def _run_worker(w: Worker) -> None:
    error: Exception | None = None
    try:
        await w.run(install_signal_handlers=True)
    except Exception as exc:  # WorkerFailed, a stop's failed writes: friendly_errors says it
        error = exc
    if w.abandoned_threads() or w.abandoned_coroutines():
        # Thread tasks cannot be interrupted, nor coroutines that ignore their cancellation,
        # and their jobs are already back in the queue: do not let the exit wait for them
        # (asyncio.run would wait for such a coroutine forever, the interpreter for a thread).
        if error is not None and (friendly := _friendly(error)):
            show_error(friendly)
        elif error is not None:  # as Python would print it: a record with JSON logs
            sys.excepthook(type(error), error, error.__traceback__)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if error is None else 1)
    if error is not None:
        raise error


NO_APP = "no app given: pass --app MODULE:ATTRIBUTE (or set PGQUEUE_APP)"


def _no_tasks(app_path: str | None) -> str:
    if not app_path:
        return f"{NO_APP} naming the PgQueue your tasks are registered on"
    return (
        f"the app {app_path!r} has no tasks: the module that creates it must import the"
        " modules that define them"
    )


@cli.command()
@click.option(
    "--orders",
    envvar="PGQUEUE_ORDERS",
    default=300,
    show_default=True,
    type=Whole(1, 100_000),
    help="How many orders to place.  [env PGQUEUE_ORDERS]",
)
@click.pass_obj
@friendly_errors
def demo(state: State, orders: int) -> None:
    """Enqueue orders transactionally (some rolled back) and watch a worker run them."""
    from pgqueue._demo import run_demo

    run_demo(state._dsn, orders)


from pgqueue._cli_ops import register  # noqa: E402  (it needs the helpers above)

register(cli)


def main() -> None:
    """Entry point of the ``pgqueue`` console script."""
    cli(prog_name="pgqueue")
