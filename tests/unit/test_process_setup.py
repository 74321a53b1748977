"""Registering ``@app.process_setup``: only a function a child can import by name, once per
app (new API: these tests are new code); one in the main script runs in its worker's children."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pgqueue

ROOT = Path(__file__).resolve().parents[2]


def set_up() -> None:
    """A module-level set-up."""


async def async_set_up() -> None:
    """A coroutine function: a child calls its set-up, it does not await it."""


def test_a_module_level_function_is_registered_by_its_module_and_name() -> None:
    """The decorator returns the function, and the app keeps where a child finds it."""
    app = pgqueue.PgQueue()
    assert app.process_setup(set_up) is set_up
    assert app._process_setups() == ((__name__, "set_up"),)


def test_a_second_set_up_is_refused() -> None:
    """One per app: a second would silently replace the first."""
    app = pgqueue.PgQueue()
    app.process_setup(set_up)
    with pytest.raises(pgqueue.ConfigurationError, match=rf"already .* {__name__}.set_up"):
        app.process_setup(set_up)


def test_functions_a_child_cannot_import_are_refused() -> None:
    """A lambda and a nested function have no name in their module to import them by."""

    def nested() -> None:
        pass

    app = pgqueue.PgQueue()
    for fn in (lambda: None, nested):
        with pytest.raises(
            pgqueue.ConfigurationError, match="top level of a module the worker imports"
        ):
            app.process_setup(fn)
    assert app._process_setups() == ()


@pytest.mark.parametrize("fn", [async_set_up, print, "set_up", None])
def test_what_is_no_plain_function_is_refused(fn: Any) -> None:
    """A coroutine function, a builtin or no function at all: a TypeError naming it."""
    with pytest.raises(TypeError, match="must be a plain"):
        pgqueue.PgQueue().process_setup(fn)


SCRIPT = """
import pgqueue
app = pgqueue.PgQueue()


@app.process_setup
def set_up():
    pass


print(app._process_setups())
"""


@pytest.mark.parametrize("how", [["script.py"], ["-m", "script"]])
def test_a_set_up_in_the_main_script_is_registered_as_main(tmp_path: Path, how: list[str]) -> None:
    """A script run as itself, or with ``-m``, is ``__main__``: its set-up is found in a
    child as ``__main__`` (the script run again there, the tasks' copy too: see
    test_a_set_up_in_the_main_script_runs_in_its_workers_children), never by the ``-m``
    name, a copy apart. It was refused, even in a script that only enqueues."""
    (tmp_path / "script.py").write_text(SCRIPT)
    ran = subprocess.run(
        [sys.executable, *how], cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.stdout == "(('__main__', 'set_up'),)\n", ran.stderr


@pytest.mark.parametrize(
    ("path", "how"),
    [("pkg/__main__.py", ["-m", "pkg"]), ("pkg/__main__.py", ["pkg"]), (None, ["-c", SCRIPT])],
)  # fmt: skip
def test_a_set_up_in_a_main_no_child_runs_again_is_refused(
    tmp_path: Path, path: str | None, how: list[str]
) -> None:
    """A package's ``__main__`` (``python -m pkg``, ``python pkg``) or ``python -c`` is a main
    module multiprocessing does not run again in a child: the set-up, accepted, was missing in
    every child (``module '__main__' has no attribute 'set_up'``), failing each process job."""
    if path is not None:
        (tmp_path / path).parent.mkdir()
        (tmp_path / path).write_text(SCRIPT)
    ran = subprocess.run(
        [sys.executable, *how], cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.stdout == "", ran.stdout
    assert "ConfigurationError: a process set-up must be defined" in ran.stderr, ran.stderr
    assert "which a child process does not run again" in ran.stderr, ran.stderr
