#!/usr/bin/env python3
"""Top functions of a py-spy profile in collapsed-stack form (``--format raw``; bench's
``--profile X.svg`` writes it to ``X.svg.txt``): the samples by area (threads and loop),
then functions by own samples and by inclusive samples.

    .venv/bin/python bench/profile_top.py before.svg.txt [--top 25] [--strip-lines]

A frame is ``function (file:line)``; ``--strip-lines`` drops the line so that a function
counts once whatever line was running. Shares are of all samples (py-spy ``--gil``: samples
taken while the operator held the GIL, i.e. Python running).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

LINE = re.compile(r":\d+\)$")
#: Where a sample was, by the first of these frames its stack holds (docs/benchmarks.md).
AREAS = (
    ("watch threads", "Watcher.run"),
    ("API calls (API threads)", "(externalauth/kube/api.py"),
    ("provider calls (their threads)", "ProviderClient."),
    ("thread-pool machinery", "_worker (concurrent"),
    ("loop: reconciles", "Scheduler._one"),
    ("loop: inbox", "Inbox._drain"),
    ("loop: persists", "SecretWriter._persist"),
    ("loop: select", "select (selectors"),
    ("loop: self-pipe (results from threads)", "_read_from_self"),
    ("loop: other", "run_forever"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--strip-lines", action="store_true")
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    areas: collections.Counter[str] = collections.Counter()
    for line in args.raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";") if stack else ["(no Python frame)"]
        if args.strip_lines:
            frames = [LINE.sub(")", f) for f in frames]
        total += n
        areas[next((name for name, frame in AREAS if frame in stack), "partial stacks")] += n
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    print(f"{total} samples")
    print("\nareas:")
    for name, n in areas.most_common():
        print(f"{100 * n / total:5.1f} %  {n:6d}  {name}")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n{title}:")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f} %  {n:6d}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
