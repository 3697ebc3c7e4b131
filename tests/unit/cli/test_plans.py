"""What ``externalauth login`` writes into the token Secret: pure decisions."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.cli import plans
from externalauth.errors import InvalidInputError

NEW = {"access_token": "bmV3", "token_type": "YmVhcmVy", "refresh_token": "cnQ="}


def secret(type_: str = "externalauth.io/oauth2-token", **data: str) -> dict[str, Any]:
    return {"type": type_, "data": data,
            "metadata": {"name": "s", "resourceVersion": "7", "uid": "u1",
                         "labels": {"team": "a"}, "annotations": {"note": "x"}}}


def plan(existing: dict[str, Any] | None, *, force: bool = False,
         data: dict[str, str] | None = None) -> plans.SecretPlan:
    return plans.plan_secret(existing, namespace="ns", name="s", provider="gh", token_data=data or NEW,
                             force=force)


def test_a_missing_secret_is_created_as_a_labelled_token_secret() -> None:
    p = plan(None)
    assert (plans.Write.CREATE, "externalauth.io/oauth2-token", {"externalauth.io/provider": "gh"}, NEW) == (
        p.write, p.body["type"], p.body["metadata"]["labels"], p.body["data"])


@pytest.mark.parametrize("existing", [
    pytest.param(secret(access_token="b2xk", note="eA=="), id="a token Secret of our type"),
    pytest.param(secret("Opaque", access_token="b2xk"), id="an Opaque Secret with an access_token"),
    pytest.param(secret(), id="an empty Secret of our type"),
])
def test_a_token_secret_is_merge_patched_with_a_resource_version(existing: dict[str, Any]) -> None:
    """Only token keys and our label are in the patch: other keys and labels stay; the
    version it is based on goes beside it (the client's one compare-and-swap convention)."""
    p = plan(existing)
    assert (plans.Write.PATCH, "7", {"labels": {"externalauth.io/provider": "gh"}}) == (
        p.write, p.resource_version, p.body["metadata"])
    assert "note" not in p.body["data"]


def test_stale_token_keys_are_removed_when_the_new_grant_lacks_them() -> None:
    """An old refresh token or expiry must not be paired with a new access token."""
    old = secret(access_token="b2xk", refresh_token="b2xkcnQ=", expiry="MjAyMA==", note="eA==")
    p = plan(old, data={"access_token": "bmV3", "token_type": "YmVhcmVy"})
    assert {"access_token": "bmV3", "token_type": "YmVhcmVy", "refresh_token": None,
            "expiry": None} == p.body["data"]


@pytest.mark.parametrize("existing", [
    pytest.param(secret("Opaque", password="cA=="), id="an Opaque Secret without access_token"),
    pytest.param(secret("kubernetes.io/basic-auth", username="dQ==", password="cA=="),
                 id="a basic-auth Secret"),
])
def test_a_non_token_secret_is_refused_without_force(existing: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match=r"not a token Secret.*--force"):
        plan(existing)


def test_force_patches_an_opaque_secret_in_place() -> None:
    assert plans.Write.PATCH == plan(secret("Opaque", password="cA=="), force=True).write


def test_force_replaces_a_secret_whose_type_cannot_hold_a_token() -> None:
    """Secret types are immutable: delete and recreate, keeping data, labels and annotations."""
    p = plan(secret("kubernetes.io/basic-auth", username="dQ==", password="cA=="), force=True)
    assert (plans.Write.REPLACE, "externalauth.io/oauth2-token") == (p.write, p.body["type"])
    assert {"username": "dQ==", "password": "cA==", **NEW} == p.body["data"]
    assert {"team": "a", "externalauth.io/provider": "gh"} == p.body["metadata"]["labels"]
    assert {"note": "x"} == p.body["metadata"]["annotations"]


def test_link_patch_touches_only_provider_and_secret() -> None:
    assert {"spec": {"providerName": "gh", "secretName": "s"}} == plans.link_patch(provider="gh", secret="s")
