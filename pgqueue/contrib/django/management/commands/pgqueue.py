"""``python manage.py pgqueue ...``: the ``pgqueue`` command, set up from Django's settings.

``manage.py pgqueue worker --queues io,cpu`` runs a worker of ``PGQUEUE``'s app on Django's
database, with the tasks of installed apps registered; ``migrate``, ``migrate --check`` and
the other subcommands work as in the ``pgqueue`` CLI. ``--dsn`` and ``--app`` win; else
Django's settings give them; ``PGQUEUE_DSN`` and ``PGQUEUE_APP`` are not read.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import os
import sys
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, SystemCheckError
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from pgqueue._cli import State, cli
from pgqueue._connections import normalize_dsn, strip_dsn
from pgqueue._errors import first_line
from pgqueue._logging import json_logging
from pgqueue.contrib.django import _conf

log = logging.getLogger("pgqueue.cli")

APP_PATH = "pgqueue.contrib.django:app"
APP_DOTTED = "pgqueue.contrib.django.app"
# The group options Django's settings give, and the variables the plain CLI reads for them.
_ENV = {"dsn": "PGQUEUE_DSN", "app_path": "PGQUEUE_APP"}
# What makes two DSNs name the same database (Django's adds client_encoding, for one).
_DATABASE_KEYS = ("service", "host", "hostaddr", "port", "dbname", "user")
_OPTION_HELP = {
    "dsn": 'PostgreSQL DSN or URL  [default: PGQUEUE["DSN"], else the settings of'
    ' DATABASES[PGQUEUE["DATABASE"]]; PGQUEUE_DSN is not read]',
    "app_path": f'Your PgQueue object  [default: PGQUEUE["APP"], else {APP_DOTTED};'
    " PGQUEUE_APP is not read]",
}

# Options manage.py itself reads from every command line before handing it to a command.
_DJANGO_GLOBAL = ("--settings", "--pythonpath")
# Django's flag of the commands that run system checks (runserver, migrate, ...).
SKIP_CHECKS = "--skip-checks"
# pgqueue's help options (-h and --help): help starts no worker, so it runs no checks.
_HELP = frozenset(cli.context_settings["help_option_names"])


def run_cli(args: list[str], standalone: bool) -> Any:
    """Run the pgqueue click group with the app and DSN Django's settings give."""
    defaults = {"app_path": APP_PATH}  # the DSN: see DjangoState
    app = _conf.get_app()
    pinned = app._dsn  # the CLI pins its DSN on the app: undo it when this process goes on
    try:
        return DJANGO_CLI.main(
            args=args, prog_name="manage.py pgqueue", standalone_mode=standalone,
            default_map=defaults,
        )  # fmt: skip
    finally:
        app._dsn = pinned


def django_dsn() -> str:
    """Django's DSN for pgqueue; settings that give none (a database without a NAME) are a
    one-line error of pgqueue's command line, not Django's traceback."""
    try:
        return _conf.dsn()
    except Exception as exc:
        reason = first_line(exc).rstrip(".")
        raise click.ClickException(
            f"Django's settings give pgqueue no database: {type(exc).__name__}: {reason}."
            " Fix them, or pass --dsn DSN"
        ) from exc


class DjangoState(State):
    """The group's options, with Django's DSN unless ``--dsn`` gives one, read when a command
    first needs it: ``migrate --sql`` and ``worker --help`` need none (click would read a
    default while it parses the group's options)."""

    @functools.cached_property
    def _dsn(self) -> str:
        return self.given_dsn or django_dsn()


def _options(**options: Any) -> None:
    """The group's callback: pgqueue's (logging), with a DjangoState; then the variables
    ignored are said, as --log-format asks (it is set up only now)."""
    cli.callback(**options)  # type: ignore[misc]
    ctx = click.get_current_context()
    ctx.obj = DjangoState(options["app_path"], options["dsn"])
    for variable, text in ctx.meta.pop(_IGNORED, []):
        if json_logging():
            log.warning("%s", text, extra={"action": "env_ignored", "variable": variable})
        else:
            click.echo(f"Warning: {text}", err=True)


def _warn_if_ignored(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep, for the group's callback to say, that a PGQUEUE_DSN or PGQUEUE_APP the plain CLI
    would have used is ignored, unless it names what Django's settings give (an explicit
    option wins over both: nothing to say then)."""
    name = param.name or ""
    given = os.environ.get(_ENV[name])
    if given and ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE:
        ignored = ctx.meta.setdefault(_IGNORED, [])
        if name == "dsn" and not _same_dsn(given):
            ignored.append(("PGQUEUE_DSN",
                f"PGQUEUE_DSN is ignored: manage.py pgqueue uses Django's database"
                f' (PGQUEUE["DSN"], else DATABASES["{_conf.database_alias()}"]); pass --dsn'
                " DSN to use another",
            ))  # fmt: skip
        if name == "app_path" and not _same_app(given):
            ignored.append(("PGQUEUE_APP",
                "PGQUEUE_APP is ignored: manage.py pgqueue runs Django's app"
                ' (PGQUEUE["APP"], else pgqueue.contrib.django.app); pass --app MODULE:ATTR'
                " to use another",
            ))  # fmt: skip
    return value


# Where _warn_if_ignored keeps, in the group's context, the variables it found ignored.
_IGNORED = "pgqueue.django.ignored"


def _same_dsn(given: str) -> bool:
    """Whether a DSN names the database Django's settings give (read as --dsn reads it)."""
    try:
        return _database(normalize_dsn(strip_dsn(given))) == _database(_conf.dsn())
    except Exception:  # one libpq cannot parse is not Django's, nor one of settings giving none
        return False


def _database(dsn: str) -> list[str | None]:
    """What names the database ``dsn`` connects to, with libpq's defaults for what it leaves
    out (PGPORT, else 5432, for a port; the user's name for a database)."""
    defaults = {o.keyword.decode(): o.val.decode() for o in pq.Conninfo.get_defaults() if o.val}
    given = {**defaults, **{key: str(val) for key, val in conninfo_to_dict(dsn).items() if val}}
    given.setdefault("dbname", given.get("user", ""))
    return [given.get(key) for key in _DATABASE_KEYS]


def _same_app(given: str) -> bool:
    module, _, attribute = given.strip().partition(":")  # as --app reads it
    return f"{module}.{attribute or 'app'}" in (APP_DOTTED, _conf.settings()["APP"])


def _from_django(param: click.Parameter) -> click.Parameter:
    """``--dsn`` or ``--app`` read from the command line, else from Django's settings, never
    from the environment: click reads a variable before its default_map, so a stale
    PGQUEUE_DSN pointed workers away from the database Django enqueues in."""
    if not isinstance(param, click.Option) or param.name not in _ENV:
        return param
    own = copy.copy(param)
    own.envvar, own.callback, own.help = None, _warn_if_ignored, _OPTION_HELP[param.name]
    return own


DJANGO_CLI = copy.copy(cli)  # pgqueue's group, with its own --dsn and --app
DJANGO_CLI.params = [_from_django(param) for param in cli.params]
DJANGO_CLI.callback = _options
# The group's options that take a value (--dsn, --app, --log-level, --log-format), which
# call_command's parser reads before the subcommand (manage.py's command line goes to click
# untouched: see Command.run_from_argv).
_GROUP_OPTIONS = [p for p in DJANGO_CLI.params if isinstance(p, click.Option) and not p.is_flag]


def without_django_options(args: list[str]) -> tuple[list[str], bool]:
    """``args`` without ``--settings``/``--pythonpath`` (and their values) and
    ``--skip-checks``, and whether ``--skip-checks`` was there: manage.py has already applied
    the first two, the command reads the last, and pgqueue's command line would refuse them
    as unknown. Nothing after ``--`` is theirs."""
    kept: list[str] = []
    skip_value = skip_checks = False
    for i, arg in enumerate(args):
        if skip_value:
            skip_value = False
        elif arg == "--":
            return kept + args[i:], skip_checks
        elif arg in _DJANGO_GLOBAL:
            skip_value = True
        elif arg == SKIP_CHECKS:
            skip_checks = True
        elif not arg.startswith(tuple(f"{name}=" for name in _DJANGO_GLOBAL)):
            kept.append(arg)
    return kept, skip_checks


class Command(BaseCommand):  # type: ignore[misc]
    """pgqueue's CLI (worker, migrate, ...) on the database and tasks of this project."""

    help = "pgqueue's command line (worker, migrate, ...): manage.py pgqueue --help"

    def add_arguments(self, parser: Any) -> None:
        for option in _GROUP_OPTIONS:  # for call_command: handle gives them to click
            parser.add_argument(*option.opts, dest=option.name, help=argparse.SUPPRESS)
        # REMAINDER: the subcommand's own options ("migrate --check") reach click untouched.
        parser.add_argument("args", nargs=argparse.REMAINDER, help="pgqueue subcommand")

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand everything after ``pgqueue`` to click (so ``--queues`` etc. reach it); a
        worker first runs Django's system checks, as ``runserver`` does (this bypasses
        ``execute``, which would run them), unless ``--skip-checks`` is given, anywhere
        before a ``--``."""
        args, skip_checks = without_django_options(argv[2:])
        if "worker" in args and _HELP.isdisjoint(args) and not skip_checks:
            try:
                self.check()
            except SystemCheckError as exc:  # its text is the report, as manage.py prints it
                self.stderr.write(str(exc), lambda text: text)
                sys.exit(exc.returncode)
        run_cli(args, standalone=True)

    def handle(self, *args: str, **options: Any) -> None:
        """For ``call_command("pgqueue", "migrate", "--check")``: a failure is a
        ``CommandError`` (with the exit status as ``returncode``), never ``SystemExit``.
        Django's ``execute`` decides on the checks before calling this (``call_command``
        skips them unless given ``skip_checks=False``); a ``--skip-checks`` after the
        subcommand still reaches this, and is dropped: it is not pgqueue's. The group's
        options (``--dsn`` ...) before the subcommand, or as keywords, go to click first."""
        given = [
            arg
            for option in _GROUP_OPTIONS
            if options.get(option.name) is not None
            for arg in (option.opts[0], options[option.name])
        ]
        try:
            run_cli(given + without_django_options(list(args))[0], standalone=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message(), returncode=exc.exit_code) from None
        except SystemExit as exc:  # `migrate --check` exits 1 after printing the problem
            if exc.code not in (None, 0):
                code = exc.code if isinstance(exc.code, int) else 1
                raise CommandError(
                    f"pgqueue exited with status {exc.code}", returncode=code
                ) from None
