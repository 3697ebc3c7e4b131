"""``externalauth status`` formatting and ``refresh --wait`` verdicts: pure tables."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from externalauth.cli import formatting
from externalauth.errors import InvalidInputError

NOW = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def at(**delta: float) -> dt.datetime:
    return NOW + dt.timedelta(**delta)


@pytest.mark.parametrize(("expires_at", "expected"), [
    pytest.param(at(hours=7, minutes=59, seconds=30), "7h59m", id="hours and minutes for a fresh token"),
    pytest.param(at(minutes=3), "3m", id="whole minutes without seconds"),
    pytest.param(at(seconds=45), "45s", id="seconds when under a minute"),
    pytest.param(at(days=2, hours=3), "2d3h", id="days for long-lived tokens"),
    pytest.param(NOW, "expired", id="expiring right now counts as expired"),
    pytest.param(at(minutes=-5), "expired", id="a past expiry is expired, not negative"),
    pytest.param(None, "-", id="an unknown expiry is a dash"),
])
def test_expires_in(expires_at: dt.datetime | None, expected: str) -> None:
    assert expected == formatting.expires_in(expires_at, now=NOW)


@pytest.mark.parametrize(("moment", "expected"), [
    pytest.param(at(minutes=-3), "3m ago", id="minutes ago"),
    pytest.param(at(hours=-2, minutes=-5), "2h5m ago", id="hours ago"),
    pytest.param(at(seconds=-10), "10s ago", id="seconds ago"),
    pytest.param(NOW, "just now", id="this very second is just now"),
    pytest.param(None, "never", id="a link never refreshed says never"),
])
def test_age(moment: dt.datetime | None, expected: str) -> None:
    assert expected == formatting.age(moment, now=NOW)


def link(name: str = "gh", ns: str = "alice", *, conditions: list[dict[str, Any]] | None = None,
         **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"providerName": "github", "secretName": f"{name}-token"},
            "status": {"conditions": conditions or [], **status}}


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(("obj", "expected"), [
    pytest.param(
        link(conditions=[cond("Ready", "True", "TokenCurrent")], account="alice",
             expiresAt="2025-01-01T20:00:00Z", lastRefreshTime="2025-01-01T11:57:00Z"),
        ["gh", "github", "True", "alice", "8h0m", "3m ago", "TokenCurrent"],
        id="a ready link shows its account, expiry and last refresh"),
    pytest.param(
        link(conditions=[cond("Ready", "False", "SecretNotFound", "no Secret")]),
        ["gh", "github", "False", "-", "-", "never", "SecretNotFound"],
        id="a broken link shows Ready's reason and dashes"),
    pytest.param(
        link(conditions=[cond("Ready", "True", "TokenCurrent"),
                         cond("Refreshable", "False", "ProviderCredentialsRejected")]),
        ["gh", "github", "True", "-", "-", "never", "ProviderCredentialsRejected"],
        id="a ready link that cannot be refreshed shows why not"),
    pytest.param(
        link(),
        ["gh", "github", "Unknown", "-", "-", "never", "-"],
        id="a link the operator has not seen yet is Unknown"),
    pytest.param(
        link(conditions=[cond("Ready", "False", "TokenExpired")], expiresAt="2024-12-31T00:00:00Z"),
        ["gh", "github", "False", "-", "expired", "never", "TokenExpired"],
        id="an expired token says expired"),
    pytest.param(
        link(conditions=[cond("Ready", "True", "TokenCurrent")], expiresAt="not a date"),
        ["gh", "github", "True", "-", "-", "never", "TokenCurrent"],
        id="a malformed time in status is shown as unknown, not a crash"),
])
def test_row_cells(obj: dict[str, Any], expected: list[str]) -> None:
    row = formatting.row_for(obj)
    assert expected == formatting.cells(row, now=NOW, all_namespaces=False)


def test_table_is_sorted_by_namespace_then_name_with_a_namespace_column() -> None:
    """-A adds NAMESPACE first and sorts rows by namespace, then link name."""
    rows = [formatting.row_for(link("b", "ns2")), formatting.row_for(link("z", "ns1")),
            formatting.row_for(link("a", "ns2"))]
    lines = formatting.table(rows, now=NOW, all_namespaces=True).splitlines()
    assert ["NAMESPACE", "LINK"] == lines[0].split()[:2]
    assert [("ns1", "z"), ("ns2", "a"), ("ns2", "b")] == [tuple(ln.split()[:2]) for ln in lines[1:]]


@pytest.mark.parametrize(("colour", "expects_escape"), [
    pytest.param(False, False, id="no colour: plain text for pipes and files"),
    pytest.param(True, True, id="colour: READY is wrapped in ANSI escapes"),
])
def test_colour_only_when_asked(colour: bool, expects_escape: bool) -> None:
    rows = [formatting.row_for(link(conditions=[cond("Ready", "True", "TokenCurrent")]))]
    text = formatting.table(rows, now=NOW, all_namespaces=False, colour=colour)
    assert expects_escape == ("\x1b[" in text)


def test_colour_does_not_shift_the_columns() -> None:
    """With escapes removed, a coloured table is the plain table."""
    rows = [formatting.row_for(link("a", conditions=[cond("Ready", "True", "TokenCurrent")])),
            formatting.row_for(link("bb", conditions=[cond("Ready", "False", "SecretInvalid")]))]
    plain = formatting.table(rows, now=NOW, all_namespaces=False)
    coloured = formatting.table(rows, now=NOW, all_namespaces=False, colour=True)
    for code in (formatting.GREEN, formatting.RED, formatting.YELLOW, formatting.RESET):
        coloured = coloured.replace(code, "")
    assert plain == coloured


@pytest.mark.parametrize(("header", "body", "expected"), [
    pytest.param(["A", "BB"], [["xxx", "y"]], "A     BB\nxxx   y\n", id="columns widen to the longest cell"),
    pytest.param(["A", "B"], [], "A   B\n", id="a header alone"),
    pytest.param(["A", "B"], [["1", ""]], "A   B\n1\n", id="trailing blanks are trimmed"),
])
def test_render_table(header: list[str], body: list[list[str]], expected: str) -> None:
    assert expected == formatting.render_table(header, body)


def test_wide_adds_the_secret_the_next_refresh_and_the_message() -> None:
    obj = link(conditions=[cond("Ready", "False", "SecretInvalid", "key expiry:\n not RFC 3339")],
               nextRefreshTime="2025-01-01T12:05:00Z")
    text = formatting.table([formatting.row_for(obj)], now=NOW, all_namespaces=False, wide=True)
    head, row = text.splitlines()
    wanted = ["gh-token", "in", "5m", "key", "expiry:", "not", "RFC", "3339"]
    assert (["SECRET", "NEXT", "REFRESH", "MESSAGE"], wanted) == (head.split()[-4:], row.split()[-8:])


def test_no_headers_leaves_only_the_rows() -> None:
    rows = [formatting.row_for(link("a")), formatting.row_for(link("b"))]
    text = formatting.table(rows, now=NOW, all_namespaces=False, show_header=False)
    assert ["a", "b"] == [line.split()[0] for line in text.splitlines()]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("table", formatting.OutputSpec(formatting.Output.TABLE), id="table"),
    pytest.param("wide", formatting.OutputSpec(formatting.Output.WIDE), id="wide"),
    pytest.param("name", formatting.OutputSpec(formatting.Output.NAME), id="name"),
    pytest.param("json", formatting.OutputSpec(formatting.Output.JSON), id="json"),
    pytest.param("yaml", formatting.OutputSpec(formatting.Output.YAML), id="yaml"),
    pytest.param("jsonpath={.items[*].metadata.name}",
                 formatting.OutputSpec(formatting.Output.JSONPATH, "{.items[*].metadata.name}"),
                 id="jsonpath with its template"),
    pytest.param("jsonpath={.a}={.b}", formatting.OutputSpec(formatting.Output.JSONPATH, "{.a}={.b}"),
                 id="an = inside the template is the template's"),
])
def test_output_formats(text: str, expected: formatting.OutputSpec) -> None:
    assert expected == formatting.parse_output(text)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("xml", "invalid choice: 'xml'", id="an unknown format"),
    pytest.param("jsonpath", "invalid choice", id="jsonpath without a template"),
    pytest.param("jsonpath=", "needs a template", id="jsonpath= with an empty template"),
    pytest.param("jsonpath={.items[0", "unclosed", id="a malformed template, before the cluster is asked"),
    pytest.param("json=x", "invalid choice", id="json takes no value"),
])
def test_bad_output_formats(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        formatting.parse_output(text)


def test_a_listing_prints_as_kubectls_list_without_managed_fields() -> None:
    """json/yaml of several links: a v1 List of the objects, sorted, apiVersion and kind on each."""
    b = link("b")
    a = {**link("a"), "metadata": {"name": "a", "namespace": "alice", "managedFields": [{"manager": "x"}]}}
    listed = formatting.as_list([b, a])
    assert (("v1", "List"), ["a", "b"], [("externalauth.io/v1alpha1", "ExternalAuthLink")] * 2, None) == (
        (listed["apiVersion"], listed["kind"]), [i["metadata"]["name"] for i in listed["items"]],
        [(i["apiVersion"], i["kind"]) for i in listed["items"]], listed["items"][0]["metadata"].get("managedFields"))


def test_name_output_is_the_resource_and_the_name() -> None:
    assert "externalauthlink.externalauth.io/gh" == formatting.object_name(link("gh"))


@pytest.mark.parametrize(("conditions", "ok", "text"), [
    pytest.param([cond("Ready", "True", "TokenCurrent"), cond("Refreshable", "True", "Refreshed")],
                 True, "Refreshable: Refreshed", id="refreshed is success"),
    pytest.param([cond("Ready", "True", "TokenCurrent")], True, "Ready: TokenCurrent",
                 id="ready without a Refreshable verdict is success"),
    pytest.param([cond("Ready", "False", "SecretNotFound", "Secret t/x not found")],
                 False, "Ready=False SecretNotFound: Secret t/x not found",
                 id="a missing Secret fails with Ready's reason"),
    pytest.param([cond("Ready", "True", "TokenCurrent"),
                  cond("Refreshable", "False", "RetryingTransientError", "provider unreachable")],
                 False, "Refreshable=False RetryingTransientError: provider unreachable",
                 id="a failed exchange fails even while the old token is still good"),
    pytest.param([cond("Ready", "False", "ReauthRequired"), cond("Refreshable", "False", "ReauthRequired")],
                 False, "Ready=False ReauthRequired", id="a dead grant fails without a message"),
    pytest.param([], False, "the link has no Ready or Refreshable condition", id="no conditions fail"),
])
def test_refresh_outcome(conditions: list[dict[str, Any]], ok: bool, text: str) -> None:
    assert (ok, text) == formatting.refresh_outcome({"conditions": conditions})


@pytest.mark.parametrize(("name", "valid"), [
    pytest.param("github", True, id="a plain name"),
    pytest.param("my-link.v2", True, id="dots and dashes inside"),
    pytest.param("Bad_Name", False, id="upper case and underscores"),
    pytest.param("-lead", False, id="a leading dash"),
    pytest.param("x" * 254, False, id="longer than 253 characters"),
    pytest.param("", False, id="empty"),
])
def test_check_name(name: str, valid: bool) -> None:
    if valid:
        assert name == formatting.check_name("link", name)
    else:
        with pytest.raises(InvalidInputError, match="link name"):
            formatting.check_name("link", name)


@pytest.mark.parametrize(("text", "shown"), [
    pytest.param("octo", "octo", id="plain text is unchanged"),
    pytest.param("octo\x1b]0;owned\x07\x1b[2J", "octo\\x1b]0;owned\\x07\\x1b[2J",
                 id="an OSC title change and an ANSI clear screen are escaped"),
    pytest.param("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m", id="ANSI colours are escaped"),
    pytest.param("a\nb\rc\td", "a\\nb\\rc\\td", id="newline, carriage return and tab are escaped"),
    pytest.param("\x9b2J", "\\x9b2J", id="a C1 CSI is escaped"),
    pytest.param("a\x7fb\x00", "a\\x7fb\\x00", id="DEL and NUL are escaped"),
    pytest.param("evil\u202egnp.exe", "evil\\u202egnp.exe", id="a right-to-left override is escaped"),
    pytest.param("a\u2028b", "a\\u2028b", id="a line separator is escaped"),
    pytest.param("zoë 😀", "zoë 😀", id="printable non-ASCII stays"),
])
def test_printable_escapes_control_characters(text: str, shown: str) -> None:
    assert shown == formatting.printable(text)


def test_a_hostile_account_name_is_escaped_in_the_status_table() -> None:
    """Provider-supplied account names reach `externalauth status` without their escape sequences."""
    obj = link(conditions=[cond("Ready", "True", "TokenCurrent")], account="o\x1b]0;owned\x07\x1b[2J")
    out = formatting.table([formatting.row_for(obj)], now=NOW, all_namespaces=False)
    assert ("\x1b" not in out, "o\\x1b]0;owned\\x07\\x1b[2J" in out) == (True, True)


def test_a_refresh_failure_message_is_escaped() -> None:
    status = {"conditions": [cond("Ready", "False", "SecretInvalid", "bad\x1b[2J\nline")]}
    assert (False, "Ready=False SecretInvalid: bad\\x1b[2J\\nline") == formatting.refresh_outcome(status)


def test_login_instructions_escape_the_provider_text() -> None:
    text = formatting.login_instructions(
        provider="gh", host="github.com", verification_uri="https://x/\x1b[2Jdevice",
        user_code="AB\x1b]0;t\x07CD", verification_uri_complete="https://x/\x07c", expires_in=900, hint=True)
    assert ("To sign in to gh (github.com), open https://x/\\x1b[2Jdevice\n"
            "and enter the code: AB\\x1b]0;t\\x07CD\n"
            "(or open https://x/\\x07c to skip typing the code)\n"
            "Use a browser on any device; this command waits until you approve (the code expires in 15 min).\n"
            ) == text
