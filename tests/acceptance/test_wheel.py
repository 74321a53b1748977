"""The built wheel carries its migrations: `pip install` then `pgqueue migrate` works; the
sdist carries what a user needs to run the tests and read the docs."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
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


# What the sdist holds beside the package: the tests and what they read, the docs, examples and
# benchmarks the docs point to, and the project's notices.
SDIST_TREES = ("tests", "docs", "examples", "bench", ".ci")
SDIST_FILES = (
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "SECURITY.md",
)


def source_files() -> set[str]:
    """The checkout's files the sdist must hold, relative to the root, caches left aside."""
    trees = {f for tree in SDIST_TREES for f in (ROOT / tree).rglob("*") if f.is_file()}
    kept = {f for f in trees if not {"__pycache__", ".hypothesis"} & set(f.parts)}
    files = kept | package_files() | {ROOT / name for name in SDIST_FILES}
    return {str(f.relative_to(ROOT)) for f in files if f.suffix != ".pyc"}


def test_the_sdist_holds_the_tests_docs_and_examples(tmp_path: Path) -> None:
    """`python -m build --sdist` packs the package with its tests, docs, examples and notices,
    and no byte-code or cache; setuptools' own metadata (PKG-INFO, egg-info) is all it adds."""
    build = [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(ROOT)]
    subprocess.run(build, check=True, capture_output=True)
    [sdist] = tmp_path.glob("pgqueue-*.tar.gz")
    with tarfile.open(sdist) as archive:
        held = {m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()}
    metadata = {n for n in held if n in ("PKG-INFO", "setup.cfg") or n.startswith("pgqueue.egg")}
    assert held - metadata == source_files()
