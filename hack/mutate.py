#!/usr/bin/env python3
"""Mutation testing of the code that enforces contract §9, killed by the unit tier alone.

    make mutate                          # every module below, one at a time
    make mutate MUTATE=engine/writing.py # one module (a path under operator/externalauth)
    make mutate MUTATE_JOBS=2            # worker processes (default 1: the machine is shared)

mutmut 3 (the ``mutate`` extra) mutates a copy of the source and runs, per mutant, only
the unit tests that cover the mutated function, each in a forked process. It only finds
code under ``src/``, so the run happens in a staging directory, ``build/mutate``, where
``src/externalauth`` and ``tests`` are copies taken at the start, beside the files the
tests read. Results stay in ``build/mutate/mutants`` until the next run;
``--summary`` prints the score per module, ``--results`` the surviving mutants,
``--show NAME`` one mutant's diff.
Not in CI: a full run takes tens of minutes (docs/mutation.md has the last score).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / os.environ.get("MUTATE_STAGE", "mutate")  # a second run beside: MUTATE_STAGE=mutate2
PACKAGE = ROOT / "operator" / "externalauth"
#: The modules that enforce §9 (one exchange per refresh token, persist first, compare-
#: and-swap, dead grants, bounded rates): the engine's refresh path, the decisions and
#: classification, what outcomes mean, claims and tokens, and the reader of token answers.
#: ``module:function`` mutates one function only (the rest of exchanging.py is HTTP I/O,
#: tested against the simulator, not by the unit tier).
MODULES = (
    "engine/refreshing.py",
    "engine/writing.py",
    "engine/reconciler.py",
    "engine/scheduling.py",
    "policy/deciding.py",
    "policy/effects.py",
    "policy/timing.py",
    "policy/classifying.py",
    "model/claims.py",
    "model/tokens.py",
    "oauth/exchanging.py:read_answer",
)
#: Repository files the unit tests read (docs, CRDs, the chart, release files): every
#: top-level entry but these.
NOT_COPIED = frozenset({".git", ".venv", "build", "tests", "pyproject.toml", ".mypy_cache", ".ruff_cache",
                        ".pytest_cache", ".import_linter_cache"})
ALSO_COPY = tuple(sorted(p.name for p in ROOT.iterdir() if p.name not in NOT_COPIED))
#: Unit tests that check the repository rather than behaviour (links in docs); they read
#: files mutmut does not copy and cannot kill a mutant of the modules above.
IGNORE = ("tests/unit/test_docs.py",)


def _mutmut() -> Path:
    exe = Path(sys.executable).parent / "mutmut"
    if not exe.exists():
        sys.exit("mutmut is not installed: pip install -e '.[mutate]' (or make venv MUTATE=1)")
    return exe


def _pyproject(only: list[str], jobs: int) -> str:
    """The repository's pyproject.toml with a [tool.mutmut] section for this run."""
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", text)
    # mutmut names the tests to run by their ids: ids with non-ASCII characters ("§9.16")
    # must stay as they are, not escaped, or pytest cannot find them again.
    text = text.replace("[tool.pytest.ini_options]\n", "[tool.pytest.ini_options]\n"
                        "disable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n", 1)
    quoted = ", ".join(f'"{p}"' for p in only)
    ignores = ", ".join(f'"--ignore={p}"' for p in IGNORE)
    also = ", ".join(f'"{p}"' for p in ALSO_COPY)
    return text + f"""
[tool.mutmut]
source_paths = ["src/externalauth"]
only_mutate = [{quoted}]
also_copy = [{also}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:randomly", "-q"]
pytest_add_cli_args_test_selection = ["tests/unit", {ignores}]
use_git_change_detection = false
# Log statements: their wording is not behaviour (what they must never contain is the
# canary tests' job); mutating them only adds noise.
do_not_mutate_patterns = ['^\\s*log\\.(debug|info|warning|error|exception)\\(']
# {jobs} worker(s)
"""


def stage(modules: list[str], jobs: int, *, keep: bool) -> None:
    """A snapshot of the source and the tests (a run takes long; the tree may change)."""
    if not keep and STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True, exist_ok=True)
    for source, target in ((PACKAGE, STAGE / "src" / "externalauth"), (ROOT / "tests", STAGE / "tests")):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ALSO_COPY:
        link = STAGE / name
        if not link.is_symlink() and (ROOT / name).exists():
            link.symlink_to(ROOT / name)
    (STAGE / "pyproject.toml").write_text(_pyproject([f"src/externalauth/{m}" for m in modules], jobs))


def run(modules: list[str], jobs: int, *, keep: bool) -> int:
    files = []
    for module in modules:
        path = module.partition(":")[0]
        if not (PACKAGE / path).is_file():
            sys.exit(f"no such module: operator/externalauth/{path} (one of: {', '.join(MODULES)})")
        files.append(path)
    stage(files, jobs, keep=keep)
    exe = _mutmut()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    status = 0
    for module in modules:
        path, _, function = module.partition(":")
        dotted = "externalauth." + path.removesuffix(".py").replace("/", ".")
        names = f"{dotted}.x_{function}__mutmut_*" if function else f"{dotted}.*"
        print(f"\n==> mutmut run {names} (jobs {jobs})", flush=True)
        status |= subprocess.call([str(exe), "run", "--max-children", str(jobs), names], cwd=STAGE, env=env)
    return status


def summary() -> int:
    """Killed / survived / no tests per module, from mutmut's result files (a timeout
    counts as killed: the mutant made the tests hang)."""
    from mutmut.stats import status_by_exit_code  # the mutate extra

    total: dict[str, int] = {}
    print(f"{'module':34} {'mutants':>7} {'killed':>7} {'survived':>8} {'no tests':>8} {'score':>6}")
    only = {m.partition(":")[0]: m.partition(":")[2] for m in MODULES if ":" in m}
    for meta in sorted((STAGE / "mutants" / "src").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(STAGE / "mutants" / "src" / "externalauth")).removesuffix(".meta")
        if module in only:  # one function of it is in scope
            codes = {k: v for k, v in codes.items() if f".x_{only[module]}__mutmut_" in k}
        counts: dict[str, int] = {}
        for code in codes.values():
            status = status_by_exit_code[code]
            status = "killed" if status in ("killed", "timeout", "caught by type check") else status
            counts[status] = counts.get(status, 0) + 1
            total[status] = total.get(status, 0) + 1
        _row(str(meta.relative_to(STAGE / "mutants" / "src")).removesuffix(".meta"), counts)
    _row("all", total)
    return 0


def _row(name: str, counts: dict[str, int]) -> None:
    n = sum(counts.values())
    killed = counts.get("killed", 0)
    score = f"{100 * killed / n:.1f}%" if n else "-"
    print(f"{name:34} {n:7} {killed:7} {counts.get('survived', 0):8} {counts.get('no tests', 0):8} {score:>6}"
          + ("" if n == killed + counts.get("survived", 0) + counts.get("no tests", 0) else f"  {counts}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"paths under operator/externalauth (default: {' '.join(MODULES)})")
    parser.add_argument("--jobs", type=int, default=1, help="mutmut worker processes (default 1)")
    parser.add_argument("--results", action="store_true", help="list the mutants of the last run that survived")
    parser.add_argument("--show", metavar="MUTANT", help="the diff of one mutant")
    parser.add_argument("--summary", action="store_true", help="the score of the last run, per module")
    parser.add_argument("--keep", action="store_true",
                        help="keep the last run's mutants and results (default: start afresh)")
    args = parser.parse_args(argv)
    if args.summary:
        return summary()
    if args.results or args.show:
        if not (STAGE / "mutants").is_dir():
            sys.exit("no results yet: make mutate first")
        command = ["results"] if args.results else ["show", args.show]
        return subprocess.call([str(_mutmut()), *command], cwd=STAGE)
    return run(list(args.modules) or list(MODULES), max(1, args.jobs), keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
