"""RFC 8628 polling decisions, and the device flow against a scripted fake pool."""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.parse
from typing import Any

import pytest
import urllib3

from externalauth.model.specs import parse_provider
from externalauth.oauth import device
from externalauth.oauth.device import Step

SPEC = parse_provider("gh", {"type": "github", "clientID": "cid", "baseURL": "https://gh.example"})


@pytest.mark.parametrize(("body", "server_interval", "expected"), [
    pytest.param({"access_token": "x"}, None, (Step.DONE, 5), id="a token ends the flow"),
    pytest.param({"error": "authorization_pending"}, None, (Step.WAIT, 5),
                 id="pending keeps the interval"),
    pytest.param({"error": "slow_down"}, None, (Step.WAIT, 10), id="slow_down adds 5 seconds"),
    pytest.param({"error": "slow_down"}, 20, (Step.WAIT, 20),
                 id="slow_down takes a larger interval from the server"),
    pytest.param({"error": "slow_down"}, 6, (Step.WAIT, 10),
                 id="slow_down never adds less than 5 seconds"),
    pytest.param({"error": "access_denied"}, None, (Step.FAIL, 5), id="denied is final"),
    pytest.param({"error": "expired_token"}, None, (Step.FAIL, 5), id="an expired code is final"),
    pytest.param({"error": "something_new"}, None, (Step.FAIL, 5), id="an unknown error is final"),
    pytest.param({"error": "slow_down"}, 1e308, (Step.WAIT, 60), id="slow_down never waits more than a minute"),
    pytest.param({"error": "slow_down"}, float("inf"), (Step.WAIT, 60), id="slow_down with an infinite interval"),
    pytest.param({"error": "slow_down"}, float("nan"), (Step.WAIT, 10), id="slow_down with a NaN interval"),
    pytest.param({"error": "slow_down"}, "soon", (Step.WAIT, 10), id="slow_down with a word for an interval"),
    pytest.param({}, None, (Step.FAIL, 5), id="neither token nor error is final"),
])
def test_next_step(body: dict[str, Any], server_interval: Any, expected: tuple[Step, float]) -> None:
    d = device.next_step(body, interval=5, server_interval=server_interval)
    assert expected == (d.step, d.interval)


class FakePool:
    """Answers each POST with the next scripted body, through the real ``transport.fetch`` (the
    pool is the transport's seam: redirects off, form encoding and answer reading are ours)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.posts: list[tuple[str, dict[str, str]]] = []

    def manager_for(self, url: str) -> FakePool:
        return self

    def direct_for(self, url: str) -> None:
        return None  # every call through urlopen (a proxied route's way), scripted here

    def urlopen(self, method: str, url: str, *, body: bytes, redirect: bool, retries: bool,
                **kwargs: Any) -> urllib3.HTTPResponse:
        assert ("POST", False, False) == (method, redirect, retries)
        self.posts.append((url, dict(urllib.parse.parse_qsl(body.decode()))))
        return urllib3.HTTPResponse(body=io.BytesIO(json.dumps(self.answers.pop(0)).encode()), status=200,
                                    headers={"Content-Type": "application/json"}, preload_content=False)


def flow(answers: list[dict[str, Any]]) -> tuple[device.DeviceFlow, FakePool, list[float]]:
    pool = FakePool(answers)
    slept: list[float] = []
    clock = iter(range(0, 10_000, 1))
    f = device.DeviceFlow(SPEC, pool=pool, sleep=slept.append,  # type: ignore[arg-type]
                          clock=lambda: float(next(clock)))
    return f, pool, slept


START = {"device_code": "dc", "user_code": "ABCD-1234",
         "verification_uri": "https://gh.example/login/device", "expires_in": 900, "interval": 2}


def test_the_flow_waits_the_interval_honours_slow_down_and_returns_the_tokens() -> None:
    """Pending, slow_down (+5 s), then a token: three polls at 2, 2 and 7 seconds."""
    f, pool, slept = flow([START, {"error": "authorization_pending"},
                              {"error": "slow_down"},
                              {"access_token": "at", "refresh_token": "rt", "expires_in": 28800}])
    auth = f.start()
    tokens = f.wait(auth, now=lambda: dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert [2.0, 2.0, 7.0] == slept
    assert ("at", "rt", dt.datetime(2025, 1, 1, 8, tzinfo=dt.UTC)) == (
        tokens.access_token.reveal(), tokens.refresh_token.reveal() if tokens.refresh_token else None,
        tokens.expiry)
    assert ["https://gh.example/login/device/code"] + ["https://gh.example/login/oauth/access_token"] * 3 \
        == [u for u, _ in pool.posts]


@pytest.mark.parametrize("error", ["access_denied", "expired_token"])
def test_terminal_errors_raise_without_the_device_code(error: str) -> None:
    f, _, _ = flow([START, {"error": error}])
    with pytest.raises(device.DeviceFlowError) as e:
        f.wait(f.start())
    assert (error, False) == (e.value.error, "dc" in str(e.value).split())


def test_a_provider_without_a_device_endpoint_is_refused() -> None:
    spec = parse_provider("g", {"type": "generic", "clientID": "c", "tokenURL": "https://x/t"})
    with pytest.raises(device.PermanentError, match="no device authorization endpoint"):
        device.DeviceFlow(spec)


@pytest.mark.parametrize(("field", "value", "expected"), [
    pytest.param("interval", 1e308, 60, id="an interval of 1e308 is a minute"),
    pytest.param("interval", float("inf"), 60, id="an infinite interval is a minute"),
    pytest.param("interval", -3, 5, id="a negative interval is the default"),
    pytest.param("interval", "x", 5, id="a word for an interval is the default"),
    pytest.param("expires_in", 1e308, 3600, id="a device code lives at most an hour"),
    pytest.param("expires_in", float("nan"), 900, id="a NaN lifetime is the default"),
])
def test_device_authorization_numbers_are_bounded(field: str, value: Any, expected: int) -> None:
    f, _, _ = flow([{**START, field: value}])
    assert expected == getattr(f.start(), field)


def test_an_error_code_that_is_not_a_code_never_reaches_the_terminal() -> None:
    d = device.next_step({"error": "\x1b]0;owned\x07\x1b[2J"}, interval=5)
    assert (Step.FAIL, "the provider ended the sign-in (unknown)", "unknown") == (d.step, d.message, d.error)
