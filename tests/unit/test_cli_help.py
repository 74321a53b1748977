"""What ``pgqueue COMMAND --help`` tells a newcomer, with no database."""

from __future__ import annotations

from collections.abc import Iterator

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
