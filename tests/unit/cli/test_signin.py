"""``login``'s decisions (flow, browser, namespace, output formats, what it prints) and
``status LINK``'s detail view: pure tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from externalauth.cli import describing, namespaces, plans, signin
from externalauth.cli.signin import Flow
from externalauth.errors import InvalidInputError
from externalauth.model.specs import parse_provider

WITH_DEVICE = parse_provider("gh", {"type": "github", "clientID": "c", "baseURL": "https://gh.example"})
WITHOUT_DEVICE = parse_provider("g", {"type": "generic", "clientID": "c", "tokenURL": "https://idp.example/token"})


@pytest.mark.parametrize(("asked", "provider", "expected"), [
    pytest.param("auto", WITH_DEVICE, Flow.DEVICE, id="auto takes the device flow where there is one"),
    pytest.param("auto", WITHOUT_DEVICE, Flow.PKCE, id="auto takes the browser where there is no device endpoint"),
    pytest.param("pkce", WITH_DEVICE, Flow.PKCE, id="pkce is chosen even where a device endpoint exists"),
    pytest.param("device", WITH_DEVICE, Flow.DEVICE, id="device where there is one"),
    pytest.param("device", WITHOUT_DEVICE, "use --flow pkce", id="device without an endpoint says what to do"),
])
def test_which_flow(asked: str, provider: Any, expected: Any) -> None:
    try:
        got: Any = signin.choose_flow(asked, provider=provider)
    except InvalidInputError as e:
        got = "use --flow pkce" if "use --flow pkce" in str(e) else str(e)
    assert expected == got


@pytest.mark.parametrize(("no_browser", "env", "platform", "expected"), [
    pytest.param(False, {"DISPLAY": ":0"}, "linux", True, id="an X11 display"),
    pytest.param(False, {"WAYLAND_DISPLAY": "wayland-0"}, "linux", True, id="a Wayland display"),
    pytest.param(False, {}, "linux", False, id="no display (ssh, a container): print the URL only"),
    pytest.param(False, {"DISPLAY": ""}, "linux", False, id="an empty DISPLAY is none"),
    pytest.param(False, {}, "darwin", True, id="macOS always has one"),
    pytest.param(False, {}, "win32", True, id="Windows always has one"),
    pytest.param(True, {"DISPLAY": ":0"}, "linux", False, id="--no-browser wins"),
])
def test_whether_a_browser_is_opened(no_browser: bool, env: dict[str, str], platform: str, expected: bool) -> None:
    assert expected == signin.browser_wanted(no_browser=no_browser, env=env, platform=platform)


@pytest.mark.parametrize(("explicit", "context", "pod", "expected"), [
    pytest.param("team", "ctx", "podns", "team", id="-n wins"),
    pytest.param(None, "ctx", "podns", "ctx", id="then the kubeconfig context's namespace"),
    pytest.param(None, None, "podns", "podns", id="then, in a pod, the pod's namespace"),
    pytest.param(None, None, None, "default", id="else default, as kubectl"),
    pytest.param(None, " ", "podns", "podns", id="a blank context namespace is none"),
])
def test_the_namespace_without_n(explicit: str | None, context: str | None, pod: str | None, expected: str) -> None:
    assert expected == namespaces.choose(explicit=explicit, context=context, pod=pod)


def test_the_pod_namespace_is_read_from_the_service_account_file(tmp_path: Any) -> None:
    path = tmp_path / "namespace"
    path.write_text("alice-ws\n")
    assert ("alice-ws", None) == (namespaces.read_pod_namespace(str(path)),
                                  namespaces.read_pod_namespace(str(tmp_path / "absent")))


@pytest.mark.parametrize(("link", "asked", "expected"), [
    pytest.param(None, [], [], id="none asked, none had"),
    pytest.param(None, ["netrc", "git-credentials", "netrc"], ["netrc", "git-credentials"],
                 id="asked ones, once each, in order"),
    pytest.param({"spec": {"outputFormats": ["gh-hosts"]}}, ["netrc"], ["gh-hosts", "netrc"],
                 id="the link's own are kept: login never drops a mounted key"),
    pytest.param({"spec": {"outputFormats": ["future-format"]}}, [], [],
                 id="an unknown format on the link is the operator's to report"),
])
def test_the_output_formats_after_login(link: dict[str, Any] | None, asked: list[str], expected: list[str]) -> None:
    assert expected == [f.value for f in signin.merged_formats(link, asked)]


def test_a_new_link_carries_the_formats_so_the_first_mount_works() -> None:
    body = plans.link_body(namespace="a", name="gh", provider="github", secret="gh-token", formats=["netrc"])
    patch = plans.link_patch(provider="github", secret="gh-token")
    assert ({"providerName": "github", "secretName": "gh-token", "outputFormats": ["netrc"]},
            {"providerName": "github", "secretName": "gh-token"}) == (body["spec"], patch["spec"])


def test_a_new_secret_has_no_key_to_remove() -> None:
    """A format key the token cannot fill (None) is dropped from a new Secret's data."""
    plan = plans.plan_secret(None, namespace="a", name="s", provider="gh",
                             token_data={"access_token": "YQ==", "netrc": None}, force=False)
    assert {"access_token": "YQ=="} == plan.body["data"]


@pytest.mark.parametrize(("opened", "expected"), [
    pytest.param(True, ["Opening a browser to sign in to gh (gh.example).",
                        "If it did not open, open this URL in a browser on this machine:",
                        "  https://gh.example/authorize?x=\\x1b[2J"], id="a browser was opened"),
    pytest.param(False, ["To sign in to gh (gh.example), open this URL in a browser on this machine:",
                         "  https://gh.example/authorize?x=\\x1b[2J",
                         "(The browser must run here: the provider sends it back to 127.0.0.1:5000.)"],
                 id="no browser: the URL, and where the browser must run"),
])
def test_what_the_browser_flow_prints(opened: bool, expected: list[str]) -> None:
    text = signin.browser_instructions(provider="gh", host="gh.example", url="https://gh.example/authorize?x=\x1b[2J",
                                       opened=opened, port=5000)
    assert expected == text.splitlines()


NOW = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
LINK = {
    "metadata": {"namespace": "alice", "name": "github"},
    "spec": {"providerName": "github", "secretName": "github-token", "outputFormats": ["git-credentials"]},
    "status": {
        "account": "alice\x1b[31m",
        "expiresAt": "2025-01-01T19:59:00Z",
        "lastRefreshTime": "2025-01-01T11:57:00Z",
        "conditions": [
            {"type": "Validated", "status": "True", "reason": "Valid", "message": "ok",
             "lastTransitionTime": "2025-01-01T11:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "TokenCurrent", "message": "the token\nis current",
             "lastTransitionTime": "2025-01-01T11:57:00Z"},
        ],
    },
}
EVENTS = [{"type": "Normal", "reason": f"Refreshed{i}", "message": "m", "lastTimestamp": "2025-01-01T11:50:00Z"}
          for i in range(7)]


def test_the_detail_view_of_a_link() -> None:
    """Fields with absolute and relative times, conditions Ready first, the last five events,
    provider text escaped."""
    text = describing.describe(LINK, EVENTS, now=NOW)
    assert [
        "Link:                  alice/github",
        "Provider:              github",
        "Secret:                github-token",
        "Account:               alice\\x1b[31m",
        "Expires:               2025-01-01T19:59:00Z (in 7h59m)",
        "Refresh token expires: -",
        "Last refresh:          2025-01-01T11:57:00Z (3m ago)",
        "Next refresh:          -",
        "Last validation:       -",
        "Output formats:        git-credentials",
        "Conditions:",
        "  TYPE        STATUS   REASON         SINCE      MESSAGE",
        "  Ready       True     TokenCurrent   3m ago     the token is current",
        "  Validated   True     Valid          1h0m ago   ok",
        "Events (last 5):",
        "  AGE       TYPE     REASON       MESSAGE",
        *[f"  10m ago   Normal   Refreshed{i}   m" for i in range(2, 7)],
    ] == text.splitlines()


def test_a_link_the_operator_has_not_seen_says_so() -> None:
    text = describing.describe({"metadata": {"namespace": "a", "name": "x"}, "spec": {}}, [], now=NOW)
    assert ["Conditions:", "  (none yet: the operator has not looked at this link)", "Events: none"] == \
        text.splitlines()[-3:]
