"""Pure model: durations, timestamps, token Secrets, specs, output formats."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from externalauth.errors import InvalidInputError
from externalauth.model import formats
from externalauth.model.durations import format_duration, format_time, parse_duration, parse_time
from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_link, parse_provider
from externalauth.model.tokens import parse_secret_data, render_token_keys


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("text", "seconds"), [
    pytest.param("15m", 900, id="minutes"),
    pytest.param("1h30m", 5400, id="hours and minutes"),
    pytest.param("90s", 90, id="seconds"),
    pytest.param("1.5h", 5400, id="fractional hours"),
    pytest.param("250ms", 0.25, id="milliseconds"),
])
def test_durations_parse_like_go(text: str, seconds: float) -> None:
    assert seconds == parse_duration(text).total_seconds()


@pytest.mark.parametrize("text", [
    pytest.param("soon", id="a word"), pytest.param("", id="empty"),
    pytest.param("15", id="no unit"), pytest.param("-5m", id="negative"),
    pytest.param("5 m", id="a space"),
])
def test_bad_durations_are_refused_with_the_value_named(text: str) -> None:
    with pytest.raises(InvalidInputError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (45, "45s"), (600, "10m"), (3725, "1h2m"), (90000, "1d1h"), (-180, "-3m"),
])
def test_durations_format_short(seconds: int, text: str) -> None:
    assert text == format_duration(dt.timedelta(seconds=seconds))


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("2026-01-02T03:04:05Z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), id="Z"),
    pytest.param("2026-01-02T05:04:05+02:00", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                 id="offset is converted to UTC"),
])
def test_timestamps_parse_to_utc(text: str, expected: dt.datetime) -> None:
    assert expected == parse_time(text)


@pytest.mark.parametrize("text", [
    pytest.param("tomorrow", id="a word"), pytest.param("2026-01-02T03:04:05", id="no zone"),
])
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_time(text)


def test_secret_str_never_prints_its_value() -> None:
    s = SecretStr("gho_canary")
    assert "gho_canary" not in f"{s} {s!r} {[s]} {s:>20}"
    assert "gho_canary" == s.reveal()


@pytest.mark.parametrize("salts", [
    pytest.param(("uid-1", "uid-1"), id="a digest asked for again is the same"),
    pytest.param(("uid-1", "uid-2"), id="another salt gives that salt's digest"),
    pytest.param(("uid-1", "uid-2", "uid-1"), id="a salt asked for again after another gives its own digest"),
])
def test_a_tokens_digest_is_that_of_the_last_salt_asked_for(salts: tuple[str, ...]) -> None:
    """SecretStr keeps its last digest: whatever was asked before, a digest is the one a
    token never asked anything gives for that salt."""
    token = SecretStr("gho_canary")
    answers = [token.digest(salt) for salt in salts]
    assert [SecretStr("gho_canary").digest(salt) for salt in salts] == answers
    assert len(set(salts)) == len(set(answers))


def test_a_full_token_secret_parses() -> None:
    tokens = parse_secret_data({
        "access_token": b64("a1"), "refresh_token": b64("r1"), "token_type": b64("bearer"),
        "expiry": b64("2030-01-01T00:00:00Z"), "refresh_token_expiry": b64("2030-06-01T00:00:00Z"),
        "scope": b64("repo"),
    })
    assert ("a1", "r1", dt.datetime(2030, 1, 1, tzinfo=dt.UTC), "repo") == (
        tokens.access_token.reveal(), tokens.refresh_token.reveal() if tokens.refresh_token else None,
        tokens.expiry, tokens.scope)


CANARY = "gho_canary_value_9f3b"


@pytest.mark.parametrize(("data", "secret_type", "message"), [
    pytest.param({"refresh_token": b64(CANARY)}, None, "access_token is missing", id="no access_token"),
    pytest.param({"access_token": b64("  "), "refresh_token": b64(CANARY)}, None, "access_token is missing",
                 id="blank access_token"),
    pytest.param({"access_token": f"%%{CANARY}%%"}, None, "access_token is not valid base64",
                 id="access_token not base64"),
    pytest.param({"access_token": b64("a"), "expiry": b64(f"next week {CANARY}")}, None,
                 "key expiry: the timestamp is not RFC 3339", id="unparsable expiry"),
    pytest.param({"access_token": b64("a"), "expiry": b64(f"2030-01-01T00:00:00{CANARY}")}, None,
                 "key expiry: the timestamp is not RFC 3339", id="expiry with trailing junk"),
    pytest.param({"access_token": b64("a"), "expiry": b64("2030-01-01T00:00:00")}, None,
                 "key expiry: the timestamp has no time zone", id="expiry without a time zone"),
    pytest.param({"access_token": b64("a"), "refresh_token_expiry": b64(CANARY)}, None,
                 "key refresh_token_expiry: the timestamp is not RFC 3339", id="unparsable refresh_token_expiry"),
    pytest.param({"access_token": b64(CANARY)}, "kubernetes.io/tls", "is not Opaque", id="wrong type"),
])
def test_unusable_token_secrets_name_the_problem_not_the_value(
    data: dict[str, str], secret_type: str | None, message: str
) -> None:
    """The message names the key and the problem; no value of the Secret appears in it."""
    with pytest.raises(InvalidInputError, match=message) as e:
        parse_secret_data(data, secret_type=secret_type)
    assert CANARY not in str(e.value)


def test_a_token_set_without_refresh_token_does_not_blank_the_stored_one() -> None:
    keys = render_token_keys(parse_secret_data({"access_token": b64("a2")}))
    assert "refresh_token" not in keys


def test_a_secret_without_expiry_has_none() -> None:
    assert parse_secret_data({"access_token": b64("a")}).expiry is None


GOOD_PROVIDER = {"type": "github", "clientID": "cid", "baseURL": "https://ghe.example.com"}


@pytest.mark.parametrize(("spec", "field", "expected"), [
    pytest.param({"type": "github", "clientID": "c"}, "token_url",
                 "https://github.com/login/oauth/access_token", id="github.com token URL"),
    pytest.param({"type": "github", "clientID": "c"}, "validate_url",
                 "https://api.github.com/user", id="github.com validates at api.github.com"),
    pytest.param(GOOD_PROVIDER, "validate_url", "https://ghe.example.com/api/v3/user",
                 id="GitHub Enterprise validates under /api/v3"),
    pytest.param(GOOD_PROVIDER, "host", "ghe.example.com", id="host for output formats"),
    pytest.param({**GOOD_PROVIDER, "validateURL": ""}, "validate_url", None,
                 id="empty validateURL disables validation"),
    pytest.param({"type": "gitlab", "clientID": "c"}, "token_url", "https://gitlab.com/oauth/token",
                 id="gitlab token URL"),
    pytest.param({"type": "generic", "clientID": "c", "tokenURL": "https://id.example/token"},
                 "max_concurrent", 10, id="default concurrency"),
])
def test_provider_defaults(spec: dict[str, object], field: str, expected: object) -> None:
    assert expected == getattr(parse_provider("p", spec), field)


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param({"type": "github"}, "clientID is required", id="no client id"),
    pytest.param({"type": "generic", "clientID": "c"}, "tokenURL is required", id="generic without tokenURL"),
    pytest.param({"type": "generic", "clientID": "c", "tokenURL": "http://id.example/token"},
                 "https://", id="plain http token URL is refused"),
    pytest.param({"type": "saml", "clientID": "c"}, "not supported", id="unknown type"),
    pytest.param({**GOOD_PROVIDER, "caBundle": "hello"}, "PEM", id="caBundle without PEM"),
    pytest.param({**GOOD_PROVIDER, "maxConcurrentRefreshes": 0}, ">= 1", id="zero concurrency"),
])
def test_bad_provider_specs_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_provider("p", spec)


def test_link_defaults() -> None:
    link = parse_link({"providerName": "gh", "secretName": "tok"})
    assert (dt.timedelta(minutes=15), True, False, ()) == (
        link.refresh_before, link.validate, link.suspend, link.output_formats)


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param({"secretName": "s"}, "providerName", id="no provider"),
    pytest.param({"providerName": "p"}, "secretName", id="no secret"),
    pytest.param({"providerName": "p", "secretName": "s", "refreshBefore": "soon"}, "duration",
                 id="bad refreshBefore"),
    pytest.param({"providerName": "p", "secretName": "s", "outputFormats": ["pem"]}, "outputFormats",
                 id="unknown output format"),
])
def test_bad_link_specs_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_link(spec)


@pytest.mark.parametrize(("fmt", "expected"), [
    pytest.param(formats.OutputFormat.GIT_CREDENTIALS, "https://x-access-token:t%2Fk@ghe.example:8443\n",
                 id="git-credentials escapes the token"),
    pytest.param(formats.OutputFormat.NETRC, "machine ghe.example login x-access-token password t/k\n",
                 id="netrc drops the port"),
    pytest.param(formats.OutputFormat.GH_HOSTS,
                 '"ghe.example:8443":\n    user: "octo"\n    oauth_token: "t/k"\n    git_protocol: https\n',
                 id="gh hosts.yml"),
])
def test_output_formats(fmt: formats.OutputFormat, expected: str) -> None:
    assert expected == formats.render(fmt, host="ghe.example:8443", username="x-access-token",
                                      token=SecretStr("t/k"), account="octo")


@pytest.mark.parametrize(("moment", "text"), [
    (dt.datetime(2026, 11, 29, 19, 5, 7, 999999, tzinfo=dt.UTC), "2026-11-29T19:05:07Z"),
    (dt.datetime(2026, 11, 29, 20, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=1))), "2026-11-29T19:05:07Z"),
    (dt.datetime(1, 1, 1, tzinfo=dt.UTC), "0001-01-01T00:00:00Z"),  # strftime's %Y wrote "1-01-01..."
    (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "9999-12-31T23:59:59Z"),
])
def test_timestamps_are_written_as_rfc3339(moment: dt.datetime, text: str) -> None:
    assert text == format_time(moment)
    if moment.year >= 1970:  # earlier ones are bad input when read
        assert moment.replace(microsecond=0) == parse_time(text)


def test_the_two_moments_of_the_hour_a_clock_turns_back_are_written_apart() -> None:
    """02:30 in Berlin on 27 October 2030 happens twice (summer time, then winter time):
    the two compare equal as datetimes, yet they are an hour apart (format_time remembers
    what it wrote, and must not hand the first's text to the second)."""
    from zoneinfo import ZoneInfo

    first = dt.datetime(2030, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    second = first.replace(fold=1)
    assert ("2030-10-27T00:30:00Z", "2030-10-27T01:30:00Z") == (format_time(first), format_time(second))


def test_the_caches_keep_only_the_metadata_the_engine_reads() -> None:
    from externalauth.model.bodies import slim

    body = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"refresh_token": "cnQ="},
        "metadata": {
            "name": "tok", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "generation": 2,
            "creationTimestamp": "2026-11-29T00:00:00Z", "managedFields": [{"manager": "kubectl"}] * 50,
            "ownerReferences": [{"name": "pod"}], "finalizers": ["x"],
            "labels": {"externalauth.io/provider": "github", "app": "workspace"},
            "annotations": {"externalauth.io/refresh-claim": "a;1",
                            "kubectl.kubernetes.io/last-applied-configuration": '{"data": {"refresh_token": "cnQ="}}'},
        },
    }
    assert {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {"refresh_token": "cnQ="},
        "metadata": {"name": "tok", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "generation": 2,
                     "finalizers": ["x"],  # revokeOnDelete replaces the list whole
                     "labels": {"externalauth.io/provider": "github"},
                     "annotations": {"externalauth.io/refresh-claim": "a;1"}},
    } == slim(body)  # type: ignore[arg-type]
    assert {"metadata": {"name": "l"}} == slim({"metadata": {"name": "l", "labels": {"app": "x"}}})



_DECODED = ('{"metadata": {"name": "l"}, "spec": {"providerName": "gh", "list": ["in a list", 7]},'
            ' "status": {"conditions": [{"type": "Ready", "message": "' + "m" * 65 + '", "observedGeneration": 1}],'
            ' "flag": true}}')


@pytest.mark.parametrize(("path", "shared"), [
    pytest.param(("status", "conditions", 0, "type"), True, id="a short string in a list of objects is shared"),
    pytest.param(("spec", "providerName"), True, id="a short string in the spec is shared"),
    pytest.param(("spec", "list", 0), True, id="a short string in a list is shared"),
    pytest.param(("status", "conditions", 0, "message"), False, id="a string longer than 64 is not shared"),
])
def test_two_decoded_copies_of_an_object_share_their_short_strings_once_cached(
        path: tuple[str | int, ...], shared: bool) -> None:
    """10,000 cached links hold one copy of "Ready", not 10,000 (``bodies.slim``); the
    copies stay equal to what was decoded, numbers and booleans included."""
    import json

    from externalauth.model.bodies import slim

    first, second = slim(json.loads(_DECODED)), slim(json.loads(_DECODED))
    a: Any = first
    b: Any = second
    for step in path:
        a, b = a[step], b[step]
    assert (shared, json.loads(_DECODED)) == (a is b, {**first, "metadata": {"name": "l"}})
