"""Token exchange and validation for one provider. I/O.

The refresh request body is prepared by oauthlib (RFC 6749 §6); the call itself goes
through :func:`transport.fetch`: no redirects followed, a capped body, an overall
deadline. The answer is read by :func:`tokens.read_token_answer`, which never
raises: nothing after the provider's HTTP answer may raise out of
:meth:`ProviderClient.refresh`, because the refresh token may already be spent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

from oauthlib.oauth2 import WebApplicationClient
from requests.auth import HTTPBasicAuth

from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.model.tokens import TokenSet, read_token_answer
from externalauth.oauth import transport
from externalauth.oauth.transport import TrustingAdapter, proxies_for, session_for, ssl_context
from externalauth.policy import classifying
from externalauth.providers import ClientAuth

log = logging.getLogger(__name__)
Observer = Callable[[str, int], None]  # (endpoint, HTTP code or 0) -> None
DEFAULT_DEADLINE = 30.0  # seconds for a whole provider call: well inside the 60 s claim lease


@dataclasses.dataclass(frozen=True)
class ExchangeResult:
    """What a refresh came to.

    ``tokens``: only with SUCCESS; its refresh token is the new one, or the one sent when
    the provider did not rotate it. ``refresh_token``: the new refresh token the answer
    carried, if usable; with UNUSABLE_ANSWER it is all that could be salvaged (the old
    one may be spent: store it if you can). ``notes``: what in the answer was not
    believed (no values), for logs or an event."""

    classified: classifying.Classified
    tokens: TokenSet | None = None
    refresh_token: SecretStr | None = None
    notes: tuple[str, ...] = ()


_TLS_MESSAGE = "could not verify the token endpoint's TLS certificate (check spec.caBundle)"


class ProviderClient:
    """Talks to one provider's token and validation endpoints. Thread-safe: one shared
    (thread-safe) connection pool, a new session per call.

    ``connect_timeout`` and ``read_timeout`` bound each connect and each read;
    ``deadline`` bounds a whole call (token or validation), whatever the server does.
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
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._adapter = TrustingAdapter(ssl_context(spec.ca_bundle), pool_size=max(4, spec.max_concurrent))
        self._proxies = {url: proxies_for(url) for url in (spec.token_url, spec.validate_url) if url}

    def __repr__(self) -> str:
        return f"ProviderClient({self.spec.name!r})"

    def close(self) -> None:
        self._adapter.close()

    def _fetch(self, method: str, url: str, **kwargs: Any) -> transport.Answer:
        session = session_for(self._adapter, proxies=self._proxies.get(url))
        return transport.fetch(session, method, url, deadline=self._deadline,
                               connect_timeout=self._connect_timeout, read_timeout=self._read_timeout, **kwargs)

    # --- refresh -------------------------------------------------------------------
    def _refresh_request(self, refresh_token: SecretStr) -> dict[str, Any]:
        quirks = self.spec.quirks
        scope = list(self.spec.scopes) if quirks.send_scope_on_refresh and self.spec.scopes else None
        extra: dict[str, str] = {}
        auth = None
        if quirks.client_auth is ClientAuth.BASIC and self._secret:
            auth = HTTPBasicAuth(self.spec.client_id, self._secret.reveal())
        else:
            extra["client_id"] = self.spec.client_id
            if self._secret:
                extra["client_secret"] = self._secret.reveal()
        body = WebApplicationClient(self.spec.client_id).prepare_refresh_body(
            refresh_token=refresh_token.reveal(), scope=scope, **extra)
        return {
            "data": dict(urllib.parse.parse_qsl(body, keep_blank_values=True)),
            "auth": auth,
            "headers": {"Accept": "application/json",
                        "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
        }

    def refresh(self, refresh_token: SecretStr, *, now: dt.datetime) -> ExchangeResult:
        """Exchange ``refresh_token``. Never raises: every outcome is an ExchangeResult."""
        try:
            request = self._refresh_request(refresh_token)
        except Exception as e:  # nothing was sent: the refresh token is intact
            log.warning("provider %s: cannot prepare the token request (%s)", self.spec.name, type(e).__name__)
            return ExchangeResult(classifying.Classified(
                classifying.TokenVerdict.TRANSIENT, "the token request could not be prepared"))
        try:
            answer = self._fetch("POST", self.spec.token_url, **request)
        except transport.NoAnswer as e:
            self._observe("token", 0)
            return ExchangeResult(self._no_answer(e))
        except Exception as e:  # a bug below us; the request may have been sent
            self._observe("token", 0)
            log.warning("provider %s: token call failed unexpectedly (%s)", self.spec.name, type(e).__name__)
            return ExchangeResult(classifying.classify_token_answer(classifying.TokenAnswer(status=None)))
        self._observe("token", answer.status)
        try:
            return self._read(answer, consumed=refresh_token, now=now)
        except Exception as e:  # never: read_token_answer does not raise; but the token may be spent
            log.warning("provider %s: the token answer could not be read (%s)", self.spec.name, type(e).__name__)
            unusable = classifying.TokenAnswer(status=answer.status, unreadable=True)
            return ExchangeResult(classifying.classify_token_answer(unusable)
                                  if 200 <= answer.status < 300 else
                                  classifying.Classified(classifying.TokenVerdict.TRANSIENT,
                                                         f"the token endpoint answered HTTP {answer.status}"))

    def _no_answer(self, e: transport.NoAnswer) -> classifying.Classified:
        if e.kind is transport.NoAnswerKind.TLS:
            log.warning("provider %s: TLS verification failed (%s); check spec.caBundle", self.spec.name, e.cause)
            return classifying.Classified(classifying.TokenVerdict.TRANSIENT, _TLS_MESSAGE)
        log.info("provider %s: token endpoint failed: %s (%s)", self.spec.name, e.kind.value, e.cause)
        if e.kind is transport.NoAnswerKind.DEADLINE:
            return classifying.Classified(
                classifying.TokenVerdict.TRANSIENT,
                f"the token endpoint did not answer within {self._deadline:g}s")
        return classifying.classify_token_answer(classifying.TokenAnswer(status=None))

    def _read(self, answer: transport.Answer, *, consumed: SecretStr, now: dt.datetime) -> ExchangeResult:
        retry_after = classifying.rate_limit_retry_after(answer.headers, now=now)
        if answer.redirect:
            log.warning("provider %s: the token endpoint answered HTTP %d (a redirect, not followed)",
                        self.spec.name, answer.status)
            return ExchangeResult(classifying.classify_token_answer(
                classifying.TokenAnswer(status=answer.status, retry_after=retry_after)))
        payload = transport.decode_answer(answer)
        reading = read_token_answer(payload, now=now)
        if answer.problem is not None:
            log.info("provider %s: the token answer was not read whole (%s)", self.spec.name, answer.problem.value)
        for note in reading.notes:
            log.info("provider %s: token answer: %s", self.spec.name, note)
        classified = classifying.classify_token_answer(classifying.TokenAnswer(
            status=answer.status,
            error=reading.error,
            retry_after=retry_after,
            has_access_token=reading.tokens is not None,
            unreadable=payload is None,
        ))
        if classified.verdict is classifying.TokenVerdict.SUCCESS and reading.tokens is not None:
            tokens = reading.tokens
            if tokens.refresh_token is None:  # not rotated: the one we sent stays valid
                tokens = dataclasses.replace(tokens, refresh_token=consumed)
            return ExchangeResult(classified, tokens, reading.refresh_token, reading.notes)
        salvaged = reading.refresh_token if classified.verdict is classifying.TokenVerdict.UNUSABLE_ANSWER else None
        return ExchangeResult(classified, None, salvaged, reading.notes)

    # --- validation ------------------------------------------------------------------
    def validate(self, access_token: SecretStr, *, now: dt.datetime) -> classifying.ValidationOutcome:
        """Ask the validation endpoint about ``access_token``. Never raises."""
        url = self.spec.validate_url
        assert url is not None
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
        if answer.problem is transport.BodyProblem.DEADLINE:
            log.info("provider %s: validation endpoint failed: deadline", self.spec.name)
            return classifying.ValidationOutcome(
                classifying.ValidationVerdict.UNREACHABLE,
                f"the validation endpoint did not answer within {self._deadline:g}s")
        return classifying.classify_validation(
            status=answer.status,
            headers=answer.headers,
            body=transport.decode_answer(answer),
            account_fields=self.spec.quirks.account_fields,
            now=now,
        )
