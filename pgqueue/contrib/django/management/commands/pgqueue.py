"""``python manage.py pgqueue ...``: the ``pgqueue`` command, set up from Django's settings.

``manage.py pgqueue worker --queues io,cpu`` runs a worker of ``PGQUEUE``'s app on Django's
database, with the tasks of installed apps registered; ``migrate``, ``migrate --check`` and
the other subcommands work as in the ``pgqueue`` CLI.
"""

from __future__ import annotations

from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError

from pgqueue._cli import cli
from pgqueue.contrib.django import _conf

APP_PATH = "pgqueue.contrib.django:app"


def run_cli(args: list[str], standalone: bool) -> Any:
    """Run the pgqueue click group with the app and DSN Django's settings give."""
    defaults = {"app_path": APP_PATH, "dsn": _conf.dsn()}
    return cli.main(
        args=args, prog_name="manage.py pgqueue", standalone_mode=standalone, default_map=defaults
    )


class Command(BaseCommand):  # type: ignore[misc]
    """pgqueue's CLI (worker, migrate, ...) on the database and tasks of this project."""

    help = "pgqueue's command line (worker, migrate, ...): manage.py pgqueue --help"

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("args", nargs="*", help="pgqueue subcommand and its options")

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand everything after ``pgqueue`` to click (so ``--queues`` etc. reach it)."""
        run_cli(argv[2:], standalone=True)

    def handle(self, *args: str, **options: Any) -> None:
        """For ``call_command("pgqueue", "migrate", "--check")``."""
        try:
            run_cli(list(args), standalone=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from None
