"""Per-provider defaults and quirks (contract §1 ``spec.type``). Pure: no I/O."""

from __future__ import annotations

import dataclasses
import enum


class ProviderType(enum.StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET_CLOUD = "bitbucket-cloud"
    AZURE_DEVOPS_ENTRA = "azure-devops-entra"
    GENERIC = "generic"


class ClientAuth(enum.StrEnum):
    BODY = "body"    # client_id/client_secret as form fields (GitHub, GitLab, Gitea)
    BASIC = "basic"  # HTTP Basic (RFC 6749 §2.3.1; Bitbucket, generic servers)


@dataclasses.dataclass(frozen=True)
class Quirks:
    """How a provider type behaves, where it differs from RFC 6749."""

    default_base_url: str | None
    token_path: str | None
    device_path: str | None
    validate_path: str | None
    # A different host serves the API for the public instance (api.github.com).
    public_api_base: str | None = None
    git_username: str = "oauth2"
    account_fields: tuple[str, ...] = ("login", "username", "preferred_username", "sub")
    client_auth: ClientAuth = ClientAuth.BODY
    send_scope_on_refresh: bool = False
    errors_with_http_200: bool = False


QUIRKS: dict[ProviderType, Quirks] = {
    ProviderType.GITHUB: Quirks(
        default_base_url="https://github.com",
        token_path="/login/oauth/access_token",
        device_path="/login/device/code",
        validate_path="/api/v3/user",
        public_api_base="https://api.github.com/user",
        git_username="x-access-token",
        account_fields=("login",),
        errors_with_http_200=True,
    ),
    ProviderType.GITLAB: Quirks(
        default_base_url="https://gitlab.com",
        token_path="/oauth/token",
        device_path="/oauth/authorize_device",
        validate_path="/api/v4/user",
        git_username="oauth2",
        account_fields=("username",),
    ),
    ProviderType.GITEA: Quirks(
        default_base_url=None,
        token_path="/login/oauth/access_token",
        device_path=None,
        validate_path="/api/v1/user",
        git_username="oauth2",
        account_fields=("login", "username"),
    ),
    ProviderType.BITBUCKET_CLOUD: Quirks(
        default_base_url="https://bitbucket.org",
        token_path="/site/oauth2/access_token",
        device_path=None,
        validate_path=None,
        public_api_base="https://api.bitbucket.org/2.0/user",
        git_username="x-token-auth",
        account_fields=("username", "nickname"),
        client_auth=ClientAuth.BASIC,
    ),
    ProviderType.AZURE_DEVOPS_ENTRA: Quirks(
        default_base_url="https://login.microsoftonline.com/organizations",
        token_path="/oauth2/v2.0/token",
        device_path="/oauth2/v2.0/devicecode",
        validate_path=None,
        git_username="oauth2",
        account_fields=("preferred_username", "upn", "sub"),
        client_auth=ClientAuth.BODY,
        send_scope_on_refresh=True,
    ),
    ProviderType.GENERIC: Quirks(
        default_base_url=None,
        token_path=None,
        device_path=None,
        validate_path=None,
        client_auth=ClientAuth.BASIC,
    ),
}


def quirks(kind: ProviderType) -> Quirks:
    return QUIRKS[kind]


def default_urls(kind: ProviderType, base_url: str | None) -> dict[str, str | None]:
    """Token, device and validation URLs derived from the type and an optional base URL."""
    q = QUIRKS[kind]
    base = (base_url or q.default_base_url or "").rstrip("/")

    def join(path: str | None) -> str | None:
        return f"{base}{path}" if base and path else None

    validate = join(q.validate_path)
    if q.public_api_base and (not base_url or base == (q.default_base_url or "").rstrip("/")):
        validate = q.public_api_base
    return {"token": join(q.token_path), "device": join(q.device_path), "validate": validate}
