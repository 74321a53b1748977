"""Print pyproject.toml's dependency floors as pins, one requirement a line, for `pip install -r`.

    python .ci/floors.py test otel > floors.txt

Each `name[extras]>=X` of [project] dependencies and of the extras named on the command line
becomes `name[extras]==X`, its environment marker kept, so CI can install the oldest versions
pgqueue claims to work with. A requirement with no `>=` floor, or with any other operator, is an
error: its floor could not be proved.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOOR = re.compile(r"(?P<name>[A-Za-z0-9._-]+(?:\[[a-z0-9,_-]+\])?)\s*>=\s*(?P<version>[^\s;,]+)")


def pinned(requirement: str) -> str:
    """``name[extras]>=X; marker`` as ``name[extras]==X; marker``."""
    spec, _, marker = requirement.partition(";")
    match = FLOOR.fullmatch(spec.strip())
    if match is None:
        raise SystemExit(f"floors.py: no single '>=' floor in {requirement!r}")
    pin = f"{match['name']}=={match['version']}"
    return f"{pin}; {marker.strip()}" if marker else pin


def floors(extras: list[str]) -> list[str]:
    """The pins of the runtime dependencies and of ``extras``, first occurrence kept, in order;
    requirements on pgqueue itself (``dev`` names ``pgqueue[test]``) are left out."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project["optional-dependencies"]
    unknown = [extra for extra in extras if extra not in optional]
    if unknown:
        raise SystemExit(f"floors.py: no such extra in pyproject.toml: {', '.join(unknown)}")
    wanted = [*project["dependencies"], *(r for extra in extras for r in optional[extra])]
    own = [r for r in wanted if not r.startswith(project["name"] + "[")]
    return list(dict.fromkeys(pinned(r) for r in own))


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1:])))
