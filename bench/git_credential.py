#!/usr/bin/env python3
"""The git credential helper's start-up, against git's own file helper, with farm-bench.

    .venv/bin/python bench/git_credential.py [--runs 30] [--helper PATH]

Lays out a directory as a mounted token Secret (access_token, expiry, git-credentials) and
the same credential in a `git credential-store` file, then times, pair by pair (farm-bench
--vs), one `get` of each for the same request:

    A: printf 'protocol=https\\nhost=github.com\\n\\n' | git-credential-externalauth get
    B: printf 'protocol=https\\nhost=github.com\\n\\n' | git credential-store --file F get

and prints farm-bench's report (quote the medians; the A/B cpu ratio is the figure the
target "within 3x of git credential-store" is about) and the command it ran.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REQUEST = r"printf 'protocol=https\nhost=github.com\n\n'"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--helper", default=str(Path(sys.executable).parent / "git-credential-externalauth"))
    args = parser.parse_args()
    if shutil.which("farm-bench") is None:
        raise SystemExit("farm-bench is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        secret = Path(tmp) / "token"
        secret.mkdir()
        token = "gho_" + "x" * 36
        (secret / "access_token").write_text(token)
        (secret / "expiry").write_text("2026-12-05T21:00:00Z")
        (secret / "git-credentials").write_text(f"https://x-access-token:{token}@github.com\n")
        store = Path(tmp) / "store"
        store.write_text(f"https://x-access-token:{token}@github.com\n")
        a = f"{REQUEST} | {shlex.quote(args.helper)} get"
        b = f"{REQUEST} | git credential-store --file {shlex.quote(str(store))} get"
        cmd = ["farm-bench", "-n", str(args.runs), "--vs", f"sh -c {shlex.quote(b)}", "--", "sh", "-c", a]
        print("command: EXTERNALAUTH_SECRET_DIR=" + str(secret) + " " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, env={**os.environ, "EXTERNALAUTH_SECRET_DIR": str(secret)}, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
