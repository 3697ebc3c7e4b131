"""What one reconcile shows (engine/reconciler.py): the status fields and conditions it
writes, the account shown in the output formats, the metrics and gauges it counts, the
events it posts, and when the link is decided next. Through the real Engine on the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from externalauth import metrics
from externalauth.engine.settings import Settings
from externalauth.errors import TransientError
from externalauth.model.names import CLAIM_ANNOTATION, MAX_REFRESH_REQUEST, PROVIDER_LABEL, REFRESH_ANNOTATION, LinkKey
from externalauth.model.secure import SecretStr
from externalauth.policy import timing
from externalauth.policy.classifying import ValidationOutcome, ValidationVerdict
from tests.unit.engine.fakes import b64, error, success
from tests.unit.engine.rig import LINK, SECRET, Rig, run, until

HOUR = 3600
DATE_2MIN_AHEAD = "Sun, 29 Nov 2026 12:02:00 GMT"  # the fake clock starts at 12:00:00


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def status(rig: Rig, key: tuple[str, str] = LINK) -> dict[str, Any]:
    return rig.kube.links[key].get("status") or {}


def message(rig: Rig, kind: str, key: tuple[str, str] = LINK) -> str:
    return str(next(c["message"] for c in status(rig, key)["conditions"] if c["type"] == kind))


def set_status(rig: Rig, fields: Mapping[str, Any], key: tuple[str, str] = LINK) -> None:
    """The link as another replica (or this one before a restart) left its status."""
    rig.kube.links[key]["status"] = dict(fields)
    rig.kube.bump(rig.kube.links[key])
    rig.engine.on_link("MODIFIED", copy.deepcopy(rig.kube.links[key]))  # type: ignore[arg-type]


def gh_user(rig: Rig) -> str:
    """The user the gh-hosts.yml output format names."""
    text = rig.kube.stored(SECRET, "gh-hosts.yml") or ""
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("user:"))


# --- the account in the output formats --------------------------------------------------

@run
async def test_the_account_a_validation_reports_is_written_into_the_gh_hosts_format() -> None:
    """Refreshed before anyone knew the account (the provider's username), validated (the
    provider names alice): the format is written again, with alice, in the same reconcile."""
    rig = Rig(validate=True)
    await rig.add_provider()
    rig.add_link(outputFormats=["gh-hosts"])
    rig.add_secret()
    await rig.reconcile()
    assert ["persist", "validate", "formats"] == rig.steps("persist", "validate", "formats")
    assert ('"alice"', "alice") == (gh_user(rig), status(rig)["account"])
    before = len(rig.kube.writes)
    await rig.reconcile()
    assert len(rig.kube.writes) == before, "formats that are current are not written again"


ACCOUNT_ROWS = [
    ("a restarted replica renders the account the status shows", "alice", '"alice"'),
    ("without an account in the status the provider's username is used", None, '"oauth2"'),
    ("an account in the status that is not a string is ignored", 42, '"oauth2"'),
]


@run
async def test_a_refresh_renders_the_formats_with_the_account_from_the_status() -> None:
    for case, shown, user in ACCOUNT_ROWS:
        rig = Rig()
        await rig.add_provider()
        rig.add_link(outputFormats=["gh-hosts"])
        if shown is not None:
            set_status(rig, {"account": shown})
        rig.add_secret()
        await rig.reconcile()
        assert (["persist"], user) == (rig.steps("persist", "formats"), gh_user(rig)), case


# --- what gathering reads into the status -----------------------------------------------

@run
async def test_the_status_carries_the_generation_and_the_digests_salted_with_the_uid() -> None:
    rig = Rig(validate=True)
    await rig.add_provider()
    rig.add_link()
    rig.kube.links[LINK]["metadata"]["generation"] = 3
    rig.kube.bump(rig.kube.links[LINK])
    rig.engine.on_link("MODIFIED", copy.deepcopy(rig.kube.links[LINK]))  # type: ignore[arg-type]
    rig.add_secret()
    await rig.reconcile()
    shown = status(rig)
    assert (3, SecretStr("access-1").digest("uid-l")) == (shown["observedGeneration"], shown["validatedTokenDigest"])


@run
async def test_a_dead_grant_publishes_the_refresh_tokens_digest_salted_with_the_uid() -> None:
    rig = Rig()
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    await rig.standard()
    await rig.reconcile()
    assert SecretStr("refresh-0").digest("uid-l") == status(rig)["deadGrantDigest"]


@run
async def test_an_invalid_spec_says_why_and_is_counted_without_a_provider() -> None:
    rig = Rig()
    await rig.add_provider()
    rig.add_link(secret="")
    before = sample("externalauth_links", {"provider": "", "ready": "false"})
    await rig.reconcile()
    assert ("False", "InvalidSpec") == rig.condition("Ready")
    assert "spec.secretName" in message(rig, "Ready")
    assert before + 1 == sample("externalauth_links", {"provider": "", "ready": "false"})


UNUSABLE_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("a Secret of another type", {"type": "kubernetes.io/dockerconfigjson"},
     "Secret tok: type kubernetes.io/dockerconfigjson is not Opaque"),
    ("a Secret without an access token", {"data": {"refresh_token": b64("refresh-0")}},
     "Secret tok: key access_token is missing or empty"),
]


@run
async def test_an_unusable_token_secret_says_why() -> None:
    for case, change, says in UNUSABLE_ROWS:
        rig = Rig()
        await rig.add_provider()
        rig.add_link()
        body = rig.kube.put_secret("ns", "tok", access="access-0", refresh="refresh-0", expiry=None)
        body.update(change)  # type: ignore[typeddict-item]
        rig.kube.secrets[SECRET].update(copy.deepcopy(change))
        rig.engine.on_secret("ADDED", body)
        await rig.reconcile()
        assert ("False", "SecretInvalid") == rig.condition("Ready"), case
        assert message(rig, "Ready").startswith(says), case
        assert [] == rig.provider.exchanged, case


@run
async def test_a_refresh_request_of_the_longest_allowed_length_is_acted_on() -> None:
    rig = Rig()
    await rig.standard(expires_in=HOUR)
    await rig.reconcile()
    rig.request_refresh("r" * MAX_REFRESH_REQUEST)
    await rig.reconcile()
    assert ["refresh-0"] == rig.provider.exchanged
    assert "r" * MAX_REFRESH_REQUEST == status(rig)["lastRefreshRequest"]


@run
async def test_each_overlong_refresh_request_is_said_once_as_a_warning() -> None:
    rig = Rig()
    await rig.standard(expires_in=HOUR)
    await rig.reconcile()
    said = (f"the {REFRESH_ANNOTATION} annotation is longer than {MAX_REFRESH_REQUEST} characters: not acted on")
    for value in ("a" * (MAX_REFRESH_REQUEST + 1), "a" * (MAX_REFRESH_REQUEST + 1), "b" * (MAX_REFRESH_REQUEST + 1)):
        rig.request_refresh(value)
        await rig.reconcile()
    await rig.settle()
    assert [("Warning", "InvalidInput", said)] * 2 == [e for e in rig.kube.events if e[1] == "InvalidInput"]
    assert [] == rig.provider.exchanged


# --- metrics, gauges, events --------------------------------------------------------------

@run
async def test_a_refresh_and_a_validation_are_counted_under_their_provider() -> None:
    rig = Rig(validate=True)
    await rig.add_provider()
    rig.add_link("counted", secret="counted")
    rig.add_secret("counted")
    names = [("externalauth_refresh_total", {"provider": "gh", "result": "success"}),
             ("externalauth_refresh_duration_seconds_count", {"provider": "gh"}),
             ("externalauth_validation_total", {"provider": "gh", "result": "valid"}),
             ("externalauth_links", {"provider": "gh", "ready": "true"}),
             ("externalauth_tokens_lost_total", {"provider": "gh", "reason": "gone"})]
    before = [sample(n, labels) for n, labels in names]
    with contextlib.suppress(KeyError):  # left by an earlier test in this process
        metrics.TOKEN_EXPIRY.remove("ns", "counted")
    await rig.reconcile(("ns", "counted"))
    assert [1, 1, 1, 1, 0] == [sample(n, labels) - b for (n, labels), b in zip(names, before, strict=True)]
    expiry = rig.clock.now().timestamp() + HOUR
    assert expiry == sample("externalauth_token_expiry_timestamp_seconds", {"namespace": "ns", "link": "counted"})


@run
async def test_a_token_lost_with_its_secret_is_counted_and_said() -> None:
    rig = Rig()
    await rig.add_provider()
    rig.add_link("lost", secret="lost")
    rig.add_secret("lost")

    def deleted(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        if "access_token" in (patch.get("data") or {}):
            del rig.kube.secrets[key]

    rig.kube.before_secret_patch = deleted
    labels = {"provider": "gh", "reason": "gone"}
    before = sample("externalauth_tokens_lost_total", labels)
    await rig.reconcile(("ns", "lost"))
    await rig.settle()
    assert before + 1 == sample("externalauth_tokens_lost_total", labels)
    assert ("Warning", "TokenLost") in [e[:2] for e in rig.kube.events]


@run
async def test_a_dead_grant_is_a_warning_event_with_the_providers_words() -> None:
    rig = Rig()
    rig.provider.answer = lambda rt, n: error(400, "invalid_grant")
    await rig.standard()
    await rig.reconcile()
    await rig.settle()
    assert [("Warning", "ReauthRequired", "the provider refused the refresh token (invalid_grant): sign in again to "
                                          "write a new token into the Secret")] == rig.kube.events


@run
async def test_a_refresh_token_about_to_expire_is_warned_about_once() -> None:
    """The provider says the refresh token ends in 3 days (the same moment at every
    refresh): one warning, not one per refresh."""
    rig = Rig()
    ends = rig.clock.now().timestamp() + 3 * 24 * HOUR

    def answer(rt: str, n: int) -> Any:
        return success(f"access-{n}", f"refresh-{n}", lifetime=60,
                       refresh_token_expires_in=ends - rig.clock.now().timestamp())

    rig.provider.answer = answer
    await rig.standard()
    for _ in range(3):
        await rig.reconcile()
        rig.clock.advance(60)
    await rig.settle()
    assert 3 == len(rig.provider.exchanged)
    assert 1 == rig.event_reasons().count("RefreshTokenExpiringSoon")


SKEW_ROWS = [
    ("a refresh answer", False),
    ("a validation answer", True),
]


@run
async def test_a_provider_clock_two_minutes_off_is_said_in_ready() -> None:
    for case, by_validation in SKEW_ROWS:
        rig = Rig(validate=by_validation)
        if by_validation:
            rig.provider.verdict = dataclasses.replace(rig.provider.verdict, clock_skew=120.0)
        else:
            ok = success("access-1", "refresh-1")
            rig.provider.answer = lambda rt, n, ok=ok: dataclasses.replace(  # type: ignore[misc]
                ok, headers={**ok.headers, "date": DATE_2MIN_AHEAD})
        await rig.standard()
        await rig.reconcile()
        assert "clock" in message(rig, "Ready"), case


# --- when the link is decided next --------------------------------------------------------

@run
async def test_a_status_write_that_fails_is_retried_soon() -> None:
    rig = Rig()
    await rig.standard(expires_in=HOUR)
    patch_status = rig.kube.patch_link_status

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise TransientError("API server unreachable")

    rig.kube.patch_link_status = unreachable  # type: ignore[method-assign]
    await rig.reconcile()
    assert rig.clock.now() + timing.STATUS_RETRY == rig.engine.scheduler.when(LINK)
    rig.kube.patch_link_status = patch_status  # type: ignore[method-assign]


@run
async def test_a_status_decided_on_a_stale_link_is_decided_again_soon() -> None:
    rig = Rig()
    await rig.standard(expires_in=HOUR)
    rig.kube.bump(rig.kube.links[LINK])  # another replica wrote; the watch has not told yet
    await rig.reconcile()
    assert ({}, ["status ns/l 409"]) == (status(rig), rig.steps("status", full=True))
    assert rig.clock.now() + timing.RETRY_SOON == rig.engine.scheduler.when(LINK)


@run
async def test_a_secret_claimed_by_another_replica_is_looked_at_again_when_the_claim_ends() -> None:
    rig = Rig()
    until = rig.clock.now().timestamp() + 40
    await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{until:.0f}"})
    await rig.reconcile()
    assert [] == rig.steps("claim", "exchange")
    ends = rig.engine.scheduler.when(LINK)
    assert ends is not None and ends.timestamp() == until + timing.CLAIM_GRACE.total_seconds()


# --- the namespaces' budgets of calls that are not due (contract §9.16) -------------------

def add(rig: Rig, namespace: str, name: str, *, expires_in: float | None = None, provider: str = "gh",
        validate: bool = False) -> LinkKey:
    """A link ``namespace/name`` on a Secret of the same name holding ``rt-name`` (no
    expiry: its first refresh is not due, and costs the namespace's budget)."""
    expiry = None if expires_in is None else rig.clock.now() + dt.timedelta(seconds=expires_in)
    secret = rig.kube.put_secret(namespace, name, access=f"at-{name}", refresh=f"rt-{name}", expiry=expiry,
                                 labels={PROVIDER_LABEL: provider})
    body: dict[str, Any] = {
        "apiVersion": "externalauth.io/v1alpha1", "kind": "ExternalAuthLink",
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": 1,
                     "annotations": {}},
        "spec": {"providerName": provider, "secretName": name, "validate": validate}}
    rig.kube.bump(body)
    rig.kube.links[(namespace, name)] = body
    rig.engine.on_link("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]
    rig.engine.on_secret("ADDED", secret)
    return (namespace, name)


@run
async def test_a_namespace_past_its_budget_waits_for_its_booked_moment_others_and_due_work_do_not() -> None:
    """Burst 2, then one call every 2 s, per namespace per provider: ns's third and fourth
    first-sight refreshes are booked 2 s and 4 s ahead (their status written meanwhile);
    a due refresh in ns, and another namespace's and another provider's, go at once."""
    rig = Rig(settings=Settings(tenant_burst=2, tenant_rate=0.5))
    await rig.add_provider()
    await add_second_provider(rig, "gl")
    keys = [add(rig, "ns", name) for name in ("a", "b", "c", "d")]
    due = add(rig, "ns", "due", expires_in=60)
    other = add(rig, "other", "e")
    elsewhere = add(rig, "ns", "f", provider="gl")
    for key in (*keys, due, other, elsewhere):
        await rig.reconcile(key)
    assert ["rt-a", "rt-b", "rt-due", "rt-e", "rt-f"] == rig.provider.exchanged
    now = rig.clock.now()
    assert [now + dt.timedelta(seconds=2), now + dt.timedelta(seconds=4)] == [
        rig.engine.scheduler.when(k) for k in keys[2:]]
    assert all("conditions" in status(rig, k) for k in keys[2:]), "a deferred link's status is written"
    rig.clock.advance(2)
    await rig.reconcile(keys[2])  # its booked moment: it goes, without booking again
    assert "rt-c" == rig.provider.exchanged[-1]
    await rig.reconcile(keys[3])  # not yet
    assert "rt-c" == rig.provider.exchanged[-1]
    assert rig.clock.now() + dt.timedelta(seconds=2) == rig.engine.scheduler.when(keys[3])


async def add_second_provider(rig: Rig, name: str) -> None:
    body = {"metadata": {"name": name, "generation": 1, "resourceVersion": "1"},
            "spec": {"clientID": "id", "maxConcurrentRefreshes": 10, "type": "generic",
                     "tokenURL": f"https://{name}.test/token", "validateURL": ""}}
    rig.kube.providers[name] = body
    await rig.engine.on_provider("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]


# --- watch events in ------------------------------------------------------------------------

@run
async def test_a_deleted_link_leaves_nothing_behind_and_is_not_decided_again() -> None:
    """Its memory, warnings said, schedule and gauges go with it; when its token would
    have been due, nothing is read, written or sent for it."""
    rig = Rig()
    ends = rig.clock.now().timestamp() + 3 * 24 * HOUR
    rig.provider.answer = lambda rt, n: success(f"access-{n}", f"refresh-{n}", lifetime=HOUR,
                                                refresh_token_expires_in=ends - rig.clock.now().timestamp())
    await rig.add_provider()
    key = add(rig, "ns", "gone", expires_in=60)
    await rig.reconcile(key)
    assert 1 == rig.event_reasons().count("RefreshTokenExpiringSoon")
    provider, shown = rig.engine.recorder._ready_gauge[key]
    ready = {"provider": provider, "ready": shown}
    before, steps = sample("externalauth_links", ready), len(rig.journal)
    rig.engine.on_link("DELETED", copy.deepcopy(rig.kube.links.pop(key)))  # type: ignore[arg-type]
    assert before - 1 == sample("externalauth_links", ready)
    assert metrics.REGISTRY.get_sample_value("externalauth_token_expiry_timestamp_seconds",
                                             {"namespace": "ns", "link": "gone"}) is None
    assert (None, None, None) == (rig.engine.memory.get(key), rig.engine._warned_rt.get(key),
                                  rig.engine.scheduler.when(key))
    rig.clock.advance(HOUR)
    await rig.engine.reconcile_link(key)
    assert (steps, ["rt-gone"]) == (len(rig.journal), rig.provider.exchanged)


@run
async def test_a_link_deleted_before_it_was_ever_decided_is_forgotten_quietly() -> None:
    rig = Rig()
    await rig.add_provider()
    rig.add_link()
    rig.engine.on_link("DELETED", copy.deepcopy(rig.kube.links.pop(LINK)))  # type: ignore[arg-type]
    assert rig.engine.scheduler.when(LINK) is None


def sharded(**settings: Any) -> Settings:
    """A replica of three whose shard serves namespace ns (and neither op nor tok nor l)."""
    from externalauth.policy.sharding import Shard, shard_of

    shard = Shard(index=2, count=3)
    assert shard.serves("ns") and {shard_of(n, 3) for n in ("op", "tok", "l")}.isdisjoint({2})
    return Settings(shard=shard, operator_namespace="op", **settings)


async def add_provider_with_client_secret(rig: Rig) -> None:
    body = {"metadata": {"name": "gh", "generation": 1, "resourceVersion": "1"},
            "spec": {"type": "generic", "tokenURL": "https://provider.test/token", "validateURL": "",
                     "clientID": "id", "clientSecretRef": {"namespace": "op", "name": "client", "key": "secret"}}}
    rig.kube.providers["gh"] = body
    await rig.engine.on_provider("ADDED", copy.deepcopy(body))  # type: ignore[arg-type]


def put_client_secret(rig: Rig) -> Any:
    body = rig.kube.put_secret("op", "client", access="x", refresh=None, expiry=None, labels={})
    rig.kube.secrets[("op", "client")]["data"]["secret"] = body["data"]["secret"] = b64("s3cret")
    return body


@run
async def test_a_client_secret_created_after_its_provider_makes_the_links_refresh() -> None:
    """The operator namespace's Secrets are watched whatever the shard; the provider is
    reconciled with the client secret from the watch cache (no extra read) and its links
    are decided again."""
    rig = Rig(settings=sharded())
    await add_provider_with_client_secret(rig)
    rig.add_link()
    rig.add_secret()
    await rig.reconcile()
    assert [] == rig.provider.exchanged
    reads = len(rig.steps("get", "meta"))
    rig.engine.on_secret("ADDED", put_client_secret(rig))
    await rig.settle()
    assert rig.clock.now() == rig.engine.scheduler.when(LINK)
    assert reads == len(rig.steps("get", "meta"))
    await rig.reconcile()
    assert ["refresh-0"] == rig.provider.exchanged


@run
async def test_a_providers_status_echo_re_decides_its_links_only_when_what_they_see_changed() -> None:
    """The client secret appeared in the API before its watch event: the provider's next
    (status-only) event finds it, and its links are decided again; an echo that changes
    nothing leaves them be."""
    rig = Rig(settings=Settings(operator_namespace="op"))
    await add_provider_with_client_secret(rig)
    rig.add_link()
    rig.add_secret(expires_in=HOUR)
    await rig.reconcile()
    rig.engine.scheduler.forget(LINK)

    async def echo() -> None:
        body = copy.deepcopy(rig.kube.providers["gh"])
        rig.kube.bump(body)
        rig.kube.providers["gh"] = body
        await rig.engine.on_provider("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]

    await echo()
    assert rig.engine.scheduler.when(LINK) is None
    put_client_secret(rig)
    await echo()
    assert rig.clock.now() == rig.engine.scheduler.when(LINK)
    rig.engine.scheduler.forget(LINK)
    await echo()
    assert rig.engine.scheduler.when(LINK) is None


@run
async def test_a_sharded_replica_follows_its_namespaces_labels_and_their_deletion() -> None:
    rig = Rig(settings=sharded())
    await rig.add_provider()
    body = copy.deepcopy(rig.kube.providers["gh"])
    body["spec"]["namespaceSelector"] = {"matchLabels": {"tenant": "yes"}}
    body["metadata"]["generation"] = 2
    rig.kube.bump(body)
    rig.kube.providers["gh"] = body
    await rig.engine.on_provider("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]
    rig.engine.on_namespace("ADDED", {"metadata": {"name": "op", "labels": {"tenant": "yes"}}})
    rig.engine.on_namespace("ADDED", {"metadata": {"name": "ns", "labels": {"tenant": "yes"}}})
    rig.add_link()
    rig.add_secret(expires_in=HOUR)
    await rig.reconcile()
    assert ("True", "TokenCurrent") == rig.condition("Ready")
    assert rig.engine.caches.namespaces.get("op") is None, "a namespace of another shard is not cached"
    rig.engine.scheduler.forget(LINK)
    rig.engine.on_namespace("DELETED", {"metadata": {"name": "ns", "labels": {"tenant": "yes"}}})
    assert rig.clock.now() == rig.engine.scheduler.when(LINK)
    await rig.reconcile()
    assert ("False", "ProviderNotAllowed") == rig.condition("Ready")


# --- what an answer teaches about the provider, and backoff ------------------------------

@run
async def test_a_rejected_client_holds_every_link_of_the_provider_until_its_backoff_ends() -> None:
    """401 invalid_client on one link's refresh: the provider backs off; the link waits
    for the provider's backoff and the provider's other links are decided again at once;
    the next success lifts the backoff and re-decides them again; a success that changes
    nothing about the client leaves them be."""
    rig = Rig()
    await rig.add_provider()
    a, b = add(rig, "ns", "a", expires_in=60), add(rig, "ns", "b", expires_in=HOUR)
    await rig.reconcile(b)
    rig.provider.answer = lambda rt, n: error(401, "invalid_client")
    rig.engine.scheduler.forget(b)
    await rig.reconcile(a)
    until = rig.engine.providers.view("gh").credentials_rejected_until  # type: ignore[union-attr]
    assert until is not None and until > rig.clock.now()
    assert (until, rig.clock.now()) == (rig.engine.scheduler.when(a), rig.engine.scheduler.when(b))
    rig.clock.advance((until - rig.clock.now()).total_seconds())
    rig.provider.answer = lambda rt, n: success(f"access-{n}", f"rt-a-{n}", lifetime=60)
    rig.engine.scheduler.forget(b)
    await rig.reconcile(a)
    assert rig.clock.now() == rig.engine.scheduler.when(b)
    rig.engine.scheduler.forget(b)
    rig.clock.advance(60)
    await rig.reconcile(a)
    assert 3 == len(rig.provider.exchanged)
    assert rig.engine.scheduler.when(b) is None


@run
async def test_links_failing_at_the_same_moment_retry_at_different_moments() -> None:
    """Jitter per link: a provider outage does not bring every link back at once (refresh
    backoff of 2 s and validation backoff of 30 s, ±20 %)."""
    refreshing = Rig()
    refreshing.provider.answer = lambda rt, n: error(503, "temporarily_unavailable")
    validating = Rig(validate=True)
    validating.provider.verdict = ValidationOutcome(ValidationVerdict.UNREACHABLE, "the provider did not answer")
    for rig, low, high in ((refreshing, 1.6, 2.4), (validating, 24, 36)):
        await rig.add_provider()
        keys = [add(rig, "ns", name, expires_in=60, validate=rig is validating) for name in ("a", "b")]
        for key in keys:
            await rig.reconcile(key)
        waits = [(rig.engine.scheduler.when(k) - rig.clock.now()).total_seconds() for k in keys]  # type: ignore[operator]
        assert all(low <= w <= high for w in waits) and waits[0] != waits[1], waits


@run
async def test_validation_retries_are_capped_by_the_backoff_cap() -> None:
    rig = Rig(validate=True, settings=Settings(backoff_cap=1.0))
    rig.provider.verdict = ValidationOutcome(ValidationVerdict.UNREACHABLE, "the provider did not answer")
    await rig.standard()
    await rig.reconcile()
    wait = (rig.engine.scheduler.when(LINK) - rig.clock.now()).total_seconds()  # type: ignore[operator]
    assert 0.8 <= wait <= 1.2


CLAIM_ROWS = [
    ("a claim taken 20 s ago is said, with its holder and end", 40,
     "another replica (other) is refreshing the token; its claim ends at 12:00:40"),
    ("a claim taken 5 s ago is a refresh in progress: not worth a word", 55, None),
]


@run
async def test_another_replicas_claim_is_reported_once_it_is_no_longer_young() -> None:
    for case, left, says in CLAIM_ROWS:
        rig = Rig()
        until = rig.clock.now().timestamp() + left
        await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{until:.0f}"})
        await rig.reconcile()
        _, reason = rig.condition("Refreshable")
        shown = message(rig, "Refreshable").replace("2026-11-29T", "").replace("Z", "")
        assert (says is not None, says or shown) == (reason == "ClaimedElsewhere", shown), case


@run
async def test_a_refresh_request_is_not_held_back_by_the_due_refreshes_before_it() -> None:
    """The request rate limit (three a minute) counts requests: three due refreshes of a
    short-lived token in half a minute do not use it up."""
    rig = Rig()
    rig.provider.answer = lambda rt, n: success(f"access-{n}", f"refresh-{n}", lifetime=10)
    await rig.standard(expires_in=10)
    for _ in range(3):
        await rig.reconcile()
        rig.clock.advance(10)
    await rig.reconcile()
    rig.request_refresh("please")
    await rig.reconcile()
    assert 5 == len(rig.provider.exchanged)
    assert "please" == status(rig)["lastRefreshRequest"]


@run
async def test_a_valid_token_is_validated_again_after_the_validation_interval() -> None:
    rig = Rig(validate=True, settings=Settings(validation_interval=dt.timedelta(minutes=5)))
    await rig.standard()
    await rig.reconcile()
    assert ["validate"] == rig.steps("validate")
    assert rig.clock.now() + dt.timedelta(minutes=5) == rig.engine.scheduler.when(LINK)


@run
async def test_the_tokens_of_a_secret_opted_in_to_another_provider_are_not_read() -> None:
    """Its expiry is neither published in the status nor in the expiry gauge."""
    rig = Rig()
    await rig.add_provider()
    rig.add_link("not-ours", secret="not-ours")
    rig.add_secret("not-ours", labels={PROVIDER_LABEL: "team-gitea"})
    rig.engine.on_secret("ADDED", copy.deepcopy(rig.kube.secrets[("ns", "not-ours")]))  # type: ignore[arg-type]
    await rig.reconcile(("ns", "not-ours"))
    assert ("False", "SecretNotOptedIn") == rig.condition("Ready", ("ns", "not-ours"))
    assert "expiresAt" not in status(rig, ("ns", "not-ours"))
    assert metrics.REGISTRY.get_sample_value("externalauth_token_expiry_timestamp_seconds",
                                             {"namespace": "ns", "link": "not-ours"}) is None


@run
async def test_a_drain_waits_for_a_stuck_reconcile_and_persist_no_longer_than_the_grace() -> None:
    """Shutdown: a persist that never lands (an API server gone quiet) holds the
    operator's exit for the shutdown grace, not for ever."""
    rig = Rig(settings=Settings(shutdown_grace=0.05))
    await rig.standard()
    rig.kube.persist_gate = asyncio.Event()
    rig.engine.scheduler.start()
    rig.engine.scheduler.schedule(LINK)
    rig.engine.scheduler.dispatch_due()
    await until(lambda: rig.kube.persists_waiting == 1)
    await asyncio.wait_for(rig.engine.drain(), timeout=5)
    assert (1, "access-0") == (rig.engine.scheduler.busy, rig.kube.stored(SECRET, "access_token"))
    rig.kube.persist_gate.set()
    await until(lambda: rig.engine.scheduler.busy == 0)


@run
async def test_the_expiry_gauge_shows_a_token_that_is_not_due_yet() -> None:
    rig = Rig()
    await rig.add_provider()
    key = add(rig, "ns", "seen", expires_in=HOUR)
    with contextlib.suppress(KeyError):  # left by an earlier test in this process
        metrics.TOKEN_EXPIRY.remove("ns", "seen")
    await rig.reconcile(key)
    assert [] == rig.provider.exchanged
    assert rig.clock.now().timestamp() + HOUR == sample("externalauth_token_expiry_timestamp_seconds",
                                                        {"namespace": "ns", "link": "seen"})


@run
async def test_a_refresh_that_lost_its_claim_to_an_edit_is_decided_again_soon() -> None:
    """Someone edits the Secret as it is being claimed (409) and the watch has not told yet:
    nothing is sent, and the link is looked at again in 2 s, not at its next due time."""
    rig = Rig()
    await rig.standard()
    edited = False

    def someone_edits(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal edited
        if not edited:
            edited = True
            rig.kube.edit_secret(key, {"metadata": {"annotations": {"touched": "yes"}}})

    rig.kube.before_secret_patch = someone_edits
    await rig.reconcile()
    assert [] == rig.provider.exchanged
    assert rig.clock.now() + timing.RETRY_SOON == rig.engine.scheduler.when(LINK)


@run
async def test_a_secret_that_cannot_be_looked_up_is_said_not_found() -> None:
    """An unlabelled Secret is looked up by its metadata; when that read fails, the link
    says SecretNotFound (and is decided again on the Secret's next event), not that the
    Secret has not opted in."""
    rig = Rig()

    async def unreachable(namespace: str, name: str) -> Any:
        raise TransientError("API server unreachable")

    rig.kube.get_secret_metadata = unreachable  # type: ignore[method-assign]
    await rig.standard(labels={})
    await rig.reconcile()
    assert ("False", "SecretNotFound") == rig.condition("Ready")


@run
async def test_a_drain_gives_up_on_events_and_provider_reconciles_that_never_end() -> None:
    """An event post and a provider's status write that hang (an API server gone quiet):
    the drain waits for each the background grace (shortened here), not for ever."""
    rig = Rig(settings=Settings(operator_namespace="op"))
    hang = asyncio.Event()

    async def hangs(*args: Any, **kwargs: Any) -> Any:
        await hang.wait()

    await add_provider_with_client_secret(rig)
    await rig.standard(expires_in=HOUR)
    await rig.reconcile()
    rig.kube.post_event = hangs  # type: ignore[method-assign]
    rig.kube.patch_provider_status = hangs  # type: ignore[method-assign]
    rig.request_refresh("x" * (MAX_REFRESH_REQUEST + 1))
    await rig.reconcile()  # an InvalidInput event, posted in the background
    rig.engine.on_secret("ADDED", put_client_secret(rig))  # the provider reconciled in the background
    assert len(rig.engine.recorder.background) and len(rig.engine.background)
    grace = timing.BACKGROUND_GRACE
    timing.BACKGROUND_GRACE = 0.02
    try:
        await asyncio.wait_for(rig.engine.drain(), timeout=5)
    finally:
        timing.BACKGROUND_GRACE = grace
    hang.set()
    await rig.settle()


@run
async def test_a_deleted_link_gives_up_the_moment_booked_for_it() -> None:
    rig = Rig(settings=Settings(tenant_burst=1, tenant_rate=0.5))
    await rig.add_provider()
    first, key = add(rig, "ns", "first"), add(rig, "ns", "booked")
    await rig.reconcile(first)
    await rig.reconcile(key)
    assert rig.clock.now() + dt.timedelta(seconds=2) == rig.engine._booked.get(key)
    rig.engine.on_link("DELETED", copy.deepcopy(rig.kube.links.pop(key)))  # type: ignore[arg-type]
    assert rig.engine._booked.get(key) is None
