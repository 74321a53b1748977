"""``python -m bench.table bench.json``: the figures of a bench run as a Markdown table."""

from __future__ import annotations

import json
import sys
from typing import Any


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _rates(value: float | list[float]) -> str:
    values = value if isinstance(value, list) else [value]
    return "/".join(_fmt(v) for v in values)


def rows(report: dict[str, Any]) -> list[str]:
    """One line per figure: median [min-max], target, met."""
    lines = ["| Figure | Median [min..max] | Target | Met |", "|---|---|---|---|"]
    for group, figures in report.items():
        if group in ("meta", "backlog", "churn", "snapshot", "scheduled"):
            continue
        for name, e in figures.items():
            spread = f"{_fmt(e['median'])} [{_fmt(e['min'])}..{_fmt(e['max'])}]"
            met = "" if "met" not in e else ("yes" if e["met"] else "**no**")
            lines.append(f"| {group}.{name} | {spread} | {e.get('target', '')} | {met} |")
    if "backlog" in report:
        b = report["backlog"]
        met = "yes" if b["met"] else "**no**"
        rates = f"{_rates(b['backlog_jobs_s'])} vs {_rates(b['empty_jobs_s'])} jobs/s"
        lines.append(f"| backlog.ratio ({rates}) | {b['ratio']:.3f} | {b['target']} | {met} |")
    if "snapshot" in report:
        h = report["snapshot"]
        rates = f"{_rates(h['held_jobs_s'])} vs {_rates(h['free_jobs_s'])} jobs/s"
        lines.append(f"| snapshot.ratio ({h['jobs']:,} jobs; {rates}) | {h['ratio']:.3f} | | |")
        if "latency_ratio" in h:
            ms = f"{_rates(h['latency_held_p50_ms'])} vs {_rates(h['latency_free_p50_ms'])} ms"
            lines.append(f"| snapshot.latency_ratio (p50 {ms}) | {h['latency_ratio']:.2f} | | |")
        if "latency_held_p99_ms" in h:
            held, free = h["latency_held_p99_ms"], h["latency_free_p99_ms"]
            lines.append(f"| snapshot.latency p99 ms, held vs clean | {_rates(held)} vs "
                         f"{_rates(free)} | | |")  # fmt: skip
    if "scheduled" in report:
        d = report["scheduled"]
        rates = f"{_rates(d['behind_jobs_s'])} vs {_rates(d['clean_jobs_s'])} jobs/s"
        lines.append(f"| scheduled.ratio ({d['later']:,} due tomorrow; {rates}) | "
                     f"{d['ratio']:.3f} | | |")  # fmt: skip
        ms = f"{_rates(d['latency_later_p50_ms'])} vs {_rates(d['latency_clean_p50_ms'])} ms"
        lines.append(f"| scheduled.latency_ratio (p50 {ms}) | {d['latency_ratio']:.2f} | | |")
    return lines


def churn(report: dict[str, Any]) -> list[str]:
    """The churn samples as a table."""
    samples = report.get("churn", {}).get("samples", [])
    if not samples:
        return []
    keys = list(samples[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(s[k]) for k in keys) + " |" for s in samples]
    return lines


def main() -> None:
    """Print the tables for the JSON file named on the command line."""
    with open(sys.argv[1]) as f:
        report = json.load(f)
    stolen = report.get("meta", {}).get("cpu_steal_pct")
    if stolen is not None:
        print(f"CPU time stolen by the hypervisor over the whole run: {stolen:.1f} %\n")
    print("\n".join(rows(report)))
    print()
    print("\n".join(churn(report)))


if __name__ == "__main__":
    main()
