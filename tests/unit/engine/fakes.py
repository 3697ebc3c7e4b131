"""Fakes of the engine's ports (engine/ports.py) and a fake clock, for unit tests that
run in milliseconds. ``FakeKube`` is an in-memory store with the one API-server
behaviour the engine relies on — compare-and-swap on ``resourceVersion`` (409) and
404 for a missing object — and a journal of every call, in order, shared with
``FakeProvider`` so tests can assert what happened before what. It refuses a Secret
write without a ``resourceVersion`` (the engine never makes one) and records the
version each write carried (``writes``). ``FakeProvider`` answers with raw HTTP
answers that the real answer reader turns into verdicts."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime as dt
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from externalauth.errors import ConflictError, ExternalAuthError, NotFoundError, RejectedError, TransientError
from externalauth.model.bodies import RawBody
from externalauth.model.durations import format_time
from externalauth.model.names import CLAIM_ANNOTATION, PROVIDER_LABEL
from externalauth.model.secure import SecretStr
from externalauth.oauth.exchanging import ExchangeResult, read_answer
from externalauth.policy import revocations, timing
from externalauth.policy.classifying import (
    Classified,
    TokenAnswer,
    TokenVerdict,
    ValidationOutcome,
    ValidationVerdict,
    classify_token_answer,
)
from externalauth.transport import Answer

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


class FakeClock:
    """Time that moves only when told (``advance``) or when the engine sleeps."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.t = start
        self._mono = 1000.0
        self._tick = asyncio.Event()

    def now(self) -> dt.datetime:
        return self.t

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)
        self._mono += seconds
        self._tick.set()

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        deadline = None if timeout is None else self.t + dt.timedelta(seconds=timeout)
        while not event.is_set():
            if deadline is not None and self.t >= deadline:
                return
            self._tick.clear()
            waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._tick.wait())]
            _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping):
            node = target.setdefault(k, {})
            _merge(node, v)
        else:
            target[k] = copy.deepcopy(v)


def _kind(patch: Mapping[str, Any]) -> str:
    """What a Secret patch is, for the journal."""
    data = patch.get("data") or {}
    annotations = (patch.get("metadata") or {}).get("annotations") or {}
    if "access_token" in data:
        return "persist"
    if data:
        return "formats"
    if CLAIM_ANNOTATION in annotations:
        return "claim" if annotations[CLAIM_ANNOTATION] else "release"
    return "patch"


@dataclasses.dataclass(frozen=True)
class SecretWrite:
    """One Secret patch as the fake API server saw it."""

    kind: str  # claim, release, persist, formats, patch (see _kind)
    key: tuple[str, str]
    resource_version: str | None  # the precondition it carried (None: none)
    stored_version: str | None  # the Secret's resourceVersion when it arrived (None: no Secret)
    result: str  # "ok", "409", "404", "422", or the error it was failed with
    urgent: bool = False  # asked to go ahead of other API calls (a persist)


class UnconditionalWrite(AssertionError):
    """The engine wrote a Secret without a resourceVersion precondition (contract §9.1:
    every claim, release, persist and format write is a compare-and-swap)."""


class FakeKube:
    def __init__(self, journal: list[str]) -> None:
        self.journal = journal
        #: Every Secret patch, with the resourceVersion it carried, in order.
        self.writes: list[SecretWrite] = []
        #: False: a Secret patch without a resourceVersion fails the test (UnconditionalWrite).
        self.allow_unconditional = False
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.links: dict[tuple[str, str], dict[str, Any]] = {}
        self.providers: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (type, reason, message)
        self._rv = itertools.count(100)
        #: Called with (key, patch) before a Secret patch is applied: tests use it to
        #: make another writer act first, or to fail the write.
        self.before_secret_patch: Callable[[tuple[str, str], Mapping[str, Any]], None] | None = None
        self.fail_reads = 0
        #: Errors the next Secret writes fail with, in order (an API server restarting).
        self.fail_writes: list[ExternalAuthError] = []
        #: When set, persists wait for it (``persists_waiting`` counts them): a slow write.
        self.persist_gate: asyncio.Event | None = None
        self.persists_waiting = 0
        self.urgent_reads = 0  # Secret reads asked to go ahead of other API calls

    def bump(self, body: dict[str, Any]) -> None:
        body.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))

    # --- seeding ------------------------------------------------------------------------
    def put_secret(self, namespace: str, name: str, *, access: str, refresh: str | None,
                   expiry: dt.datetime | None, annotations: dict[str, str] | None = None,
                   labels: dict[str, str] | None = None, immutable: bool = False) -> RawBody:
        data = {"access_token": b64(access)}
        if refresh is not None:
            data["refresh_token"] = b64(refresh)
        if expiry is not None:
            data["expiry"] = b64(format_time(expiry))
        body: dict[str, Any] = {"metadata": {"namespace": namespace, "name": name,
                                             "labels": dict(labels if labels is not None else {PROVIDER_LABEL: "gh"}),
                                             "annotations": dict(annotations or {})},
                                "type": "Opaque", "data": data}
        if immutable:
            body["immutable"] = True
        self.bump(body)
        self.secrets[(namespace, name)] = body
        return copy.deepcopy(body)  # type: ignore[return-value]

    def edit_secret(self, key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        """Another writer (a user, another replica) edits the Secret."""
        _merge(self.secrets[key], patch)
        self.bump(self.secrets[key])

    def stored(self, key: tuple[str, str], field: str) -> str | None:
        raw = self.secrets[key]["data"].get(field)
        return unb64(raw) if raw is not None else None

    def claim(self, key: tuple[str, str]) -> str | None:
        return (self.secrets[key]["metadata"].get("annotations") or {}).get(CLAIM_ANNOTATION)

    # --- KubePort -----------------------------------------------------------------------
    async def get_secret(self, namespace: str, name: str, *, urgent: bool = False) -> RawBody | None:
        await asyncio.sleep(0)
        self.journal.append(f"get {namespace}/{name}")
        self.urgent_reads += urgent
        if self.fail_reads:
            self.fail_reads -= 1
            raise TransientError("API server unreachable")
        body = self.secrets.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None  # type: ignore[return-value]

    async def get_secret_metadata(self, namespace: str, name: str) -> RawBody | None:
        await asyncio.sleep(0)
        self.journal.append(f"meta {namespace}/{name}")
        body = self.secrets.get((namespace, name))
        return {"metadata": copy.deepcopy(body["metadata"])} if body is not None else None

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any],
                           *, resource_version: str | None, urgent: bool = False) -> RawBody:
        await asyncio.sleep(0)
        key = (namespace, name)
        what = _kind(patch)
        if resource_version is None and not self.allow_unconditional:
            self._wrote(what, key, None, "refused", urgent)
            raise UnconditionalWrite(f"{what} of Secret {namespace}/{name} without a resourceVersion")
        if what == "persist" and self.persist_gate is not None:
            self.persists_waiting += 1
            await self.persist_gate.wait()
            self.persists_waiting -= 1
        if self.before_secret_patch is not None:
            self.before_secret_patch(key, patch)
        if self.fail_writes and what == "persist":
            error = self.fail_writes.pop(0)
            self._wrote(what, key, resource_version, type(error).__name__, urgent)
            self.journal.append(f"{what} {namespace}/{name} {type(error).__name__}")
            raise error
        body = self.secrets.get(key)
        if body is None:
            self._wrote(what, key, resource_version, "404", urgent)
            self.journal.append(f"{what} {namespace}/{name} 404")
            raise NotFoundError("writing Secret: not found")
        if resource_version is not None and body["metadata"]["resourceVersion"] != resource_version:
            self._wrote(what, key, resource_version, "409", urgent)
            self.journal.append(f"{what} {namespace}/{name} 409")
            raise ConflictError("writing Secret: conflict")
        if body.get("immutable") and "data" in patch:
            self._wrote(what, key, resource_version, "422", urgent)
            self.journal.append(f"{what} {namespace}/{name} 422")
            raise RejectedError("writing Secret: the API server answered 422 field is immutable")
        self._wrote(what, key, resource_version, "ok", urgent)
        self.journal.append(f"{what} {namespace}/{name}")
        _merge(body, patch)
        self.bump(body)
        return copy.deepcopy(body)  # type: ignore[return-value]

    def _wrote(self, kind: str, key: tuple[str, str], resource_version: str | None, result: str,
               urgent: bool) -> None:
        body = self.secrets.get(key)
        stored = body["metadata"]["resourceVersion"] if body is not None else None
        self.writes.append(SecretWrite(kind, key, resource_version, stored, result, urgent))

    def writes_of(self, kind: str) -> list[SecretWrite]:
        return [w for w in self.writes if w.kind == kind]

    async def patch_link_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                *, resource_version: str | None = None) -> RawBody:
        await asyncio.sleep(0)
        body = self.links.get((namespace, name))
        if body is None:
            raise NotFoundError("writing status: not found")
        if resource_version is not None and body["metadata"]["resourceVersion"] != resource_version:
            self.journal.append(f"status {namespace}/{name} 409")
            raise ConflictError("writing status: conflict")
        self.journal.append(f"status {namespace}/{name}")
        _merge(body.setdefault("status", {}), status)
        self.bump(body)
        return copy.deepcopy(body)  # type: ignore[return-value]

    async def patch_provider_status(self, name: str, status: Mapping[str, Any]) -> RawBody:
        body = self.providers[name]
        _merge(body.setdefault("status", {}), status)
        self.bump(body)
        return copy.deepcopy(body)  # type: ignore[return-value]

    async def post_event(self, obj: RawBody, *, type_: str, reason: str, message: str,
                         now: dt.datetime) -> None:
        self.events.append((type_, reason, message))

    async def list_providers(self) -> list[RawBody]:
        return [copy.deepcopy(b) for b in self.providers.values()]  # type: ignore[misc]

    async def patch_link_finalizers(self, namespace: str, name: str, finalizers: list[str],
                                    *, resource_version: str | None) -> RawBody:
        await asyncio.sleep(0)
        body = self.links.get((namespace, name))
        if body is None:
            raise NotFoundError("writing finalizers: not found")
        if resource_version is not None and body["metadata"]["resourceVersion"] != resource_version:
            self.journal.append(f"finalizers {namespace}/{name} 409")
            raise ConflictError("writing finalizers: conflict")
        self.journal.append(f"finalizers {namespace}/{name} {','.join(finalizers) or '-'} rv={resource_version}")
        body["metadata"]["finalizers"] = list(finalizers)
        self.bump(body)
        return copy.deepcopy(body)  # type: ignore[return-value]


def answer(status: int, body: object = None, *, headers: Mapping[str, str] | None = None,
           raw: bytes | None = None) -> Answer:
    """A token endpoint's HTTP answer: ``body`` as JSON (or ``raw`` bytes as they came)."""
    content = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return Answer(status=status, headers={"content-type": "application/json",
                                          **{k.lower(): v for k, v in (headers or {}).items()}},
                  body=content)


def success(access: str, refresh: str | None, *, lifetime: float = 3600, **extra: object) -> Answer:
    """200 with new tokens (``refresh`` None: the provider did not rotate the refresh token)."""
    body: dict[str, object] = {"access_token": access, "token_type": "bearer", "expires_in": lifetime, **extra}
    if refresh is not None:
        body["refresh_token"] = refresh
    return answer(200, body)


def error(status: int, code: str, *, headers: Mapping[str, str] | None = None) -> Answer:
    """An OAuth error answer (RFC 6749 §5.2), e.g. ``error(400, "invalid_grant")``."""
    return answer(status, {"error": code}, headers=headers)


#: The exchange got no HTTP answer (a timeout, a dropped connection): the request may
#: have reached the provider.
NO_ANSWER = None


class FakeProvider:
    """Answers token exchanges with the raw HTTP answer ``answer(refresh_token, n)`` (or
    NO_ANSWER) returns, read by the real answer reader (:func:`exchanging.read_answer`, in
    the dialect of the spec it was made for); records every call."""

    spec: Any = None  # set by the factory: the spec it was made for

    def __init__(self, journal: list[str], clock: FakeClock) -> None:
        self.journal = journal
        self.clock = clock
        self.exchanged: list[str] = []
        self.validated: list[str] = []
        self.gate: asyncio.Event | None = None  # when set, exchanges wait for it
        self.validation_gate: asyncio.Event | None = None  # when set, validations wait for it
        self.answer: Callable[[str, int], Answer | None] = (
            lambda rt, n: success(f"access-{n}", f"refresh-{n}"))
        self.verdict = ValidationOutcome(ValidationVerdict.VALID, "the provider accepted the token", "alice")
        self.revocation = revocations.Outcome(revocations.Verdict.REVOKED, "the refresh token was revoked")
        self.queued = 0.0  # seconds (on the fake clock) a token call waits for its turn
        self.budgets: list[float] = []  # the deadline each sent token call was given

    async def refresh(self, refresh_token: SecretStr, *, now: dt.datetime,
                      send_before: float | None = None) -> ExchangeResult:
        called = self.clock.monotonic()
        if self.queued:
            self.clock.advance(self.queued)
        # What ProviderClient.refresh decides in its worker thread, just before sending.
        budget = timing.call_budget(send_before=send_before, now=self.clock.monotonic(), deadline=30.0)
        if budget is None:
            self.journal.append(f"unsent {refresh_token.reveal()}")
            return ExchangeResult(Classified(TokenVerdict.TRANSIENT, "not sent"))
        self.budgets.append(budget)
        self.journal.append(f"exchange {refresh_token.reveal()}")
        self.exchanged.append(refresh_token.reveal())
        if self.gate is not None:
            await self.gate.wait()
        raw = self.answer(refresh_token.reveal(), len(self.exchanged))
        if raw is None:  # what ProviderClient.refresh makes of a call without an answer
            return ExchangeResult(classify_token_answer(TokenAnswer(status=None)))
        # Like ProviderClient.refresh: the answer arrived at the ``now`` it was given plus the
        # time the call took.
        arrived = now + dt.timedelta(seconds=self.clock.monotonic() - called)
        return read_answer(raw, spec=self.spec, consumed=refresh_token, arrived=arrived)

    async def validate(self, access_token: SecretStr, *, now: dt.datetime) -> ValidationOutcome:
        self.journal.append(f"validate {access_token.reveal()}")
        self.validated.append(access_token.reveal())
        if self.validation_gate is not None:
            await self.validation_gate.wait()
        return self.verdict

    async def revoke(self, *, refresh_token: SecretStr | None, access_token: SecretStr | None,
                     now: dt.datetime) -> revocations.Outcome:
        self.journal.append(f"revoke {refresh_token.reveal() if refresh_token else '-'} "
                            f"{access_token.reveal() if access_token else '-'}")
        return self.revocation

    def close(self) -> None:
        pass


def factory(make: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """An async ProviderFactory over a plain function of (spec, secret) (it may raise)."""
    async def made(spec: Any, secret: Any) -> Any:
        provider = make(spec, secret)
        provider.spec = spec
        return provider
    return made
