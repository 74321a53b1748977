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


def test_a_submodule_not_found_names_the_package_that_was_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--app orders.tasks:app`` with package ``orders`` in the current directory but no
    ``tasks`` in it said the module was not in the current directory: it names the package
    found, and where, instead."""
    (tmp_path / "h112_orders").mkdir()
    (tmp_path / "h112_orders" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h112_orders.tasks:app")
    assert raised.value.message == (
        "cannot import app module 'h112_orders.tasks': No module named 'h112_orders.tasks'"
        f" (package 'h112_orders', found in {tmp_path}/h112_orders, has no module 'tasks')"
    )


def test_a_module_hiding_the_package_named_is_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file ``myproject.py`` in the current directory hides the package ``myproject``
    that ``--app myproject.tasks:app`` means: the message named the current directory as
    searched in vain, not the file that was imported instead."""
    (tmp_path / "h112_project.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h112_project.tasks:app")
    assert raised.value.message == (
        "cannot import app module 'h112_project.tasks': No module named"
        " 'h112_project.tasks'; 'h112_project' is not a package ('h112_project' is"
        f" {tmp_path}/h112_project.py: if it hides the package you meant, rename it)"
    )


def test_a_folder_without_init_says_to_name_the_module_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--app orders`` naming a folder without ``__init__.py`` imports it as a namespace
    package, which has no ``app``: the message says so, and to name the module inside."""
    (tmp_path / "h112_spaced").mkdir()
    (tmp_path / "h112_spaced" / "tasks.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h112_spaced")
    assert raised.value.message == (
        "module 'h112_spaced' has no attribute 'app' (--app 'h112_spaced'; use"
        " MODULE:ATTRIBUTE; 'h112_spaced' is a folder without __init__.py: name the module"
        " in it that defines the app, e.g. h112_spaced.tasks:app)"
    )


def test_an_import_error_the_app_module_raises_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ImportError of the app's own code (``from helpers import missing``, or a package's
    ``__init__`` raising one) said what, not where; any other error said both."""
    (tmp_path / "h112_helpers.py").write_text("x = 1\n")
    (tmp_path / "h112_needs_name.py").write_text("import os\nfrom h112_helpers import missing\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    with pytest.raises(click.ClickException) as raised:
        load_app("h112_needs_name:app")
    assert raised.value.message == (
        "cannot import app module 'h112_needs_name': cannot import name 'missing' from"
        f" 'h112_helpers' ({tmp_path}/h112_helpers.py) ({tmp_path}/h112_needs_name.py, line 2)"
    )


@pytest.mark.parametrize(
    ("source", "error"),
    [("def f(:\n", "SyntaxError: invalid syntax"),
     ("x = 1\n  y = 2\n", "IndentationError: unexpected indent")],
)  # fmt: skip
def test_a_syntax_error_names_the_files_path_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, error: str
) -> None:
    """A SyntaxError in the app's module, or in a module it imports, was named by the file's
    base name, `(broken.py, line 3)`, which several packages of an app may hold: it now names
    the path, as every other error does."""
    line = 4 if error.startswith("Indentation") else 3
    package = f"h134_pkg{line}"  # one per case: a package imported stays in sys.modules
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "broken.py").write_text("import pgqueue\n\n" + source)
    (tmp_path / f"h134_imports{line}.py").write_text(f"import {package}.broken\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the directory on it
    for module in (f"{package}.broken", f"h134_imports{line}"):
        with pytest.raises(click.ClickException) as raised:
            load_app(f"{module}:app")
        assert raised.value.message == (
            f"cannot import app module {module!r}: {error}"
            f" ({tmp_path / package / 'broken.py'}, line {line})"
        )
