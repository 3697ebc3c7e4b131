"""TLS trust, the /_sim control API, and `python -m providersim` as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.simulator.helpers import refresh, validate

REPO = Path(__file__).resolve().parents[2]


def test_a_client_without_the_ca_fails_tls_verification(simulator):
    """Only clients that trust the simulator's CA can talk to it."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(simulator.validate_url, timeout=10)


def test_the_server_certificate_is_valid_for_localhost(simulator):
    """The certificate's SANs cover the name localhost, not only 127.0.0.1."""
    url = simulator.validate_url.replace("127.0.0.1", "localhost")
    assert 401 == requests.get(url, verify=simulator.ca_file, timeout=10).status_code


def test_the_ca_pem_is_a_certificate(simulator):
    assert simulator.ca_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_an_ipv6_simulator_answers_on_loopback(make_simulator):
    """host='::1' listens on IPv6 with a certificate valid for ::1."""
    try:
        sim = make_simulator(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert sim.url.startswith("https://[::1]:")
    assert 401 == requests.get(sim.validate_url, verify=sim.ca_file, timeout=10).status_code


def _control(sim, method, path, payload=None):
    r = requests.request(method, sim.url + path, json=payload, verify=sim.ca_file, timeout=10)
    return r.status_code, r.json()


def test_control_api_registers_clients_and_issues_grants(simulator):
    """POST /_sim/clients and /_sim/grants give a grant that refreshes over HTTP."""
    assert (
        201
        == _control(
            simulator, "POST", "/_sim/clients", {"client_id": "demo", "client_secret": "s"}
        )[0]
    )
    status, grant = _control(
        simulator, "POST", "/_sim/grants", {"client_id": "demo", "login": "carol", "scope": "repo"}
    )
    r = refresh(simulator, grant["refresh_token"], client_id="demo", client_secret="s")
    assert (201, "carol", 200) == (status, grant["login"], r.status_code)


def test_control_api_faults_and_rate_limits(simulator):
    """POST /_sim/faults and /_sim/rate-limit act like the Python API; DELETE clears."""
    grant = simulator.issue_grant(CLIENT_ID)
    _control(
        simulator,
        "POST",
        "/_sim/faults",
        {"endpoint": "token", "kind": "status", "value": 503, "count": 1},
    )
    _control(simulator, "POST", "/_sim/rate-limit", {"kind": "secondary", "count": 1})
    statuses = (
        refresh(simulator, grant.refresh_token).status_code,
        validate(simulator, grant.access_token).status_code,
    )
    _control(simulator, "POST", "/_sim/faults", {"endpoint": "validate", "kind": "drop"})
    _control(simulator, "DELETE", "/_sim/faults")
    assert ((503, 403), 200) == (statuses, validate(simulator, grant.access_token).status_code)


def test_control_api_stats_and_reset(simulator):
    grant = simulator.issue_grant(CLIENT_ID)
    refresh(simulator, grant.refresh_token)
    before = _control(simulator, "GET", "/_sim/stats")[1]
    _control(simulator, "POST", "/_sim/reset-stats")
    after = _control(simulator, "GET", "/_sim/stats")[1]
    assert ((1, {"200": 1}), 0) == (
        (before["token_calls"], before["by_status"]["token"]),
        after["token_calls"],
    )


def test_control_api_rejects_bad_input_with_400(simulator):
    """A missing field is a 400 with a message, not a crash."""
    assert 400 == _control(simulator, "POST", "/_sim/grants", {})[0]


def test_providersim_process_serves_and_exits_cleanly_on_sigterm(tmp_path):
    """`python -m providersim` writes ca.pem and url, answers /_sim/stats, exits 0 on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "sim")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "providersim",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--client",
            "demo:secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url == (tmp_path / "url").read_text().strip()
        r = requests.get(url + "/_sim/stats", verify=str(tmp_path / "ca.pem"), timeout=10)
        assert (200, 0) == (r.status_code, r.json()["token_calls"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    assert 0 == proc.returncode
    assert "Traceback" not in stderr
    assert "GET /_sim/stats 200" in stderr


def test_providersim_help_works():
    env = {**os.environ, "PYTHONPATH": str(REPO / "sim")}
    r = subprocess.run(
        [sys.executable, "-m", "providersim", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert (0, True) == (r.returncode, "--state-dir" in r.stdout)


# `-c` program: run `providersim` as if `cryptography` were not installed
# (a None entry in sys.modules makes every import of it fail).
_WITHOUT_CRYPTOGRAPHY = (
    "import sys; sys.modules['cryptography'] = None; "
    "import runpy; sys.argv[0] = 'providersim'; runpy.run_module('providersim', run_name='__main__')"
)


def test_providersim_without_cryptography_says_so_in_one_line(tmp_path):
    """Without `cryptography` (its one dependency), providersim names how to install it; no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "sim")}
    r = subprocess.run(
        [sys.executable, "-c", _WITHOUT_CRYPTOGRAPHY, "--port", "0", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    lines = r.stderr.splitlines()
    assert (2, 1) == (r.returncode, len(lines)), r.stderr
    assert "'cryptography' package is missing" in lines[0]
    assert "pip install externalauth-providersim" in lines[0]
    assert not (tmp_path / "url").exists()
