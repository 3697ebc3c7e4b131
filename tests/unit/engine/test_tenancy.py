"""Safe among tenants and against odd input (contract §3, §5, §9.11 to §9.14): opt-in,
never spend what cannot be stored, bounded refresh rate, bounded requests."""

from __future__ import annotations

import copy
import ssl
from typing import Any

from externalauth.engine.reconciler import Engine
from externalauth.engine.settings import Settings
from externalauth.model.names import CLAIM_ANNOTATION, PROVIDER_LABEL
from tests.unit.engine.fakes import FakeClock, FakeKube, FakeProvider, b64, factory, success
from tests.unit.engine.rig import LINK, SECRET, Rig, run

HOUR = 3600


@run
async def test_a_secret_without_the_provider_label_is_not_read_written_or_labelled() -> None:
    """Confused deputy: a link naming someone's unlabelled Secret gets SecretNotOptedIn;
    only the Secret's metadata was looked at, nothing was sent anywhere."""
    rig = Rig(validate=True)
    await rig.standard(labels={}, expires_in=60)
    await rig.reconcile()
    assert ["meta ns/tok"] == [e for e in rig.journal if e.split()[0] in ("meta", "get", "patch", "claim",
                                                                             "persist", "formats", "release")]
    assert [] == rig.provider.exchanged + rig.provider.validated
    assert ("False", "SecretNotOptedIn") == rig.condition("Ready")
    assert {} == rig.kube.secrets[SECRET]["metadata"]["labels"]


@run
async def test_a_secret_opted_in_to_another_provider_is_not_used_for_this_one() -> None:
    rig = Rig(validate=True)
    await rig.standard(labels={PROVIDER_LABEL: "team-gitea"})
    await rig.reconcile()
    assert [] == rig.provider.exchanged + rig.provider.validated
    status, reason = rig.condition("Ready")
    message = next(c["message"] for c in rig.kube.links[LINK]["status"]["conditions"] if c["type"] == "Ready")
    assert ("False", "SecretNotOptedIn") == (status, reason)
    assert "externalauth.io/provider=team-gitea" in message and "externalauth.io/provider=gh" in message


@run
async def test_a_missing_secret_is_not_found_not_unopted() -> None:
    rig = Rig()
    await rig.add_provider()
    rig.add_link()
    await rig.reconcile()
    assert ("False", "SecretNotFound") == rig.condition("Ready")


@run
async def test_an_immutable_secret_is_never_refreshed() -> None:
    """The refresh token is not spent when its successor could not be stored."""
    rig = Rig()
    await rig.standard(immutable=True)
    await rig.reconcile()
    assert [] == rig.provider.exchanged
    assert ("False", "SecretInvalid") == rig.condition("Ready")


@run
async def test_a_secret_too_large_for_the_new_tokens_is_never_refreshed() -> None:
    rig = Rig()
    await rig.add_provider()
    rig.add_secret()
    rig.kube.edit_secret(SECRET, {"data": {"padding": b64("x" * 1_000_000)}})
    rig.engine.on_secret("MODIFIED", rig.kube.secrets[SECRET])  # type: ignore[arg-type]
    rig.add_link()
    await rig.reconcile()
    assert [] == rig.provider.exchanged
    assert ("False", "SecretInvalid") == rig.condition("Ready")


@run
async def test_a_secret_that_refuses_the_write_loses_the_token_says_so_and_stops() -> None:
    """422 after the exchange (made immutable meanwhile): TokenLost, no endless retry, and
    the spent refresh token is never sent again."""
    rig = Rig()
    await rig.standard()

    def frozen_meanwhile(rt: str, n: int) -> Any:
        rig.kube.secrets[SECRET]["immutable"] = True
        return success("access-1", "refresh-1")

    rig.provider.answer = frozen_meanwhile
    await rig.reconcile()
    await rig.reconcile()
    await rig.settle()
    assert ["persist ns/tok 422"] == rig.steps("persist", full=True)
    assert ["refresh-0"] == rig.provider.exchanged
    assert "TokenLost" in rig.event_reasons()
    assert ("False", "SecretInvalid") == rig.condition("Ready")


@run
async def test_refresh_before_longer_than_the_lifetime_refreshes_at_half_life_not_in_a_loop() -> None:
    """refreshBefore: 8h with 8-hour tokens: one refresh, then the next at half the
    lifetime, and the link says refreshBefore was clamped."""
    rig = Rig()
    rig.provider.answer = lambda rt, n: success(f"access-{n}", f"refresh-{n}", lifetime=8 * HOUR)
    await rig.standard(expires_in=8 * HOUR, link={"refreshBefore": "8h"})
    for _ in range(5):
        await rig.reconcile()
    assert 1 == len(rig.provider.exchanged)
    wake = rig.engine.scheduler.when(LINK)
    assert wake is not None and 4 * HOUR - 60 <= (wake - rig.clock.now()).total_seconds() <= 4 * HOUR
    message = next(c["message"] for c in rig.kube.links[LINK]["status"]["conditions"] if c["type"] == "Refreshable")
    assert "refreshBefore is more than half the token's lifetime" in message
    rig.clock.advance(4 * HOUR)
    await rig.reconcile()
    assert 2 == len(rig.provider.exchanged)


@run
async def test_refresh_requests_are_rate_limited_per_link() -> None:
    """Three requests in a minute are honoured at once; a fourth waits for the window."""
    rig = Rig()
    await rig.standard(expires_in=8 * HOUR)
    for n in range(4):
        rig.request_refresh(f"r{n}")
        await rig.reconcile()
        rig.clock.advance(1)
    assert 3 == len(rig.provider.exchanged)
    wake = rig.engine.scheduler.when(LINK)
    assert wake is not None and (wake - rig.clock.now()).total_seconds() <= 60
    rig.clock.advance(60)
    await rig.reconcile()
    assert 4 == len(rig.provider.exchanged)


@run
async def test_an_overlong_refresh_request_is_not_acted_on_and_the_status_stays_writable() -> None:
    rig = Rig()
    await rig.standard(expires_in=8 * HOUR, link={})
    rig.request_refresh("x" * 300)
    await rig.reconcile()
    await rig.reconcile()
    await rig.settle()
    assert [] == rig.provider.exchanged
    assert ["InvalidInput"] == [r for r in rig.event_reasons() if r == "InvalidInput"]
    assert "lastRefreshRequest" not in rig.kube.links[LINK]["status"]
    assert ("True", "TokenCurrent") == rig.condition("Ready")


@run
async def test_a_claim_holder_with_odd_characters_is_not_believed() -> None:
    """A forged holder cannot smuggle a newline into logs or the status."""
    rig = Rig()
    until = rig.clock.now().timestamp() + 30
    await rig.standard(annotations={CLAIM_ANNOTATION: f"evil\nERROR forged;{until:.0f}"})
    await rig.reconcile()
    assert ["refresh-0"] == rig.provider.exchanged


def _engine(*, make_client: Any, clock: FakeClock, kube: FakeKube) -> Engine:
    return Engine(kube, make_client=make_client, settings=Settings(operator_namespace="op"), clock=clock,
                  holder="me")


@run
async def test_a_client_secret_outside_the_operator_namespace_is_invalid_spec() -> None:
    journal: list[str] = []
    clock = FakeClock()
    kube = FakeKube(journal)
    engine = _engine(make_client=factory(lambda spec, secret: FakeProvider(journal, clock)), clock=clock, kube=kube)
    for name, ns in (("outside", "alice"), ("inside", "op")):
        kube.put_secret(ns, f"{name}-client", access="x", refresh=None, expiry=None)
        kube.secrets[(ns, f"{name}-client")]["data"]["clientSecret"] = b64("s3cret")
        kube.providers[name] = {"metadata": {"name": name, "generation": 1, "resourceVersion": "1"},
                                "spec": {"type": "github", "clientID": "id", "clientSecretRef": {
                                    "namespace": ns, "name": f"{name}-client", "key": "clientSecret"}}}
        await engine.on_provider("ADDED", dict(kube.providers[name]))  # type: ignore[arg-type]
    reasons = {n: kube.providers[n]["status"]["conditions"][0]["reason"] for n in ("outside", "inside")}
    assert {"outside": "InvalidSpec", "inside": "Valid"} == reasons
    assert "get alice/outside-client" not in journal


@run
async def test_a_ca_bundle_that_does_not_parse_fails_that_provider_only() -> None:
    journal: list[str] = []
    clock = FakeClock()
    kube = FakeKube(journal)

    def make_client(spec: Any, secret: Any) -> Any:
        if spec.ca_bundle:
            raise ssl.SSLError("PEM lib")
        return FakeProvider(journal, clock)

    engine = _engine(make_client=factory(make_client), clock=clock, kube=kube)
    for name, extra in (("broken", {"caBundle": "-----BEGIN CERTIFICATE-----\nnot base64\n"}), ("fine", {})):
        kube.providers[name] = {"metadata": {"name": name, "generation": 1, "resourceVersion": "1"},
                                "spec": {"type": "github", "clientID": "id", **extra}}
        await engine.on_provider("ADDED", dict(kube.providers[name]))  # type: ignore[arg-type]
    reasons = {n: kube.providers[n]["status"]["conditions"][0]["reason"] for n in ("broken", "fine")}
    assert {"broken": "InvalidSpec", "fine": "Valid"} == reasons
    assert engine.providers.view("broken") is not None and engine.providers.view("broken").spec is None  # type: ignore[union-attr]


@run
async def test_a_request_that_lost_claim_races_does_not_use_up_the_request_budget() -> None:
    """A requested refresh whose claim keeps losing races (someone edits the Secret) sends
    nothing: it must not count against the 3-per-minute request limit."""
    rig = Rig()
    await rig.standard(expires_in=8 * HOUR)
    races = 0

    def someone_edits(key: tuple[str, str], patch: Any) -> None:
        nonlocal races
        if "annotations" in (patch.get("metadata") or {}) and races < 5:
            races += 1
            rig.kube.edit_secret(key, {"metadata": {"annotations": {"touch": str(races)}}})
            rig.engine.on_secret("MODIFIED", rig.kube.secrets[key])  # type: ignore[arg-type]

    rig.kube.before_secret_patch = someone_edits
    rig.request_refresh("now")
    for _ in range(6):
        await rig.reconcile()
        rig.clock.advance(2)
    assert ["refresh-0"] == rig.provider.exchanged
    assert 5 == races


@run
async def test_a_replica_ignores_the_links_and_secrets_of_other_shards() -> None:
    """--shard I/N: a namespace of another shard is neither cached nor decided."""
    from externalauth.policy.sharding import Shard, shard_of

    ours = Shard(index=1 - shard_of("ns", 2), count=2)  # the shard that does NOT serve "ns"
    rig = Rig(settings=Settings(shard=ours))
    await rig.standard()
    await rig.reconcile()
    assert ({}, {}, []) == (rig.engine.caches.links, rig.engine.caches.secrets, rig.provider.exchanged)
    served = Rig(settings=Settings(shard=Shard(index=shard_of("ns", 2), count=2)))
    await served.standard()
    await served.reconcile()
    assert ["refresh-0"] == served.provider.exchanged


async def _selective_provider(rig: Rig, selector: dict[str, Any]) -> None:
    await rig.add_provider()
    body = copy.deepcopy(rig.kube.providers["gh"])
    body["spec"]["namespaceSelector"] = selector
    body["metadata"]["generation"] = 2
    rig.kube.bump(body)
    rig.kube.providers["gh"] = body
    await rig.engine.on_provider("MODIFIED", copy.deepcopy(body))


@run
async def test_a_link_in_a_namespace_the_provider_does_not_select_sends_nothing_until_relabelled() -> None:
    """spec.namespaceSelector (contract §1): a due link in an unselected namespace is
    ProviderNotAllowed, its Secret's data is not read and no token is sent, even on request;
    labelling the namespace re-decides it (scheduled by the namespace event) and it refreshes."""
    rig = Rig(validate=True)
    await _selective_provider(rig, {"matchLabels": {"externalauth.io/tenant": "yes"}})
    rig.engine.on_namespace("ADDED", {"metadata": {"name": "ns", "labels": {"team": "b"}}})
    rig.add_secret(expires_in=60)
    rig.add_link()
    rig.request_refresh("now")
    await rig.reconcile()
    assert ("False", "ProviderNotAllowed") == rig.condition("Ready")
    assert [] == rig.provider.exchanged + rig.provider.validated
    assert [] == rig.steps("get", "meta", "claim")
    rig.engine.on_namespace("MODIFIED", {"metadata": {"name": "ns", "labels": {"externalauth.io/tenant": "yes"}}})
    assert rig.engine.scheduler.when(LINK) is not None, "relabelling the namespace re-decides its links"
    await rig.reconcile()
    assert ("True", "TokenCurrent") == rig.condition("Ready")
    assert 1 == len(rig.provider.exchanged)
    rig.engine.on_namespace("MODIFIED", {"metadata": {"name": "ns", "labels": {}}})
    await rig.reconcile()
    assert ("False", "ProviderNotAllowed") == rig.condition("Ready")


@run
async def test_a_namespace_event_that_changes_no_label_re_decides_nothing() -> None:
    rig = Rig()
    await _selective_provider(rig, {"matchLabels": {"team": "a"}})
    rig.engine.on_namespace("ADDED", {"metadata": {"name": "ns", "labels": {"team": "a"}}})
    rig.add_secret(expires_in=HOUR)
    rig.add_link()
    await rig.reconcile()
    rig.engine.scheduler.forget(LINK)
    rig.engine.on_namespace("MODIFIED", {"metadata": {"name": "ns", "labels": {"team": "a"},
                                                      "annotations": {"x": "y"}}})
    assert rig.engine.scheduler.when(LINK) is None
