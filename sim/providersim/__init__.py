"""providersim: an HTTPS OAuth2 provider simulator with a profile per provider type.

``Simulator(profile=...)`` speaks the dialect of ``github`` (the default), ``gitlab``,
``gitea``, ``bitbucket-cloud``, ``azure-devops-entra`` or ``generic`` (OAuth2/OIDC with
discovery): its paths, error codes and statuses, account answers and rate-limit
headers (``providersim.profiles`` says which and from which source). ``clock_offset``
sets its clock apart; ``set_rate_limit(..., endpoint="token", duration=S)`` limits the
token endpoint for S seconds; ``calls()`` lists the answered requests with their time.

In the github profile it serves, over real TLS with its own CA:

- ``POST /login/oauth/access_token``: ``refresh_token`` and RFC 8628
  ``device_code`` grants; single-use rotating refresh tokens. In ``github``
  mode errors come back as HTTP 200 with ``{"error": "bad_refresh_token"}`` /
  ``incorrect_client_credentials`` (and form-encoded unless the client sends
  ``Accept: application/json``); in ``generic`` mode as 400 ``invalid_grant`` /
  401 ``invalid_client``.
- ``GET /user``: token validation (``Authorization: Bearer X`` or ``token X``),
  with GitHub's rate-limit headers and optional primary/secondary/429 limits.
- ``POST /login/device/code``: RFC 8628 device authorization.
- ``/git/<name>.git``: git smart HTTP (clone and fetch only) for HTTP Basic
  ``x-access-token:<access token>`` while that token is live: a refresh revokes
  the previous one, so a stale token fails ``git fetch`` (``providersim.gitserving``;
  ``sim.git.create(name, files)``, ``sim.git.commit(...)``, ``sim.git_url(name)``).
- ``/_sim/...``: a JSON control API for when it runs in its own process.

In-process use (tests)::

    from providersim import Simulator

    with Simulator(mode="github", access_token_lifetime=60) as sim:
        sim.register_client("app", "s3cret")
        grant = sim.issue_grant("app", login="alice", scope="repo")
        requests.post(sim.token_url, verify=sim.ca_file,
                      headers={"Accept": "application/json"},
                      data={"grant_type": "refresh_token", "client_id": "app",
                            "client_secret": "s3cret",
                            "refresh_token": grant.refresh_token})
        sim.add_fault("token", "latency", value=0.1, count=3)
        sim.add_fault("token", "status", value=429, headers={"retry-after": "2"})
        sim.set_rate_limit("primary", count=1)
        assert sim.stats.max_exchanges_per_refresh_token <= 1

Faults: ``add_fault(endpoint, kind, *, count=None, value=None, headers=None)``;
endpoints ``token`` (refresh grant), ``device_token`` (device polling at the
token endpoint), ``validate``, ``device_code``; kinds ``latency`` (value =
seconds), ``status`` (value = HTTP code; extra response headers such as
``retry-after`` go in ``headers=``), ``drop`` (connection closed unanswered),
``malformed`` (200 with a non-JSON body), and the hostile ones: ``redirect``
(value = 301..308, ``headers={"location": url}``), ``body`` (value = any JSON
value, answered with 200 as it is), ``huge`` (value = bytes: a 200 JSON body
that long, streamed, never held in memory) and ``trickle`` (value = seconds
between bytes: the real answer, status line included, sent one byte at a time).
``count=None`` means forever. ``stats.requests_received`` counts every request
on any path (the control API excepted): proof that nothing reached a second
simulator a redirect pointed at.

Own process (demo, benchmarks)::

    python -m providersim --port 8443 --state-dir /tmp/sim   # writes ca.pem and url

Token values never appear in its log (method, path and status only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from providersim.provider import Endpoint, FaultKind, Grant, Mode, RateLimitKind, Stats

if TYPE_CHECKING:
    from providersim.simulator import Simulator

__all__ = ["Endpoint", "FaultKind", "Grant", "Mode", "RateLimitKind", "Simulator", "Stats"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``providersim --help`` and the missing-package
    # message of ``providersim.__main__`` work without ``cryptography`` (the
    # ``simulator`` extra), which only the TLS certificates need.
    if name == "Simulator":
        from providersim.simulator import Simulator

        return Simulator
    raise AttributeError(f"module 'providersim' has no attribute {name!r}")
