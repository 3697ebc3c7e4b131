"""The wheels: the operator's (what PyPI and the image get) holds the operator and not
the provider simulator; the simulator's (sim/, externalauth-providersim) holds only it.

Each wheel is built with pip from a copy of exactly the files its build reads, so a
build never writes into the checkout (build/, *.egg-info) while other tests run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# pip fetches the build backend (setuptools) into an isolated environment: seconds
# when pip's cache has it, more on a cold machine.
pytestmark = pytest.mark.timeout(600)

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")


def _wheel(src: Path, out: Path) -> zipfile.ZipFile:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
         "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=540,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _entry_points(whl: zipfile.ZipFile) -> str:
    (name,) = [n for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt")]
    return whl.read(name).decode()


@pytest.fixture(scope="module")
def operator_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("operator-src")
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    shutil.copytree(REPO / "operator", src / "operator", ignore=_IGNORE)
    shutil.copytree(REPO / "scripts", src / "scripts", ignore=_IGNORE)
    return _wheel(src, tmp_path_factory.mktemp("operator-wheel"))


@pytest.fixture(scope="module")
def simulator_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("sim-src")
    shutil.copytree(REPO / "sim", src / "sim", ignore=_IGNORE)
    return _wheel(src / "sim", tmp_path_factory.mktemp("sim-wheel"))


def test_the_operator_wheel_has_no_simulator(operator_wheel: zipfile.ZipFile) -> None:
    names = operator_wheel.namelist()
    assert [n for n in names if n.startswith("providersim")] == []
    assert "providersim" not in _entry_points(operator_wheel)
    assert "externalauth/cli/main.py" in names
    assert "externalauth/engine/__init__.py" in names


def test_the_operator_wheel_carries_its_project_urls(operator_wheel: zipfile.ZipFile) -> None:
    (meta,) = [n for n in operator_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = operator_wheel.read(meta).decode()
    urls = {line.split(": ", 1)[1].split(", ", 1)[0] for line in text.splitlines()
            if line.startswith("Project-URL: ")}
    assert {"Homepage", "Source", "Issues", "Changelog"} <= urls


def test_the_simulator_wheel_is_only_the_simulator(simulator_wheel: zipfile.ZipFile) -> None:
    names = simulator_wheel.namelist()
    assert "providersim/__init__.py" in names
    assert "providersim/pki.py" in names
    assert [n for n in names if n.startswith("externalauth/")] == []
    assert "providersim = providersim.__main__:main" in _entry_points(simulator_wheel)
