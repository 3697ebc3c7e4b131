"""The simulator's browser sign-in: the authorization endpoint and the ``authorization_code``
grant, with PKCE (RFC 6749 §4.1, RFC 7636 S256) and loopback redirects (RFC 8252). No
network I/O: ``serving`` routes requests here.

- ``GET /login/oauth/authorize?response_type=code&client_id=..&redirect_uri=..&state=..
  &code_challenge=..&code_challenge_method=S256[&scope=..]`` shows a consent form. With a
  ``login`` field (in the query, or the form POSTed back) the test user is signed in and
  consent is given at once: ``302`` to ``redirect_uri?code=..&state=..``; with ``deny`` as
  well, ``302`` with ``error=access_denied``. A redirect URI that is not a loopback
  ``http://127.0.0.1:PORT/...`` (or ``[::1]``) gets a 400 page, never a redirect; PKCE is
  required, and only S256.
- ``POST /login/oauth/access_token`` with ``grant_type=authorization_code``: the code (single
  use, 10 minutes), the same ``redirect_uri`` and a ``code_verifier`` whose S256 digest is
  the challenge. A public client sends no secret; a secret that is sent must be right.
  Errors in the provider's dialect (github mode: HTTP 200 ``bad_verification_code``;
  generic: 400 ``invalid_grant``).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from providersim.provider import Mode, Provider, Reply, Request

AUTHORIZATION_CODE = "authorization_code"
CODE_LIFETIME = 600
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_LOOPBACK_HOSTS = {"127.0.0.1", "::1"}


def authorize_path(token_path: str) -> str:
    """The authorization endpoint beside a token endpoint: ``/login/oauth/authorize`` for
    ``/login/oauth/access_token``."""
    return token_path.rsplit("/", 1)[0] + "/authorize"


@dataclasses.dataclass(frozen=True)
class Page:
    """An answer for a browser: HTML or a redirect."""

    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    login: str
    expires_at: float
    used: bool = False


@dataclasses.dataclass(frozen=True)
class SignInStats:
    codes_issued: int
    codes_redeemed: int
    code_reuse_attempts: int
    pkce_failures: int
    redirect_uris: tuple[str, ...]  # every redirect URI a code was sent to, in order
    exchanges_with_client_secret: int  # code exchanges that carried a client secret (a public client sends none)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def is_loopback_redirect(uri: str) -> bool:
    """``http://127.0.0.1:PORT/...`` or ``http://[::1]:PORT/...`` (RFC 8252 §7.3), any port."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS and port is not None \
        and not parts.fragment and not parts.username and not parts.password


def _with_query(uri: str, fields: Mapping[str, str]) -> str:
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(dict(fields))) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class Authorizer:
    """Thread-safe authorization codes of one simulated provider."""

    def __init__(self, provider: Provider, *, path: str, code_lifetime: int = CODE_LIFETIME) -> None:
        self.provider = provider
        self.path = path
        self.code_lifetime = code_lifetime
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._issued = 0
        self._redeemed = 0
        self._reuse = 0
        self._pkce_failures = 0
        self._redirects: list[str] = []
        self._with_secret = 0

    @property
    def stats(self) -> SignInStats:
        with self._lock:
            return SignInStats(self._issued, self._redeemed, self._reuse, self._pkce_failures,
                               tuple(self._redirects), self._with_secret)

    def _known_client(self, client_id: str) -> bool:
        # The Provider keeps its clients privately; this module lives beside it.
        return client_id in self.provider._clients

    # ------------------------------------------------------------ the browser
    def authorize(self, method: str, params: Mapping[str, str]) -> Page:
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        if not self._known_client(client_id):
            return _page(404, "Unknown application", "No OAuth application has this client_id.")
        if not is_loopback_redirect(redirect_uri):
            return _page(400, "Bad redirect_uri",
                         "The redirect_uri must be a loopback http://127.0.0.1:PORT/ address.")
        state = params.get("state")

        def back(fields: dict[str, str]) -> Page:
            if state is not None:
                fields["state"] = state
            return Page(302, b"", headers={"location": _with_query(redirect_uri, fields)})

        if params.get("response_type") != "code":
            return back({"error": "unsupported_response_type"})
        if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
            return back({"error": "invalid_request",
                         "error_description": "PKCE is required: code_challenge with method S256"})
        login = params.get("login")
        if not login:
            return self._consent_form(params)
        if "deny" in params:
            return back({"error": "access_denied", "error_description": "The user denied the request."})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = _Code(client_id=client_id, redirect_uri=redirect_uri,
                                      challenge=params["code_challenge"], scope=params.get("scope", ""),
                                      login=login, expires_at=self.provider.clock() + self.code_lifetime)
            self._issued += 1
            self._redirects.append(redirect_uri)
        return back({"code": code})

    def _consent_form(self, params: Mapping[str, str]) -> Page:
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in params.items() if k not in ("login", "deny"))
        body = (f'<html><body><h1>providersim: authorize {html.escape(params.get("client_id", ""))}</h1>'
                f'<form method="post" action="{html.escape(self.path)}">{hidden}'
                '<label>login <input name="login" value="alice"></label>'
                '<button type="submit">Authorize</button>'
                '<button type="submit" name="deny" value="1">Deny</button></form></body></html>')
        return Page(200, body.encode())

    # ------------------------------------------------------------ the token endpoint
    def token(self, req: Request) -> Reply:
        p = req.params
        client_id = p.get("client_id", "")
        secret = p.get("client_secret")
        basic = req.headers.get("authorization", "").lower().startswith("basic ")
        with self._lock:
            self._with_secret += secret is not None or basic
        with self.provider._lock:  # the same lock as every other grant
            if not self._known_client(client_id):
                return self._error("invalid_client", status=401)
            expected = self.provider._clients[client_id]
            if secret is not None and (expected is None or not secrets.compare_digest(secret, expected)):
                return self._error("invalid_client", status=401)
        with self._lock:
            entry = self._codes.get(p.get("code", ""))
            if entry is None or entry.client_id != client_id:
                return self._bad_code()
            if entry.used:
                self._reuse += 1
                return self._bad_code()
            if entry.expires_at <= self.provider.clock():
                return self._bad_code()
            if p.get("redirect_uri") != entry.redirect_uri:
                return self._error("redirect_uri_mismatch" if self.provider.mode is Mode.GITHUB
                                   else "invalid_grant")
            verifier = p.get("code_verifier", "")
            if not _VERIFIER.match(verifier) or not secrets.compare_digest(_s256(verifier), entry.challenge):
                self._pkce_failures += 1
                entry.used = True  # a failed verifier burns the code (no guessing)
                return self._error("invalid_grant")
            entry.used = True
            self._redeemed += 1
        grant = self.provider.issue_grant(client_id, login=entry.login, scope=entry.scope)
        body: dict[str, Any] = {"access_token": grant.access_token, "token_type": "bearer", "scope": grant.scope}
        if grant.expires_in is not None:
            body["expires_in"] = grant.expires_in
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
            if grant.refresh_token_expires_in is not None:
                body["refresh_token_expires_in"] = grant.refresh_token_expires_in
        return Reply(200, body, negotiable=True)

    def _bad_code(self) -> Reply:
        return self._error("bad_verification_code" if self.provider.mode is Mode.GITHUB else "invalid_grant")

    def _error(self, error: str, *, status: int = 400) -> Reply:
        # GitHub answers token errors with HTTP 200 (the body decides).
        code = 200 if self.provider.mode is Mode.GITHUB else status
        return Reply(code, {"error": error, "error_description": "providersim: " + error.replace("_", " ")},
                     negotiable=True)


def _page(status: int, title: str, text: str) -> Page:
    return Page(status, f"<html><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
                .encode())
