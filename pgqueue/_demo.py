"""``pgqueue demo``: placeholder replaced by the demo implementation."""

from __future__ import annotations


def run_demo(dsn: str | None, orders: int) -> None:
    """Run the demo (implemented in a later commit)."""
    raise NotImplementedError("pgqueue demo is being written")
