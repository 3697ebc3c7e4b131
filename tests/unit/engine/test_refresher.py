"""Refresher.refresh (engine/refreshing.py) on its own: the whole Refresh it returns for
each way a refresh can go (claim held elsewhere, claim refused, success, failures), with
the provider's answers read by the real reader. One row per sentence."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from externalauth.errors import TransientError
from externalauth.model import tokens as tokmod
from externalauth.model.names import CLAIM_ANNOTATION
from externalauth.model.secure import SecretStr
from externalauth.policy.effects import Refresh
from tests.unit.engine.fakes import NO_ANSWER, answer, b64, error, success
from tests.unit.engine.rig import SECRET, Rig, run

RT = SecretStr("refresh-0")
DATE_5S_AHEAD = "Sun, 29 Nov 2026 12:00:05 GMT"  # the fake clock starts at 12:00:00


def render(new: tokmod.TokenSet) -> dict[str, str | None]:
    return dict(tokmod.render_token_keys(new))


def view(r: Refresh) -> dict[str, Any]:
    """The Refresh, with the token set reduced to its access token and times to seconds."""
    out = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
    out["tokens"] = r.tokens.access_token.reveal() if r.tokens else None
    out["outcome"] = r.outcome.value
    return out


async def refresh(rig: Rig) -> Refresh:
    return await rig.engine.refresher.refresh(SECRET, provider="gh", consumed=RT, render=render)


BASE = dict(outcome="", message="", retry_after=None, tokens=None, claimed_until=None, seconds=None,
            unsaved=None, stored=False, lost_reason=None, answered=True, clock_skew=None)


@run
async def test_a_live_claim_of_another_replica_is_claimed_elsewhere_until_its_end() -> None:
    rig = Rig()
    until = rig.clock.now().timestamp() + 40
    await rig.standard(annotations={CLAIM_ANNOTATION: f"other;{until:.0f}"})
    assert {**BASE, "outcome": "claimed-elsewhere",
            "claimed_until": dt.datetime.fromtimestamp(until, dt.UTC)} == view(await refresh(rig))
    assert [] == rig.provider.exchanged


@run
async def test_a_claim_the_api_server_refuses_is_claim_failed_with_why_and_nothing_sent() -> None:
    rig = Rig()
    await rig.standard()

    def unreachable(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        raise TransientError("API server unreachable")

    rig.kube.before_secret_patch = unreachable
    assert {**BASE, "outcome": "claim-failed",
            "message": "cannot claim the Secret for refresh: API server unreachable"} == view(await refresh(rig))
    assert [] == rig.provider.exchanged


@run
async def test_a_secret_holding_another_refresh_token_is_changed_and_nothing_sent() -> None:
    rig = Rig()
    await rig.standard(refresh="refresh-other")
    assert {**BASE, "outcome": "changed"} == view(await refresh(rig))


@run
async def test_a_success_is_persisted_with_its_times_and_the_providers_clock() -> None:
    rig = Rig()
    await rig.standard()
    ok = success("access-1", "refresh-1")
    rig.provider.answer = lambda rt, n: dataclasses.replace(ok, headers={**ok.headers, "date": DATE_5S_AHEAD})

    def slow_write(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        if "access_token" in (patch.get("data") or {}):
            rig.clock.advance(0.5)

    rig.kube.before_secret_patch = slow_write
    assert {**BASE, "outcome": "persisted", "tokens": "access-1", "stored": True, "seconds": 0.5, "unsaved": 0.5,
            "clock_skew": 5.0} == view(await refresh(rig))


ROWS: list[tuple[str, Callable[[str, int], Any], dict[str, Any]]] = [
    ("a dead grant says the provider's words",
     lambda rt, n: error(400, "invalid_grant"),
     {"outcome": "dead-grant", "message": "the provider refused the refresh token (invalid_grant)"}),
    ("a 503 with Retry-After is transient with the wait",
     lambda rt, n: answer(503, headers={"Retry-After": "30"}),
     {"outcome": "transient", "message": "the token endpoint answered HTTP 503", "retry_after": 30.0}),
    ("no answer is transient and says it was not answered",
     lambda rt, n: NO_ANSWER,
     {"outcome": "transient", "message": "the token endpoint did not answer", "answered": False}),
    ("an unusable 2xx carrying a new refresh token stores it and is transient",
     lambda rt, n: answer(200, {"refresh_token": "salvaged", "token_type": "bearer"}),
     {"outcome": "transient", "stored": True, "message": (
         "the token endpoint answered HTTP 200 without a usable access token; the refresh token may already "
         "be spent; the new refresh token it carried was stored")}),
]


@run
async def test_failures_are_returned_whole() -> None:
    for case, provider_answer, expected in ROWS:
        rig = Rig()
        await rig.standard()
        rig.provider.answer = provider_answer
        assert {**BASE, **expected} == view(await refresh(rig)), case


def on_persist(rig: Rig, act: Callable[[tuple[str, str]], object]) -> None:
    """``act`` on the Secret just before the new tokens' write arrives (once)."""
    done = False

    def hook(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal done
        if not done and "access_token" in (patch.get("data") or {}):
            done = True
            act(key)

    rig.kube.before_secret_patch = hook


@run
async def test_new_tokens_the_secret_cannot_take_are_lost_with_the_reason() -> None:
    rows: list[tuple[str, Callable[[Rig], None], dict[str, Any]]] = [
        ("the Secret deleted during the exchange",
         lambda rig: on_persist(rig, lambda key: rig.kube.secrets.pop(key)),
         {"message": "the Secret was deleted during the refresh", "lost_reason": "gone"}),
        ("the Secret made immutable during the exchange",
         lambda rig: on_persist(rig, lambda key: rig.kube.secrets[key].update(immutable=True)),
         {"message": "the API server refused to store it", "lost_reason": "invalid"}),
    ]
    for case, arrange, expected in rows:
        rig = Rig()
        await rig.standard()
        arrange(rig)
        got = view(await refresh(rig))
        assert {**BASE, "outcome": "lost", "tokens": "access-1", "stored": True, "seconds": 0.0, "unsaved": 0.0,
                **expected} == got, case


@run
async def test_the_time_of_a_refresh_counts_from_the_call_and_the_time_unsaved_from_the_answer() -> None:
    """1 s waiting for the provider's thread, 0.25 s writing: 1.25 s in all, 0.25 s unsaved."""
    rig = Rig()
    await rig.standard()
    rig.provider.queued = 1.0
    on_persist(rig, lambda key: rig.clock.advance(0.25))
    got = view(await refresh(rig))
    assert ("persisted", 1.25, 0.25) == (got["outcome"], got["seconds"], got["unsaved"])


@run
async def test_a_failed_answer_still_tells_the_providers_clock() -> None:
    rig = Rig()
    await rig.standard()
    failed = error(503, "temporarily_unavailable")
    rig.provider.answer = lambda rt, n: dataclasses.replace(failed, headers={**failed.headers, "date": DATE_5S_AHEAD})
    got = view(await refresh(rig))
    assert ("transient", 5.0) == (got["outcome"], got["clock_skew"])


@run
async def test_without_a_usable_client_nothing_is_claimed_or_sent() -> None:
    """A provider that is not known, or whose client was dropped (its spec was edited into
    an invalid one): NO_CLIENT, the Secret untouched."""
    for case, provider in (("an unknown provider", "nope"), ("a provider whose spec became invalid", "gh")):
        rig = Rig()
        await rig.standard()
        if provider == "gh":
            body = rig.kube.providers["gh"]
            body["spec"]["type"] = "no-such-type"
            body["metadata"]["generation"] = 2
            rig.kube.bump(body)
            await rig.engine.on_provider("MODIFIED", copy.deepcopy(body))  # type: ignore[arg-type]
        got = await rig.engine.refresher.refresh(SECRET, provider=provider, consumed=RT, render=render)
        assert {**BASE, "outcome": "no-client"} == view(got), case
        assert ([], []) == (rig.kube.writes, rig.provider.exchanged), case


@run
async def test_a_salvaged_refresh_token_survives_an_unrelated_edit_of_the_secret() -> None:
    """An unusable 2xx that carries a new refresh token: it is stored even when someone
    edited the Secret meanwhile (409, re-read: still our refresh token, written again)."""
    rig = Rig()
    await rig.standard()
    rig.provider.answer = lambda rt, n: answer(200, {"refresh_token": "salvaged", "token_type": "bearer"})
    edited = False

    def user_edits(key: tuple[str, str], patch: Mapping[str, Any]) -> None:
        nonlocal edited
        if "refresh_token" in (patch.get("data") or {}) and not edited:
            edited = True
            rig.kube.edit_secret(key, {"data": {"note": b64("keep me")}})

    rig.kube.before_secret_patch = user_edits
    got = view(await refresh(rig))
    assert ("transient", True) == (got["outcome"], got["stored"])
    assert ("salvaged", "keep me") == (rig.kube.stored(SECRET, "refresh_token"), rig.kube.stored(SECRET, "note"))
