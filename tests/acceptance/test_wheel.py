"""The built wheel carries its migrations: `pip install` then `pgqueue migrate` works."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT
from tests.unit.test_packaging import PACKAGE, package_files


@pytest.mark.slow
def test_installed_wheel_migrates_without_the_source_tree(empty_dsn: str, tmp_path: Path) -> None:
    """The wheel holds exactly the package's files, and installed away from the checkout it
    runs `pgqueue migrate` from them."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    [wheel] = wheels.glob("pgqueue-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = set(archive.namelist())
    assert {n for n in held if not n.startswith("pgqueue-")} == {
        str(f.relative_to(PACKAGE.parent)) for f in package_files()
    }  # the package's files, all of them: no tests, bench, examples or .ci
    assert {n.split("/", 1)[1] for n in held if ".dist-info/licenses/" in n} == {"licenses/LICENSE"}
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target), "PGQUEUE_DSN": empty_dsn}
    run = [sys.executable, "-m", "pgqueue", "migrate"]
    result = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    located = subprocess.run(
        [sys.executable, "-c", "import pgqueue; print(pgqueue.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert located.stdout.startswith(str(target))
    check = subprocess.run([*run, "--check"], env=env, cwd=tmp_path, capture_output=True)
    assert check.returncode == 0
