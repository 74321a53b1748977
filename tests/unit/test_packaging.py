"""pyproject.toml ships what the package needs and says what is true about it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = ROOT / "pgqueue"


def is_package(directory: Path) -> bool:
    """Whether `packages.find` sees ``directory``: it and each parent up to pgqueue/ have an
    ``__init__.py``."""
    chain = [d for d in [directory, *directory.parents] if d.is_relative_to(PACKAGE)]
    return all((d / "__init__.py").is_file() for d in chain)


def shipped_files() -> set[Path]:
    """What the wheel holds: the modules of packages and the files package-data names."""
    packages = {d for d in [PACKAGE, *PACKAGE.rglob("*")] if d.is_dir() and is_package(d)}
    modules = {f for d in packages for f in d.glob("*.py")}
    globs = PROJECT["tool"]["setuptools"]["package-data"]["pgqueue"]
    return modules | {f for pattern in globs for f in PACKAGE.glob(pattern)}


def package_files() -> set[Path]:
    """Every file under pgqueue/, byte-code left aside."""
    return {
        f for f in PACKAGE.rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
    }  # fmt: skip


def test_the_wheel_holds_every_file_of_the_package() -> None:
    """Every file under pgqueue/ (migrations, SQL, py.typed, the Django app's migrations...)
    is a module of a package or named by package-data: none is left out of the wheel."""
    on_disk = package_files()
    missing = sorted(str(f.relative_to(ROOT)) for f in on_disk - shipped_files())
    assert missing == []
    assert PACKAGE / "py.typed" in on_disk


def classified(prefix: str) -> list[tuple[int, ...]]:
    """The versions the classifiers starting with ``prefix`` name, lowest first."""
    found = [c.removeprefix(prefix) for c in PROJECT["project"]["classifiers"]]
    return sorted(tuple(map(int, v.split("."))) for v in found if re.fullmatch(r"\d+\.\d+", v))


def floor(requirement: str) -> tuple[int, ...]:
    """The lowest version a ``>=X.Y`` requirement accepts."""
    match = re.search(r">=\s*(\d+)\.(\d+)", requirement)
    assert match, requirement
    return tuple(map(int, match.groups()))


def test_the_classifiers_start_where_the_requirements_do() -> None:
    """The Python and Django versions the classifiers name begin at requires-python's and the
    django extra's floor: a version no install accepts is never advertised."""
    project = PROJECT["project"]
    assert classified("Programming Language :: Python :: ")[0] == floor(project["requires-python"])
    [django] = [r for r in project["optional-dependencies"]["django"] if r.startswith("django>")]
    assert classified("Framework :: Django :: ")[0] == floor(django)


def test_every_extra_the_docs_name_exists() -> None:
    """`pip install 'pgqueue[x]'` or `'.[x]'` in the docs, README or examples (their Dockerfile
    too) names an extra pyproject defines."""
    examples = [f for f in ROOT.glob("examples/**/*") if f.is_file() and f.suffix != ".pyc"]
    texts = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *examples]
    pattern = re.compile(r"(?:pgqueue|\.)\[([a-z0-9,-]+)\]")
    named = {x for f in texts for m in pattern.finditer(f.read_text()) for x in m[1].split(",")}
    assert named >= {"binary", "demo", "django", "otel", "prometheus"}
    assert named - set(PROJECT["project"]["optional-dependencies"]) == set()


def test_the_licence_pyproject_names_is_shipped_beside_it() -> None:
    """pyproject's SPDX licence is the text of LICENSE, which the wheel carries
    (``license-files``): an MIT licence requires its notice in every copy."""
    project = PROJECT["project"]
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().splitlines()[0] == f"{project['license']} License"
