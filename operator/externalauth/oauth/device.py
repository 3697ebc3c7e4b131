"""RFC 8628 device authorization grant (used by ``externalauth login``). I/O.

``start()`` asks the provider for a device code and a user code; ``wait()`` polls
the token endpoint honouring ``interval`` and ``slow_down`` (+5 s) until the user
approved, denied, or the code expired. GitHub answers errors with HTTP 200, so the
body decides, not the status code. No token, device code or client secret ever
reaches a log line or an exception message.

:func:`next_step` is the pure part (what to do with one poll answer), kept apart
so that it can be tested as a table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from externalauth import transport
from externalauth.errors import PermanentError, TransientError
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.model.tokens import TokenSet, read_token_answer
from externalauth.policy.classifying import safe_code
from externalauth.providers import ClientAuth

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_INCREMENT = 5  # RFC 8628 §3.5: "increase the interval ... by 5 seconds"
DEFAULT_INTERVAL = 5
DEFAULT_EXPIRES_IN = 900
MAX_INTERVAL = 60  # seconds between polls, whatever the provider asks
MAX_EXPIRES_IN = 3600  # a device code is polled for at most an hour
JSON = {"Accept": "application/json"}


class DeviceFlowError(PermanentError):
    """The device flow ended without a token (denied, expired, rejected client...)."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclasses.dataclass(frozen=True)
class DeviceAuthorization:
    """What the provider answered to the device authorization request."""

    device_code: SecretStr
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


class Step(enum.StrEnum):
    DONE = "done"          # tokens arrived
    WAIT = "wait"          # poll again after ``interval``
    FAIL = "fail"          # terminal error


@dataclasses.dataclass(frozen=True)
class Decision:
    step: Step
    interval: float
    message: str = ""
    error: str | None = None


_TERMINAL = {
    "access_denied": "the sign-in request was denied",
    "expired_token": "the code expired before it was approved; run login again",
    "invalid_client": "the provider rejected the OAuth client "
                      "(ask your cluster admin to check the ExternalAuthProvider)",
    "incorrect_client_credentials": "the provider rejected the OAuth client credentials (ask your cluster admin)",
    "unauthorized_client": "the OAuth client is not allowed to use the device flow (enable it at the provider)",
    "device_flow_disabled": "the device flow is disabled for this OAuth application (enable it at the provider)",
    "unsupported_grant_type": "the provider does not support the device flow",
    "incorrect_device_code": "the provider did not recognise the device code; run login again",
    "invalid_grant": "the provider did not accept the device code; run login again",
    "invalid_request": "the provider refused the request as malformed",
    "invalid_scope": "the provider refused the requested scopes",
}


def next_step(body: dict[str, Any], *, interval: float, server_interval: Any = None) -> Decision:
    """Decide what one poll answer means. Pure.

    ``body`` is the decoded JSON answer; ``interval`` the current poll interval.
    """
    if isinstance(body.get("access_token"), str) and body["access_token"]:
        return Decision(Step.DONE, interval)
    error = body.get("error")
    if not isinstance(error, str) or not error:
        return Decision(Step.FAIL, interval, "the provider answered without a token or an error")
    if error == "authorization_pending":
        return Decision(Step.WAIT, interval)
    if error == "slow_down":
        bumped = interval + SLOW_DOWN_INCREMENT
        # GitHub also sends the new interval; never go below RFC 8628's +5 s, nor above a minute.
        bumped = max(bumped, _bounded(server_interval, default=0, cap=MAX_INTERVAL))
        return Decision(Step.WAIT, min(bumped, MAX_INTERVAL))
    code = safe_code(error)  # provider text: only an RFC-style code reaches the terminal
    message = _TERMINAL.get(error, "the provider ended the sign-in")
    return Decision(Step.FAIL, interval, f"{message} ({code})", error=code)


def _bounded(value: Any, *, default: int, cap: int) -> int:
    """A positive whole number of seconds from a provider's answer, at most ``cap``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    if math.isnan(number) or number <= 0:
        return default
    return int(min(number, cap))


class DeviceFlow:
    """One device-flow sign-in against one provider."""

    def __init__(
        self,
        spec: ProviderSpec,
        *,
        client_secret: SecretStr | None = None,
        pool: transport.Pool | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 30.0,
    ) -> None:
        if not spec.device_url:
            raise PermanentError(
                f"ExternalAuthProvider {spec.name} has no device authorization endpoint "
                "(spec.deviceAuthorizationURL)"
            )
        self.spec = spec
        self.client_secret = client_secret
        # Direct or through the environment's proxy (HTTPS_PROXY, NO_PROXY), trust kept either way.
        self.pool = pool or transport.Pool(transport.provider_context(spec.ca_bundle), maxsize=2)
        self.sleep = sleep
        self.clock = clock
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"DeviceFlow(provider={self.spec.name!r}, client_secret=[secure])"

    # --- HTTP --------------------------------------------------------------------
    def _post(self, url: str, data: dict[str, str], what: str) -> tuple[int, dict[str, Any]]:
        auth = None
        fields = dict(data)
        fields["client_id"] = self.spec.client_id
        if self.client_secret:
            if self.spec.quirks.client_auth is ClientAuth.BASIC:
                auth = (self.spec.client_id, self.client_secret.reveal())
            else:
                fields["client_secret"] = self.client_secret.reveal()
        try:
            answer = transport.fetch(self.pool, "POST", url, form=fields, headers=JSON, auth=auth,
                                     deadline=self.timeout, connect_timeout=min(10.0, self.timeout),
                                     read_timeout=self.timeout)
        except transport.NoAnswer as e:
            raise self._no_answer(e, what) from None
        if answer.redirect:
            raise PermanentError(
                f"the provider's {what} endpoint answered HTTP {answer.status}, a redirect, which is never "
                "followed (check the URLs of the ExternalAuthProvider)"
            )
        if answer.problem is transport.BodyProblem.DEADLINE:
            raise TransientError(f"the provider's {what} endpoint did not answer within {self.timeout:g}s")
        body = transport.decode_answer(answer)
        if not isinstance(body, dict):
            if answer.status >= 500 or answer.status == 429:
                raise TransientError(f"the provider's {what} endpoint answered HTTP {answer.status}")
            raise PermanentError(
                f"the provider's {what} endpoint answered HTTP {answer.status} without a JSON body"
            )
        return answer.status, body

    def _no_answer(self, e: transport.NoAnswer, what: str) -> Exception:
        if e.kind is transport.NoAnswerKind.TLS:
            return PermanentError(
                f"TLS verification failed for the provider's {what} endpoint "
                "(check spec.caBundle of the ExternalAuthProvider)"
            )
        if e.kind is transport.NoAnswerKind.REFUSED_URL:
            return PermanentError(f"the provider's {what} URL is not usable over https")
        if e.kind is transport.NoAnswerKind.DEADLINE:
            return TransientError(f"the provider's {what} endpoint did not answer within {self.timeout:g}s")
        return TransientError(f"cannot reach the provider's {what} endpoint ({e.cause})")

    # --- the flow ----------------------------------------------------------------
    def start(self) -> DeviceAuthorization:
        """Ask for a device code and user code (RFC 8628 §3.1)."""
        assert self.spec.device_url is not None
        data = {"scope": " ".join(self.spec.scopes)} if self.spec.scopes else {}
        status, body = self._post(self.spec.device_url, data, "device authorization")
        error = body.get("error")
        if isinstance(error, str) and error:
            decision = next_step(body, interval=DEFAULT_INTERVAL)
            raise DeviceFlowError(f"device authorization failed: {decision.message}", error=decision.error)
        device_code = body.get("device_code")
        user_code = body.get("user_code")
        uri = body.get("verification_uri") or body.get("verification_url")  # Google says _url
        if not (isinstance(device_code, str) and isinstance(user_code, str) and isinstance(uri, str)):
            raise PermanentError(
                f"the provider's device authorization answer (HTTP {status}) lacks "
                "device_code, user_code or verification_uri"
            )
        complete = body.get("verification_uri_complete")
        return DeviceAuthorization(
            device_code=SecretStr(device_code),
            user_code=user_code,
            verification_uri=uri,
            verification_uri_complete=complete if isinstance(complete, str) else None,
            expires_in=_bounded(body.get("expires_in"), default=DEFAULT_EXPIRES_IN, cap=MAX_EXPIRES_IN),
            interval=_bounded(body.get("interval"), default=DEFAULT_INTERVAL, cap=MAX_INTERVAL),
        )

    def wait(
        self,
        authorization: DeviceAuthorization,
        *,
        on_poll: Callable[[], None] | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> TokenSet:
        """Poll until the user approved (tokens), or raise :class:`DeviceFlowError`."""
        interval = float(authorization.interval)
        deadline = self.clock() + authorization.expires_in
        data = {"grant_type": DEVICE_GRANT, "device_code": authorization.device_code.reveal()}
        transient_failures = 0
        while True:
            self.sleep(interval)
            if self.clock() > deadline:
                raise DeviceFlowError(
                    "the code expired before it was approved; run login again", error="expired_token"
                )
            if on_poll is not None:
                on_poll()
            try:
                _, body = self._post(self.spec.token_url, data, "token")
            except TransientError:
                transient_failures += 1
                if transient_failures >= 5:
                    raise
                continue
            transient_failures = 0
            decision = next_step(body, interval=interval, server_interval=body.get("interval"))
            if decision.step is Step.DONE:
                tokens = read_token_answer(body, now=now()).tokens
                if tokens is None:
                    raise PermanentError("the provider's token answer could not be read; run login again")
                return tokens
            if decision.step is Step.FAIL:
                raise DeviceFlowError(f"sign-in failed: {decision.message}", error=decision.error)
            interval = decision.interval
