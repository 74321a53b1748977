"""What ``--app`` says when it names a module Python cannot find, with no database."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pytest

from pgqueue._cli import load_app


def test_a_module_not_found_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--app orders:app`` run from the wrong folder names the folder searched and the two
    ways out, not only Python's "No module named 'orders'"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h100_nowhere.tasks:app")
    assert raised.value.message == (
        "cannot import app module 'h100_nowhere.tasks': No module named 'h100_nowhere' (not in"
        f" the current directory, {tmp_path}, nor on PYTHONPATH: run pgqueue from the folder"
        " that holds it, or add that folder to PYTHONPATH)"
    )


def test_a_module_the_app_imports_missing_says_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's module is found but imports one that is not installed: that one is named as
    the app module's import, not taken for the app module being missing."""
    (tmp_path / "h100_needs_more.py").write_text("import h100_not_installed\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h100_needs_more:app")
    assert raised.value.message == (
        "cannot import app module 'h100_needs_more': No module named 'h100_not_installed'"
        f" ({tmp_path}/h100_needs_more.py, line 1: is it installed in this environment?)"
    )
