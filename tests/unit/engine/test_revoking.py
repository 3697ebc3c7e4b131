"""Revocation on deletion (contract §2 revokeOnDelete, §9.17) through the engine, with
fakes: the finalizer follows the spec; a deleted link's grant is revoked once, under the
Secret's claim, before the finalizer goes; failures are bounded and said."""

from __future__ import annotations

import copy
import datetime as dt

from externalauth.engine.settings import Settings
from externalauth.model.names import CLAIM_ANNOTATION, REVOKE_FINALIZER
from externalauth.policy import revocations
from externalauth.policy.revocations import Verdict
from tests.unit.engine.rig import LINK, SECRET, Rig, run


async def _rig(*, provider_type: str = "generic", revocation_url: str | None = "https://provider.test/revoke",
               settings: Settings | None = None) -> Rig:
    rig = Rig(settings=settings)
    spec = {"type": provider_type, "clientID": "id", "tokenURL": "https://provider.test/token",
            "validateURL": "", "baseURL": "https://provider.test/tenant"}
    if revocation_url is not None:
        spec["revocationURL"] = revocation_url
    body = {"metadata": {"name": "gh", "generation": 1, "resourceVersion": "1"}, "spec": spec}
    rig.kube.providers["gh"] = body
    await rig.engine.on_provider("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]
    rig.add_link(revokeOnDelete=True)  # links before Secrets, as at start-up: the Secret is cached
    rig.add_secret(expires_in=3600)
    return rig


def _delete(rig: Rig, *, ago: float = 0) -> None:
    """The user deletes the link: the API server sets deletionTimestamp (the finalizer holds it)."""
    body = rig.kube.links[LINK]
    stamp = rig.clock.now() - dt.timedelta(seconds=ago)
    body["metadata"]["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    rig.kube.bump(body)
    rig.engine.on_link("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]


def _finalizers(rig: Rig) -> list[str]:
    return list(rig.kube.links[LINK]["metadata"].get("finalizers") or [])


@run
async def test_a_link_that_asks_for_revocation_gets_the_finalizer_carrying_its_resource_version() -> None:
    rig = await _rig()
    rv = rig.kube.links[LINK]["metadata"]["resourceVersion"]
    await rig.reconcile()
    assert [REVOKE_FINALIZER] == _finalizers(rig)
    assert [f"finalizers ns/l {REVOKE_FINALIZER} rv={rv}"] == rig.steps("finalizers", full=True)


@run
async def test_a_link_that_no_longer_asks_loses_only_our_finalizer() -> None:
    rig = await _rig()
    await rig.reconcile()
    body = rig.kube.links[LINK]
    body["metadata"]["finalizers"] = ["other.io/keep", REVOKE_FINALIZER]
    body["spec"]["revokeOnDelete"] = False
    rig.kube.bump(body)
    rig.engine.on_link("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]
    await rig.reconcile()
    assert ["other.io/keep"] == _finalizers(rig)


@run
async def test_deleting_the_link_revokes_both_tokens_under_the_claim_then_removes_the_finalizer() -> None:
    rig = await _rig()
    await rig.reconcile()
    _delete(rig)
    await rig.reconcile()
    assert ["claim", "revoke", "finalizers"] == rig.steps("claim", "revoke", "finalizers", "exchange")[1:]
    assert ["revoke refresh-0 access-0"] == rig.steps("revoke", full=True)
    assert [] == _finalizers(rig)
    assert rig.kube.claim(SECRET) is not None  # kept until its lease ends: nobody exchanges a revoked grant
    await rig.settle()
    assert ["Revoked"] == rig.event_reasons()


@run
async def test_a_provider_that_is_down_is_retried_then_given_up_after_the_deadline() -> None:
    rig = await _rig(settings=Settings(revocation_deadline=60))
    await rig.reconcile()
    rig.provider.revocation = revocations.Outcome(Verdict.TRANSIENT, "the revocation endpoint did not answer")
    _delete(rig)
    await rig.reconcile()
    assert [REVOKE_FINALIZER] == _finalizers(rig)  # kept: tried again soon
    assert rig.engine.scheduler.when(LINK) is not None
    assert rig.kube.claim(SECRET) is None  # released for the next attempt (or a refresh elsewhere)
    rig.clock.advance(61)
    await rig.reconcile()
    assert [] == _finalizers(rig)  # the deadline passed: the namespace deletion does not hang
    assert 2 == len(rig.steps("revoke"))
    await rig.settle()
    assert ["RevocationFailed"] == rig.event_reasons()
    message = rig.kube.events[-1][2]
    assert "could not be reached for 60s" in message and "by hand" in message


@run
async def test_a_provider_type_without_revocation_sends_nothing_and_says_what_to_do_by_hand() -> None:
    rig = await _rig(provider_type="bitbucket-cloud", revocation_url=None)
    await rig.reconcile()
    _delete(rig)
    await rig.reconcile()
    assert [] == rig.steps("revoke", "claim")
    assert [] == _finalizers(rig)
    await rig.settle()
    assert ["RevocationFailed"] == rig.event_reasons()
    assert "App authorizations" in rig.kube.events[-1][2]


@run
async def test_a_refusal_is_final_and_names_the_manual_step() -> None:
    rig = await _rig(provider_type="gitlab", revocation_url=None)
    await rig.reconcile()
    rig.provider.revocation = revocations.Outcome(Verdict.REFUSED, "the provider rejected the OAuth client")
    _delete(rig)
    await rig.reconcile()
    assert 1 == len(rig.steps("revoke"))
    assert [] == _finalizers(rig)
    await rig.settle()
    assert ["RevocationFailed"] == rig.event_reasons()
    assert "Authorized applications" in rig.kube.events[-1][2]


@run
async def test_a_namespace_the_provider_does_not_select_sends_no_token_to_revoke() -> None:
    """spec.namespaceSelector (contract §1): the tokens of a namespace the provider does not
    serve are never sent to it, not even to revoke them on deletion."""
    rig = await _rig()
    await rig.reconcile()
    body = copy.deepcopy(rig.kube.providers["gh"])
    body["spec"]["namespaceSelector"] = {"matchLabels": {"team": "a"}}
    body["metadata"]["generation"] = 2
    rig.kube.bump(body)
    rig.kube.providers["gh"] = body
    await rig.engine.on_provider("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]
    rig.engine.on_namespace("ADDED", {"metadata": {"name": "ns", "labels": {"team": "b"}}})
    _delete(rig)
    await rig.reconcile()
    assert ([], []) == (rig.steps("revoke"), rig.steps("claim"))
    assert [] == _finalizers(rig)
    await rig.settle()
    assert ["RevocationFailed"] == rig.event_reasons()
    assert "namespaceSelector" in rig.kube.events[-1][2]


@run
async def test_another_replicas_live_claim_defers_the_revocation_without_a_call() -> None:
    rig = await _rig()
    await rig.reconcile()
    until = int(rig.clock.now().timestamp()) + 30
    rig.kube.edit_secret(SECRET, {"metadata": {"annotations": {CLAIM_ANNOTATION: f"other;{until}"}}})
    rig.engine.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    _delete(rig)
    await rig.reconcile()
    assert [] == rig.steps("revoke")
    assert [REVOKE_FINALIZER] == _finalizers(rig)
    when = rig.engine.scheduler.when(LINK)
    assert when is not None and when >= rig.clock.now() + dt.timedelta(seconds=29)


@run
async def test_a_deleted_link_is_never_refreshed() -> None:
    rig = await _rig()
    await rig.reconcile()
    rig.kube.edit_secret(SECRET, {"data": {"expiry": ""}})
    _delete(rig)
    rig.provider.revocation = revocations.Outcome(Verdict.TRANSIENT, "down")
    await rig.reconcile()
    assert [] == rig.steps("exchange")


@run
async def test_a_provider_not_known_yet_is_waited_for_briefly_then_the_link_goes() -> None:
    rig = await _rig()
    await rig.reconcile()
    await rig.engine.on_provider("DELETED", copy.deepcopy(rig.kube.providers["gh"]))  # type: ignore[arg-type]
    _delete(rig)
    await rig.reconcile()
    assert [REVOKE_FINALIZER] == _finalizers(rig)  # its watch may lag the link's
    rig.clock.advance(31)
    await rig.reconcile()
    assert [] == _finalizers(rig)
    await rig.settle()
    assert ["RevocationFailed"] == rig.event_reasons()


@run
async def test_a_second_look_after_the_revocation_only_removes_the_finalizer() -> None:
    rig = await _rig()
    await rig.reconcile()
    _delete(rig)
    rig.kube.links[LINK]["metadata"]["resourceVersion"] = "stale"  # the finalizer write will conflict
    await rig.reconcile()
    assert [REVOKE_FINALIZER] == _finalizers(rig)
    rig.engine.on_link("MODIFIED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
    await rig.reconcile()
    assert (1, []) == (len(rig.steps("revoke")), _finalizers(rig))
    await rig.settle()
    assert ["Revoked"] == rig.event_reasons()


@run
async def test_a_token_secret_deleted_before_its_link_still_revokes_the_grant() -> None:
    """A namespace being deleted takes the Secret and the link at once: the Secret's last
    copy is kept (in memory) for the link that revokes on deletion."""
    rig = await _rig()
    await rig.reconcile()
    gone = rig.kube.secrets.pop(SECRET)
    rig.engine.on_secret("DELETED", copy.deepcopy(gone))  # type: ignore[arg-type]
    _delete(rig)
    await rig.reconcile()
    assert (["revoke refresh-0 access-0"], []) == (rig.steps("revoke", full=True), rig.steps("claim"))
    assert [] == _finalizers(rig)
    await rig.settle()
    assert ["Revoked"] == rig.event_reasons()
    rig.engine.on_link("DELETED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
    assert {} == rig.engine.revoker._orphans


@run
async def test_a_deleted_secret_no_link_revokes_with_is_not_kept() -> None:
    rig = await _rig()
    rig.kube.links[LINK]["spec"]["revokeOnDelete"] = False
    rig.kube.bump(rig.kube.links[LINK])
    rig.engine.on_link("MODIFIED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
    await rig.reconcile()
    assert [] == _finalizers(rig)
    gone = rig.kube.secrets.pop(SECRET)
    rig.engine.on_secret("DELETED", copy.deepcopy(gone))  # type: ignore[arg-type]
    assert {} == rig.engine.revoker._orphans


@run
async def test_a_link_created_again_under_the_same_name_has_its_own_grant_revoked_on_deletion() -> None:
    """The first link's revocation is done and it is gone; a new link of the same name
    (another sign-in, new tokens) deleted later is revoked too, not taken for the old one."""
    rig = await _rig()
    await rig.reconcile()
    _delete(rig)
    await rig.reconcile()
    rig.engine.on_link("DELETED", copy.deepcopy(rig.kube.links.pop(LINK)))  # type: ignore[arg-type]
    rig.kube.put_secret("ns", "tok", access="access-new", refresh="refresh-new",
                        expiry=rig.clock.now() + dt.timedelta(hours=1))
    rig.add_link(revokeOnDelete=True)
    rig.engine.on_secret("MODIFIED", copy.deepcopy(rig.kube.secrets[SECRET]))  # type: ignore[arg-type]
    rig.clock.advance(120)  # the first claim's lease is over
    await rig.reconcile()
    _delete(rig)
    await rig.reconcile()
    assert ["revoke refresh-0 access-0", "revoke refresh-new access-new"] == rig.steps("revoke", full=True)
    assert [] == _finalizers(rig)
