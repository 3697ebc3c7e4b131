"""Token exchange and validation for one provider (requests-oauthlib underneath)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Callable
from typing import Any

import requests
from oauthlib.oauth2 import OAuth2Error
from oauthlib.oauth2.rfc6749.errors import MissingTokenError
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.model.tokens import TokenSet
from externalauth.oauth.transport import TrustingAdapter, proxies_for, session_for, ssl_context
from externalauth.policy import classifying
from externalauth.providers import ClientAuth

log = logging.getLogger(__name__)
Observer = Callable[[str, int], None]  # (endpoint, HTTP code or 0) -> None


@dataclasses.dataclass(frozen=True)
class ExchangeResult:
    classified: classifying.Classified
    tokens: TokenSet | None = None


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def tokens_from_response(token: dict[str, Any], *, now: dt.datetime) -> TokenSet:
    """Build a TokenSet from an oauthlib token dict. A response without a new refresh
    token yields ``refresh_token=None``: the stored one is kept."""
    expires_in = token.get("expires_in")
    rt_expires_in = token.get("refresh_token_expires_in")
    scope = token.get("scope")
    if isinstance(scope, list | tuple):
        scope = " ".join(str(s) for s in scope)

    def _after(seconds: Any) -> dt.datetime | None:
        try:
            value = float(seconds)
        except (TypeError, ValueError):
            return None
        return now + dt.timedelta(seconds=value) if value > 0 else None

    refresh = token.get("refresh_token")
    return TokenSet(
        access_token=SecretStr(str(token["access_token"])),
        refresh_token=SecretStr(str(refresh)) if refresh else None,
        token_type=str(token.get("token_type") or "bearer").lower(),
        expiry=_after(expires_in),
        refresh_token_expiry=_after(rt_expires_in),
        scope=str(scope) if scope else None,
    )


class ProviderClient:
    """Talks to one provider's token and validation endpoints. Thread-safe: a new
    OAuth2Session per call, one shared (thread-safe) connection pool."""

    def __init__(
        self,
        spec: ProviderSpec,
        client_secret: SecretStr | None,
        *,
        observe: Observer | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
    ) -> None:
        self.spec = spec
        self._secret = client_secret
        self._observe = observe or (lambda endpoint, code: None)
        self._timeout = (connect_timeout, read_timeout)
        self._adapter = TrustingAdapter(ssl_context(spec.ca_bundle), pool_size=max(4, spec.max_concurrent))
        self._proxies = {url: proxies_for(url) for url in (spec.token_url, spec.validate_url) if url}

    def __repr__(self) -> str:
        return f"ProviderClient({self.spec.name!r})"

    def close(self) -> None:
        self._adapter.close()

    # --- refresh -------------------------------------------------------------------
    def refresh(self, refresh_token: SecretStr, *, now: dt.datetime) -> ExchangeResult:
        seen: dict[str, Any] = {}

        def hook(resp: requests.Response) -> requests.Response:
            seen["status"] = resp.status_code
            seen["headers"] = _lower(resp.headers)
            self._observe("token", resp.status_code)
            return resp

        quirks = self.spec.quirks
        scope = list(self.spec.scopes) if quirks.send_scope_on_refresh and self.spec.scopes else None
        session = OAuth2Session(client_id=self.spec.client_id, scope=scope)
        session_for(self._adapter, session, proxies=self._proxies.get(self.spec.token_url))
        session.register_compliance_hook("refresh_token_response", hook)
        kwargs: dict[str, Any] = {
            "timeout": self._timeout,
            "headers": {
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8",
            },
        }
        if quirks.client_auth is ClientAuth.BASIC and self._secret:
            kwargs["auth"] = HTTPBasicAuth(self.spec.client_id, self._secret.reveal())
        else:
            kwargs["client_id"] = self.spec.client_id
            if self._secret:
                kwargs["client_secret"] = self._secret.reveal()
        try:
            token = session.refresh_token(
                self.spec.token_url, refresh_token=refresh_token.reveal(), **kwargs
            )
        except Warning as w:  # oauthlib: "Scope has changed" still carries the token
            token = getattr(w, "token", None)
            if not isinstance(token, dict) or not token.get("access_token"):
                return self._fail(seen, None)
        except MissingTokenError:
            return self._fail(seen, None)
        except OAuth2Error as e:
            return self._fail(seen, e.error or "unknown")
        except requests.exceptions.SSLError as e:
            if "status" not in seen:
                self._observe("token", 0)
            log.warning("provider %s: TLS verification failed (%s); check spec.caBundle",
                        self.spec.name, type(e).__name__)
            return ExchangeResult(classifying.Classified(
                classifying.TokenVerdict.TRANSIENT,
                "could not verify the token endpoint's TLS certificate (check spec.caBundle)"))
        except (requests.RequestException, ValueError, ssl.SSLError) as e:
            if "status" not in seen:
                self._observe("token", 0)
            log.info("provider %s: token endpoint failed: %s", self.spec.name, type(e).__name__)
            if "status" in seen:
                return self._fail(seen, None)
            return ExchangeResult(classifying.classify_token_answer(classifying.TokenAnswer(status=None)))
        answer = classifying.TokenAnswer(
            status=seen.get("status", 200), has_access_token=bool(token.get("access_token"))
        )
        classified = classifying.classify_token_answer(answer)
        if classified.verdict is not classifying.TokenVerdict.SUCCESS:
            return ExchangeResult(classified)
        return ExchangeResult(classified, tokens_from_response(dict(token), now=now))

    def _fail(self, seen: dict[str, Any], error: str | None) -> ExchangeResult:
        headers = seen.get("headers", {})
        answer = classifying.TokenAnswer(
            status=seen.get("status"), error=error, retry_after=_retry_after(headers)
        )
        return ExchangeResult(classifying.classify_token_answer(answer))

    # --- validation ------------------------------------------------------------------
    def validate(self, access_token: SecretStr, *, now: dt.datetime) -> classifying.ValidationOutcome:
        url = self.spec.validate_url
        assert url is not None
        session = session_for(self._adapter, proxies=self._proxies.get(url))
        try:
            resp = session.get(
                url,
                headers={"Authorization": f"Bearer {access_token.reveal()}",
                         "Accept": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            self._observe("validate", 0)
            log.info("provider %s: validation endpoint failed: %s", self.spec.name, type(e).__name__)
            return classifying.classify_validation(
                status=None, headers={}, body=None, account_fields=(), now=now
            )
        self._observe("validate", resp.status_code)
        try:
            body = resp.json()
        except ValueError:
            body = None
        return classifying.classify_validation(
            status=resp.status_code,
            headers=_lower(resp.headers),
            body=body,
            account_fields=self.spec.quirks.account_fields,
            now=now,
        )
