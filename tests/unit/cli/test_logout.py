"""``externalauth logout``: which Secret goes with the link, and what the operator's event
means. Pure tables."""

from __future__ import annotations

from typing import Any

import pytest

from externalauth.cli import logout, plans

LINK = {"metadata": {"namespace": "alice", "name": "gh"}, "spec": {"providerName": "github", "secretName": "gh-token"}}
OPTED_IN = {"externalauth.io/provider": "github"}
BY_LOGIN = {"externalauth.io/created-by-login-for": "gh"}


def secret(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "gh-token", "labels": labels, "annotations": annotations}}


@pytest.mark.parametrize(("found", "keep", "expected"), [
    pytest.param(secret(OPTED_IN, BY_LOGIN), False, (True, "Secret gh-token deleted"),
                 id="the Secret login created for this link goes"),
    pytest.param(secret(OPTED_IN, BY_LOGIN), True, (False, "Secret gh-token kept (--keep-secret)"),
                 id="--keep-secret keeps it"),
    pytest.param(secret(OPTED_IN, {}), False,
                 (False, "Secret gh-token kept: externalauth login did not create it for this link (no annotation "
                         "externalauth.io/created-by-login-for=gh); delete it yourself if it is not needed"),
                 id="a Secret the user made is kept"),
    pytest.param(secret(OPTED_IN, {"externalauth.io/created-by-login-for": "other"}), False,
                 (False, "Secret gh-token kept: externalauth login did not create it for this link (no annotation "
                         "externalauth.io/created-by-login-for=gh); delete it yourself if it is not needed"),
                 id="a Secret login created for another link is kept"),
    pytest.param(secret({}, BY_LOGIN), False,
                 (False, "Secret gh-token kept: it is no longer opted in to provider github"),
                 id="a Secret no longer opted in to the link's provider is kept"),
    pytest.param(None, False, (False, "Secret gh-token was not there"), id="no Secret: nothing to delete"),
])
def test_which_secret_goes(found: dict[str, Any] | None, keep: bool, expected: tuple[bool, str]) -> None:
    assert expected == plans.secret_to_delete(LINK, found, keep=keep)


def test_login_marks_only_a_secret_it_creates() -> None:
    """CREATE carries the annotation; a PATCH of an existing token Secret does not add it."""
    created = plans.plan_secret(None, namespace="alice", name="gh-token", provider="github", token_data={},
                                force=False, link="gh")
    existing = {"metadata": {"name": "gh-token"}, "type": "Opaque", "data": {"access_token": "eA=="}}
    patched = plans.plan_secret(existing, namespace="alice", name="gh-token", provider="github", token_data={},
                                force=False, link="gh")
    assert (BY_LOGIN, None) == (created.body["metadata"].get("annotations"),
                                patched.body["metadata"].get("annotations"))


@pytest.mark.parametrize(("event", "expected"), [
    pytest.param({"reason": "Revoked", "message": "grant revoked at provider github"},
                 logout.Outcome(True, "grant revoked at provider github"), id="Revoked"),
    pytest.param({"reason": "RevocationFailed", "message": "not revoked:\nrevoke it at https://x/settings"},
                 logout.Outcome(False, "not revoked: revoke it at https://x/settings"),
                 id="RevocationFailed, its message on one line"),
    pytest.param({"reason": "RevocationFailed", "message": "a\x1b[2Jb"}, logout.Outcome(False, "a\\x1b[2Jb"),
                 id="control characters in a message are escaped"),
    pytest.param({"reason": "Refreshed", "message": "x"}, None, id="any other event says nothing"),
])
def test_what_an_event_says(event: dict[str, Any], expected: logout.Outcome | None) -> None:
    assert expected == logout.outcome_of(event)
