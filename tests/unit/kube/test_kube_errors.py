"""The one translation of API-server answers and transport failures into the error tree.

Pure mapping: a tiny stand-in for an answer (status, headers, JSON),
no API server and no mock of one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import urllib3
from urllib3._collections import HTTPHeaderDict as CaseInsensitiveDict

from externalauth.errors import (
    ConflictError,
    ExternalAuthError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    RejectedError,
    TransientError,
    UnauthorizedError,
)
from externalauth.kube import translating

WHAT = "writing Secret ns/s"
SERVER = "https://127.0.0.1:6443"
NOT_JSON = object()


@dataclasses.dataclass
class FakeAnswer:
    """What translating reads from a response: the status, the headers, the decoded JSON."""

    status_code: int
    body: Any = None
    headers: CaseInsensitiveDict[str] = dataclasses.field(default_factory=CaseInsensitiveDict)

    def json(self) -> Any:
        if self.body is NOT_JSON:
            raise json.JSONDecodeError("Expecting value", "<html>", 0)
        return self.body


def answer(code: int, message: str | None = None, *, retry_after: str | None = None, body: Any = None) -> FakeAnswer:
    if message is not None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return FakeAnswer(code, body, headers)


def outcome(error: ExternalAuthError | None) -> tuple[type[ExternalAuthError] | None, str | None, float | None]:
    if error is None:
        return (None, None, None)
    return (type(error), str(error), getattr(error, "retry_after", None))


LONG = "x" * 1000

ANSWERS = [
    pytest.param(answer(200, body={"kind": "Secret"}), (None, None, None), id="a 200 is no error"),
    pytest.param(answer(201, body={"kind": "Event"}), (None, None, None), id="a 201 is no error"),
    pytest.param(answer(401, "Unauthorized"),
                 (UnauthorizedError, f"{WHAT}: unauthorized (HTTP 401; check your kubeconfig and RBAC): "
                                     "Unauthorized", None),
                 id="a 401 is unauthorized (a kind of forbidden): the credentials were refused"),
    pytest.param(answer(403, 'secrets "s" is forbidden: User "alice" cannot patch resource "secrets"'),
                 (ForbiddenError, f'{WHAT}: forbidden (HTTP 403; check your kubeconfig and RBAC): secrets "s" is '
                                  'forbidden: User "alice" cannot patch resource "secrets"', None),
                 id="a 403 is forbidden and quotes the Status message naming the user and verb"),
    pytest.param(answer(404, 'secrets "s" not found'), (NotFoundError, f"{WHAT}: not found", None),
                 id="a 404 is not found"),
    pytest.param(answer(409, "the object has been modified"), (ConflictError, f"{WHAT}: conflict", None),
                 id="a 409 is a conflict"),
    pytest.param(answer(422, 'Secret "s" is invalid: metadata.labels: Invalid value'),
                 (RejectedError, f'{WHAT}: the API server answered 422: Secret "s" is invalid: '
                                  'metadata.labels: Invalid value', None),
                 id="a 422 is a rejection (permanent) and quotes the Status message"),
    pytest.param(answer(400, body=NOT_JSON), (RejectedError, f"{WHAT}: the API server answered 400", None),
                 id="a 400 whose body is not JSON is a rejection and quotes nothing"),
    pytest.param(answer(400, body={"message": "refresh_token=gho_SECRET"}),
                 (RejectedError, f"{WHAT}: the API server answered 400", None),
                 id="a JSON body that is not a Status is never quoted"),
    pytest.param(answer(400, body={"kind": "Status", "message": 42}),
                 (RejectedError, f"{WHAT}: the API server answered 400", None),
                 id="a Status whose message is not a string is not quoted"),
    pytest.param(answer(400, "line one\nline two\r\n\tand\x1b[31m red"),
                 (RejectedError, f"{WHAT}: the API server answered 400: line one line two and[31m red", None),
                 id="a Status message is quoted on one printable line"),
    pytest.param(answer(422, LONG),
                 (RejectedError, f"{WHAT}: the API server answered 422: {'x' * 299}…", None),
                 id="a long Status message is truncated to 300 characters"),
    pytest.param(answer(500, "etcdserver: request timed out"),
                 (TransientError, f"{WHAT}: the API server answered 500: etcdserver: request timed out", None),
                 id="a 500 is transient"),
    pytest.param(answer(503, retry_after="7"), (TransientError, f"{WHAT}: the API server answered 503", 7.0),
                 id="a 503 carries its Retry-After"),
    pytest.param(answer(429, "storage is (re)initializing", retry_after="1"),
                 (TransientError, f"{WHAT}: the API server answered 429: storage is (re)initializing", 1.0),
                 id="a 429 is transient with its Retry-After"),
    pytest.param(answer(429, retry_after="1e12"), (TransientError, f"{WHAT}: the API server answered 429", 3600.0),
                 id="a huge Retry-After is capped at an hour"),
    pytest.param(answer(429, retry_after="inf"), (TransientError, f"{WHAT}: the API server answered 429", 3600.0),
                 id="an infinite Retry-After is capped at an hour"),
    pytest.param(answer(429, retry_after="nan"), (TransientError, f"{WHAT}: the API server answered 429", None),
                 id="a NaN Retry-After is ignored"),
]


@pytest.mark.parametrize(("given", "expected"), ANSWERS)
def test_an_answer_becomes_one_error_of_the_tree(given: FakeAnswer, expected: tuple[Any, ...]) -> None:
    """Each status code maps to one error type, one safe line, and a capped Retry-After."""
    assert expected == outcome(translating.error_for_answer(given, what=WHAT))


@pytest.mark.parametrize(("header", "seconds"), [
    pytest.param(None, None, id="no header means no hint"),
    pytest.param("5", 5.0, id="whole seconds"),
    pytest.param(" 2.5 ", 2.5, id="fractional seconds with spaces"),
    pytest.param("0", 0.0, id="zero"),
    pytest.param("3600", 3600.0, id="exactly the cap"),
    pytest.param("3601", 3600.0, id="just above the cap is capped"),
    pytest.param("1e12", 3600.0, id="an absurd number is capped"),
    pytest.param("inf", 3600.0, id="infinity is capped"),
    pytest.param("-inf", None, id="minus infinity is ignored"),
    pytest.param("nan", None, id="NaN is ignored"),
    pytest.param("-5", None, id="a negative number is ignored"),
    pytest.param("soon", None, id="a word is ignored"),
    pytest.param("", None, id="an empty header is ignored"),
    pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", None, id="an HTTP date is ignored"),
    pytest.param("9" * 400, 3600.0, id="a 400-digit number is capped"),
])
def test_retry_after_is_parsed_and_capped_never_crashing(header: str | None, seconds: float | None) -> None:
    assert seconds == translating.retry_after(header)


@pytest.mark.parametrize(("error", "expected"), [
    pytest.param(urllib3.exceptions.SSLError("certificate verify failed"),
                 (PermanentError, f"{WHAT}: cannot reach the Kubernetes API server at {SERVER}: TLS failed "
                                  "(certificate verification or handshake; check the cluster's CA certificate)",
                  None),
                 id="a TLS failure is permanent and names TLS"),
    pytest.param(urllib3.exceptions.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
                 (TransientError, f"{WHAT}: cannot reach the Kubernetes API server at {SERVER} (NewConnectionError)",
                  None),
                 id="a refused connection is transient"),
    pytest.param(urllib3.exceptions.ReadTimeoutError(None, "/api", "read timed out"),  # type: ignore[arg-type]
                 (TransientError, f"{WHAT}: cannot reach the Kubernetes API server at {SERVER} (ReadTimeoutError)",
                  None),
                 id="a timeout is transient"),
    pytest.param(ValueError("Invalid header value b'Bearer x\\n'"),
                 (PermanentError, f"{WHAT}: cannot send a request to the Kubernetes API server at {SERVER} "
                                  "(ValueError)", None),
                 id="a header that cannot be sent is permanent"),
    pytest.param(urllib3.exceptions.ProtocolError("Authorization: Bearer sha256~SECRET"),
                 (TransientError, f"{WHAT}: cannot reach the Kubernetes API server at {SERVER} (ProtocolError)",
                  None),
                 id="the exception's own text is never quoted"),
])
def test_a_failure_to_get_an_answer_becomes_one_error_of_the_tree(
        error: Exception, expected: tuple[Any, ...]) -> None:
    assert expected == outcome(translating.error_for_exception(error, what=WHAT, server=SERVER))


def test_a_successful_json_object_is_returned_as_it_is() -> None:
    assert {"kind": "Secret"} == translating.json_object(answer(200, body={"kind": "Secret"}), what=WHAT)


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param(answer(409), (ConflictError, f"{WHAT}: conflict"), id="an error status raises its error"),
    pytest.param(answer(200, body=NOT_JSON),
                 (PermanentError, f"{WHAT}: the API server answered something that is not JSON"),
                 id="a 200 that is not JSON is permanent"),
    pytest.param(answer(200, body=["a", "list"]),
                 (PermanentError, f"{WHAT}: the API server answered JSON that is not an object"),
                 id="a 200 whose JSON is not an object is permanent"),
])
def test_json_object_raises_for_anything_but_a_json_object(given: FakeAnswer, expected: tuple[Any, str]) -> None:
    with pytest.raises(ExternalAuthError) as e:
        translating.json_object(given, what=WHAT)
    assert expected == (type(e.value), str(e.value))


def test_forbidden_is_permanent() -> None:
    """Callers that skip what they may not read (``except PermanentError``) also skip a 403."""
    assert issubclass(ForbiddenError, PermanentError)
