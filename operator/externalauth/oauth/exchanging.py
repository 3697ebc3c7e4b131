"""Token exchange and validation for one provider. I/O.

The refresh request body is prepared by oauthlib (RFC 6749 §6); the call itself goes
through :func:`externalauth.transport.fetch`: no redirects followed, a capped body, an overall
deadline. The answer is read by :func:`tokens.read_token_answer`, which never
raises: nothing after the provider's HTTP answer may raise out of
:meth:`ProviderClient.refresh`, because the refresh token may already be spent.

Rate-limit etiquette: once an endpoint answers that it is rate-limiting (429, a 403
with rate-limit signs, a 503 with Retry-After) or that the budget is spent
(``remaining: 0`` with a reset), nothing more is sent to that endpoint until the
announced reset (at most an hour, contract §9.14), whichever link asks: the call
returns at once with the wait. Expiry counts from when the answer ARRIVED; the
provider's ``Date`` header gives the clock skew (never the expiry).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from oauthlib.oauth2 import WebApplicationClient

from externalauth import transport
from externalauth.errors import DiscoveryError
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.model.tokens import read_token_answer
from externalauth.oauth import discovering
from externalauth.policy import classifying, revocations, timing
from externalauth.policy.classifying import ExchangeResult as ExchangeResult  # lives in the pure room
from externalauth.providers import ClientAuth, Revocation

log = logging.getLogger(__name__)
Observer = Callable[[str, int], None]  # (endpoint, HTTP code or 0) -> None
DEFAULT_DEADLINE = 30.0  # seconds for a whole provider call: well inside the 60 s claim lease
#: A failed discovery is tried again at most this often, in the background.
DISCOVERY_RETRY = timing.DISCOVERY_RETRY
_NOT_SENT = ("not sent: the claim on the Secret ran low while the call waited for its turn "
             "(it is sent again under a fresh claim)")


@runtime_checkable
class AnswerObserver(Protocol):
    """An observer that also wants what the answers' headers say (metrics.observer is one)."""

    def __call__(self, endpoint: str, code: int) -> None: ...

    def rate_limit_remaining(self, endpoint: str, remaining: float) -> None: ...

    def clock_skew(self, seconds: float) -> None: ...


_TLS_MESSAGE = "could not verify the token endpoint's TLS certificate (check spec.caBundle)"
_GATED_TOKEN = ("the token endpoint is rate-limiting the operator; nothing is sent to it before "
                "the reset it announced")
_GATED_VALIDATION = ("the provider is rate-limiting validation; nothing is sent to it before the "
                     "reset it announced")


class ProviderClient:
    """Talks to one provider's token and validation endpoints. Thread-safe: one shared
    (thread-safe) :class:`~externalauth.transport.Pool` with the provider's TLS context, direct
    or through the environment's proxy for each endpoint.

    ``connect_timeout`` and ``read_timeout`` bound each connect and each read;
    ``deadline`` bounds a whole call (token or validation), whatever the server does.

    A spec with ``issuerURL`` is resolved by OIDC discovery here, when the client is
    built: a document that is missing or unusable raises
    :class:`~externalauth.errors.DiscoveryError` (the provider is InvalidSpec); an
    issuer that does not answer is tried again in the background when a call finds it
    unresolved (at most every DISCOVERY_RETRY seconds; no call waits for it), and until then
    calls fail as transient at once, sending nothing.
    """

    def __init__(
        self,
        spec: ProviderSpec,
        client_secret: SecretStr | None,
        *,
        observe: Observer | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.spec = spec
        self._secret = client_secret
        self._observe = observe or (lambda endpoint, code: None)
        self._answers = observe if isinstance(observe, AnswerObserver) else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._deadline = deadline
        # K token calls and K validations may be in flight at once: a connection for each.
        self._pool = transport.Pool(transport.provider_context(spec.ca_bundle),
                                    maxsize=max(4, 2 * spec.max_concurrent))
        self._gates: dict[str, float] = {}  # endpoint -> monotonic time before which nothing is sent
        self._lock = threading.Lock()  # the rate-limit gates
        self._discovery_lock = threading.Lock()  # one discovery at a time
        self._discovery_failed: tuple[float, str] | None = None  # (monotonic, message)
        self._rediscovering = False  # a background discovery is running
        if spec.needs_discovery:
            self._discover()

    def __repr__(self) -> str:
        return f"ProviderClient({self.spec.name!r})"

    def close(self) -> None:
        self._pool.close()

    def _fetch(self, method: str, url: str, *, deadline: float | None = None, **kwargs: Any) -> transport.Answer:
        return transport.fetch(self._pool, method, url, deadline=deadline or self._deadline,
                               connect_timeout=self._connect_timeout, read_timeout=self._read_timeout, **kwargs)

    # --- discovery -----------------------------------------------------------------
    def _get_document(self, url: str) -> transport.Answer:
        answer = self._fetch("GET", url, deadline=min(self._deadline, discovering.DISCOVERY_DEADLINE),
                             headers={"Accept": "application/json"})
        self._observe("discovery", answer.status)
        return answer

    def _discover(self) -> None:
        """Resolve the spec's URLs from its issuer. A permanent failure raises; a transient
        one is remembered (and logged) for :meth:`unresolved`."""
        assert self.spec.issuer_url is not None
        try:
            endpoints = discovering.discover(self.spec.issuer_url, get=self._get_document)
        except DiscoveryError as e:
            if not e.transient:
                raise
            log.warning("provider %s: OIDC discovery failed for now: %s", self.spec.name, e)
            self._discovery_failed = (time.monotonic(), f"OIDC discovery: {e}")
            return
        self.spec = discovering.resolve(self.spec, endpoints)
        self._discovery_failed = None

    def unresolved(self) -> str | None:
        """Why the spec cannot be used yet (discovery failed), None when it can. Never waits
        for the issuer: when a retry is due, discovery runs again in a background thread
        (a refresh never waits up to the discovery deadline for it)."""
        if not self.spec.needs_discovery:
            return None
        with self._discovery_lock:
            failed = self._discovery_failed
            due = failed is None or time.monotonic() - failed[0] >= DISCOVERY_RETRY
            if due and not self._rediscovering and self.spec.needs_discovery:
                self._rediscovering = True
                threading.Thread(target=self._rediscover, name="externalauth-discovery", daemon=True).start()
        if not self.spec.needs_discovery:
            return None
        return failed[1] if failed is not None else "OIDC discovery has not succeeded"

    def _rediscover(self) -> None:
        try:
            self._discover()
        except DiscoveryError as e:  # the document turned unusable: the admin's to fix
            log.warning("provider %s: OIDC discovery failed: %s", self.spec.name, e)
            self._discovery_failed = (time.monotonic(), f"OIDC discovery: {e}")
        except Exception as e:  # a bug below us: try again later
            log.warning("provider %s: OIDC discovery failed unexpectedly (%s)", self.spec.name, type(e).__name__)
            self._discovery_failed = (time.monotonic(), "OIDC discovery has not succeeded")
        finally:
            with self._discovery_lock:
                self._rediscovering = False

    # --- rate limits ------------------------------------------------------------------
    def rate_limited_for(self, endpoint: str) -> float | None:
        """Seconds until ``endpoint`` (``token``, ``validate``) may be called again, or None.
        The engine may ask before it claims a Secret, to spare the claim's writes."""
        with self._lock:
            left = self._gates.get(endpoint, 0.0) - time.monotonic()
        return left if left > 0 else None

    def _hold(self, endpoint: str, *, until: float) -> None:
        with self._lock:
            self._gates[endpoint] = max(self._gates.get(endpoint, 0.0), until)

    def _heed(self, endpoint: str, answer: transport.Answer, *, started: float,
              arrived: dt.datetime) -> float | None:
        """Report what the answer's headers say, and hold the endpoint until the reset when
        they say to wait. Returns the wait the provider announced, if any."""
        headers = answer.headers
        remaining = classifying.rate_limit_remaining(headers)
        skew = classifying.clock_skew(headers, arrived=arrived)
        if self._answers is not None:
            if remaining is not None:
                self._answers.rate_limit_remaining(endpoint, remaining)
            if skew is not None:
                self._answers.clock_skew(skew)
        wait = classifying.rate_limit_retry_after(headers, now=arrived)
        limited = classifying.is_rate_limited(answer.status, headers)
        if limited or (answer.status == 503 and wait is not None) or (
                wait is not None and classifying.exhausted(answer.status, headers)):
            hold = wait if wait is not None else timing.RATE_LIMIT_DEFAULT_WAIT
            log.info("provider %s: %s endpoint rate-limited (HTTP %d): nothing sent to it for %.0fs",
                     self.spec.name, endpoint, answer.status, hold)
            self._hold(endpoint, until=started + answer.elapsed + min(hold, timing.MAX_ENDPOINT_HOLD))
        return wait

    # --- refresh -------------------------------------------------------------------
    def _refresh_request(self, refresh_token: SecretStr) -> dict[str, Any]:
        quirks = self.spec.quirks
        scope = list(self.spec.scopes) if quirks.send_scope_on_refresh and self.spec.scopes else None
        extra: dict[str, str] = {}
        auth = None
        if quirks.client_auth is ClientAuth.BASIC and self._secret:
            auth = (self.spec.client_id, self._secret.reveal())
        else:
            extra["client_id"] = self.spec.client_id
            if self._secret:
                extra["client_secret"] = self._secret.reveal()
        body = WebApplicationClient(self.spec.client_id).prepare_refresh_body(
            refresh_token=refresh_token.reveal(), scope=scope, **extra)
        return {
            "form": dict(urllib.parse.parse_qsl(body, keep_blank_values=True)),
            "auth": auth,
            "headers": {"Accept": "application/json",
                        "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
        }

    def refresh(self, refresh_token: SecretStr, *, now: dt.datetime,
                send_before: float | None = None) -> ExchangeResult:
        """Exchange ``refresh_token``; ``now`` is when the request is sent. ``send_before``
        (``time.monotonic()`` scale): the claim's lease end minus the margin to persist; the
        call is not sent when it is about to be sent too close to it, and its deadline is
        capped to end by then (contract §9.15). Never raises: every outcome is an
        ExchangeResult."""
        unresolved = self.unresolved()
        if unresolved is not None:  # nothing was sent: the refresh token is intact
            return ExchangeResult(classifying.Classified(classifying.TokenVerdict.TRANSIENT, unresolved))
        wait = self.rate_limited_for("token")
        if wait is not None:
            return ExchangeResult(classifying.Classified(classifying.TokenVerdict.TRANSIENT, _GATED_TOKEN, wait))
        try:
            request = self._refresh_request(refresh_token)
        except Exception as e:  # nothing was sent: the refresh token is intact
            log.warning("provider %s: cannot prepare the token request (%s)", self.spec.name, type(e).__name__)
            return ExchangeResult(classifying.Classified(
                classifying.TokenVerdict.TRANSIENT, "the token request could not be prepared"))
        # Checked here, in the worker thread, after any wait for a thread or a connection:
        # the last moment before the refresh token leaves.
        started = time.monotonic()
        budget = timing.call_budget(send_before=send_before, now=started, deadline=self._deadline)
        if budget is None:  # nothing was sent: the refresh token is intact
            log.info("provider %s: token call not sent: its claim ran low while it waited", self.spec.name)
            return ExchangeResult(classifying.Classified(classifying.TokenVerdict.TRANSIENT, _NOT_SENT))
        try:
            answer = self._fetch("POST", self.spec.token_url, deadline=budget, **request)
        except transport.NoAnswer as e:
            self._observe("token", 0)
            return ExchangeResult(self._no_answer(e, budget))
        except Exception as e:  # a bug below us; the request may have been sent
            self._observe("token", 0)
            log.warning("provider %s: token call failed unexpectedly (%s)", self.spec.name, type(e).__name__)
            return ExchangeResult(classifying.classify_token_answer(classifying.TokenAnswer(status=None)))
        self._observe("token", answer.status)
        arrived = now + dt.timedelta(seconds=answer.elapsed)
        try:
            self._heed("token", answer, started=started, arrived=arrived)
            return self._read(answer, consumed=refresh_token, arrived=arrived)
        except Exception as e:  # never: read_token_answer does not raise; but the token may be spent
            log.warning("provider %s: the token answer could not be read (%s)", self.spec.name, type(e).__name__)
            unusable = classifying.TokenAnswer(status=answer.status, unreadable=True)
            return ExchangeResult(classifying.classify_token_answer(unusable)
                                  if 200 <= answer.status < 300 else
                                  classifying.Classified(classifying.TokenVerdict.TRANSIENT,
                                                         f"the token endpoint answered HTTP {answer.status}"))

    def _no_answer(self, e: transport.NoAnswer, deadline: float) -> classifying.Classified:
        if e.kind is transport.NoAnswerKind.TLS:
            log.warning("provider %s: TLS verification failed (%s); check spec.caBundle", self.spec.name, e.cause)
            return classifying.Classified(classifying.TokenVerdict.TRANSIENT, _TLS_MESSAGE)
        log.info("provider %s: token endpoint failed: %s (%s)", self.spec.name, e.kind.value, e.cause)
        if e.kind is transport.NoAnswerKind.DEADLINE:
            return classifying.Classified(
                classifying.TokenVerdict.TRANSIENT,
                f"the token endpoint did not answer within {deadline:.3g}s")
        return classifying.classify_token_answer(classifying.TokenAnswer(status=None))

    def _read(self, answer: transport.Answer, *, consumed: SecretStr, arrived: dt.datetime) -> ExchangeResult:
        return read_answer(answer, spec=self.spec, consumed=consumed, arrived=arrived)

    # --- validation ------------------------------------------------------------------
    def validate(self, access_token: SecretStr, *, now: dt.datetime) -> classifying.ValidationOutcome:
        """Ask the validation endpoint about ``access_token``; ``now`` is when the request is
        sent. Never raises."""
        unresolved = self.unresolved()
        if unresolved is not None:
            return classifying.ValidationOutcome(classifying.ValidationVerdict.UNREACHABLE, unresolved)
        url = self.spec.validate_url
        if url is None:  # the issuer's discovery document names no userinfo endpoint
            return classifying.ValidationOutcome(classifying.ValidationVerdict.UNREACHABLE,
                                                 "the provider has no validation endpoint")
        wait = self.rate_limited_for("validate")
        if wait is not None:
            return classifying.ValidationOutcome(classifying.ValidationVerdict.RATE_LIMITED, _GATED_VALIDATION,
                                                 retry_after=wait)
        started = time.monotonic()
        try:
            answer = self._fetch("GET", url, headers={"Authorization": f"Bearer {access_token.reveal()}",
                                                       "Accept": "application/json"})
        except Exception as e:  # NoAnswer, or a bug below us: either way no verdict
            self._observe("validate", 0)
            log.info("provider %s: validation endpoint failed: %s", self.spec.name,
                     e.kind.value if isinstance(e, transport.NoAnswer) else type(e).__name__)
            return classifying.classify_validation(
                status=None, headers={}, body=None, account_fields=(), now=now
            )
        self._observe("validate", answer.status)
        arrived = now + dt.timedelta(seconds=answer.elapsed)
        self._heed("validate", answer, started=started, arrived=arrived)
        skew = classifying.clock_skew(answer.headers, arrived=arrived)
        if answer.problem is transport.BodyProblem.DEADLINE:
            log.info("provider %s: validation endpoint failed: deadline", self.spec.name)
            return classifying.ValidationOutcome(
                classifying.ValidationVerdict.UNREACHABLE,
                f"the validation endpoint did not answer within {self._deadline:g}s", clock_skew=skew)
        outcome = classifying.classify_validation(
            status=answer.status,
            headers=answer.headers,
            body=transport.decode_answer(answer),
            account_fields=self.spec.quirks.account_fields,
            now=arrived,
            invalid_statuses=self.spec.quirks.invalid_validation_statuses,
        )
        return dataclasses.replace(outcome, clock_skew=skew)

    # --- revocation -----------------------------------------------------------------
    def revoke(self, *, refresh_token: SecretStr | None, access_token: SecretStr | None,
               now: dt.datetime) -> revocations.Outcome:
        """Revoke the grant these tokens belong to (contract §2 ``revokeOnDelete``). Same
        rules as every provider call: verified TLS, no redirects, a capped body, one
        deadline. Never raises; nothing secret in the outcome's message."""
        unresolved = self.unresolved() or self._discover_revocation()
        if unresolved is not None:  # the revocation endpoint may come from discovery
            return revocations.Outcome(revocations.Verdict.TRANSIENT, unresolved)
        style = self.spec.quirks.revocation
        url = self.spec.revocation_url
        if url is None or style is Revocation.NONE:
            return revocations.Outcome(revocations.Verdict.UNSUPPORTED, "the provider has no revocation endpoint")
        outcomes, whats = [], []
        for request in revocations.plan(style, url, refresh_token=refresh_token, access_token=access_token):
            outcome = self._revoke_one(style, request, now=now)
            outcomes.append(outcome)
            whats.append(request.what)
            if outcome.verdict is not revocations.Verdict.REVOKED:
                break
        if not outcomes:
            return revocations.Outcome(revocations.Verdict.REFUSED, "the Secret holds no token to revoke")
        return revocations.combine(outcomes, whats)

    def _discover_revocation(self) -> str | None:
        """Read the issuer's revocation endpoint, which refreshes never need (so it is not
        read when the client is built); None when it is known."""
        if not self.spec.discover_revocation or self.spec.issuer_url is None:
            return None
        with self._discovery_lock:
            if not self.spec.discover_revocation:
                return None
            try:
                endpoints = discovering.discover(self.spec.issuer_url, get=self._get_document)
            except DiscoveryError as e:
                return f"OIDC discovery: {e}"
            self.spec = discovering.resolve(self.spec, endpoints)
        return None

    def _revoke_one(self, style: Revocation, request: revocations.Request, *,
                    now: dt.datetime) -> revocations.Outcome:
        headers = {"Accept": "application/json", "Authorization": self._basic_auth()}
        if request.json is not None:
            body = json.dumps({k: _reveal(v) for k, v in request.json.items()}).encode()
            headers["Content-Type"] = "application/json"
            headers["X-GitHub-Api-Version"] = "2022-11-28"
        else:
            form = {k: _reveal(v) for k, v in (request.form or {}).items()}
            if self.spec.quirks.client_auth is not ClientAuth.BASIC or not self._secret:
                del headers["Authorization"]
                form["client_id"] = self.spec.client_id
                if self._secret:
                    form["client_secret"] = self._secret.reveal()
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded;charset=UTF-8"
        try:
            answer = self._fetch(request.method, request.url, headers=headers, body=body)
        except Exception as e:  # NoAnswer, or a bug below us: no verdict, try again later
            self._observe("revoke", 0)
            log.info("provider %s: revocation endpoint failed: %s", self.spec.name,
                     e.kind.value if isinstance(e, transport.NoAnswer) else type(e).__name__)
            return revocations.classify(style, status=None, what=request.what)
        self._observe("revoke", answer.status)
        payload = transport.decode_answer(answer) if not answer.redirect else None
        error = payload.get("error") if isinstance(payload, dict) else None
        arrived = now + dt.timedelta(seconds=answer.elapsed)
        return revocations.classify(
            style, status=answer.status, error=error if isinstance(error, str) else None,
            headers=answer.headers, retry_after=classifying.rate_limit_retry_after(answer.headers, now=arrived),
            what=request.what)

    def _basic_auth(self) -> str:
        """HTTP Basic with the client id and secret (RFC 6749 §2.3.1: each form-encoded)."""
        user = urllib.parse.quote_plus(self.spec.client_id)
        password = urllib.parse.quote_plus(self._secret.reveal()) if self._secret else ""
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

def read_answer(answer: transport.Answer, *, spec: ProviderSpec, consumed: SecretStr,
                arrived: dt.datetime) -> ExchangeResult:
    """What the token endpoint's HTTP ``answer`` to the exchange of ``consumed`` means, in
    ``spec``'s dialect (its quirks); ``arrived`` is when it arrived. No I/O (logs only);
    the engine's unit tests drive it through their fake provider."""
    headers = answer.headers
    retry_after = classifying.rate_limit_retry_after(headers, now=arrived)
    skew = classifying.clock_skew(headers, arrived=arrived)
    if answer.redirect:
        log.warning("provider %s: the token endpoint answered HTTP %d (a redirect, not followed)",
                    spec.name, answer.status)
        return ExchangeResult(classifying.classify_token_answer(
            classifying.TokenAnswer(status=answer.status, retry_after=retry_after)), clock_skew=skew)
    payload = transport.decode_answer(answer)
    reading = read_token_answer(payload, now=arrived)
    if answer.problem is not None:
        log.info("provider %s: the token answer was not read whole (%s)", spec.name, answer.problem.value)
    for note in reading.notes:
        log.info("provider %s: token answer: %s", spec.name, note)
    classified = classifying.classify_token_answer(classifying.TokenAnswer(
        status=answer.status,
        error=reading.error,
        retry_after=retry_after,
        has_access_token=reading.tokens is not None,
        unreadable=payload is None,
        error_codes=reading.error_codes,
        rate_limited=classifying.is_rate_limited(answer.status, headers),
    ), quirks=spec.quirks)
    if classified.verdict is classifying.TokenVerdict.SUCCESS and reading.tokens is not None:
        tokens = reading.tokens
        if tokens.refresh_token is None:  # not rotated: the one we sent stays valid
            tokens = dataclasses.replace(tokens, refresh_token=consumed)
        return ExchangeResult(classified, tokens, reading.refresh_token, reading.notes, skew)
    salvaged = reading.refresh_token if classified.verdict is classifying.TokenVerdict.UNUSABLE_ANSWER else None
    return ExchangeResult(classified, None, salvaged, reading.notes, skew)

def _reveal(value: SecretStr | str) -> str:
    return value.reveal() if isinstance(value, SecretStr) else value
