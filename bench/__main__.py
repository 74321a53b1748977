"""``python -m bench [--quick] [--scale S] [--repeat N]``: every figure, as JSON, in one run.

Each round measures the bare-SQL limits and the pgqueue figures back to back, so every ratio
compares two numbers taken under the same load. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from bench import _env, _sql, latency, limits, scale, throughput

DRAIN_JOBS = 20_000
DRAIN_PAIRS = 3  # bare loop and 1-process drain, per round
SCALE_OUT_JOBS = 100_000  # 2 against 8 processes
SCALE_OUT_PAIRS = 3  # pairs of those drains per round (the figure sits within the noise)
MANY_JOBS = 100_000
SNAPSHOT_JOBS = 200_000  # drained beside a held snapshot (times --scale)
SCHEDULED_JOBS = 300_000  # due tomorrow, beside the drain and the latency (times --scale)
T = TypeVar("T")
TARGETS = {
    "drain_1_process.ratio": (">=", 0.60),
    "enqueue_many.ratio": (">=", 0.50),
    "single_enqueue.overhead": ("<=", 0.15),
    "latency.p50_ms": ("<=", 1.5),
    "latency.p99_ms": ("<=", 5.0),
    "backlog.ratio": (">=", 0.80),
    "footprint.idle_rss_mb": ("<=", 60.0),
    "footprint.first_job_s": ("<=", 0.5),
    "drain_8_processes.ratio_to_2": (">=", 1.0),
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="one round, scale 0.02, fewer samples")
    p.add_argument("--scale", type=float, help="backlog/churn size factor (1.0 = 1M/5M/1M)")
    p.add_argument("--repeat", type=int, help="rounds of the paired measurements (default 3)")
    p.add_argument(
        "--skip", default="", help="comma-separated: backlog,churn,drain8,snapshot,scheduled"
    )
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--keep-db", action="store_true", help="keep the bench database")
    _env.add_server_option(p)
    return p.parse_args(argv)


def one_round(dsn: str, runs: dict[str, list[float]], samples: int, skip: set[str]) -> None:
    """Every paired measurement once; appends to ``runs``."""
    bare_sync = limits.claim_ack_loop(dsn, DRAIN_JOBS)
    # The drain's target is the ratio of two runs of about a second each, on a host whose
    # speed drifts by tens of percent over seconds: DRAIN_PAIRS pairs a round, in alternating
    # order, each pair's ratio kept (as for eight processes against two).
    bares, drains = [], []
    for _ in range(DRAIN_PAIRS):
        loop_rate, drain_rate = _in_turn(
            lambda: limits.claim_ack_loop(dsn, DRAIN_JOBS, synchronous_commit=False),
            lambda: throughput.drain(dsn, DRAIN_JOBS, 1),
            swap=len(runs["drain_1_process.ratio"]) % 2 == 1,
        )
        bares.append(loop_rate)
        drains.append(drain_rate)
        _add(runs, "limits.claim_ack_loop_async_commit_jobs_s", loop_rate)
        _add(runs, "drain_1_process.jobs_s", drain_rate)
        _add(runs, "drain_1_process.ratio", drain_rate / loop_rate)
    bare_async, drain1 = statistics.median(bares), statistics.median(drains)
    drain1_sync = throughput.drain(dsn, DRAIN_JOBS, 1, 100, "--synchronous-commit")
    drain2 = throughput.drain(dsn, DRAIN_JOBS, 2)
    _add(runs, "limits.claim_ack_loop_jobs_s", bare_sync)
    _add(runs, "drain_1_process.ratio_to_sync_commit_loop", drain1 / bare_sync)
    _add(runs, "drain_1_process_synchronous_commit.jobs_s", drain1_sync)
    _add(runs, "drain_1_process_synchronous_commit.ratio", drain1_sync / bare_sync)
    _add(runs, "drain_2_processes.jobs_s", drain2)
    _add(runs, "drain_2_processes.ratio", drain2 / bare_async)
    if "drain8" not in skip:
        # 8 processes against 2 at a steady state: 20,000 jobs last about 0.6 s, much of it
        # eight processes ramping up on two cores, so the ratio is taken on a longer drain.
        # The 20,000-job ratio is reported beside it.
        # CPU per job (workers and their backends) says whether 8 processes cost more work
        # per job than 2, whatever else shared the cores.
        # This machine's speed drifts by tens of percent over seconds: each round runs
        # SCALE_OUT_PAIRS pairs, in alternating order, each drain after a CHECKPOINT.
        drain8_short = throughput.drain(dsn, DRAIN_JOBS, 8)
        _add(runs, "drain_8_processes.ratio_to_2_20k_jobs", drain8_short / drain2)
        for pair in range(SCALE_OUT_PAIRS):
            (drain2_long, cpu2), (drain8_long, cpu8) = _in_turn(
                lambda: throughput.drain_cpu(dsn, SCALE_OUT_JOBS, 2),
                lambda: throughput.drain_cpu(dsn, SCALE_OUT_JOBS, 8),
                swap=pair % 2 == 1,
            )
            _add(runs, "drain_8_processes.jobs_s", drain8_long)
            _add(runs, "drain_8_processes.ratio_to_2", drain8_long / drain2_long)
            _add(runs, "drain_8_processes.cpu_us_per_job", cpu8)
            _add(runs, "drain_8_processes.cpu_us_per_job_with_2", cpu2)
            _add(runs, "drain_8_processes.cpu_ratio_to_2", cpu8 / cpu2)
        # The same comparison for bare SQL loops (claims flushed, acks not, as the worker
        # commits): what eight claimers cost the database's own claim path.
        fleet2, fleet8 = _in_turn(
            lambda: limits.claim_ack_fleet(dsn, SCALE_OUT_JOBS, 2),
            lambda: limits.claim_ack_fleet(dsn, SCALE_OUT_JOBS, 8),
            swap=len(runs["limits.claim_ack_fleet_8_to_2"]) % 2 == 1,
        )
        _add(runs, "limits.claim_ack_fleet_2_processes_jobs_s", fleet2)
        _add(runs, "limits.claim_ack_fleet_8_to_2", fleet8 / fleet2)
    copy = limits.copy_load(dsn, MANY_JOBS)
    many = throughput.enqueue_many(dsn, MANY_JOBS)
    _add(runs, "limits.copy_rows_s", copy)
    _add(runs, "enqueue_many.jobs_s", many)
    _add(runs, "enqueue_many.ratio", many / copy)
    _single(dsn, runs, samples)
    bare_latency = limits.notify_claim_latency(dsn, samples)
    _add(runs, "limits.notify_claim_p50_ms", statistics.median(bare_latency))
    _add(runs, "limits.notify_claim_p99_ms", _p99(bare_latency))
    lat = latency.enqueue_to_start(dsn, samples)
    for key, values in lat.items():
        _add(runs, f"latency.p50_ms{'' if key == 'from_commit_done' else '_' + key}",
             statistics.median(values))  # fmt: skip
        _add(runs, f"latency.p99_ms{'' if key == 'from_commit_done' else '_' + key}",
             _p99(values))  # fmt: skip
    _add(runs, "latency.p50_minus_bare_ms",
         statistics.median(lat["from_commit_done"]) - statistics.median(bare_latency))  # fmt: skip
    for key, value in scale.footprint(dsn).items():
        if isinstance(value, int | float):
            _add(runs, f"footprint.{key}", value)


def _single(dsn: str, runs: dict[str, list[float]], samples: int) -> None:
    """Bare INSERT + COMMIT and enqueue + COMMIT, interleaved in blocks of 100.

    A commit waits for a WAL flush, whose time jitters by tens of percent on a shared host:
    four times ``samples`` transactions a side, the blocks' order alternating, so a slow
    stretch of the disk lands on both sides alike.
    """
    _env.reset(dsn)
    bare = mine = 0.0
    blocks = max(2, samples * 4 // 100)
    with psycopg.connect(dsn) as conn:
        for block in range(blocks):
            b, m = _in_turn(
                lambda: limits.insert_commit(conn, 100),
                lambda: throughput.single_enqueue(conn, 100),
                swap=block % 2 == 1,
            )
            bare, mine = bare + b, mine + m
    _add(runs, "limits.insert_commit_ms", bare / blocks * 1000)
    _add(runs, "single_enqueue.ms", mine / blocks * 1000)
    _add(runs, "single_enqueue.overhead", mine / bare - 1)


def _in_turn(first: Callable[[], T], second: Callable[[], T], swap: bool) -> tuple[T, T]:
    """Both measurements, ``second`` run before ``first`` when ``swap``; results in argument order.

    Alternating which side runs first spreads a host's drift over both sides of a ratio.
    """
    if swap:
        later = second()
        return first(), later
    earlier = first()
    return earlier, second()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def _add(runs: dict[str, list[float]], key: str, value: float) -> None:
    runs[key].append(round(value, 4))


def summarise(runs: dict[str, list[float]]) -> dict[str, Any]:
    """``{figure: {median, min, max, runs[, target, met]}}``, grouped by scenario."""
    out: dict[str, Any] = defaultdict(dict)
    for key, values in runs.items():
        group, _, name = key.partition(".")
        entry: dict[str, Any] = {
            "median": round(statistics.median(values), 4), "min": min(values),
            "max": max(values), "runs": values,
        }  # fmt: skip
        if key in TARGETS:
            op, goal = TARGETS[key]
            entry["target"] = f"{op} {goal}"
            entry["met"] = entry["median"] >= goal if op == ">=" else entry["median"] <= goal
        out[group][name] = entry
    return dict(out)


def meta(dsn: str, args: argparse.Namespace, factor: float, repeat: int) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "scale": factor, "repeat": repeat, "quick": args.quick,
        "backlog_queued": int(1_000_000 * factor), "backlog_finished": int(5_000_000 * factor),
        "churn_jobs": int(1_000_000 * factor), "drain_jobs": DRAIN_JOBS, "many_jobs": MANY_JOBS,
        "scale_out_jobs": SCALE_OUT_JOBS, "snapshot_jobs": int(SNAPSHOT_JOBS * factor),
        "scheduled_jobs": int(SCHEDULED_JOBS * factor),
        "scale_out_pairs_per_round": SCALE_OUT_PAIRS,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "python_dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "load_average_at_start": os.getloadavg(),
        "postgres": dict(_env.execute(dsn, _sql.SETTINGS)),
        "server": args.server, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run everything and print one JSON document."""
    args = parse(sys.argv[1:] if argv is None else argv)
    factor = args.scale if args.scale is not None else (0.02 if args.quick else 1.0)
    repeat = args.repeat or (1 if args.quick else 3)
    samples = 200 if args.quick else 500
    skip = set(filter(None, args.skip.split(",")))
    runs: dict[str, list[float]] = defaultdict(list)
    started = time.monotonic()
    with _env.bench_server(args.server) as admin, _env.bench_database(admin, args.keep_db) as dsn:
        report: dict[str, Any] = {"meta": meta(dsn, args, factor, repeat)}
        whole_run = _env.cpu_times()
        for number in range(repeat):
            print(f"round {number + 1}/{repeat}", file=sys.stderr, flush=True)
            before = _env.cpu_times()
            one_round(dsn, runs, samples, skip)
            stolen = _env.steal_pct(before, _env.cpu_times())
            if stolen is not None:  # how much of this round's machine someone else had
                _add(runs, "host.cpu_steal_pct", stolen)
        report.update(summarise(runs))
        if "backlog" not in skip:
            print("backlog", file=sys.stderr, flush=True)
            report["backlog"] = scale.backlog(
                admin, dsn, DRAIN_JOBS, int(1_000_000 * factor), int(5_000_000 * factor)
            )
            report["backlog"]["target"], report["backlog"]["met"] = ">= 0.8", report[
                "backlog"]["ratio"] >= 0.8  # fmt: skip
        if "snapshot" not in skip:
            print("snapshot", file=sys.stderr, flush=True)
            report["snapshot"] = scale.held_snapshot(dsn, int(SNAPSHOT_JOBS * factor), samples)
        if "scheduled" not in skip:
            print("scheduled", file=sys.stderr, flush=True)
            report["scheduled"] = scale.scheduled(
                dsn, DRAIN_JOBS, int(SCHEDULED_JOBS * factor), samples
            )
        if "churn" not in skip:
            print("churn", file=sys.stderr, flush=True)
            report["churn"] = scale.churn(dsn, int(1_000_000 * factor))
        report["meta"]["cpu_steal_pct"] = _env.steal_pct(whole_run, _env.cpu_times())
    report["meta"]["seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
