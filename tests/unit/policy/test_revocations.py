"""Which requests revoke a grant, and what each answer means (contract §2 revokeOnDelete,
§9.17). Pure tables."""

from __future__ import annotations

import pytest

from externalauth.model.secure import SecretStr
from externalauth.model.specs import parse_provider
from externalauth.policy import revocations
from externalauth.policy.revocations import Verdict
from externalauth.providers import Revocation

RT, AT = SecretStr("rt"), SecretStr("at")


def _shape(requests: list[revocations.Request]) -> list[tuple[str, str, dict[str, str]]]:
    def plain(fields: object) -> dict[str, str]:
        return {k: v.reveal() if isinstance(v, SecretStr) else v for k, v in dict(fields or {}).items()}
    return [(r.method, r.what, plain(r.form if r.form is not None else r.json)) for r in requests]


@pytest.mark.parametrize(("style", "refresh", "access", "expected"), [
    pytest.param(Revocation.RFC7009, RT, AT, [
        ("POST", "refresh token", {"token": "rt", "token_type_hint": "refresh_token"}),
        ("POST", "access token", {"token": "at", "token_type_hint": "access_token"})],
        id="RFC 7009 revokes the refresh token first, then the access token"),
    pytest.param(Revocation.RFC7009, None, AT, [
        ("POST", "access token", {"token": "at", "token_type_hint": "access_token"})],
        id="a static link (no refresh token) revokes its access token"),
    pytest.param(Revocation.GITHUB_GRANT, RT, AT, [("DELETE", "grant", {"access_token": "at"})],
                 id="GitHub deletes the whole grant with the access token"),
    pytest.param(Revocation.NONE, RT, AT, [], id="a type without revocation sends nothing"),
])
def test_which_requests_revoke_a_grant(style: Revocation, refresh: SecretStr | None, access: SecretStr | None,
                                       expected: list[tuple[str, str, dict[str, str]]]) -> None:
    assert expected == _shape(revocations.plan(style, "https://p.test/revoke", refresh_token=refresh,
                                               access_token=access))


@pytest.mark.parametrize(("style", "status", "error", "headers", "verdict"), [
    pytest.param(Revocation.RFC7009, 200, None, {}, Verdict.REVOKED, id="RFC 7009 200 is revoked"),
    pytest.param(Revocation.GITHUB_GRANT, 204, None, {}, Verdict.REVOKED, id="GitHub 204 is revoked"),
    pytest.param(Revocation.GITHUB_GRANT, 404, None, {}, Verdict.REVOKED,
                 id="GitHub 404: the grant was already gone"),
    pytest.param(Revocation.RFC7009, None, None, {}, Verdict.TRANSIENT, id="no answer is tried again"),
    pytest.param(Revocation.RFC7009, 503, None, {}, Verdict.TRANSIENT, id="a 5xx is tried again"),
    pytest.param(Revocation.RFC7009, 429, None, {"retry-after": "5"}, Verdict.TRANSIENT,
                 id="429 is tried again"),
    pytest.param(Revocation.GITHUB_GRANT, 403, None, {"x-ratelimit-remaining": "0"}, Verdict.TRANSIENT,
                 id="GitHub's rate limit (403, nothing left) is tried again"),
    pytest.param(Revocation.RFC7009, 400, "unsupported_token_type", {}, Verdict.REFUSED,
                 id="unsupported_token_type is a definite no"),
    pytest.param(Revocation.RFC7009, 401, "invalid_client", {}, Verdict.REFUSED,
                 id="a rejected client is a definite no"),
    pytest.param(Revocation.GITHUB_GRANT, 422, None, {}, Verdict.REFUSED, id="GitHub 422 is a definite no"),
    pytest.param(Revocation.RFC7009, 302, None, {}, Verdict.REFUSED, id="a redirect is never followed"),
])
def test_what_a_revocation_answer_means(style: Revocation, status: int | None, error: str | None,
                                        headers: dict[str, str], verdict: Verdict) -> None:
    assert verdict == revocations.classify(style, status=status, error=error, headers=headers).verdict


def test_a_message_never_carries_an_unknown_error_code_as_it_came() -> None:
    outcome = revocations.classify(Revocation.RFC7009, status=400, error="\x1b]0;pwned\x07")
    assert "\x1b" not in outcome.message and "unknown" in outcome.message


@pytest.mark.parametrize(("spec", "url"), [
    pytest.param({"type": "github"}, "https://api.github.com/applications/my%20app/grant",
                 id="github.com: the grant API on api.github.com, the client id filled in"),
    pytest.param({"type": "github", "baseURL": "https://ghe.example.com"},
                 "https://ghe.example.com/api/v3/applications/my%20app/grant", id="GitHub Enterprise Server"),
    pytest.param({"type": "gitlab"}, "https://gitlab.com/oauth/revoke", id="GitLab: Doorkeeper's RFC 7009"),
    pytest.param({"type": "gitlab", "revocationURL": ""}, None, id="an empty revocationURL turns it off"),
    pytest.param({"type": "bitbucket-cloud"}, None, id="Bitbucket has no revocation"),
    pytest.param({"type": "azure-devops-entra", "baseURL": "https://login.microsoftonline.com/t"}, None,
                 id="Entra has no per-token revocation"),
    pytest.param({"type": "gitea", "baseURL": "https://gitea.test"}, None, id="Gitea has none by default"),
    pytest.param({"type": "generic", "tokenURL": "https://idp.test/token", "revocationURL": "https://idp.test/r"},
                 "https://idp.test/r", id="generic: the URL it names"),
])
def test_revocation_urls_default_per_type(spec: dict[str, str], url: str | None) -> None:
    assert url == parse_provider("p", {"clientID": "my app", **spec}).revocation_url


def test_a_generic_provider_with_an_issuer_discovers_its_revocation_endpoint_only_when_asked() -> None:
    spec = parse_provider("p", {"type": "generic", "clientID": "c", "issuerURL": "https://idp.test",
                                "tokenURL": "https://idp.test/token", "validateURL": "",
                                "deviceAuthorizationURL": "https://idp.test/device"})
    assert (None, True, False) == (spec.revocation_url, spec.discover_revocation, spec.needs_discovery)


def test_a_revocation_of_two_tokens_names_both_and_stops_at_the_first_failure() -> None:
    revoked = revocations.Outcome(Verdict.REVOKED, "revoked the refresh token at the provider")
    down = revocations.Outcome(Verdict.TRANSIENT, "the revocation endpoint answered HTTP 503")
    assert "revoked the refresh token and the access token at the provider" == revocations.combine(
        [revoked, revoked], ["refresh token", "access token"]).message
    assert down == revocations.combine([revoked, down], ["refresh token", "access token"])
