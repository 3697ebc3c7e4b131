"""Per-provider defaults and quirks (contract §1 ``spec.type``). Pure: no I/O.

Each type's quirks say where it differs from RFC 6749/6750: its URLs, how the client
authenticates, which error codes mean what (contract §9.5: a type may map a code
differently where the provider means something else by it), and how the account
name is read at validation. The sources of each claim are named next to it; the
simulator's profiles (``providersim.profiles``) speak the same dialects.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class ProviderType(enum.StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET_CLOUD = "bitbucket-cloud"
    AZURE_DEVOPS_ENTRA = "azure-devops-entra"
    GENERIC = "generic"


class ClientAuth(enum.StrEnum):
    BODY = "body"    # client_id/client_secret as form fields (GitHub, GitLab, Gitea, Entra)
    BASIC = "basic"  # HTTP Basic (RFC 6749 §2.3.1; Bitbucket, generic servers)


class Revocation(enum.StrEnum):
    """How a provider type revokes a grant (contract §2 ``revokeOnDelete``)."""

    RFC7009 = "rfc7009"  # POST token + token_type_hint to the revocation endpoint (RFC 7009 §2.1)
    GITHUB_GRANT = "github-grant"  # DELETE /applications/{client_id}/grant, the app's Basic auth
    NONE = "none"  # no per-token revocation: the user revokes the app by hand


class ErrorMeaning(enum.StrEnum):
    """What a provider-specific error code means, where it refines the OAuth ``error``."""

    DEAD_GRANT = "dead_grant"  # the user must sign in again
    CLIENT_REJECTED = "client_rejected"  # the provider's OAuth client is misconfigured
    TRANSIENT = "transient"  # try again later


@dataclasses.dataclass(frozen=True)
class Quirks:
    """How a provider type behaves, where it differs from RFC 6749."""

    default_base_url: str | None
    token_path: str | None
    device_path: str | None
    validate_path: str | None
    # A different host serves the API for the public instance (api.github.com).
    public_api_base: str | None = None
    # The validation URL whatever the base URL (the API lives elsewhere: Azure DevOps).
    fixed_validate_url: str | None = None
    git_username: str = "oauth2"
    account_fields: tuple[str, ...] = ("login", "username", "preferred_username", "sub")
    client_auth: ClientAuth = ClientAuth.BODY
    send_scope_on_refresh: bool = False
    errors_with_http_200: bool = False
    # OAuth ``error`` codes that mean a dead grant for this type, beyond the RFC's.
    dead_grant_errors: frozenset[str] = frozenset()
    # Numeric codes in the answer (Entra's ``error_codes``) that refine the ``error``.
    error_codes: Mapping[int, ErrorMeaning] = dataclasses.field(default_factory=dict)
    # Validation answers that mean "not signed in" for this type although not 401/403.
    invalid_validation_statuses: frozenset[int] = frozenset()
    # The base URL must name something in its path (Entra: the tenant).
    base_url_needs_path: bool = False
    # Revocation (contract §1 ``revocationURL``): the style, the default path (on the
    # base URL; ``{client_id}`` is filled in), and where a user revokes by hand.
    revocation: Revocation = Revocation.NONE
    revoke_path: str | None = None
    public_revoke_url: str | None = None
    manual_revocation: str = "the provider's page of authorized applications"


# Microsoft Entra (AADSTS) codes, from https://learn.microsoft.com/entra/identity-platform/reference-error-codes
# (and https://login.microsoftonline.com/error?code=N). Microsoft warns that codes change:
# they only refine the OAuth ``error``; an unknown code falls back to it.
ENTRA_ERROR_CODES: Mapping[int, ErrorMeaning] = {
    # The refresh token is expired, revoked or unusable without the user: sign in again.
    70008: ErrorMeaning.DEAD_GRANT,  # ExpiredOrRevokedGrant
    700082: ErrorMeaning.DEAD_GRANT,  # refresh token expired due to inactivity (90 days)
    700084: ErrorMeaning.DEAD_GRANT,  # SPA refresh token past its 24 h lifetime
    50173: ErrorMeaning.DEAD_GRANT,  # FreshTokenNeeded: grant revoked (password change, admin)
    70043: ErrorMeaning.DEAD_GRANT,  # sign-in frequency (Conditional Access) ended the token
    50076: ErrorMeaning.DEAD_GRANT,  # MFA required (interaction_required)
    50079: ErrorMeaning.DEAD_GRANT,  # MFA registration required
    65001: ErrorMeaning.DEAD_GRANT,  # consent revoked or missing
    50057: ErrorMeaning.DEAD_GRANT,  # the user account is disabled
    # The OAuth client (the ExternalAuthProvider) is wrong: the admin fixes it.
    7000215: ErrorMeaning.CLIENT_REJECTED,  # invalid client secret
    7000222: ErrorMeaning.CLIENT_REJECTED,  # client secret expired
    7000218: ErrorMeaning.CLIENT_REJECTED,  # no client_secret for a confidential client
    700025: ErrorMeaning.CLIENT_REJECTED,  # a secret sent for a public client: drop clientSecretRef
    700016: ErrorMeaning.CLIENT_REJECTED,  # application not found in the tenant
    90002: ErrorMeaning.CLIENT_REJECTED,  # tenant (in spec.baseURL) not found
    70011: ErrorMeaning.CLIENT_REJECTED,  # spec.scopes invalid (re-sent on every refresh)
    50194: ErrorMeaning.CLIENT_REJECTED,  # app not multi-tenant but baseURL is /common
    # Entra says: wait and retry.
    50196: ErrorMeaning.TRANSIENT,  # client request loop detected
}

QUIRKS: dict[ProviderType, Quirks] = {
    # GitHub Apps with expiring user tokens (docs.github.com "Refreshing user access
    # tokens"): errors come with HTTP 200, bad_refresh_token for a dead grant,
    # incorrect_client_credentials for a bad client; /user answers `login`.
    ProviderType.GITHUB: Quirks(
        default_base_url="https://github.com",
        token_path="/login/oauth/access_token",
        device_path="/login/device/code",
        validate_path="/api/v3/user",
        public_api_base="https://api.github.com/user",
        git_username="x-access-token",
        account_fields=("login",),
        errors_with_http_200=True,
        # docs.github.com "REST API endpoints for OAuth authorizations": "Delete an app
        # authorization" revokes the grant (every token of it) with the app's Basic auth.
        revocation=Revocation.GITHUB_GRANT,
        revoke_path="/api/v3/applications/{client_id}/grant",
        public_revoke_url="https://api.github.com/applications/{client_id}/grant",
        manual_revocation="GitHub: Settings > Applications > Authorized GitHub Apps (or OAuth Apps) > Revoke",
    ),
    # GitLab (doc/api/oauth2.md, Doorkeeper): /oauth/token rotates both tokens on refresh;
    # 400 invalid_grant for a dead grant, 401 invalid_client; device flow from 17.2
    # (/oauth/authorize_device). /api/v4/user answers `username` (scope read_user, read_api
    # or api); a token without those scopes gets 403 insufficient_scope there, which
    # still proves it is live (RFC 6750 §3.1).
    ProviderType.GITLAB: Quirks(
        default_base_url="https://gitlab.com",
        token_path="/oauth/token",
        device_path="/oauth/authorize_device",
        validate_path="/api/v4/user",
        git_username="oauth2",
        account_fields=("username", "preferred_username", "nickname"),
        # doc/api/oauth2.md "Revoke a token": Doorkeeper's RFC 7009 endpoint.
        revocation=Revocation.RFC7009,
        revoke_path="/oauth/revoke",
        manual_revocation="GitLab: User settings > Applications > Authorized applications > Revoke",
    ),
    # Gitea / Forgejo (routers/web/auth/oauth2_provider.go, handleRefreshToken): a refresh
    # token that cannot be parsed (expired, garbage) or was already used (with
    # [oauth2] INVALIDATE_REFRESH_TOKENS) is answered 400 unauthorized_client ("unable to
    # parse refresh token", "token was already used"): for this type that is a dead
    # grant, not a misconfigured client (contract §9.5). A bad client is invalid_client.
    # The device endpoint (/login/oauth/device_authorization, public clients only) exists
    # only in recent releases: set spec.deviceAuthorizationURL where it does.
    ProviderType.GITEA: Quirks(
        default_base_url=None,
        token_path="/login/oauth/access_token",
        device_path=None,
        validate_path="/api/v1/user",
        git_username="oauth2",
        account_fields=("login", "username", "preferred_username"),
        dead_grant_errors=frozenset({"unauthorized_client"}),
        # No revocation endpoint: set spec.revocationURL where a release has one.
        manual_revocation="Gitea: Settings > Applications > Authorized OAuth2 Applications > Revoke",
    ),
    # Bitbucket Cloud (developer.atlassian.com/cloud/bitbucket/oauth-2): client auth by
    # HTTP Basic; a dead refresh token is 400 invalid_request "Invalid refresh_token"; a
    # bad client is 400 unauthorized_client "Invalid OAuth client credentials". Refresh
    # tokens rotate from 4 May 2026 and expire after 3 months unused. No device flow.
    # /2.0/user on api.bitbucket.org answers `username` / `nickname`.
    ProviderType.BITBUCKET_CLOUD: Quirks(
        default_base_url="https://bitbucket.org",
        token_path="/site/oauth2/access_token",
        device_path=None,
        validate_path="/2.0/user",
        public_api_base="https://api.bitbucket.org/2.0/user",
        git_username="x-token-auth",
        account_fields=("username", "nickname"),
        client_auth=ClientAuth.BASIC,
        dead_grant_errors=frozenset({"invalid_request"}),
        manual_revocation="Bitbucket: Personal settings > App authorizations > Revoke",
    ),
    # Azure DevOps through Microsoft Entra ID, v2 endpoints with the tenant in the URL
    # (https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token): scopes are re-sent on
    # every refresh (the v2 endpoint requires them), errors carry AADSTS `error_codes`.
    # Validation asks Azure DevOps itself (the token's audience; Microsoft Graph would
    # refuse it): its profile API answers `emailAddress` / `publicAlias`, and an expired
    # token gets 203 with a sign-in page, or a 302 to one.
    ProviderType.AZURE_DEVOPS_ENTRA: Quirks(
        default_base_url="https://login.microsoftonline.com/organizations",
        token_path="/oauth2/v2.0/token",
        device_path="/oauth2/v2.0/devicecode",
        validate_path=None,
        fixed_validate_url="https://app.vssps.visualstudio.com/_apis/profile/profiles/me?api-version=7.1",
        git_username="oauth2",
        account_fields=("emailAddress", "userPrincipalName", "preferred_username", "upn", "publicAlias",
                        "email"),
        client_auth=ClientAuth.BODY,
        send_scope_on_refresh=True,
        dead_grant_errors=frozenset({"interaction_required", "consent_required", "login_required"}),
        error_codes=ENTRA_ERROR_CODES,
        invalid_validation_statuses=frozenset({203, 302}),
        base_url_needs_path=True,
        # Entra has no per-token revocation (an admin can revoke a user's sessions).
        manual_revocation="Microsoft: myapps.microsoft.com (or an admin: revoke the user's sessions in Entra ID)",
    ),
    # Any OAuth2/OIDC server: HTTP Basic (client_secret_basic, the RFC default), URLs from
    # spec.tokenURL or from OIDC discovery (spec.issuerURL); validation at the userinfo
    # endpoint, account from `preferred_username`, else `email`, else `sub`.
    ProviderType.GENERIC: Quirks(
        default_base_url=None,
        token_path=None,
        device_path=None,
        validate_path=None,
        account_fields=("preferred_username", "login", "username", "email", "sub"),
        client_auth=ClientAuth.BASIC,
        # RFC 7009 at spec.revocationURL or the discovery document's revocation_endpoint.
        revocation=Revocation.RFC7009,
    ),
}


def quirks(kind: ProviderType) -> Quirks:
    return QUIRKS[kind]


def default_urls(kind: ProviderType, base_url: str | None) -> dict[str, str | None]:
    """Token, device, validation and revocation URLs derived from the type and an optional
    base URL (a revocation URL may hold ``{client_id}``, filled in by the spec)."""
    q = QUIRKS[kind]
    base = (base_url or q.default_base_url or "").rstrip("/")

    def join(path: str | None) -> str | None:
        return f"{base}{path}" if base and path else None

    validate = join(q.validate_path)
    if q.public_api_base and (not base_url or base == (q.default_base_url or "").rstrip("/")):
        validate = q.public_api_base
    if q.fixed_validate_url:
        validate = q.fixed_validate_url
    revoke = join(q.revoke_path)
    if q.public_revoke_url and (not base_url or base == (q.default_base_url or "").rstrip("/")):
        revoke = q.public_revoke_url
    return {"token": join(q.token_path), "device": join(q.device_path), "validate": validate, "revoke": revoke}
