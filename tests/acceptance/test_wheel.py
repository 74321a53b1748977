"""The built wheel carries its migrations: `pip install` then `pgqueue migrate` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import ROOT


@pytest.mark.slow
def test_installed_wheel_migrates_without_the_source_tree(empty_dsn: str, tmp_path: Path) -> None:
    """A wheel installed away from the checkout runs `pgqueue migrate` from packaged files."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    [wheel] = wheels.glob("pgqueue-*.whl")
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
