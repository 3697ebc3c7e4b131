"""The one watch-stream parser and the one place a refused credential is replaced.

Pure logic over tiny stand-ins: a streamed answer (status, lines) and a credential source
that hands out numbered tokens; no API server and no mock of one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
import urllib3
from urllib3._collections import HTTPHeaderDict

from externalauth.errors import ExternalAuthError, ForbiddenError, PermanentError, TransientError
from externalauth.kube import credentials
from externalauth.kube.api import Kube, WatchExpired, WatchStream
from externalauth.kube.connection import Response
from externalauth.model.secure import SecretStr

WHAT = "watching ExternalAuthLinks in ns"


@dataclasses.dataclass
class Streamed:
    """A streamed answer: its status, a JSON body (for an error answer), then its lines;
    ``broken`` ends the stream as a dropped connection does."""

    status_code: int = 200
    lines: list[bytes] = dataclasses.field(default_factory=list)
    body: Any = None
    broken: bool = False
    headers: HTTPHeaderDict = dataclasses.field(default_factory=HTTPHeaderDict)

    def json(self) -> Any:
        return self.body

    def iter_lines(self) -> Iterator[bytes]:
        yield from self.lines
        if self.broken:
            raise urllib3.exceptions.ProtocolError("Connection broken")

    def close(self) -> None:
        pass


def event(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode()


def link(name: str, rv: str) -> dict[str, Any]:
    return {"kind": "ExternalAuthLink", "metadata": {"name": name, "resourceVersion": rv}}


def status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}


STREAMS = [
    pytest.param(Streamed(lines=[event("ADDED", link("a", "5")), b"",
                                 event("BOOKMARK", {"metadata": {"resourceVersion": "6"}}),
                                 event("DELETED", link("a", "7"))]),
                 [("ADDED", "5"), ("BOOKMARK", "6"), ("DELETED", "7")],
                 id="events in order, bookmarks included, empty lines skipped"),
    pytest.param(Streamed(status_code=410, body=status(410, "too old")), WatchExpired,
                 id="an answer 410 Gone: list again"),
    pytest.param(Streamed(lines=[event("ADDED", link("a", "5")), event("ERROR", status(410, "too old"))]),
                 WatchExpired, id="an ERROR event 410 Gone: list again"),
    pytest.param(Streamed(lines=[event("ERROR", status(500, "etcd\nleader changed"))]),
                 (TransientError, f"{WHAT}: the watch ended with an error: the API server answered 500: "
                                  "etcd leader changed"),
                 id="an ERROR event 500: a transient error quoting the Status message on one line"),
    pytest.param(Streamed(lines=[event("ERROR", status(403, "no longer allowed"))]),
                 (ForbiddenError, f"{WHAT}: the watch ended with an error: forbidden (HTTP 403; check your "
                                  "kubeconfig and RBAC): no longer allowed"),
                 id="an ERROR event 403: forbidden"),
    pytest.param(Streamed(lines=[event("ERROR", {"message": "no code"})]),
                 (TransientError, f"{WHAT}: the watch ended with an error: the API server answered 500: no code"),
                 id="an ERROR event without a code is a failure all the same"),
    pytest.param(Streamed(status_code=403, body=status(403, "cannot watch")),
                 (ForbiddenError, f"{WHAT}: forbidden (HTTP 403; check your kubeconfig and RBAC): cannot watch"),
                 id="an answer 403: forbidden"),
    pytest.param(Streamed(lines=[b"<html>secret-ish</html>"]),
                 (PermanentError, f"{WHAT}: the API server sent something that is not JSON"),
                 id="a line that is not JSON, not quoted"),
    pytest.param(Streamed(lines=[json.dumps({"type": "ADDED"}).encode()]),
                 (PermanentError, f"{WHAT}: the API server sent an event without an object"),
                 id="an event without an object"),
    pytest.param(Streamed(lines=[event("ADDED", link("a", "5"))], broken=True),
                 (TransientError, f"{WHAT}: cannot reach the Kubernetes API server at https://k (ProtocolError)"),
                 id="a connection dropped mid-stream: transient"),
]


@pytest.mark.parametrize(("answer", "expected"), STREAMS)
def test_a_watch_stream_is_read_one_way_for_the_operator_and_the_cli(answer: Streamed, expected: Any) -> None:
    """The events (type, resourceVersion), :class:`WatchExpired`, or the translated error."""
    stream = WatchStream(cast(Response, answer), what=WHAT, server="https://k")
    seen: list[tuple[str, str]] = []

    def read() -> None:
        for kind, obj in stream:
            seen.append((kind, obj["metadata"]["resourceVersion"]))

    if isinstance(expected, list):
        read()
        assert expected == seen
    elif expected is WatchExpired:
        with pytest.raises(WatchExpired):
            read()
    else:
        with pytest.raises(ExternalAuthError) as caught:
            read()
        assert expected == (type(caught.value), str(caught.value))


# --- the one 401 resend ---------------------------------------------------------------------------


class Numbered:
    """A source whose token is ``t<N>``; :meth:`rejected` moves to the next one unless
    ``stuck`` (a static token: nothing newer to be had)."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.number = 1
        self.stuck = stuck

    def current(self) -> credentials.Credential:
        return credentials.Credential(token=SecretStr(f"t{self.number}"), expiration=None)

    def rejected(self, credential: credentials.Credential) -> None:
        if not self.stuck and credential == self.current():
            self.number += 1


@dataclasses.dataclass
class Answer:
    status_code: int
    discarded: bool = False

    def discard(self) -> None:
        self.discarded = True


RESENDS = [
    pytest.param(Numbered(), {"t1": 200}, ["t1"], 200, id="accepted: sent once"),
    pytest.param(Numbered(), {"t1": 401, "t2": 200}, ["t1", "t2"], 200,
                 id="refused: sent once more with the newer token"),
    pytest.param(Numbered(), {"t1": 401, "t2": 401, "t3": 200}, ["t1", "t2"], 401,
                 id="refused twice: the second 401 is the answer (one resend only)"),
    pytest.param(Numbered(stuck=True), {"t1": 401}, ["t1"], 401,
                 id="refused with nothing newer to be had: not sent again"),
    pytest.param(None, {"": 401}, [""], 401, id="no credential source: not sent again"),
]


@pytest.mark.parametrize(("source", "answers", "sent", "final"), RESENDS)
def test_a_refused_credential_is_replaced_once(source: Numbered | None, answers: dict[str, int],
                                               sent: list[str], final: int) -> None:
    """Which tokens were sent, in order, and the answer returned; a replaced answer's
    connection is given back."""
    tokens: list[str] = []
    given: list[Answer] = []

    def send(credential: credentials.Credential | None) -> Answer:
        token = credential.token.reveal() if credential is not None and credential.token is not None else ""
        tokens.append(token)
        given.append(Answer(answers[token]))
        return given[-1]

    answer = credentials.authenticated(source, send)
    assert (sent, final) == (tokens, answer.status_code)
    assert [a is not answer for a in given] == [a.discarded for a in given]


def test_a_version_inside_a_secret_patch_is_refused() -> None:
    """One compare-and-swap convention: the version goes as ``resource_version=``, never
    inside the patch (where a caller could forget it, or set it twice)."""
    kube = Kube(cast(Any, None))
    with pytest.raises(ValueError, match="resource_version="):
        kube.patch_secret("ns", "s", {"metadata": {"resourceVersion": "7"}, "data": {}}, resource_version=None)
