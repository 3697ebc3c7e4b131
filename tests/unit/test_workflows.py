"""The workflows keep each release step issue 19 asks for (actionlint, in `make lint`,
checks that they are valid GitHub Actions workflows; this checks what they do)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _workflow(name: str) -> dict[str, object]:
    doc: dict[str, object] = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    return doc


def _steps(workflow: dict[str, object]) -> list[dict[str, object]]:
    jobs = workflow["jobs"]
    assert isinstance(jobs, dict)
    return [step for job in jobs.values() for step in job["steps"]]


@pytest.mark.parametrize(("what", "found"), [
    pytest.param("multi-arch image from the Containerfile",
                 lambda s: s.get("with", {}).get("file") == "Containerfile"
                 and s["with"]["platforms"] == "linux/amd64,linux/arm64",
                 id="a multi-arch image from the Containerfile"),
    pytest.param("cosign keyless signing", lambda s: "cosign sign --yes" in str(s.get("run", "")),
                 id="the image and chart are signed keyless"),
    pytest.param("an SBOM by syft", lambda s: str(s.get("uses", "")).startswith("anchore/sbom-action"),
                 id="an SBOM is made by syft"),
    pytest.param("the SBOM attached", lambda s: "cosign attest" in str(s.get("run", "")),
                 id="the SBOM is attached as an attestation"),
    pytest.param("helm push of the chart", lambda s: "helm push" in str(s.get("run", "")),
                 id="the chart is pushed as an OCI artifact"),
    pytest.param("PyPI trusted publishing", lambda s: str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish"),
                 id="the package is published with trusted publishing"),
])
def test_the_release_workflow_keeps_each_release_step(what: str, found: object) -> None:
    assert callable(found)
    assert any(found(s) for s in _steps(_workflow("release.yaml"))), f"no step for {what}"


def test_only_the_jobs_that_sign_or_publish_get_an_oidc_token() -> None:
    jobs = _workflow("release.yaml")["jobs"]
    assert isinstance(jobs, dict)
    with_token = {name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"}
    assert with_token == {"image", "chart", "pypi"}
    assert _workflow("release.yaml")["permissions"] == {"contents": "read"}


def test_ci_runs_the_ci_script_and_lint() -> None:
    runs = " ".join(str(s.get("run", "")) for s in _steps(_workflow("ci.yaml")))
    assert "bash .ci/run" in runs and "make lint" in runs
