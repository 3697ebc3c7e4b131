"""The docs stand alone: no tracked file points outside the repository, and every relative
link in the Markdown guides reaches an existing file and, with a ``#fragment``, an existing
heading of it (GitHub's anchors)."""

from __future__ import annotations

import re
import subprocess
import unicodedata
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Spelled in two pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "/work/" + "shared")

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
_FILE_NAMED = re.compile(r"`([A-Za-z0-9_./-]+\.(?:py|sh|yaml|json|tpl))`")
#: Files of other projects that the guides name (a decision record quotes their source).
ELSEWHERE = frozenset({"oauth2_session.py"})


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: which files are tracked is unknown")
    return [ROOT / name for name in out.decode().split("\0") if name]


def _guides() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "charts").glob("*/README.md"))]
    return [p for p in found if p.is_file()]


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: its headings' (numbered as GitHub numbers
    repeats) and explicit ``<a id=...>``."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(_HTML_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(2).replace("`", ""))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """The relative links of one Markdown file that lead nowhere, each with why (paths
    relative to ``root``)."""
    problems = []
    for line in _prose(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            parsed = urllib.parse.urlsplit(target)
            if parsed.scheme or target.startswith("//"):
                continue  # an address outside: not checked here (no network in this tier)
            file_part = urllib.parse.unquote(parsed.path)
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{target}: no such file")
                continue
            if parsed.fragment and dest.suffix == ".md" and parsed.fragment not in anchors(dest):
                problems.append(f"{target}: no heading with this anchor in {dest.relative_to(root)}")
    return problems


def test_no_tracked_file_points_outside_the_repository() -> None:
    """A user's clone has only the repository: no file may send them to the project's
    shared notes or contract (the API reference is docs/reference.md)."""
    offenders = []
    for path in _tracked():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images and other binaries
        for number, line in enumerate(text.splitlines(), 1):
            if any(s in line for s in OUTSIDE):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert [] == offenders


@pytest.mark.parametrize("path", _guides(),
                         ids=lambda p: f"every relative link in {p.relative_to(ROOT)} leads somewhere")
def test_relative_links_lead_somewhere(path: Path) -> None:
    """Each relative Markdown link names an existing file, and its #anchor an existing heading."""
    assert [] == broken_links(path)


def missing_files(text: str, tracked: list[str]) -> list[str]:
    """The file names in backticks (``kube/watching.py``, ``hack/build-image.sh``) that no
    tracked file's path ends with."""
    return sorted({name for name in _FILE_NAMED.findall(text)
                   if name not in ELSEWHERE
                   and not any(t == name or t.endswith("/" + name) for t in tracked)})


@pytest.mark.parametrize("path", [p for p in _guides() if p.name != "CHANGELOG.md"],
                         ids=lambda p: f"every file {p.relative_to(ROOT)} names exists")
def test_files_named_in_the_guides_exist(path: Path) -> None:
    """A guide that names a source file names one that exists (a rename updates the docs;
    the changelog is history and may name old files)."""
    tracked = [str(p.relative_to(ROOT)) for p in _tracked()]
    assert [] == missing_files(path.read_text(encoding="utf-8"), tracked)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("see `engine/reconciler.py`", [], id="a path inside the package is found by its tail"),
    pytest.param("see `memory.py`", ["memory.py"], id="a renamed file is reported"),
    pytest.param("see `oauth2_session.py`", [], id="another project's file is not ours to have"),
])
def test_missing_files_are_found(text: str, expected: list[str]) -> None:
    """The file check reports a name no tracked path ends with, and only that."""
    tracked = ["operator/externalauth/engine/reconciler.py", "operator/externalauth/memory_report.py"]
    assert expected == missing_files(text, tracked)


@pytest.mark.parametrize(("heading", "expected"), [
    pytest.param("1. ExternalAuthProvider", "1-externalauthprovider",
                 id="a numbered heading keeps its number and loses the dot"),
    pytest.param("2. Define a provider (cluster admin)", "2-define-a-provider-cluster-admin",
                 id="parentheses are dropped, spaces become hyphens"),
    pytest.param("`externalauth login PROVIDER`", "externalauth-login-provider",
                 id="inline code keeps its words"),
    pytest.param("CLI start-up (issue #10: `externalauth` no slower than `kubectl`)",
                 "cli-start-up-issue-10-externalauth-no-slower-than-kubectl",
                 id="hyphens stay, colons and hashes go"),
    pytest.param("Storm (contract §10: 1,000 links)", "storm-contract-10-1000-links",
                 id="section signs and commas go"),
])
def test_anchors_are_githubs(heading: str, expected: str) -> None:
    """The anchor checker computes the anchors GitHub renders, so a link it passes works there."""
    assert expected == slug(heading.replace("`", ""))


def test_a_missing_anchor_is_found(tmp_path: Path) -> None:
    """The link checker reports a link to a heading that does not exist, and passes one that does."""
    (tmp_path / "a.md").write_text("# Title\n\n## Real part\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#real-part) [bad](a.md#no-part) [gone](c.md) `[code](d.md)`\n"
                    "```\n[fenced](e.md)\n```\n", encoding="utf-8")
    assert ["a.md#no-part: no heading with this anchor in a.md", "c.md: no such file"] == \
        broken_links(page, tmp_path)
