"""How each simulated provider speaks (no I/O): its paths, its error dialect, its account
answers and its rate-limit headers. ``Provider`` keeps the state and asks its
:class:`Dialect` how to say things.

Every dialect is taken from the provider's documentation or source; the source is
named in each class docstring (and the operator's ``externalauth.providers`` quirks
read the same dialects).
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import re
import secrets
import string
from collections.abc import Mapping
from typing import Any

GITHUB_DOCS = "https://docs.github.com/apps/creating-github-apps"
ENTRA_ERROR_URI = "https://login.microsoftonline.com/error?code="
AZURE_DEVOPS_RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"


class Mode(enum.StrEnum):
    """The simulator's profiles: one per operator provider type (``github``, ``generic``...)."""

    GITHUB = "github"
    GENERIC = "generic"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET_CLOUD = "bitbucket-cloud"
    AZURE_DEVOPS_ENTRA = "azure-devops-entra"


class DeadWhy(enum.StrEnum):
    """Why a refresh token cannot be exchanged (dialects word these differently)."""

    UNKNOWN = "unknown"  # never issued, or garbage
    OTHER_CLIENT = "other_client"  # issued to another client
    SPENT = "spent"  # already exchanged (rotation)
    REVOKED = "revoked"  # the grant was revoked
    EXPIRED = "expired"  # the refresh token's lifetime is over


class LimitKind(enum.StrEnum):
    PRIMARY = "primary"  # the budget is spent (the provider's own way of saying so)
    SECONDARY = "secondary"  # GitHub's abuse limit: 403 with Retry-After
    TOO_MANY = "429"


@dataclasses.dataclass
class Reply:
    """What to answer: a status, a payload (JSON object, or text for ``text``) and extra
    headers. ``negotiable`` replies are form-encoded in github mode unless the client sent
    ``Accept: application/json`` (as GitHub does)."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    negotiable: bool = False
    text: str | None = None  # an HTML answer instead of JSON


@dataclasses.dataclass(frozen=True)
class Account:
    login: str
    user_id: int
    client_id: str
    scope: str
    expires_in: int | None
    created_at: int


class Route(enum.StrEnum):
    TOKEN = "token"
    VALIDATE = "validate"
    DEVICE_CODE = "device_code"
    DEVICE_PAGE = "device_page"
    DISCOVERY = "discovery"
    REVOKE = "revoke"


def _token(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


class Dialect:
    """RFC 6749/6750 as written, with OIDC discovery and a userinfo endpoint: the
    ``generic`` profile (Keycloak-like paths). Client authentication by HTTP Basic
    (``client_secret_basic``, the RFC default) or form fields; errors are 400
    ``invalid_grant`` / 401 ``invalid_client``; the draft ``RateLimit-*`` headers (reset
    in seconds from now)."""

    mode = Mode.GENERIC
    token_path = "/oauth2/token"
    validate_paths: tuple[str, ...] = ("/oauth2/userinfo",)
    device_code_path: str | None = "/oauth2/device_authorization"
    device_page_path = "/device"
    discovery = True
    errors_with_http_200 = False
    access_prefix = "at_"
    refresh_prefix = "rt_"
    #: Rotation issues a new refresh token but the one exchanged keeps working.
    old_refresh_token_stays_valid = False
    scope_required_on_refresh = False
    #: Scopes a grant needs for the account endpoint (None: any token may read it).
    account_scopes: frozenset[str] | None = None
    #: RFC 7009 revocation endpoint (None: the provider has no revocation).
    revoke_path: str | None = "/oauth2/revoke"

    def __init__(self, *, base_url: str = "", tenant: str = "") -> None:
        self.base_url = base_url
        self.tenant = tenant

    # --- routes -----------------------------------------------------------------
    def route(self, method: str, path: str) -> Route | None:
        if method == "POST" and path == self.token_path:
            return Route.TOKEN
        if method == "GET" and path in self.validate_paths:
            return Route.VALIDATE
        if method == "POST" and self.device_code_path is not None and path == self.device_code_path:
            return Route.DEVICE_CODE
        if method == "GET" and path == self.device_page_path:
            return Route.DEVICE_PAGE
        if method == "GET" and self.discovery and path == "/.well-known/openid-configuration":
            return Route.DISCOVERY
        if method == "POST" and self.revoke_path is not None and path == self.revoke_path:
            return Route.REVOKE
        return None

    def revoke_client(self, path: str) -> str | None:
        """The client id a revocation path names (GitHub's grant API), else None."""
        return None

    def revoked(self) -> Reply:
        """RFC 7009 §2.2: 200 whether or not the token was known."""
        return Reply(200, {})

    def revoke_refused(self, error: str, description: str) -> Reply:
        return self.error(error, description)

    def wrong_tenant(self, path: str) -> Reply | None:
        """An answer for a token path naming an unknown tenant (Entra only)."""
        return None

    # --- tokens -------------------------------------------------------------------
    def new_access_token(self) -> str:
        return self.access_prefix + _token(36)

    def new_refresh_token(self) -> str:
        return self.refresh_prefix + _token(76)

    def token_body(self, body: dict[str, Any], *, now: float) -> dict[str, Any]:
        return body

    # --- errors -------------------------------------------------------------------
    def error(self, error: str, description: str, *, status: int = 400,
              extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        body: dict[str, Any] = {"error": error, "error_description": description, **(extra or {})}
        return Reply(status, body, dict(headers or {}), negotiable=True)

    def dead_refresh(self, why: DeadWhy) -> Reply:
        return self.error("invalid_grant", "The refresh token is invalid, expired or revoked.")

    def client_error(self) -> Reply:
        return self.error("invalid_client", "Client authentication failed.", status=401,
                          headers={"www-authenticate": 'Basic realm="providersim"'})

    def missing_scope(self) -> Reply:
        return self.error("invalid_request", "The request body must contain the 'scope' parameter.")

    def device_error(self, error: str, description: str, extra: Mapping[str, Any] | None = None) -> Reply:
        return self.error(error, description, extra=extra)

    def unknown_device_code(self) -> Reply:
        return self.error("invalid_grant", "The device_code provided is not valid.")

    # --- validation -------------------------------------------------------------------
    def account(self, path: str, who: Account) -> dict[str, Any]:
        return {"sub": str(who.user_id), "preferred_username": who.login, "email": _email(who.login),
                "email_verified": True}

    def needs_scope(self, path: str) -> bool:
        """Whether ``path`` needs one of :attr:`account_scopes`."""
        return self.account_scopes is not None

    def unauthorized(self, path: str) -> Reply:
        return Reply(401, {"error": "invalid_token", "error_description": "The access token is invalid."},
                     {"www-authenticate": 'Bearer error="invalid_token"'})

    def insufficient_scope(self, path: str) -> Reply:
        return Reply(403, {"error": "insufficient_scope",
                           "error_description": "The request requires higher privileges than provided by the "
                                                "access token.", "scope": " ".join(sorted(self.account_scopes or ()))},
                     {"www-authenticate": 'Bearer error="insufficient_scope"'})

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {"ratelimit-limit": "5000", "ratelimit-remaining": str(5000 - used),
                "ratelimit-reset": str(max(0, int(reset_at - now)))}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        wait = str(max(0, _ceil(reset_at - now)))
        headers = {"ratelimit-limit": "5000", "ratelimit-remaining": "0", "ratelimit-reset": wait}
        if kind is not LimitKind.PRIMARY:
            headers["retry-after"] = wait
        return Reply(429, {"error": "rate_limited", "error_description": "Too many requests."}, headers)

    # --- discovery ----------------------------------------------------------------------
    def discovery_document(self) -> dict[str, Any]:
        base = self.base_url
        document = {
            "issuer": base,
            "authorization_endpoint": base + "/oauth2/authorize",
            "token_endpoint": base + self.token_path,
            "userinfo_endpoint": base + self.validate_paths[0],
            "jwks_uri": base + "/oauth2/keys",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": ["authorization_code", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        }
        if self.device_code_path:
            document["device_authorization_endpoint"] = base + self.device_code_path
        if self.revoke_path:
            document["revocation_endpoint"] = base + self.revoke_path
        return document


class GitHub(Dialect):
    """GitHub (docs.github.com: "Refreshing user access tokens", "Rate limits for the REST
    API"): errors with HTTP 200 (``bad_refresh_token``, ``incorrect_client_credentials``),
    form-encoded unless ``Accept: application/json``; ``/user`` (and ``/api/v3/user`` for
    GitHub Enterprise Server) answers ``login`` with ``x-ratelimit-*`` headers (the reset a
    Unix time); a spent budget is 403 with ``x-ratelimit-remaining: 0``, the secondary
    limit 403 with ``retry-after``."""

    mode = Mode.GITHUB
    token_path = "/login/oauth/access_token"
    validate_paths = ("/user", "/api/v3/user")
    device_code_path = "/login/device/code"
    device_page_path = "/login/device"
    discovery = False
    errors_with_http_200 = True
    access_prefix = "ghu_"
    refresh_prefix = "ghr_"
    revoke_path = None
    #: "Delete an app authorization": DELETE /applications/{client_id}/grant (GHES: /api/v3...).
    _GRANT = re.compile(r"^(?:/api/v3)?/applications/([^/]+)/grant$")

    def route(self, method: str, path: str) -> Route | None:
        if method == "DELETE" and self._GRANT.match(path):
            return Route.REVOKE
        return super().route(method, path)

    def revoke_client(self, path: str) -> str | None:
        m = self._GRANT.match(path)
        return m.group(1) if m else None

    def revoked(self) -> Reply:
        return Reply(204, {})

    def revoke_refused(self, error: str, description: str) -> Reply:
        return Reply(422, {"message": "Validation Failed", "documentation_url": GITHUB_DOCS})

    def error(self, error: str, description: str, *, status: int = 400,
              extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        body: dict[str, Any] = {"error": error, "error_description": description, "error_uri": GITHUB_DOCS,
                                **(extra or {})}
        return Reply(200, body, dict(headers or {}), negotiable=True)

    def dead_refresh(self, why: DeadWhy) -> Reply:
        return self.error("bad_refresh_token", "The refresh token passed is incorrect or expired.")

    def client_error(self) -> Reply:
        return self.error("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.")

    def unknown_device_code(self) -> Reply:
        return self.error("incorrect_device_code", "The device_code provided is not valid.")

    def account(self, path: str, who: Account) -> dict[str, Any]:
        return {"login": who.login, "id": who.user_id, "type": "User"}

    def unauthorized(self, path: str) -> Reply:
        return Reply(401, {"message": "Bad credentials", "documentation_url": GITHUB_DOCS})

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(5000 - used),
                "x-ratelimit-used": str(used), "x-ratelimit-reset": str(int(reset_at)),
                "x-ratelimit-resource": "core"}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        if kind is LimitKind.PRIMARY:
            headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                       "x-ratelimit-reset": str(_ceil(reset_at)), "x-ratelimit-resource": "core"}
            return Reply(403, {"message": "API rate limit exceeded for user.", "documentation_url": GITHUB_DOCS},
                         headers)
        wait = str(max(0, _ceil(reset_at - now)))
        if kind is LimitKind.SECONDARY:
            return Reply(403, {"message": "You have exceeded a secondary rate limit. Please wait a few minutes "
                                          "before you try again.", "documentation_url": GITHUB_DOCS},
                         {"retry-after": wait})
        return Reply(429, {"message": "Too many requests.", "documentation_url": GITHUB_DOCS}, {"retry-after": wait})


class LegacyGeneric(GitHub):
    """The plain RFC 6749 ``generic`` mode of old: GitHub's paths, the RFC's error statuses
    (400 ``invalid_grant``, 401 ``invalid_client``) and GitHub-like account answers. Kept
    for the tests written against it; the ``generic`` profile is :class:`Dialect`."""

    mode = Mode.GENERIC
    errors_with_http_200 = False
    access_prefix = "at_"
    refresh_prefix = "rt_"

    def error(self, error: str, description: str, *, status: int = 400,
              extra: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Reply:
        return Dialect.error(self, error, description, status=status, extra=extra, headers=headers)

    def dead_refresh(self, why: DeadWhy) -> Reply:
        return Dialect.dead_refresh(self, why)

    def client_error(self) -> Reply:
        return Dialect.client_error(self)

    def unknown_device_code(self) -> Reply:
        return Dialect.unknown_device_code(self)


class GitLab(Dialect):
    """GitLab (doc/api/oauth2.md, Doorkeeper; doc "Rate limits"): ``/oauth/token`` rotates
    both tokens (the old ones die), answers ``created_at``; 400 ``invalid_grant`` with
    Doorkeeper's sentence, 401 ``invalid_client`` with ``WWW-Authenticate``; device flow at
    ``/oauth/authorize_device``. ``/api/v4/user`` answers ``username`` to a token with
    ``read_user``/``read_api``/``api`` (else 403 ``insufficient_scope``); ``/oauth/token/info``
    answers any live token. ``RateLimit-*`` headers, the reset a Unix time; 429 when spent."""

    mode = Mode.GITLAB
    token_path = "/oauth/token"
    validate_paths = ("/api/v4/user", "/oauth/token/info")
    device_code_path = "/oauth/authorize_device"
    device_page_path = "/oauth/device"
    discovery = False
    access_prefix = ""
    refresh_prefix = ""
    account_scopes = frozenset({"read_user", "read_api", "api"})
    revoke_path = "/oauth/revoke"  # Doorkeeper's RFC 7009 endpoint

    def new_access_token(self) -> str:
        return secrets.token_hex(32)

    def new_refresh_token(self) -> str:
        return secrets.token_hex(32)

    def token_body(self, body: dict[str, Any], *, now: float) -> dict[str, Any]:
        return {**body, "created_at": int(now)}

    def dead_refresh(self, why: DeadWhy) -> Reply:
        return self.error("invalid_grant", "The provided authorization grant is invalid, expired, revoked, does not "
                          "match the redirection URI used in the authorization request, or was issued to another "
                          "client.")

    def client_error(self) -> Reply:
        return self.error("invalid_client", "Client authentication failed due to unknown client, no client "
                          "authentication included, or unsupported authentication method.", status=401,
                          headers={"www-authenticate": 'Bearer realm="Doorkeeper", error="invalid_client"'})

    def account(self, path: str, who: Account) -> dict[str, Any]:
        if path == "/oauth/token/info":
            return {"resource_owner_id": who.user_id, "scope": who.scope.split(), "expires_in": who.expires_in,
                    "application": {"uid": who.client_id}, "created_at": who.created_at}
        return {"id": who.user_id, "username": who.login, "name": who.login.title(), "state": "active",
                "web_url": f"{self.base_url}/{who.login}"}

    def needs_scope(self, path: str) -> bool:
        return path == "/api/v4/user"

    def unauthorized(self, path: str) -> Reply:
        return Reply(401, {"message": "401 Unauthorized"},
                     {"www-authenticate": 'Bearer realm="", error="invalid_token"'})

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {"ratelimit-limit": "2000", "ratelimit-observed": str(used), "ratelimit-remaining": str(2000 - used),
                "ratelimit-reset": str(int(reset_at)), "ratelimit-resettime": http_date(reset_at)}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        headers = {"ratelimit-limit": "2000", "ratelimit-observed": "2000", "ratelimit-remaining": "0",
                   "ratelimit-reset": str(_ceil(reset_at)), "ratelimit-resettime": http_date(_ceil(reset_at))}
        if kind is not LimitKind.PRIMARY:
            headers["retry-after"] = str(max(0, _ceil(reset_at - now)))
        return Reply(429, {"message": "Retry later"}, headers)


class Gitea(Dialect):
    """Gitea / Forgejo (routers/web/auth/oauth2_provider.go, handleRefreshToken): every
    error is 400; a refresh token that cannot be parsed or has expired is
    ``unauthorized_client`` "unable to parse refresh token", one already used (with
    ``INVALIDATE_REFRESH_TOKENS``) ``unauthorized_client`` "token was already used", a
    revoked grant ``invalid_grant`` "grant does not exist", a bad secret ``invalid_client``.
    A refresh always issues a new refresh token; by default the old one keeps working.
    ``/api/v1/user`` answers ``login``; ``/login/oauth/userinfo`` the OIDC claims; no
    rate-limit headers (429 + Retry-After when limited); a device endpoint at
    ``/login/oauth/device_authorization`` (recent releases)."""

    mode = Mode.GITEA
    revoke_path = None  # no per-token revocation
    token_path = "/login/oauth/access_token"
    validate_paths = ("/api/v1/user", "/login/oauth/userinfo")
    device_code_path = "/login/oauth/device_authorization"
    device_page_path = "/login/oauth/device"
    discovery = True
    access_prefix = "gta_"
    refresh_prefix = "gtr_"
    old_refresh_token_stays_valid = True

    def token_body(self, body: dict[str, Any], *, now: float) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in ("scope", "refresh_token_expires_in")}

    def dead_refresh(self, why: DeadWhy) -> Reply:
        if why is DeadWhy.SPENT:
            return self.error("unauthorized_client", "token was already used")
        if why is DeadWhy.REVOKED:
            return self.error("invalid_grant", "grant does not exist")
        if why is DeadWhy.OTHER_CLIENT:
            return self.error("invalid_grant", "refresh token belongs to a different client")
        return self.error("unauthorized_client", "unable to parse refresh token")

    def client_error(self) -> Reply:
        return self.error("invalid_client", "invalid client secret")

    def account(self, path: str, who: Account) -> dict[str, Any]:
        if path == "/login/oauth/userinfo":
            return {"sub": str(who.user_id), "name": who.login.title(), "preferred_username": who.login,
                    "email": _email(who.login)}
        return {"id": who.user_id, "login": who.login, "login_name": "", "full_name": who.login.title(),
                "email": _email(who.login), "username": who.login}

    def unauthorized(self, path: str) -> Reply:
        return Reply(401, {"message": "invalid username, password or token", "url": f"{self.base_url}/api/swagger"})

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        return Reply(429, {"message": "Too Many Requests"}, {"retry-after": str(max(0, _ceil(reset_at - now)))})

    def discovery_document(self) -> dict[str, Any]:
        base = self.base_url
        return {"issuer": base + "/", "authorization_endpoint": base + "/login/oauth/authorize",
                "token_endpoint": base + self.token_path, "userinfo_endpoint": base + "/login/oauth/userinfo",
                "device_authorization_endpoint": base + (self.device_code_path or ""),
                "jwks_uri": base + "/login/oauth/keys", "response_types_supported": ["code", "id_token"]}


class BitbucketCloud(Dialect):
    """Bitbucket Cloud (developer.atlassian.com/cloud/bitbucket/oauth-2; the 2026 OAuth
    changes): ``/site/oauth2/access_token`` with HTTP Basic; a dead refresh token is 400
    ``invalid_request`` "Invalid refresh_token", a bad client 400 ``unauthorized_client``
    "Invalid OAuth client credentials"; refresh tokens rotate; ``scope`` (once ``scopes``).
    ``/2.0/user`` answers ``username``/``nickname``/``account_id``; a dead token gets 401
    ``{"type": "error", ...}``. No rate-limit headers for OAuth consumers: 429 with a
    message, nothing said about when (a rolling hour). No device flow, no discovery."""

    mode = Mode.BITBUCKET_CLOUD
    revoke_path = None  # no per-token revocation
    token_path = "/site/oauth2/access_token"
    validate_paths = ("/2.0/user",)
    device_code_path = None
    device_page_path = "/site/oauth2/device"
    discovery = False
    access_prefix = ""
    refresh_prefix = ""

    def new_access_token(self) -> str:
        return _token(80) + "="

    def new_refresh_token(self) -> str:
        return _token(24)

    def token_body(self, body: dict[str, Any], *, now: float) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "refresh_token_expires_in"} | {"state": "refresh_token"}

    def dead_refresh(self, why: DeadWhy) -> Reply:
        return self.error("invalid_request", "Invalid refresh_token")

    def client_error(self) -> Reply:
        return self.error("unauthorized_client", "Invalid OAuth client credentials")

    def account(self, path: str, who: Account) -> dict[str, Any]:
        return {"type": "user", "username": who.login, "nickname": who.login, "display_name": who.login.title(),
                "account_id": f"557058:{who.user_id:08d}", "uuid": f"{{{who.user_id:08d}-0000-4000-8000-000000000000}}"}

    def unauthorized(self, path: str) -> Reply:
        return Reply(401, {"type": "error", "error": {
            "message": "Access token expired. Use your refresh token to obtain a new access token."}})

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        return Reply(429, {"type": "error", "error": {"message": "Rate limit for this resource has been exceeded"}})


_ENTRA_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_ENTRA_DEVICE = re.compile(r"^/([^/]+)/oauth2/v2\.0/devicecode$")


class AzureDevOpsEntra(Dialect):
    """Microsoft Entra ID v2 (learn.microsoft.com: "OAuth 2.0 authorization code flow",
    "error codes") for Azure DevOps: ``/<tenant>/oauth2/v2.0/token``; a refresh must carry
    ``scope`` (AADSTS900144 otherwise); a new refresh token each time while the old one
    keeps working; errors carry ``error_codes`` and open the description with the AADSTS
    code: dead grants ``invalid_grant`` 70008 (expired), 700082 (inactive), 50173
    (revoked); a bad secret 401 ``invalid_client`` 7000215; an unknown tenant 400
    ``invalid_request`` 90002; 429 with Retry-After. Azure DevOps' profile API
    (``/_apis/profile/profiles/me``) answers ``emailAddress``/``publicAlias``, and an
    expired token a 203 sign-in page (and ``X-RateLimit-*`` when it throttles); Graph's
    ``/v1.0/me`` answers ``userPrincipalName``."""

    mode = Mode.AZURE_DEVOPS_ENTRA
    revoke_path = None  # no per-token revocation
    token_path = "/organizations/oauth2/v2.0/token"
    validate_paths = ("/_apis/profile/profiles/me", "/v1.0/me")
    device_code_path = "/organizations/oauth2/v2.0/devicecode"
    device_page_path = "/devicelogin"
    discovery = False
    access_prefix = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9."
    refresh_prefix = "0.AXkA"
    old_refresh_token_stays_valid = True
    scope_required_on_refresh = True

    def tenants(self) -> tuple[str, ...]:
        return tuple(t for t in (self.tenant, "organizations", "common") if t)

    def route(self, method: str, path: str) -> Route | None:
        token = _ENTRA_TOKEN.match(path)
        if method == "POST" and token:
            return Route.TOKEN
        device = _ENTRA_DEVICE.match(path)
        if method == "POST" and device:
            return Route.DEVICE_CODE
        return super().route(method, path)

    def wrong_tenant(self, path: str) -> Reply | None:
        match = _ENTRA_TOKEN.match(path) or _ENTRA_DEVICE.match(path)
        if match and match.group(1) not in self.tenants():
            return self._aadsts(400, "invalid_request", 90002, f"Tenant '{match.group(1)}' not found.")
        return None

    def _aadsts(self, status: int, error: str, code: int, text: str) -> Reply:
        description = (f"AADSTS{code}: {text} Trace ID: {secrets.token_hex(8)} Correlation ID: "
                       f"{secrets.token_hex(8)} Timestamp: 2026-01-01 00:00:00Z")
        return Reply(status, {"error": error, "error_description": description, "error_codes": [code],
                              "timestamp": "2026-01-01 00:00:00Z", "trace_id": secrets.token_hex(16),
                              "correlation_id": secrets.token_hex(16), "error_uri": f"{ENTRA_ERROR_URI}{code}"},
                     negotiable=True)

    def new_access_token(self) -> str:
        return self.access_prefix + _token(120)

    def new_refresh_token(self) -> str:
        return self.refresh_prefix + _token(200)

    def token_body(self, body: dict[str, Any], *, now: float) -> dict[str, Any]:
        if "expires_in" in body:
            body = {**body, "ext_expires_in": body["expires_in"]}
        return {k: v for k, v in body.items() if k != "refresh_token_expires_in"} | {"token_type": "Bearer"}

    def dead_refresh(self, why: DeadWhy) -> Reply:
        if why is DeadWhy.REVOKED:
            return self._aadsts(400, "invalid_grant", 50173, "The provided grant has expired due to it being "
                                "revoked, a fresh auth token is needed. The user might have changed or reset "
                                "their password.")
        if why is DeadWhy.EXPIRED:
            return self._aadsts(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity.")
        return self._aadsts(400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                            "expired due to inactivity. Send a new interactive authorization request for this user "
                            "and resource.")

    def client_error(self) -> Reply:
        return self._aadsts(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                            "being sent in the request is the client secret value, not the client secret ID.")

    def missing_scope(self) -> Reply:
        return self._aadsts(400, "invalid_request", 900144, "The request body must contain the following "
                            "parameter: 'scope'.")

    def account(self, path: str, who: Account) -> dict[str, Any]:
        if path == "/v1.0/me":
            return {"userPrincipalName": _email(who.login), "displayName": who.login.title(),
                    "id": f"{who.user_id:08d}-0000-4000-8000-000000000000", "mail": _email(who.login)}
        return {"displayName": who.login.title(), "publicAlias": f"{who.user_id:08d}-0000-4000-8000-000000000000",
                "emailAddress": _email(who.login), "coreRevision": 1, "timeStamp": "2026-01-01T00:00:00+00:00",
                "id": f"{who.user_id:08d}-0000-4000-8000-000000000000", "revision": 1}

    def unauthorized(self, path: str) -> Reply:
        if path == "/v1.0/me":
            return Reply(401, {"error": {"code": "InvalidAuthenticationToken", "message": "Lifetime validation "
                                         "failed, the token is expired."}})
        return Reply(203, {}, text="<html><head><title>Azure DevOps Services | Sign In</title></head></html>")

    def budget_headers(self, *, now: float, used: int, reset_at: float) -> dict[str, str]:
        return {}

    def limited(self, kind: LimitKind, *, now: float, reset_at: float) -> Reply:
        wait = str(max(0, _ceil(reset_at - now)))
        return Reply(429, {"message": "Request was blocked due to exceeding usage of resource."},
                     {"retry-after": wait, "x-ratelimit-resource": "ATCPU", "x-ratelimit-delay": "0",
                      "x-ratelimit-limit": "200", "x-ratelimit-remaining": "0",
                      "x-ratelimit-reset": str(_ceil(reset_at))})


DIALECTS: dict[Mode, type[Dialect]] = {
    Mode.GITHUB: GitHub,
    Mode.GENERIC: Dialect,
    Mode.GITLAB: GitLab,
    Mode.GITEA: Gitea,
    Mode.BITBUCKET_CLOUD: BitbucketCloud,
    Mode.AZURE_DEVOPS_ENTRA: AzureDevOpsEntra,
}


def dialect_for(mode: Mode, *, base_url: str = "", tenant: str = "") -> Dialect:
    return DIALECTS[mode](base_url=base_url, tenant=tenant)


def _email(login: str) -> str:
    return f"{login}@users.providersim.test"


def _ceil(value: float) -> int:
    whole = int(value)
    return whole if whole >= value else whole + 1
