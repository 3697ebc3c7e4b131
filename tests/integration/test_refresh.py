"""The refresh engine against the real control plane and the HTTPS provider simulator.

Each test is one behaviour of contract §9 that a user would notice if it broke.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import signal
import time
from typing import Any

import pytest
import requests

from tests.harness.simulator_fixtures import CLIENT_ID
from tests.harness.waiting import wait_for
from tests.harness.world import World, rfc3339

DUE = 300  # seconds to expiry: inside the default refreshBefore (15m), so due at once
NOT_DUE = 3600


def token_is_live(world: World, access_token: str) -> bool:
    r = requests.get(f"{world.sim.url}/user", headers={"Authorization": f"Bearer {access_token}"},
                     verify=world.sim.ca_file, timeout=10)
    return r.status_code == 200


def ready_link(world: World, operator_: Any, name: str = "link", **spec: Any) -> dict[str, str]:
    """A provider, a not-yet-due token Secret and a link that the operator reports Ready."""
    if not world._providers:
        world.make_provider()
    data = world.make_token_secret(f"{name}-token", expires_in=NOT_DUE)
    world.make_link(name, secret=f"{name}-token", **spec)
    world.wait_condition(name, "Ready", "True")
    return data


def test_a_due_token_is_refreshed_and_persisted(world: World, operator: Any) -> None:
    """A token within refreshBefore of expiry is exchanged once and the new one lands in the Secret."""
    world.make_provider()
    old = world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    status = wait_for(lambda: (world.link("link").get("status") or {}).get("lastRefreshTime")
                      and world.link("link")["status"], timeout=30, message="a refresh")
    new = world.secret_data("tok")
    assert old["refresh_token"] != new["refresh_token"]
    assert token_is_live(world, new["access_token"])
    wait_for(lambda: "Refreshed" in world.event_reasons("link"), timeout=10, message="a Refreshed event")
    assert 1 == world.sim.stats.exchanges_by_refresh_token.get(old["refresh_token"])
    assert status["expiresAt"] > old["expiry"]
    world.wait_condition("link", "Validated", "True", "Valid")
    assert "alice" == world.link("link")["status"]["account"]


def test_fifty_concurrent_triggers_make_one_exchange(world: World, operator: Any) -> None:
    """Annotation bumps and Secret touches racing one in-flight refresh share it: one exchange."""
    before = ready_link(world, operator)
    # The exchange lasts long enough for every trigger below to arrive while it is in
    # flight, even on a loaded machine (a request after it finished deserves a refresh).
    world.sim.add_fault("token", "latency", value=8.0)
    world.request_refresh("link", "first")

    def trigger(i: int) -> None:
        if i % 2:
            world.request_refresh("link", f"bump-{i}")
        else:
            world.core.patch_namespaced_secret("link-token", world.ns,
                                               {"metadata": {"annotations": {"touch": str(i)}}})

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(trigger, range(49)))
    last = world.link("link")["metadata"]["annotations"]["externalauth.io/refresh-requested"]
    world.wait_refreshed("link", last)
    stats = world.sim.stats
    assert 1 == stats.successful_refreshes
    assert 1 == stats.exchanges_by_refresh_token.get(before["refresh_token"])
    assert 0 == stats.reuse_attempts
    after = world.secret_data("link-token")
    assert token_is_live(world, after["access_token"])
    assert "touch" in world.secret("link-token").metadata.annotations


def test_another_writer_refreshing_first_wins(world: World, operator: Any) -> None:
    """When someone else exchanges the refresh token first and stores theirs, the operator keeps
    it (RefreshSuperseded) and does not declare the grant dead."""
    before = ready_link(world, operator)
    world.sim.add_fault("token", "latency", value=2.0, count=1)
    world.request_refresh("link")
    wait_for(lambda: world.sim.stats.token_calls >= 1, timeout=10, message="the operator's exchange")
    theirs = requests.post(world.sim.token_url, verify=world.sim.ca_file, timeout=10,
                           headers={"Accept": "application/json"},
                           data={"grant_type": "refresh_token", "client_id": CLIENT_ID,
                                 "client_secret": "test-client-secret",
                                 "refresh_token": before["refresh_token"]}).json()
    world.rewrite_secret("link-token", {"access_token": theirs["access_token"],
                                        "refresh_token": theirs["refresh_token"]})
    wait_for(lambda: "RefreshSuperseded" in world.event_reasons("link"), timeout=30,
             message="RefreshSuperseded")
    assert theirs["refresh_token"] == world.secret_data("link-token")["refresh_token"]
    assert "ReauthRequired" not in world.event_reasons("link")
    world.wait_condition("link", "Ready", "True")


def test_two_operators_exchange_each_refresh_token_once(make_world: Any, make_operator: Any,
                                                        namespace: str) -> None:
    """Two replicas without peering, 50 due links, replay detection on: exactly 50 exchanges,
    no reuse, no revoked grant, every link Ready."""
    world = make_world(replay_detection=True)
    world.make_provider(maxConcurrentRefreshes=10)
    for i in range(50):
        world.make_token_secret(f"tok-{i}", expires_in=DUE)
        world.make_link(f"link-{i}", secret=f"tok-{i}")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: make_operator(namespaces=[namespace]), range(2)))
    wait_for(lambda: world.sim.stats.successful_refreshes >= 50, timeout=120,
             message=lambda: f"50 refreshes, saw {world.sim.stats.successful_refreshes}")
    for i in range(50):
        world.wait_condition(f"link-{i}", "Ready", "True", timeout=60)
    stats = world.sim.stats
    assert (50, 0, 0, 1) == (stats.successful_refreshes, stats.reuse_attempts, stats.revoked_grants,
                             stats.max_exchanges_per_refresh_token)


@pytest.mark.parametrize(("kind", "validated", "ready"), [
    pytest.param("primary", ("Unknown", "RateLimited"), "True", id="rate-limited validation keeps the token"),
    pytest.param("secondary", ("Unknown", "RateLimited"), "True", id="secondary rate limit keeps the token"),
    pytest.param("429", ("Unknown", "RateLimited"), "True", id="429 keeps the token"),
    pytest.param("401", ("False", "Invalid"), "False", id="401 marks the token invalid but keeps it"),
])
def test_the_new_token_is_saved_before_validation(world: World, operator: Any, kind: str,
                                                  validated: tuple[str, str], ready: str) -> None:
    """Validation after a refresh never loses the refreshed token (contract §9.2, §9.6)."""
    before = ready_link(world, operator)
    if kind == "401":
        world.sim.add_fault("validate", "status", value=401)
    else:
        world.sim.set_rate_limit(kind)
    world.request_refresh("link")
    world.wait_condition("link", "Validated", *validated)
    after = world.secret_data("link-token")
    assert before["refresh_token"] != after["refresh_token"]
    assert 1 == world.sim.stats.exchanges_by_refresh_token.get(before["refresh_token"])
    world.sim.clear_faults()
    world.sim.set_rate_limit(None)
    assert token_is_live(world, after["access_token"])
    assert ready == world.condition("link", "Ready")["status"]


def test_an_unrelated_edit_during_refresh_is_kept_and_the_token_still_lands(world: World,
                                                                            operator: Any) -> None:
    """The persist write gets 409 from an unrelated edit, re-reads and re-applies its tokens;
    the other writer's key and label survive."""
    before = ready_link(world, operator)
    world.sim.add_fault("token", "latency", value=2.0, count=1)
    world.request_refresh("link")
    wait_for(lambda: world.sim.stats.token_calls >= 1, timeout=10, message="the exchange")
    world.core.patch_namespaced_secret("link-token", world.ns, {
        "metadata": {"labels": {"team": "blue"}}, "data": {"note": "aGVsbG8="}})
    wait_for(lambda: world.secret_data("link-token")["refresh_token"] != before["refresh_token"],
             timeout=30, message="the new token in the Secret")
    secret = world.secret("link-token")
    assert ("blue", "hello") == (secret.metadata.labels["team"], world.secret_data("link-token")["note"])
    assert token_is_live(world, world.secret_data("link-token")["access_token"])
    assert "externalauth.io/refresh-claim" not in (secret.metadata.annotations or {})


def test_sigterm_after_the_provider_answered_still_persists(world: World, operator: Any) -> None:
    """Shutdown waits for the in-flight exchange and its write: the rotated token is not lost."""
    before = ready_link(world, operator)
    world.sim.add_fault("token", "latency", value=3.0, count=1)
    world.request_refresh("link")
    wait_for(lambda: world.sim.stats.token_calls >= 1, timeout=10, message="the exchange")
    operator.send_signal(signal.SIGTERM)
    assert 0 == operator.stop(timeout=60)
    after = world.secret_data("link-token")
    assert before["refresh_token"] != after["refresh_token"]
    assert token_is_live(world, after["access_token"])


@pytest.mark.parametrize(("fault", "headers"), [
    pytest.param(503, {}, id="5xx is retried"),
    pytest.param(429, {"retry-after": "3"}, id="429 is retried after Retry-After"),
])
def test_transient_token_errors_are_retried_with_backoff(world: World, operator: Any, fault: int,
                                                         headers: dict[str, str]) -> None:
    """A transient failure sets RetryingTransientError, schedules a retry no sooner than
    Retry-After, and the refresh then succeeds."""
    before = ready_link(world, operator)
    world.sim.add_fault("token", "status", value=fault, count=1, headers=headers)
    world.request_refresh("link")
    failing = world.wait_condition("link", "Refreshable", "False", "RetryingTransientError")
    status = world.link("link")["status"]
    if headers:
        planned = dt.datetime.fromisoformat(status["nextRefreshTime"].replace("Z", "+00:00"))
        failed = dt.datetime.fromisoformat(failing["lastTransitionTime"].replace("Z", "+00:00"))
        assert planned - failed >= dt.timedelta(seconds=2)
    wait_for(lambda: world.secret_data("link-token")["refresh_token"] != before["refresh_token"],
             timeout=30, message="the retried refresh")
    assert 2 == world.sim.stats.token_calls
    world.wait_condition("link", "Refreshable", "True")


def test_a_permanent_token_error_is_tried_once(world: World, operator: Any) -> None:
    """A token endpoint answering 404 is not hammered: one try, a Warning, ReauthRequired."""
    world.make_provider(tokenURL=f"{world.sim.url}/no-such-endpoint")
    before = world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Refreshable", "False", "ReauthRequired")
    world.request_refresh("link", "again")
    wait_for(lambda: (world.link("link").get("status") or {}).get("lastRefreshRequest") == "again",
             timeout=15, message="the request to be acknowledged")
    assert before == {k: v for k, v in world.secret_data("tok").items() if k in before}
    wait_for(lambda: "RefreshFailed" in world.event_reasons("link"), timeout=10, message="RefreshFailed")


def test_a_dead_grant_requires_reauth_and_recovers_when_the_user_signs_in(world: World,
                                                                           operator: Any) -> None:
    """bad_refresh_token → ReauthRequired with the Secret's token keys byte-for-byte unchanged;
    writing a fresh grant brings the link back without a restart."""
    world.make_provider()
    grant = world.sim.issue_grant(CLIENT_ID)
    world.sim.revoke_grant(grant.refresh_token)
    world.make_token_secret("tok", access=grant.access_token, refresh=grant.refresh_token, expires_in=DUE)
    raw_before = dict(world.secret("tok").data)
    world.make_link("link", secret="tok")
    world.wait_condition("link", "Ready", "False", "ReauthRequired")
    world.wait_condition("link", "Refreshable", "False", "ReauthRequired")
    wait_for(lambda: "ReauthRequired" in world.event_reasons("link"), timeout=10, message="ReauthRequired")
    assert raw_before == {k: v for k, v in world.secret("tok").data.items() if k in raw_before}
    fresh = world.sim.issue_grant(CLIENT_ID)
    world.rewrite_secret("tok", {"access_token": fresh.access_token, "refresh_token": fresh.refresh_token,
                                 "expiry": "2099-01-01T00:00:00Z"})
    world.wait_condition("link", "Ready", "True")
    world.wait_condition("link", "Refreshable", "True")


def test_a_replica_started_after_a_dead_grant_does_not_send_the_dead_token(world: World, make_operator: Any,
                                                                           namespace: str) -> None:
    """Issue 17: the dead-grant verdict is in the link's status (a salted digest, never the
    token), so a replica started after the first one was killed sends the dead refresh
    token zero more times (it used to send it once per new replica)."""
    world.make_provider()
    grant = world.sim.issue_grant(CLIENT_ID)
    world.sim.revoke_grant(grant.refresh_token)
    world.make_token_secret("tok", access=grant.access_token, refresh=grant.refresh_token, expires_in=DUE)
    world.make_link("link", secret="tok")
    first = make_operator(namespaces=[namespace])
    world.wait_condition("link", "Refreshable", "False", "ReauthRequired")
    wait_for(lambda: world.link("link").get("status", {}).get("deadGrantDigest"), timeout=30,
             message="status.deadGrantDigest")
    status = str(world.link("link")["status"])
    assert grant.refresh_token not in status and grant.access_token not in status
    assert 1 == world.sim.stats.token_calls
    first.stop(sig=signal.SIGKILL)
    second = make_operator(namespaces=[namespace])
    # The new replica has decided the link once it counts it (the gauge is set after acting).
    wait_for(lambda: links_counted(second, ready="false") == 1.0, timeout=60,
             message="the new replica counts the link")
    assert 1 == world.sim.stats.token_calls
    world.wait_condition("link", "Refreshable", "False", "ReauthRequired")


DEAD_LINKS = 20


def test_two_replicas_send_a_dead_refresh_token_once_between_them(world: World, make_operator: Any,
                                                                 namespace: str) -> None:
    """Issue 17: two replicas, 20 due links whose grants are already dead. The replica that
    learns a grant is dead says so on the Secret in the same write that drops its claim, so
    the other replica, which waited for that claim, cannot claim the Secret again without
    seeing the verdict: each dead refresh token reaches the provider once, cluster-wide
    (before: the verdict reached only the link's status, after the claim was dropped, and the
    other replica often claimed and sent the dead token a second time)."""
    world.make_provider()
    grants = [world.sim.issue_grant(CLIENT_ID) for _ in range(DEAD_LINKS)]
    for i, grant in enumerate(grants):
        world.sim.revoke_grant(grant.refresh_token)
        world.make_token_secret(f"dead-{i}-token", access=grant.access_token, refresh=grant.refresh_token,
                                expires_in=DUE)
        world.make_link(f"dead-{i}", secret=f"dead-{i}-token")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replicas = list(pool.map(lambda _: make_operator(namespaces=[namespace]), range(2)))
    # Each replica has decided every link as dead (a replica that saw the other's claim
    # counts the link Ready until then): nothing more will be sent.
    for replica in replicas:
        wait_for(lambda r=replica: links_counted(r, ready="false") == DEAD_LINKS, timeout=90,
                 message=lambda r=replica: f"{DEAD_LINKS} links not Ready, saw {links_counted(r, ready='false')}")
    stats = world.sim.stats
    sent = {f"dead-{i}": stats.refusals_by_refresh_token.get(grant.refresh_token, 0) for i, grant in enumerate(grants)}
    twice = sorted(name for name, n in sent.items() if n > 1)
    assert (DEAD_LINKS, [], 1) == (stats.token_calls, twice, stats.max_refusals_per_refresh_token), sent
    for i in range(DEAD_LINKS):
        assert "dead-grant" in str(world.secret(f"dead-{i}-token").metadata.annotations)
        world.wait_condition(f"dead-{i}", "Refreshable", "False", "ReauthRequired")


def links_counted(operator_: Any, *, ready: str) -> float | None:
    """externalauth_links{ready=...} on the operator's /metrics (None: no such sample yet, or
    the listener is not up yet)."""
    try:
        text = operator_.metrics()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("externalauth_links{") and f'ready="{ready}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_rejected_client_credentials_mark_the_provider_and_touch_no_token(world: World,
                                                                         operator: Any) -> None:
    """incorrect_client_credentials → provider CredentialsRejected, link
    ProviderCredentialsRejected, tokens untouched; fixing the client secret recovers."""
    before = ready_link(world, operator)
    raw_before = dict(world.secret("link-token").data)
    world.sim.set_client_secret(CLIENT_ID, "rotated-at-the-provider")
    world.request_refresh("link")
    world.wait_condition("link", "Refreshable", "False", "ProviderCredentialsRejected")
    wait_for(lambda: (world.provider_condition() or {}).get("reason") == "CredentialsRejected",
             timeout=15, message="provider CredentialsRejected")
    assert raw_before == {k: v for k, v in world.secret("link-token").data.items() if k in raw_before}
    world.set_client_secret("rotated-at-the-provider")
    wait_for(lambda: (world.provider_condition() or {}).get("reason") == "Valid", timeout=15,
             message="provider Valid again")
    world.request_refresh("link")
    wait_for(lambda: world.secret_data("link-token")["refresh_token"] != before["refresh_token"],
             timeout=30, message="a refresh with the fixed client secret")
    world.wait_condition("link", "Refreshable", "True")


@pytest.mark.parametrize(("setup", "reason"), [
    pytest.param(lambda w: None, "SecretNotFound", id="the Secret is missing"),
    pytest.param(lambda w: w.make_token_secret("bad", data={"refresh_token": "r"}), "SecretInvalid",
                 id="access_token is missing"),
    pytest.param(lambda w: w.make_token_secret("bad", data={"access_token": "a", "expiry": "next tuesday"}),
                 "SecretInvalid", id="expiry is not a date"),
    pytest.param("unknown-provider", "ProviderNotFound", id="the provider does not exist"),
])
def test_bad_input_gets_a_condition_and_an_event_on_that_link_only(world: World, operator: Any,
                                                                  setup: Any, reason: str) -> None:
    """A broken link says why (Ready=False, a Warning event); a healthy neighbour keeps refreshing."""
    before = ready_link(world, operator, "healthy")
    if setup == "unknown-provider":
        world.make_token_secret("bad", expires_in=NOT_DUE)
        world.make_link("broken", secret="bad", provider="no-such-provider")
    else:
        setup(world)
        world.make_link("broken", secret="bad")
    world.wait_condition("broken", "Ready", "False", reason)
    wait_for(lambda: any(e.type == "Warning" and reason in e.message for e in world.events("broken")),
             timeout=10, message="a Warning event on the broken link")
    request = world.request_refresh("healthy")
    world.wait_refreshed("healthy", request)
    assert before["refresh_token"] != world.secret_data("healthy-token")["refresh_token"]
    assert world.condition("healthy", "Ready")["status"] == "True"


def test_a_missing_secret_created_later_is_picked_up(world: World, operator: Any) -> None:
    """A link created before its Secret becomes Ready once the (labelled) Secret appears."""
    world.make_provider()
    world.make_link("link", secret="later")
    world.wait_condition("link", "Ready", "False", "SecretNotFound")
    world.make_token_secret("later", expires_in=NOT_DUE)
    world.wait_condition("link", "Ready", "True", timeout=15)


def test_suspend_stops_refreshing(world: World, operator: Any) -> None:
    """A suspended link is not refreshed even when due or asked to."""
    world.make_provider()
    before = world.make_token_secret("tok", expires_in=DUE)
    world.make_link("link", secret="tok", suspend=True)
    world.wait_condition("link", "Refreshable", "False", "Suspended")
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    assert before["refresh_token"] == world.secret_data("tok")["refresh_token"]
    assert 0 == world.sim.stats.token_calls


def test_no_secret_leaks_into_logs_events_or_status(world: World, operator: Any) -> None:
    """Canary: every token the operator saw or minted stays out of its DEBUG logs, events,
    status and metrics."""
    before = ready_link(world, operator)
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    wait_for(lambda: "Refreshed" in world.event_reasons("link"), timeout=10, message="a Refreshed event")
    after = world.secret_data("link-token")
    canaries = {before["access_token"], before["refresh_token"], after["access_token"],
                after["refresh_token"], "test-client-secret"}
    haystacks = {
        "logs": operator.logs(),
        "events": " ".join(f"{e.reason} {e.message}" for e in world.events()),
        "status": str(world.link("link").get("status")),
        "provider status": str(world.provider_condition()),
        "metrics": operator.metrics(),
    }
    leaks = [(where, c[:6]) for where, text in haystacks.items() for c in canaries if c in text]
    assert [] == leaks
    assert "DEBUG" in haystacks["logs"] or "debug" in haystacks["logs"].lower()


def test_metrics_count_refreshes_validations_and_links(world: World, operator: Any) -> None:
    """/metrics reports the refresh, the provider calls, the validation and the ready link."""
    ready_link(world, operator)
    request = world.request_refresh("link")
    world.wait_refreshed("link", request)
    world.wait_condition("link", "Refreshable", "True", "Refreshed")
    world.wait_condition("link", "Validated", "True", "Valid")
    text = wait_for(lambda: (m := operator.metrics()) and 'result="success"' in m and m, timeout=10,
                    message="the success counter")
    p = world.provider
    expected = [
        f'externalauth_refresh_total{{provider="{p}",result="success"}} 1.0',
        f'externalauth_provider_requests_total{{code="200",endpoint="token",provider="{p}"}} 1.0',
        f'externalauth_links{{provider="{p}",ready="true"}} 1.0',
        f'externalauth_token_expiry_timestamp_seconds{{link="link",namespace="{world.ns}"}}',
        f'externalauth_refresh_duration_seconds_count{{provider="{p}"}} 1.0',
    ]
    assert [] == [line for line in expected if line not in text]
    assert f'externalauth_validation_total{{provider="{p}",result="valid"}}' in text


def test_a_refresh_token_expiring_within_a_week_warns(make_world: Any, operator: Any) -> None:
    """A refresh token the provider says expires in 3 days: refreshTokenExpiresAt is reported
    and a RefreshTokenExpiringSoon Warning asks the user to sign in again in time."""
    world = make_world(refresh_token_lifetime=3 * 86400)
    ready_link(world, operator)
    request = world.request_refresh("link")
    status = world.wait_refreshed("link", request)
    assert "refreshTokenExpiresAt" in status
    wait_for(lambda: any(e.reason == "RefreshTokenExpiringSoon" and e.type == "Warning"
                         for e in world.events("link")), timeout=10, message="RefreshTokenExpiringSoon")


def test_a_claim_left_by_a_crashed_replica_blocks_only_until_its_lease_ends(world: World,
                                                                           operator: Any) -> None:
    """Another holder's live claim defers the refresh (no exchange); once its lease has run out
    the operator takes over and refreshes."""
    before = ready_link(world, operator)
    until = time.time() + 10
    world.core.patch_namespaced_secret("link-token", world.ns, {"metadata": {"annotations": {
        "externalauth.io/refresh-claim": f"crashed-replica-0;{until:.0f}"}}})
    world.request_refresh("link")
    # The operator saw the live claim (it says so) and did not send the token.
    world.wait_condition("link", "Refreshable", "False", "ClaimedElsewhere")
    assert time.time() < until, "set-up took longer than the lease: the negative check proved nothing"
    assert 0 == world.sim.stats.token_calls
    wait_for(lambda: world.secret_data("link-token")["refresh_token"] != before["refresh_token"],
             timeout=30, message="the refresh after the lease ran out")
    assert 1 == world.sim.stats.token_calls


def test_watches_survive_an_api_server_restart(world: World, operator: Any, control_plane: Any) -> None:
    """After kube-apiserver restarts, the operator's watches resume: a user rewriting the Secret
    with a new (due) grant is noticed and that grant is refreshed, exactly once."""
    ready_link(world, operator)
    control_plane.restart_apiserver()
    fresh = world.sim.issue_grant(CLIENT_ID)
    world.rewrite_secret("link-token", {"access_token": fresh.access_token,
                                        "refresh_token": fresh.refresh_token,
                                        "expiry": rfc3339(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=DUE))})
    wait_for(lambda: world.secret_data("link-token")["refresh_token"] != fresh.refresh_token,
             timeout=60, message="the rewritten grant to be refreshed after the restart")
    assert 1 == world.sim.stats.exchanges_by_refresh_token.get(fresh.refresh_token)
    assert operator.proc is not None and operator.proc.poll() is None
