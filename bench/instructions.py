"""``python -m bench.instructions``: the worker's CPU per job, counted in instructions.

Wall-clock figures need a quiet machine; instruction counts do not. This drains ``--jobs``
and then twice as many pre-enqueued no-op async jobs, each time with one in-process worker
(burst mode, concurrency 200) run under ``valgrind --tool=callgrind``, and reports the
difference of the two counts per extra job: the start-up, the imports and the burst's end
cancel out. Beside it, the transactions and row changes the database saw per job, so that a
change of the worker's Python can be checked for leaving the server's work alone.

Needs valgrind. ``--keep DIR`` keeps the callgrind outputs for ``callgrind_annotate``.
See docs/performance.md ("How to reproduce").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from bench import _env

# The database's own counts for the drain: what the worker asked of the server.
_DB_COUNTS = """
SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, tup_returned, tup_fetched
  FROM pg_stat_database WHERE datname = current_database()
"""
_COUNT_NAMES = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_returned",
                "tup_fetched")  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("--jobs", type=int, default=5000, help="jobs of the smaller drain")
    p.add_argument("--keep", metavar="DIR", help="keep callgrind's outputs in DIR")
    p.add_argument("--prefix", default="pgqueue_instructions", help="scratch database prefix")
    p.add_argument("--drain", metavar="DSN", help=argparse.SUPPRESS)  # the measured child
    _env.add_server_option(p)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be positive")
    return args


def drain(dsn: str) -> None:
    """Run one worker until the queue is empty (the child valgrind measures)."""
    from bench.tasks import app
    from pgqueue import Worker

    worker = Worker(app, dsn=dsn, concurrency=200, burst=True, scheduler=False)
    asyncio.run(worker.run())


def measured(dsn: str, n: int, out: str) -> dict[str, float]:
    """Instructions of a child draining ``n`` jobs, and the database's counts for it."""
    _env.reset(dsn)
    _env.fill_jobs(dsn, n)
    before = _env.execute(dsn, _DB_COUNTS)[0]
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, "-m", "bench.instructions", "--drain", dsn]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the measured drain failed:\n{done.stderr[-3000:]}")
    found = re.search(r"Collected : (\d+)", done.stderr)
    assert found, done.stderr[-2000:]
    left = _env.execute(dsn, "SELECT count(*) FROM pgqueue.active_jobs")[0][0]
    assert left == 0, f"{left} jobs left"
    # The statistics collector reports a little later: wait for this drain's counts.
    after = _env.execute(dsn, "SELECT pg_sleep(0.7)") and _env.execute(dsn, _DB_COUNTS)[0]
    counts = {name: after[i] - before[i] for i, name in enumerate(_COUNT_NAMES)}
    return {"instructions": int(found.group(1)), **counts}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both drains, and their difference per job."""
    n = args.jobs
    keep = args.keep or tempfile.mkdtemp(prefix="pgqueue-callgrind-")
    os.makedirs(keep, exist_ok=True)
    with (
        _env.bench_server(args.server) as admin,
        _env.bench_database(admin, prefix=args.prefix) as dsn,
    ):
        small = measured(dsn, n, os.path.join(keep, f"callgrind.{n}"))
        large = measured(dsn, 2 * n, os.path.join(keep, f"callgrind.{2 * n}"))
    per_job = {k: round((large[k] - small[k]) / n, 2) for k in small}
    return {"jobs": [n, 2 * n], "drains": [small, large], "per_job": per_job, "outputs": keep}


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.drain:
        drain(args.drain)
        return
    json.dump(run(args), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
