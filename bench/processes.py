"""``python -m bench.processes``: drain rate and CPU per job against the number of worker processes.

Each round drains ``--jobs`` no-op jobs once with each process count, the order rotating and
reversing from round to round, so a host's drift over minutes lands on every count alike.
Prints one JSON document: per count, every drain's jobs/s and CPU µs per job (the workers
and their database backends, from ``/proc``), their medians, and the cores kept busy. See
docs/performance.md (the fifth host's runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

from bench import _env, throughput


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__)
    p.add_argument("--processes", default="1,2,4,8", help="comma-separated process counts")
    p.add_argument("--rounds", type=int, default=4, help="drains per process count")
    p.add_argument("--jobs", type=int, default=100_000, help="jobs per drain")
    _env.add_server_option(p)
    args = p.parse_args(argv)
    try:
        args.counts = [int(n) for n in args.processes.split(",")]
    except ValueError:
        p.error(f"--processes: expected comma-separated integers, got {args.processes!r}")
    if not args.counts or min(args.counts) < 1 or args.rounds < 1 or args.jobs < 1:
        p.error("--processes, --rounds and --jobs must be positive")
    return args


def order(counts: list[int], round_number: int) -> list[int]:
    """The counts in this round's order: rotated by the round, reversed every other round."""
    shift = round_number % len(counts)
    rotated = counts[shift:] + counts[:shift]
    return rotated[::-1] if round_number % 2 else rotated


def summary(drains: dict[int, list[tuple[float, float]]]) -> dict[str, Any]:
    """Per count: the drains, the medians, and the cores busy at those medians."""
    out: dict[str, Any] = {}
    for count, pairs in drains.items():
        rates = [rate for rate, _ in pairs]
        cpu = [us for _, us in pairs]
        rate, us = statistics.median(rates), statistics.median(cpu)
        out[str(count)] = {
            "jobs_s": rates, "cpu_us_per_job": cpu,
            "median_jobs_s": rate, "median_cpu_us_per_job": us,
            "cores_busy": rate * us / 1e6,
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the drains and print the JSON document."""
    args = parse(sys.argv[1:] if argv is None else argv)
    drains: dict[int, list[tuple[float, float]]] = {n: [] for n in args.counts}
    with _env.bench_server(args.server) as admin, _env.bench_database(admin) as dsn:
        for number in range(args.rounds):
            for count in order(args.counts, number):
                rate, us = throughput.drain_cpu(dsn, args.jobs, count)
                drains[count].append((rate, us))
                print(f"round {number + 1}: {count} processes, {rate:,.0f} jobs/s, "
                      f"{us:.1f} µs/job", file=sys.stderr, flush=True)  # fmt: skip
    print(json.dumps(summary(drains), indent=2))


if __name__ == "__main__":
    main()
