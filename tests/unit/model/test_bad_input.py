"""Bad input in Secrets and specs (contract §9.7, §9.14): a clear InvalidInputError naming the key,
never a crash, never the value in the message. Pure tables."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import pytest

from externalauth.errors import InvalidInputError
from externalauth.model.durations import parse_duration, parse_time
from externalauth.model.specs import parse_link
from externalauth.model.tokens import parse_secret_data


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def raw64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("0001-01-01T00:00:00Z", "outside years 1970 to 9999", id="year 1 is out of range"),
    pytest.param("0001-01-01T00:30:00+01:00", "between years 1970 and 9999",
                 id="year 1 with an offset that would fall before year 1"),
    pytest.param("1969-12-31T23:59:59Z", "outside years 1970 to 9999", id="1969 is out of range"),
    pytest.param("9999-12-31T23:59:59-01:00", "between years 1970 and 9999",
                 id="an offset that carries year 9999 past the end"),
    pytest.param("20300101T000000Z", "not RFC 3339", id="ISO 8601 basic format is not RFC 3339"),
    pytest.param("2030-W01-1T00:00:00Z", "not RFC 3339", id="an ISO week date is not RFC 3339"),
    pytest.param("2030-01-01", "not RFC 3339", id="a date alone is not RFC 3339"),
    pytest.param("1893456000", "not RFC 3339", id="Unix seconds are not RFC 3339"),
    pytest.param("2030-02-30T00:00:00Z", "not a valid date", id="February 30th"),
    pytest.param("2030-01-01T00:00:00+25:00", "not a valid date", id="an offset of 25 hours"),
    pytest.param("2030-01-01T00:00:00+01:75", "not a valid date", id="an offset of 75 minutes"),
    pytest.param("٢٠٣٠-01-01T00:00:00Z", "not RFC 3339", id="digits that are not ASCII"),
    pytest.param("2030-01-01T00:00:00", "no time zone", id="no time zone"),
])
def test_bad_timestamps_are_invalid_input(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as e:
        parse_time(text)
    assert text not in str(e.value)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
                 id="the last second of year 9999 is accepted"),
    pytest.param("1970-01-01T00:00:00Z", dt.datetime(1970, 1, 1, tzinfo=dt.UTC), id="the epoch is accepted"),
    pytest.param("2030-01-01T00:00:00.123456789Z", dt.datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC),
                 id="nanoseconds are cut to microseconds"),
    pytest.param("2030-01-01 01:00:00+01:00", dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                 id="a space instead of T is accepted as RFC 3339 allows"),
    pytest.param("2030-06-30T23:59:60Z", dt.datetime(2030, 6, 30, 23, 59, 59, tzinfo=dt.UTC),
                 id="a leap second counts as 59"),
])
def test_rfc3339_timestamps_in_range_parse(text: str, expected: dt.datetime) -> None:
    assert expected == parse_time(text)


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("99999999999h", "longer than 8760h", id="99999999999h passes the CRD pattern but is refused"),
    pytest.param("9" * 60 + "h", "longer than 8760h", id="60 digits do not overflow"),
    pytest.param("9" * 400 + "h", "not a duration", id="400 digits are not a duration"),
    pytest.param("8761h", "longer than 8760h", id="just over a year"),
    pytest.param("1" * 100 + "s", "not a duration", id="an absurdly long text"),
])
def test_durations_longer_than_a_year_are_invalid_input(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("value", [
    pytest.param(900, id="a YAML number is not a duration"),
    pytest.param(["15m"], id="a list is not a duration (nor a crash of the parsers' memory)"),
    pytest.param(None, id="null is not a duration"),
])
def test_values_that_are_not_strings_are_invalid_durations_and_timestamps(value: object) -> None:
    with pytest.raises(InvalidInputError, match="not a duration"):
        parse_duration(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timestamp is empty"):
        parse_time(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("parse", "text"), [
    pytest.param(parse_duration, "8761h", id="a duration refused once is refused again"),
    pytest.param(parse_time, "2030-02-30T00:00:00Z", id="a timestamp refused once is refused again"),
])
def test_a_refused_value_is_refused_each_time_it_comes_back(parse: Callable[[str], object], text: str) -> None:
    """The parsers remember what they parsed, never what they refused."""
    for _ in range(2):
        with pytest.raises(InvalidInputError):
            parse(text)


def test_a_year_is_the_longest_duration() -> None:
    assert dt.timedelta(days=365) == parse_duration("8760h")


def test_refresh_before_of_99999999999h_is_named_in_the_message() -> None:
    with pytest.raises(InvalidInputError, match=r"^spec\.refreshBefore: .* longer than 8760h"):
        parse_link({"providerName": "p", "secretName": "s", "refreshBefore": "99999999999h"})


GOOD = {"access_token": b64("gho_abc"), "refresh_token": b64("ghr_def")}


@pytest.mark.parametrize(("data", "message"), [
    pytest.param({"access_token": raw64(b"\xff\xfe")}, "key access_token is not UTF-8 text",
                 id="access_token that is not UTF-8"),
    pytest.param({**GOOD, "scope": raw64(b"repo \xff")}, "key scope is not UTF-8 text",
                 id="scope that is not UTF-8 is named"),
    pytest.param({**GOOD, "scope": b64("repo\x1b[2J")}, "key scope contains control characters",
                 id="scope with an escape sequence"),
    pytest.param({**GOOD, "expiry": b64("0001-01-01T00:00:00Z")}, "key expiry: .*outside years",
                 id="expiry in year 1"),
    pytest.param({**GOOD, "expiry": b64("0001-01-01T00:30:00+01:00")}, "key expiry: .*between years",
                 id="expiry in year 1 with an offset"),
    pytest.param({**GOOD, "expiry": b64("20300101T000000Z")}, "key expiry: .*not RFC 3339",
                 id="expiry not in RFC 3339"),
    pytest.param({**GOOD, "expiry": b64("1893456000")}, "key expiry: .*not RFC 3339", id="expiry in Unix seconds"),
    pytest.param({**GOOD, "refresh_token_expiry": b64("soon")}, "key refresh_token_expiry: .*not RFC 3339",
                 id="refresh_token_expiry soon"),
    pytest.param({**GOOD, "token_type": b64("ma\nc")}, "key token_type is not a token type name",
                 id="token_type with a newline inside"),
    pytest.param({**GOOD, "token_type": b64("bearer\x1b]0;x\x07")}, "key token_type is not a token type name",
                 id="token_type with an OSC sequence"),
    pytest.param({"access_token": b64("gho_abc\nmachine evil login x password y")},
                 "key access_token contains whitespace or control characters",
                 id="access_token with a newline inside"),
    pytest.param({"access_token": b64("gho abc")}, "key access_token contains whitespace or control characters",
                 id="access_token with a space inside"),
    pytest.param({"access_token": b64("gho\x00abc")}, "key access_token contains whitespace or control characters",
                 id="access_token with a NUL"),
    pytest.param({**GOOD, "refresh_token": b64("ghr\tdef")},
                 "key refresh_token contains whitespace or control characters", id="refresh_token with a tab"),
    pytest.param({"access_token": b64("gho\u2028abc")},
                 "key access_token contains whitespace or control characters", id="access_token with U+2028"),
    pytest.param({"access_token": "%%%"}, "key access_token is not valid base64", id="data that is not base64"),
])
def test_bad_secret_data_names_the_key_not_the_value(data: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as e:
        parse_secret_data(data)
    for value in data.values():
        decoded = base64.b64decode(value + "==").decode("utf-8", "replace") if value != "%%%" else value
        assert decoded.strip() not in str(e.value)


@pytest.mark.parametrize(("data", "field", "expected"), [
    pytest.param({"access_token": b64("gho_abc\n")}, "access_token", "gho_abc",
                 id="a trailing newline from echo is stripped"),
    pytest.param({**GOOD, "token_type": b64("Bearer\n")}, "token_type", "Bearer",
                 id="a token_type with a trailing newline is stripped"),
    pytest.param({**GOOD, "expiry": b64("9999-12-31T23:59:59Z\n")}, "expiry",
                 dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC), id="expiry in year 9999 is kept"),
    pytest.param({"access_token": b64("tök€n")}, "access_token", "tök€n",
                 id="a visible non-ASCII token is kept (the formats refuse it)"),
])
def test_tolerable_secret_data_parses(data: dict[str, str], field: str, expected: object) -> None:
    tokens = parse_secret_data(data)
    value = getattr(tokens, field)
    assert expected == (value.reveal() if hasattr(value, "reveal") else value)
