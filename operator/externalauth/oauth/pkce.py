"""Authorization code + PKCE (RFC 6749 §4.1, RFC 7636 S256) for a public client on a loopback
redirect (RFC 8252), used by ``externalauth login`` where the provider has no device
endpoint.

The pure part builds and reads what crosses the browser: the verifier and its S256
challenge (:func:`verifier_from`, :func:`challenge`), the authorization URL
(:func:`authorization_endpoint`, :func:`authorization_url`) and the redirect's query
(:func:`read_callback`). The I/O part, :func:`exchange_code`, is one POST to the token
endpoint through the hardened transport (verified TLS, no redirects followed, bounded
body and deadline). The client secret is never needed nor sent: PKCE stands in for it.
No code, verifier or token ever reaches a log line or an exception message.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from externalauth import transport
from externalauth.errors import InvalidInputError, PermanentError, TransientError
from externalauth.model.secure import SecretStr
from externalauth.model.specs import ProviderSpec
from externalauth.model.tokens import TokenSet, read_token_answer
from externalauth.policy.classifying import ValidationOutcome, ValidationVerdict, classify_validation, safe_code
from externalauth.providers import ProviderType

log = logging.getLogger(__name__)

AUTHORIZATION_CODE = "authorization_code"
#: The spec field naming the authorization endpoint (contract §1).
AUTHORIZATION_URL_FIELD = "authorizationURL"
#: Random bytes behind a verifier: 64 bytes → 86 characters (RFC 7636 §4.1: 43 to 128).
VERIFIER_BYTES = 64
STATE_BYTES = 32
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
JSON = {"Accept": "application/json"}


class SignInError(PermanentError):
    """The browser sign-in ended without a token; ``error`` is the safe OAuth code, if any."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


# --- pure: PKCE ----------------------------------------------------------------------------
def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verifier_from(random: bytes) -> SecretStr:
    """A code verifier from ``random`` (at least 32 bytes): base64url without padding, so
    only unreserved characters (RFC 7636 §4.1)."""
    if len(random) < 32:
        raise ValueError("a code verifier needs at least 32 random bytes")
    return SecretStr(_b64url(random[:96]))


def challenge(verifier: SecretStr) -> str:
    """The S256 code challenge: BASE64URL(SHA256(ASCII(verifier))) (RFC 7636 §4.2)."""
    value = verifier.reveal()
    if not _VERIFIER.match(value):
        raise ValueError("a code verifier is 43 to 128 unreserved characters")
    return _b64url(hashlib.sha256(value.encode("ascii")).digest())


def state_from(random: bytes) -> str:
    return _b64url(random)


# --- pure: where the browser goes ------------------------------------------------------------
def default_authorization_url(kind: ProviderType, token_url: str) -> str | None:
    """The authorization endpoint a provider type serves beside its token endpoint: every
    type but ``generic`` names it ``authorize`` in the same folder (GitHub and Gitea
    ``/login/oauth/authorize``, GitLab ``/oauth/authorize``, Bitbucket
    ``/site/oauth2/authorize``, Entra ``/oauth2/v2.0/authorize``). A generic server must
    say (``spec.authorizationURL``)."""
    if kind is ProviderType.GENERIC:
        return None
    parts = urllib.parse.urlsplit(token_url)
    folder = parts.path.rsplit("/", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"{folder}/authorize", "", ""))


def authorization_endpoint(spec: ProviderSpec, raw_spec: Mapping[str, Any]) -> str:
    """``spec.authorizationURL`` when given (https only), else the type's default; a
    :class:`InvalidInputError` naming the field when there is neither."""
    explicit = raw_spec.get(AUTHORIZATION_URL_FIELD)
    if explicit is not None:
        if not isinstance(explicit, str) or urllib.parse.urlsplit(explicit).scheme != "https" \
                or not urllib.parse.urlsplit(explicit).hostname:
            raise InvalidInputError(f"spec.{AUTHORIZATION_URL_FIELD} must be an https:// URL")
        return explicit
    default = default_authorization_url(spec.type, spec.token_url)
    if default is None:
        raise InvalidInputError(
            f"ExternalAuthProvider {spec.name} has neither a device endpoint (spec.deviceAuthorizationURL) "
            f"nor an authorization endpoint (spec.{AUTHORIZATION_URL_FIELD}): there is no way to sign in")
    return default


def authorization_url(endpoint: str, *, client_id: str, redirect_uri: str, scopes: tuple[str, ...],
                      state: str, code_challenge: str) -> str:
    """The URL the browser opens (RFC 6749 §4.1.1 + RFC 7636 §4.3); a query the endpoint
    already has (an Entra tenant hint, say) is kept."""
    parts = urllib.parse.urlsplit(endpoint)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [("response_type", "code"), ("client_id", client_id), ("redirect_uri", redirect_uri)]
    if scopes:
        query.append(("scope", " ".join(scopes)))
    query += [("state", state), ("code_challenge", code_challenge), ("code_challenge_method", "S256")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path,
                                    urllib.parse.urlencode(query, quote_via=urllib.parse.quote), ""))


# --- pure: what comes back --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Callback:
    """The redirect's verdict: a code, or the reason there is none (a safe message)."""

    code: SecretStr | None
    error: str | None = None  # the safe OAuth error code ("access_denied"), or "state_mismatch"
    message: str = ""


_CALLBACK_ERRORS = {
    "access_denied": "the sign-in was denied in the browser",
    "invalid_scope": "the provider refused the requested scopes",
    "unauthorized_client": "the OAuth client may not use the authorization code flow (ask your cluster admin)",
    "unsupported_response_type": "the provider does not offer the authorization code flow to this client",
    "invalid_request": "the provider refused the sign-in request (check the ExternalAuthProvider's "
                       "redirect settings: a loopback redirect http://127.0.0.1/callback on any port)",
    "server_error": "the provider failed during the sign-in; try again",
    "temporarily_unavailable": "the provider is temporarily unavailable; try again",
}


def read_callback(query: str, *, state: str) -> Callback:
    """Read the redirect's query (RFC 6749 §4.1.2): the ``state`` must be ours, exactly once,
    before a code or an error is believed (a forged redirect is refused)."""
    fields: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        fields.setdefault(key, []).append(value)
    states = fields.get("state", [])
    if states != [state]:
        return Callback(None, "state_mismatch",
                        "the browser came back with a different sign-in state (an old tab, or a forged "
                        "redirect); nothing was accepted")
    errors = fields.get("error", [])
    if errors:
        code = safe_code(errors[0])
        return Callback(None, code, f"{_CALLBACK_ERRORS.get(errors[0], 'the provider ended the sign-in')} ({code})")
    codes = fields.get("code", [])
    if len(codes) != 1 or not codes[0]:
        return Callback(None, "invalid_request", "the browser came back without an authorization code")
    return Callback(SecretStr(codes[0]))


_EXCHANGE_ERRORS = {
    "invalid_grant": "the provider did not accept the authorization code (expired or already used); run login again",
    "bad_verification_code": "the provider did not accept the authorization code (expired or already used); "
                             "run login again",
    "invalid_client": "the provider rejected the OAuth client for this sign-in (ask your cluster admin: the "
                      "application must allow public clients with PKCE)",
    "incorrect_client_credentials": "the provider asked for the client secret: the OAuth application is not a "
                                    "public client (ask your cluster admin to allow PKCE without a secret)",
    "unauthorized_client": "the OAuth client may not use the authorization code flow (ask your cluster admin)",
    "unsupported_grant_type": "the provider does not accept authorization codes from this client",
    "invalid_request": "the provider refused the code exchange as malformed",
    "redirect_uri_mismatch": "the provider did not accept the loopback redirect URI (ask your cluster admin to "
                             "allow http://127.0.0.1/callback on any port)",
}


# --- I/O: the code exchange -------------------------------------------------------------------
def exchange_code(spec: ProviderSpec, *, code: SecretStr, verifier: SecretStr, redirect_uri: str,
                  pool: transport.Pool, now: dt.datetime, timeout: float = 30.0) -> TokenSet:
    """POST the code and the verifier to the token endpoint (RFC 7636 §4.5) as a public
    client (``client_id`` only); the tokens, or :class:`SignInError`/:class:`TransientError`."""
    fields = {
        "grant_type": AUTHORIZATION_CODE,
        "code": code.reveal(),
        "redirect_uri": redirect_uri,
        "client_id": spec.client_id,
        "code_verifier": verifier.reveal(),
    }
    try:
        answer = transport.fetch(pool, "POST", spec.token_url, form=fields, headers=JSON, deadline=timeout,
                                 connect_timeout=min(10.0, timeout), read_timeout=timeout)
    except transport.NoAnswer as e:
        raise _no_answer(e, timeout) from None
    if answer.redirect:
        raise PermanentError(f"the provider's token endpoint answered HTTP {answer.status}, a redirect, which is "
                             "never followed (check spec.tokenURL of the ExternalAuthProvider)")
    if answer.problem is not None:
        raise TransientError(f"the provider's token endpoint answer could not be read ({answer.problem.value})")
    body = transport.decode_answer(answer)
    if not isinstance(body, dict):
        if answer.status >= 500 or answer.status == 429:
            raise TransientError(f"the provider's token endpoint answered HTTP {answer.status}")
        raise PermanentError(f"the provider's token endpoint answered HTTP {answer.status} without a JSON body")
    reading = read_token_answer(body, now=now)
    if reading.tokens is not None and reading.error is None and answer.status < 300:
        return reading.tokens
    error = reading.error or ""
    code_name = safe_code(error) if error else f"HTTP {answer.status}"
    what = _EXCHANGE_ERRORS.get(error, "the provider did not hand out a token for the authorization code")
    raise SignInError(f"sign-in failed: {what} ({code_name})", error=safe_code(error) if error else None)


def whoami(spec: ProviderSpec, *, access_token: SecretStr, pool: transport.Pool,
           now: dt.datetime, timeout: float = 30.0) -> ValidationOutcome:
    """Ask the provider's validation endpoint whose ``access_token`` is (``login`` shows the
    account before it writes anything: security review finding 9). Never raises."""
    if spec.validate_url is None:
        return ValidationOutcome(ValidationVerdict.UNREACHABLE, "the provider has no validation endpoint")
    try:
        answer = transport.fetch(pool, "GET", spec.validate_url, deadline=timeout,
                                 connect_timeout=min(10.0, timeout), read_timeout=timeout,
                                 headers={"Authorization": f"Bearer {access_token.reveal()}",
                                          "Accept": "application/json"})
    except transport.NoAnswer as e:
        return ValidationOutcome(ValidationVerdict.UNREACHABLE,
                                 f"the validation endpoint did not answer ({e.kind.value})")
    if answer.problem is not None:
        return ValidationOutcome(ValidationVerdict.UNREACHABLE, "the validation endpoint's answer could not be read")
    return classify_validation(status=answer.status, headers=answer.headers, body=transport.decode_answer(answer),
                               account_fields=spec.quirks.account_fields, now=now,
                               invalid_statuses=spec.quirks.invalid_validation_statuses)


def _no_answer(e: transport.NoAnswer, timeout: float) -> Exception:
    if e.kind is transport.NoAnswerKind.TLS:
        return PermanentError("TLS verification failed for the provider's token endpoint "
                              "(check spec.caBundle of the ExternalAuthProvider)")
    if e.kind is transport.NoAnswerKind.REFUSED_URL:
        return PermanentError("the provider's token URL is not usable over https")
    if e.kind is transport.NoAnswerKind.DEADLINE:
        return TransientError(f"the provider's token endpoint did not answer within {timeout:g}s")
    return TransientError(f"cannot reach the provider's token endpoint ({e.cause})")
