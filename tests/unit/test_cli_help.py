"""What ``pgqueue COMMAND --help`` tells a newcomer, with no database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pgqueue._cli import cli


def commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The argument paths of ``command`` and of every command under it, groups included."""
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))


def command_at(path: tuple[str, ...]) -> click.Command:
    """The click command that ``pgqueue *path`` runs."""
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", list(commands(cli)), ids=lambda p: " ".join(p) or "pgqueue")
def test_every_help_names_the_environment_variable_of_each_option(path: tuple[str, ...]) -> None:
    """An option that reads a variable says so in --help: a PGQUEUE_BURST left set in a shell
    changes the worker, and the help is where a newcomer looks for why."""
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    envvars = [
        param.envvar
        for param in command_at(path).params
        if isinstance(param, click.Option) and isinstance(param.envvar, str)
    ]
    assert [name for name in envvars if name not in result.output] == []


REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"


def reference_text() -> str:
    """docs/reference/cli.md and cli-operations.md, the pages that document the commands."""
    return "".join((REFERENCE / page).read_text() for page in ("cli.md", "cli-operations.md"))


def test_cli_reference_pages_name_every_command_and_option_of_every_group() -> None:
    """Every command, subcommands of groups included (``pgqueue jobs retry --failed``), and
    each of its options is named in the CLI reference pages."""
    text = reference_text()
    missing = []
    for path in commands(cli):
        name = " ".join(("pgqueue", *path))
        missing += [] if name in text else [name]
        for param in command_at(path).params:
            opts = [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) else []
            missing += [f"{name} {o}" for o in opts if not re.search(rf"`[^`]*{o}\b", text)]
    assert missing == []


def test_cli_reference_pages_name_only_options_the_cli_has() -> None:
    """An ``--option`` the reference pages write is one some command takes: none renamed or
    removed in the code and left in the docs."""
    known = {
        opt
        for path in commands(cli)
        for param in command_at(path).params
        for opt in [*param.opts, *param.secondary_opts]
    }
    written = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*[a-z])", reference_text()))
    assert sorted(written - known - {"--help"}) == []


@pytest.mark.parametrize("path", list(commands(cli)), ids=lambda p: " ".join(p) or "pgqueue")
def test_every_help_says_a_range_of_seconds_in_words(path: tuple[str, ...]) -> None:
    """The worker's --help showed its seconds' bounds as click's FloatRange does,
    ``[0<=x<=31557600000.0]``; it now says ``[0 s to 1000 years]``."""
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "31557600000" not in result.output
    seconds = [p for p in command_at(path).params if p.type.name == "seconds"]
    for param in seconds:
        [line] = [line for line in result.output.splitlines() if param.opts[-1] + " " in line]
        assert re.search(r"; [0-9.]+ s to (1000 years|[0-9.]+ s)\]$", line), line
