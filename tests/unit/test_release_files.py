"""The release inputs agree with each other: the Containerfile makes the image that
hack/build-image.sh makes (base suite, Python, user, entrypoint, environment, the
hash-locked dependencies, no simulator), and requirements/operator.lock pins every
dependency pyproject.toml names for the image, each with hashes.

These read the files; tests/integration/test_containerfile.py builds the Containerfile
with buildah where the machine allows it.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = (REPO / "Containerfile").read_text()
BUILD_IMAGE = (REPO / "hack" / "build-image.sh").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


INSTRUCTIONS = _instructions(CONTAINERFILE)
# The last stage: what the image is.
FINAL = INSTRUCTIONS[max(i for i, (w, _) in enumerate(INSTRUCTIONS) if w == "FROM"):]


def _final(word: str) -> list[str]:
    return [args for w, args in FINAL if w == word]


def _umoci_config(flag: str) -> list[str]:
    return re.findall(rf"--config\.{flag} (\S+)", BUILD_IMAGE)


def _lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip-compile/uv lock file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), [])
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[current][1].append(h.group(1))
    return pins


def test_both_start_from_debian_bookworm() -> None:
    (default,) = [a for w, a in INSTRUCTIONS if w == "ARG" and a.startswith("BASE_IMAGE=")]
    assert "debian:bookworm" in default
    assert re.search(r"^SUITE=bookworm$", BUILD_IMAGE, re.M)
    assert [a for w, a in INSTRUCTIONS if w == "FROM"] == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime",
                                                            "scratch"]
    assert _final("COPY") == ["--from=runtime / /"]


def test_both_use_the_same_python() -> None:
    (py,) = re.findall(r"^PY=(\S+)", BUILD_IMAGE, re.M)
    assert set(re.findall(r"/python(3\.\d+)/", CONTAINERFILE)) == {py}


def test_both_run_as_the_same_non_root_user() -> None:
    assert _final("USER") == _umoci_config("user") == ["65532:65532"]
    assert "externalauth:x:65532:65532:" in CONTAINERFILE
    assert "externalauth:x:65532:65532:" in BUILD_IMAGE


def test_both_have_the_same_entrypoint_cmd_and_stop_signal() -> None:
    assert [json.loads(a) for a in _final("ENTRYPOINT")] == [_umoci_config("entrypoint")]
    assert [json.loads(a) for a in _final("CMD")] == [_umoci_config("cmd")]
    assert _final("STOPSIGNAL") == _umoci_config("stopsignal") == ["SIGTERM"]


def test_both_set_the_same_environment() -> None:
    env = dict(kv.split("=", 1) for args in _final("ENV") for kv in shlex.split(args))
    assert env == dict(kv.split("=", 1) for kv in _umoci_config("env"))


def test_both_install_the_dependencies_from_the_lock_with_hashes() -> None:
    pip_lines = [a for w, a in INSTRUCTIONS if w == "RUN" and "operator.lock" in a]
    assert len(pip_lines) == 1
    (segment,) = [s for s in pip_lines[0].split("&&") if "operator.lock" in s]
    assert "--require-hashes" in segment and "--only-binary=:all:" in segment
    assert re.search(r'--require-hashes -r "\$LOCK"', BUILD_IMAGE)
    assert "LOCK=requirements/operator.lock" in BUILD_IMAGE
    # The project's own wheel goes in without its dependencies in both.
    assert "--no-deps --target /project /wheels/*.whl" in CONTAINERFILE
    assert '--no-deps "$WHEEL"' in BUILD_IMAGE


def test_neither_puts_the_simulator_in_the_image() -> None:
    copies = [a for w, a in INSTRUCTIONS if w == "COPY"]
    assert not [c for c in copies if "sim" in c.split()[0]]
    assert "import providersim" in CONTAINERFILE and "import providersim" in BUILD_IMAGE


def test_the_debootstrap_checks_signatures_and_takes_security_updates() -> None:
    assert "--keyring=\"$KEYRING\" --force-check-gpg" in BUILD_IMAGE
    assert "/usr/share/keyrings/debian-archive-keyring.gpg" in BUILD_IMAGE
    assert '"$SUITE-security"' in BUILD_IMAGE and "upgrade" in BUILD_IMAGE
    assert re.search(r'BASE=".*\$WEEK', BUILD_IMAGE), "the base's cache key has no date"
    assert "apt-get upgrade" in CONTAINERFILE


def _image_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["operator"]]


@pytest.mark.parametrize("req", _image_requirements(), ids=lambda r: f"the lock pins {r.name} as pyproject asks")
def test_the_lock_pins_every_image_dependency(req: Requirement) -> None:
    pins = _lock(REPO / "requirements" / "operator.lock")
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is not in requirements/operator.lock: run `make lock`"
    assert req.specifier.contains(pins[name][0], prereleases=True), f"{req} vs {pins[name][0]}: run `make lock`"


@pytest.mark.parametrize("lock", ["operator.lock", "build.lock"])
def test_every_pin_has_hashes_and_the_project_is_not_pinned(lock: str) -> None:
    pins = _lock(REPO / "requirements" / lock)
    assert pins
    assert [n for n, (_, hashes) in pins.items() if not hashes] == []
    assert "externalauth-operator" not in pins and "externalauth-providersim" not in pins


def test_the_containerfile_labels_the_package_version_by_default() -> None:
    (version,) = [a.split("=", 1)[1] for w, a in INSTRUCTIONS if w == "ARG" and a.startswith("VERSION=")]
    assert version == PYPROJECT["project"]["version"]

