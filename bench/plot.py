#!/usr/bin/env python3
"""The pictures of docs/benchmarks.md (issue 12, item 6), from bench/compare.py's JSON.

    .venv/bin/pip install -e ".[bench]"       # matplotlib
    .venv/bin/python bench/compare.py --out /tmp/compare.json
    .venv/bin/python bench/plot.py /tmp/compare.json --memory-links 1000,2000,5000
    .venv/bin/python bench/plot.py /tmp/compare.json --memory 1000:75.2,2000:84.0  # figures you have

Draws two PNGs:

- ``docs/storm-side-by-side.png``: the fraction of Secrets persisted against the seconds
  since every token fell due, for this operator and the naive one, one and two replicas
  (the storm timelines compare.py recorded by listing the Secrets every 0.2 s);
- ``docs/memory-by-links.png``: this operator's resident memory against the number of
  links. ``--memory-links`` measures it: for each count a fresh control plane, that many
  links not due, the operator started, every link decided, then ``--settle-seconds`` idle
  before RSS is read (what compare.py's idle scenario does, without the restart);
  ``--memory`` adds figures measured so before. The idle points of the JSON (ours and the
  naive one, measured after a restart and a longer idle) are drawn apart.

Prints the memory figures it measured as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from compare import Contender, idle

ROOT = Path(__file__).resolve().parents[1]
MIB_PER_MB = 1e6 / 2**20
STYLES = {("ours", 1): ("tab:blue", "-"), ("ours", 2): ("tab:blue", "--"),
          ("naive", 1): ("tab:red", "-"), ("naive", 2): ("tab:red", "--")}


def storm_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = report["parameters"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in ("ours", "naive"):
        for replicas in (1, 2):
            run = report.get(name, {}).get(f"storm_{replicas}")
            if run is None:
                continue
            t = [x for x, _ in run["timeline"]]
            frac = [n / run["links"] for _, n in run["timeline"]]
            color, style = STYLES[(name, replicas)]
            who = "this operator" if name == "ours" else "naive kopf operator"
            label = f"{who}, {replicas} replica{'s' if replicas > 1 else ''}"
            if run["tokens_lost"]:
                label += f" ({run['tokens_lost']} tokens lost)"
            ax.step(t, frac, where="post", color=color, linestyle=style, label=label)
    ax.axvline(p["links"] * p["latency_s"] / p["concurrency"], color="grey", linewidth=0.8, linestyle=":",
               label="ideal N * L / K")
    ax.set_xlabel("seconds since every token fell due")
    ax.set_ylabel("fraction of Secrets persisted")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"storm: N = {p['links']} links, L = {p['latency_s'] * 1000:.0f} ms, K = {p['concurrency']}, "
                 f"validation on, replay detection on")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def memory_plot(points: dict[int, float], report: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs = sorted(points)
    ax.plot(xs, [points[x] for x in xs], marker="o", color="tab:blue",
            label="this operator: first start, all decided, then idle")
    for name, color in (("ours", "tab:blue"), ("naive", "tab:red")):
        run = (report or {}).get(name, {}).get("idle")
        if run:
            who = "this operator" if name == "ours" else "naive kopf operator"
            ax.scatter([run["links"]], [run["rss_mib"]], marker="s", color=color, zorder=3,
                       label=f"{who}: compare.py, after a restart and {run['idle_seconds']:.0f} s idle")
    ax.scatter([10000], [200 * MIB_PER_MB], marker="x", color="black", zorder=3, label="§10 target: 200 MB at 10,000")
    ax.set_xlabel("links (token Secret + ExternalAuthLink each)")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title("operator resident memory against link count")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def parse_points(text: str) -> dict[int, float]:
    return {int(k): float(v) for k, v in (pair.split(":") for pair in text.split(",") if pair)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="the JSON that bench/compare.py --out wrote")
    ap.add_argument("--memory-links", help="measure our RSS at these link counts, e.g. 1000,2000,5000")
    ap.add_argument("--memory", help="RSS figures measured elsewhere (first start, all decided): LINKS:MIB,...")
    ap.add_argument("--settle-seconds", type=float, default=10, help="idle time before RSS is read")
    ap.add_argument("--storm-png", type=Path, default=ROOT / "docs" / "storm-side-by-side.png")
    ap.add_argument("--memory-png", type=Path, default=ROOT / "docs" / "memory-by-links.png")
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    storm_plot(report, args.storm_png)
    points = parse_points(args.memory) if args.memory else {}
    if args.memory_links:
        ours = Contender("ours", naive_interval=0, workers=0)
        for links in (int(x) for x in args.memory_links.split(",")):  # one fresh control plane each
            print(f"memory: {links} links ...", flush=True)
            run = idle(ours, links=links, idle_seconds=args.settle_seconds, restart=False)
            points[links] = run["rss_mib"]
            print(json.dumps(run), flush=True)
    print(json.dumps({"rss_mib_by_links": points}, indent=2))
    memory_plot(points, report, args.memory_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
