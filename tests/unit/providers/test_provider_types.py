"""Provider types (contract §1, §9.5, §9.6): each type's default URLs, the meaning of its
error dialect, how its account name is read, and OIDC discovery documents. Pure rules;
the same dialects are proven against the simulator's profiles in
tests/integration/test_provider_types.py."""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Any

import pytest
import yaml

from externalauth import transport
from externalauth.errors import DiscoveryError, InvalidInputError
from externalauth.model.specs import parse_provider
from externalauth.model.tokens import read_token_answer
from externalauth.oauth import discovering
from externalauth.policy.classifying import (
    TokenAnswer,
    TokenVerdict,
    ValidationVerdict,
    classify_token_answer,
    classify_validation,
)
from externalauth.providers import ProviderType, quirks

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
REJECTED = "the provider rejected the OAuth client credentials"
TENANT = "https://login.microsoftonline.com/7d3c1f2e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param({"type": "github", "baseURL": "https://ghe.example.com"},
                 ("https://ghe.example.com/login/oauth/access_token", "https://ghe.example.com/login/device/code",
                  "https://ghe.example.com/api/v3/user"),
                 id="GitHub Enterprise: everything under baseURL, the API under /api/v3"),
    pytest.param({"type": "gitlab"},
                 ("https://gitlab.com/oauth/token", "https://gitlab.com/oauth/authorize_device",
                  "https://gitlab.com/api/v4/user"),
                 id="gitlab.com"),
    pytest.param({"type": "gitlab", "baseURL": "https://git.example.com"},
                 ("https://git.example.com/oauth/token", "https://git.example.com/oauth/authorize_device",
                  "https://git.example.com/api/v4/user"),
                 id="GitLab self-managed through baseURL"),
    pytest.param({"type": "gitea", "baseURL": "https://gitea.example.com"},
                 ("https://gitea.example.com/login/oauth/access_token", None, "https://gitea.example.com/api/v1/user"),
                 id="Gitea: no device endpoint unless the spec names it"),
    pytest.param({"type": "gitea", "baseURL": "https://gitea.example.com",
                  "deviceAuthorizationURL": "https://gitea.example.com/login/oauth/device_authorization"},
                 ("https://gitea.example.com/login/oauth/access_token",
                  "https://gitea.example.com/login/oauth/device_authorization", "https://gitea.example.com/api/v1/user"),
                 id="a recent Gitea's device endpoint, named by the spec"),
    pytest.param({"type": "bitbucket-cloud"},
                 ("https://bitbucket.org/site/oauth2/access_token", None, "https://api.bitbucket.org/2.0/user"),
                 id="Bitbucket Cloud validates at api.bitbucket.org"),
    pytest.param({"type": "azure-devops-entra"},
                 ("https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
                  "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode",
                  "https://app.vssps.visualstudio.com/_apis/profile/profiles/me?api-version=7.1"),
                 id="Entra's v2 endpoints for any work account; Azure DevOps validates its own token"),
    pytest.param({"type": "azure-devops-entra", "baseURL": TENANT},
                 (f"{TENANT}/oauth2/v2.0/token", f"{TENANT}/oauth2/v2.0/devicecode",
                  "https://app.vssps.visualstudio.com/_apis/profile/profiles/me?api-version=7.1"),
                 id="Entra with the tenant in baseURL"),
    pytest.param({"type": "generic", "tokenURL": "https://id.example/oauth2/token"},
                 ("https://id.example/oauth2/token", None, None), id="generic with a token URL only"),
    pytest.param({"type": "generic", "issuerURL": "https://id.example/realms/dev"},
                 ("", None, None), id="generic with an issuer: its URLs wait for discovery"),
])
def test_default_urls_per_type(spec: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    parsed = parse_provider("p", {"clientID": "c", **spec})
    assert expected == (parsed.token_url, parsed.device_url, parsed.validate_url)


@pytest.mark.parametrize(("spec", "message"), [
    pytest.param({"type": "azure-devops-entra", "baseURL": "https://login.microsoftonline.com"},
                 "must name the tenant", id="an Entra baseURL without the tenant"),
    pytest.param({"type": "gitlab", "issuerURL": "https://gitlab.com"}, "only for type generic",
                 id="issuerURL on another type than generic"),
    pytest.param({"type": "generic", "issuerURL": "http://id.example"}, "https://",
                 id="a plain http issuer"),
    pytest.param({"type": "generic"}, "tokenURL is required", id="generic with neither tokenURL nor issuerURL"),
])
def test_unusable_provider_specs_name_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_provider("p", {"clientID": "c", **spec})


@pytest.mark.parametrize(("spec", "needs", "host"), [
    pytest.param({"issuerURL": "https://id.example/realms/dev"}, True, "id.example",
                 id="an issuer alone must be discovered; git talks to its host"),
    pytest.param({"issuerURL": "https://id.example", "tokenURL": "https://id.example/t", "validateURL": "",
                  "deviceAuthorizationURL": "https://id.example/d"}, False, "id.example",
                 id="an issuer whose every URL the spec names needs no discovery"),
    pytest.param({"issuerURL": "https://id.example", "tokenURL": "https://id.example/t"}, True, "id.example",
                 id="an issuer with a token URL still discovers the userinfo and device endpoints"),
])
def test_which_generic_specs_need_discovery(spec: dict[str, Any], needs: bool, host: str) -> None:
    parsed = parse_provider("p", {"type": "generic", "clientID": "c", **spec})
    assert (needs, host) == (parsed.needs_discovery, parsed.host)


def answer(status: int, error: str | None = None, codes: tuple[int, ...] = ()) -> TokenAnswer:
    return TokenAnswer(status, error=error, error_codes=codes)


@pytest.mark.parametrize(("kind", "token_answer", "verdict", "message"), [
    pytest.param(ProviderType.GITEA, answer(400, "unauthorized_client"), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (unauthorized_client)",
                 id="Gitea's unauthorized_client (token already used, or unparsable) is a dead grant"),
    pytest.param(ProviderType.GITEA, answer(400, "invalid_grant"), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant)", id="Gitea's revoked grant"),
    pytest.param(ProviderType.GITEA, answer(400, "invalid_client"), TokenVerdict.CLIENT_REJECTED,
                 f"{REJECTED} (invalid_client)", id="Gitea's bad client"),
    pytest.param(ProviderType.GITHUB, answer(200, "unauthorized_client"), TokenVerdict.CLIENT_REJECTED,
                 f"{REJECTED} (unauthorized_client)",
                 id="elsewhere unauthorized_client is still the client's fault (contract §9.5)"),
    pytest.param(ProviderType.GITHUB, answer(200, "bad_refresh_token"), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (bad_refresh_token)", id="GitHub's dead grant in a 200"),
    pytest.param(ProviderType.GITLAB, answer(400, "invalid_grant"), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant)", id="GitLab's 400 invalid_grant"),
    pytest.param(ProviderType.GITLAB, answer(401, "invalid_client"), TokenVerdict.CLIENT_REJECTED,
                 f"{REJECTED} (invalid_client)", id="GitLab's 401 invalid_client"),
    pytest.param(ProviderType.BITBUCKET_CLOUD, answer(400, "invalid_request"), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_request)",
                 id="Bitbucket's 'Invalid refresh_token' comes as invalid_request: a dead grant"),
    pytest.param(ProviderType.BITBUCKET_CLOUD, answer(400, "unauthorized_client"), TokenVerdict.CLIENT_REJECTED,
                 f"{REJECTED} (unauthorized_client)",
                 id="Bitbucket's 'Invalid OAuth client credentials'"),
    pytest.param(ProviderType.GENERIC, answer(400, "invalid_request"), TokenVerdict.PERMANENT,
                 "the token endpoint answered error invalid_request",
                 id="elsewhere invalid_request is a permanent error, tried once"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_grant", (70008,)), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant 70008)", id="AADSTS70008 expired grant"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_grant", (700082,)), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant 700082)",
                 id="AADSTS700082 refresh token expired by inactivity"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_grant", (50173,)), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant 50173)", id="AADSTS50173 revoked grant"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "interaction_required", (50076,)),
                 TokenVerdict.DEAD_GRANT, "the provider refused the refresh token (interaction_required 50076)",
                 id="AADSTS50076 MFA required: the user signs in again"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(401, "invalid_client", (7000215,)),
                 TokenVerdict.CLIENT_REJECTED, f"{REJECTED} (invalid_client 7000215)",
                 id="AADSTS7000215 invalid client secret"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(401, "invalid_client", (7000222,)),
                 TokenVerdict.CLIENT_REJECTED, f"{REJECTED} (invalid_client 7000222)",
                 id="AADSTS7000222 expired client secret"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_scope", (70011,)),
                 TokenVerdict.CLIENT_REJECTED, f"{REJECTED} (invalid_scope 70011)",
                 id="AADSTS70011 bad spec.scopes is the admin's to fix, not a dead grant"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_request", (90002,)),
                 TokenVerdict.CLIENT_REJECTED, f"{REJECTED} (invalid_request 90002)",
                 id="AADSTS90002 unknown tenant in spec.baseURL"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_request", (50196,)), TokenVerdict.TRANSIENT,
                 "the token endpoint answered error invalid_request 50196", id="AADSTS50196 loop detected: wait"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, answer(400, "invalid_grant", (12345,)), TokenVerdict.DEAD_GRANT,
                 "the provider refused the refresh token (invalid_grant 12345)",
                 id="an unknown AADSTS code falls back to the OAuth error"),
    pytest.param(ProviderType.GENERIC, answer(400, "invalid_request", (90002,)), TokenVerdict.PERMANENT,
                 "the token endpoint answered error invalid_request 90002",
                 id="AADSTS codes mean nothing to another type"),
])
def test_each_type_error_dialect(kind: ProviderType, token_answer: TokenAnswer, verdict: TokenVerdict,
                                 message: str) -> None:
    classified = classify_token_answer(token_answer, quirks=quirks(kind))
    assert (verdict, message) == (classified.verdict, classified.message)


@pytest.mark.parametrize(("payload", "codes"), [
    pytest.param({"error": "invalid_grant", "error_codes": [70008], "error_description": "AADSTS70008: ..."},
                 (70008,), id="Entra's error_codes"),
    pytest.param({"error": "invalid_grant", "error_description": "AADSTS700082: The refresh token has expired"},
                 (700082,), id="the code opening the description when error_codes is missing"),
    pytest.param({"error": "invalid_grant", "error_codes": ["70008", True, -1, 10**12],
                  "error_description": "AADSTS50173: revoked"}, (50173,),
                 id="codes that are not small integers are not believed"),
    pytest.param({"error": "invalid_grant", "error_description": "Trace AADSTS70008"}, (),
                 id="a code inside the description is not read"),
    pytest.param({"access_token": "t", "error_codes": [70008]}, (), id="no error, no codes"),
])
def test_numeric_error_codes_are_read_defensively(payload: dict[str, Any], codes: tuple[int, ...]) -> None:
    assert codes == read_token_answer(payload, now=NOW).error_codes


@pytest.mark.parametrize(("kind", "body", "account"), [
    pytest.param(ProviderType.GITHUB, {"login": "octocat", "id": 1}, "octocat", id="GitHub's login"),
    pytest.param(ProviderType.GITLAB, {"id": 7, "username": "gitlab-user", "name": "G"}, "gitlab-user",
                 id="GitLab's username"),
    pytest.param(ProviderType.GITEA, {"id": 3, "login": "gitea-user", "login_name": ""}, "gitea-user",
                 id="Gitea's login"),
    pytest.param(ProviderType.BITBUCKET_CLOUD, {"nickname": "bb-nick", "account_id": "557058:x"}, "bb-nick",
                 id="Bitbucket's nickname where no username is given"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, {"displayName": "Ada", "emailAddress": "ada@contoso.com",
                                                   "publicAlias": "a1b2"}, "ada@contoso.com",
                 id="Azure DevOps profile's emailAddress"),
    pytest.param(ProviderType.AZURE_DEVOPS_ENTRA, {"userPrincipalName": "ada@contoso.com"}, "ada@contoso.com",
                 id="Microsoft Graph's userPrincipalName, if validateURL points there"),
    pytest.param(ProviderType.GENERIC, {"sub": "248289761001", "preferred_username": "jane",
                                        "email": "jane@example.com"}, "jane", id="userinfo's preferred_username first"),
    pytest.param(ProviderType.GENERIC, {"sub": "248289761001", "email": "jane@example.com"}, "jane@example.com",
                 id="userinfo's email without a preferred_username"),
    pytest.param(ProviderType.GENERIC, {"sub": "248289761001"}, "248289761001", id="userinfo's sub at last"),
])
def test_the_account_name_each_type_reports(kind: ProviderType, body: dict[str, Any], account: str) -> None:
    outcome = classify_validation(status=200, headers={}, body=body, account_fields=quirks(kind).account_fields,
                                  now=NOW)
    assert (ValidationVerdict.VALID, account) == (outcome.verdict, outcome.account)


@pytest.mark.parametrize(("status", "verdict"), [
    pytest.param(203, ValidationVerdict.INVALID, id="Azure DevOps' 203 sign-in page for an expired token"),
    pytest.param(302, ValidationVerdict.INVALID, id="Azure DevOps' redirect to sign in"),
    pytest.param(401, ValidationVerdict.INVALID, id="a 401"),
    pytest.param(200, ValidationVerdict.VALID, id="a 200"),
])
def test_azure_devops_answers_an_expired_token_with_a_sign_in_page(status: int, verdict: ValidationVerdict) -> None:
    q = quirks(ProviderType.AZURE_DEVOPS_ENTRA)
    outcome = classify_validation(status=status, headers={}, body=None, account_fields=q.account_fields, now=NOW,
                                  invalid_statuses=q.invalid_validation_statuses)
    assert verdict == outcome.verdict


ISSUER = "https://id.example/realms/dev"
DOCUMENT = {"issuer": ISSUER, "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
            "device_authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth/device",
            "userinfo_endpoint": f"{ISSUER}/protocol/openid-connect/userinfo"}


@pytest.mark.parametrize(("document", "issuer", "expected"), [
    pytest.param(DOCUMENT, ISSUER, discovering.Endpoints(
        DOCUMENT["token_endpoint"], DOCUMENT["device_authorization_endpoint"], DOCUMENT["userinfo_endpoint"]),
        id="a Keycloak-like document"),
    pytest.param({**DOCUMENT, "issuer": ISSUER + "/"}, ISSUER, discovering.Endpoints(
        DOCUMENT["token_endpoint"], DOCUMENT["device_authorization_endpoint"], DOCUMENT["userinfo_endpoint"]),
        id="an issuer that differs by a trailing slash is the same"),
    pytest.param({"issuer": ISSUER, "token_endpoint": f"{ISSUER}/token"}, ISSUER,
                 discovering.Endpoints(f"{ISSUER}/token"), id="no device or userinfo endpoint"),
])
def test_a_discovery_document_names_the_endpoints(document: dict[str, Any], issuer: str,
                                                  expected: discovering.Endpoints) -> None:
    assert expected == discovering.read_document(document, issuer=issuer)


@pytest.mark.parametrize(("document", "message"), [
    pytest.param(["not", "an", "object"], "not a JSON object", id="a list"),
    pytest.param({**DOCUMENT, "issuer": "https://evil.example"}, "names another issuer", id="another issuer"),
    pytest.param({k: v for k, v in DOCUMENT.items() if k != "token_endpoint"}, "no usable token_endpoint",
                 id="no token endpoint"),
    pytest.param({**DOCUMENT, "token_endpoint": "http://id.example/token"}, "not an https:// URL",
                 id="a plain http token endpoint"),
    pytest.param({**DOCUMENT, "userinfo_endpoint": "http://id.example/userinfo"}, "not an https:// URL",
                 id="a plain http userinfo endpoint"),
])
def test_an_unusable_discovery_document_is_a_permanent_error(document: object, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message) as raised:
        discovering.read_document(document, issuer=ISSUER)
    assert not raised.value.transient


ELSEWHERE = "https://login.elsewhere.example/x"


@pytest.mark.parametrize(("spec", "endpoints", "outcome"), [
    pytest.param({}, discovering.Endpoints(f"{ISSUER}/token", f"{ISSUER}/device", f"{ISSUER}/userinfo",
                                           f"{ISSUER}/revoke"), "resolved",
                 id="every endpoint on the issuer's host is used"),
    pytest.param({}, discovering.Endpoints("https://ID.EXAMPLE:8443/token"), "resolved",
                 id="the issuer's host in other case and on another port is the issuer's host"),
    pytest.param({}, discovering.Endpoints(ELSEWHERE), "token_endpoint on another host (login.elsewhere.example)",
                 id="a token endpoint on another host is refused (the client secret would go there)"),
    pytest.param({}, discovering.Endpoints(f"{ISSUER}/token", userinfo=ELSEWHERE), "userinfo_endpoint",
                 id="a userinfo endpoint on another host is refused (access tokens would go there)"),
    pytest.param({}, discovering.Endpoints(f"{ISSUER}/token", device=ELSEWHERE), "device_authorization_endpoint",
                 id="a device endpoint on another host is refused"),
    pytest.param({}, discovering.Endpoints(f"{ISSUER}/token", revocation=ELSEWHERE), "revocation_endpoint",
                 id="a revocation endpoint on another host is refused"),
    pytest.param({"tokenURL": ELSEWHERE}, discovering.Endpoints(ELSEWHERE), "resolved",
                 id="a token endpoint on another host that the spec names is used"),
    pytest.param({"validateURL": ELSEWHERE}, discovering.Endpoints(f"{ISSUER}/token", userinfo="https://x.example/u"),
                 "resolved", id="a foreign userinfo endpoint the spec replaces is not used, so not refused"),
])
def test_discovered_endpoints_must_be_on_the_issuers_host_unless_the_spec_names_them(
        spec: dict[str, Any], endpoints: discovering.Endpoints, outcome: str) -> None:
    parsed = parse_provider("p", {"type": "generic", "clientID": "c", "issuerURL": ISSUER, **spec})
    try:
        resolved = discovering.resolve(parsed, endpoints)
    except DiscoveryError as e:
        assert (True, False) == (outcome in str(e), e.transient)
        return
    assert ("resolved", False) == (outcome, resolved.needs_discovery)


def test_discovery_messages_name_the_host_never_credentials_in_the_issuer_url() -> None:
    """Provider status is readable by every user: user info in spec.issuerURL stays out of it."""
    def down(url: str) -> transport.Answer:
        raise transport.NoAnswer(transport.NoAnswerKind.UNREACHABLE, "ConnectionError")

    with pytest.raises(DiscoveryError) as raised:
        discovering.discover("https://admin:hunter2@id.example/realms/dev", get=down)
    assert ("the issuer id.example did not answer (unreachable)", False) == (
        str(raised.value), "hunter2" in str(raised.value))


def fixed(status: int, body: bytes | None = b"{}") -> discovering.Get:
    def get(url: str) -> transport.Answer:
        assert f"{ISSUER}/.well-known/openid-configuration" == url
        return transport.Answer(status, {"content-type": "application/json"}, body)
    return get


def no_answer(url: str) -> transport.Answer:
    raise transport.NoAnswer(transport.NoAnswerKind.UNREACHABLE, "ConnectionError")


@pytest.mark.parametrize(("get", "transient", "message"), [
    pytest.param(fixed(404, b"<html>"), False, "has no discovery document", id="a 404: the issuer URL is wrong"),
    pytest.param(fixed(302, None), False, "a redirect, which is never followed", id="a redirect"),
    pytest.param(fixed(503), True, "HTTP 503", id="a 503 may pass"),
    pytest.param(fixed(429), True, "HTTP 429", id="a 429 may pass"),
    pytest.param(no_answer, True, "did not answer", id="no answer may pass"),
])
def test_discovery_failures_say_whether_they_may_pass(get: discovering.Get, transient: bool, message: str) -> None:
    with pytest.raises(DiscoveryError, match=message) as raised:
        discovering.discover(ISSUER, get=get)
    assert transient == raised.value.transient


def user_guide_providers() -> list[Any]:
    """The ExternalAuthProvider manifests of the user guide's section 2."""
    text = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "user-guide.md").read_text()
    section = text[text.index("## 2. Define a provider"):text.index("## 3. ")]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    docs = [d for b in blocks for d in yaml.safe_load_all(b) if d and d.get("kind") == "ExternalAuthProvider"]
    return [pytest.param(d, id=d["metadata"]["name"]) for d in docs]


@pytest.mark.parametrize("manifest", user_guide_providers())
def test_the_user_guide_providers_parse(manifest: dict[str, Any]) -> None:
    """Every provider the user guide shows is a spec the operator takes as it is."""
    parsed = parse_provider(manifest["metadata"]["name"], manifest["spec"])
    assert parsed.token_url or parsed.needs_discovery
