"""The long-transaction example runs on a database the other examples have used."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from tests.helpers import query

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "long_transaction.py"
OTHERS = "SELECT task, state, attempts FROM pgqueue.jobs WHERE task IN ('mail.remind', 'shop.ship')"


async def test_example_ends_beside_jobs_of_other_apps(dsn: str) -> None:
    """Jobs it does not run (scheduling.py's reminder due tomorrow, another app's job on
    "default") neither keep its drains waiting forever nor get claimed by its worker."""
    query(dsn, "SELECT pgqueue.enqueue('mail.remind', queue => 'mail', run_at => now() + '1 day')")
    query(dsn, "SELECT pgqueue.enqueue('shop.ship')")
    spec = importlib.util.spec_from_file_location("long_transaction", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = await asyncio.wait_for(module.main(dsn, jobs=200), 60)
    assert lines[0].startswith("nothing held open: 200 jobs in ")
    assert sorted(query(dsn, OTHERS)) == [("mail.remind", "queued", 0), ("shop.ship", "queued", 0)]
