"""The watch caches: what each event affects."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from externalauth.engine.caches import PARSED, Caches


def link(rv: str, secret: str = "tok", provider: str = "gh") -> Any:
    return {"metadata": {"namespace": "ns", "name": "l", "resourceVersion": rv},
            "spec": {"providerName": provider, "secretName": secret}}


def secret(rv: str, name: str = "tok") -> Any:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}}


def test_a_new_link_version_affects_that_link() -> None:
    caches = Caches()
    assert {("ns", "l")} == caches.store_link(link("1")).links
    assert {("ns", "l")} == caches.store_link(link("2")).links


def test_the_echo_of_our_own_write_and_older_versions_affect_nothing() -> None:
    """The status write's answer is stored first; its watch event (same resourceVersion)
    must not make the link decide again (one wasted reconcile per refresh)."""
    caches = Caches()
    caches.store_link(link("5"))
    assert (frozenset(), frozenset()) == (caches.store_link(link("5")).links, caches.store_link(link("4")).links)


@pytest.mark.parametrize(("cached", "event", "held"), [
    pytest.param("5", "5", True, id="the echo of our own write (its answer was stored first) is held"),
    pytest.param("5", "4", True, id="an older version is held"),
    pytest.param("5", "6", False, id="a newer version is news"),
    pytest.param("5", "x", False, id="a version that is not a number and not the one held is news"),
])
def test_the_watch_thread_drops_only_what_the_cache_would_ignore(cached: str, event: str, held: bool) -> None:
    """holds_link / holds_secret (asked in the watch threads, before an event is cut down
    and queued) say exactly what store_link / store_secret then ignore."""
    caches = Caches()
    caches.store_link(link(cached))
    caches.store_secret(full_secret(cached, access_token="YQ=="))
    assert (held, held) == (caches.holds_link(link(event)), caches.holds_secret(full_secret(event)))
    assert (held, held) == (not caches.store_secret(full_secret(event, access_token="YQ==")).links,
                            not caches.store_link(link(event)).links)


def test_nothing_is_held_before_it_was_cached() -> None:
    caches = Caches()
    assert (False, False) == (caches.holds_link(link("5")), caches.holds_secret(full_secret("5")))


def test_a_secret_change_affects_the_links_that_name_it_only() -> None:
    caches = Caches()
    caches.store_link(link("1", secret="tok"))
    assert {("ns", "l")} == caches.store_secret(secret("7")).links
    assert frozenset() == caches.store_secret(secret("8", name="other")).links


def test_a_link_moved_to_another_secret_is_no_longer_affected_by_the_first() -> None:
    caches = Caches()
    caches.store_link(link("1", secret="a"))
    caches.store_link(link("2", secret="b"))
    assert (frozenset(), {("ns", "l")}) == (caches.store_secret(secret("3", "a")).links,
                                            caches.store_secret(secret("4", "b")).links)


def test_client_secret_index_follows_the_provider() -> None:
    caches = Caches()
    caches.index_client_secret("gh", ("ops", "client"))
    assert {"gh"} == caches.store_secret({"metadata": {"namespace": "ops", "name": "client",
                                                        "resourceVersion": "1"}}).providers
    caches.index_client_secret("gh", None)
    assert frozenset() == caches.store_secret({"metadata": {"namespace": "ops", "name": "client",
                                                             "resourceVersion": "2"}}).providers


def provider(rv: str, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Any:
    return {"metadata": {"name": "gh", "resourceVersion": rv}, "spec": spec or {"type": "github"},
            "status": status or {}}


def test_a_provider_status_change_or_echo_does_not_make_every_link_decide_again() -> None:
    """A provider's status write came back twice (its answer, then the watch event of the
    same version), and each made all of its links decide again: 10,000 reconciles in an
    idle operator (5 % of a core in bench/idle.py)."""
    caches = Caches()
    caches.store_link(link("1"))
    first = caches.store_provider(provider("1"))
    assert ({("ns", "l")}, {"gh"}) == (first.links, first.providers)
    echo = caches.store_provider(provider("1"))
    status_only = caches.store_provider(provider("2", status={"conditions": []}))
    spec_change = caches.store_provider(provider("3", spec={"type": "gitlab"}))
    assert (frozenset(), frozenset()) == (echo.links, echo.providers)
    assert (frozenset(), {"gh"}) == (status_only.links, status_only.providers)
    assert ({("ns", "l")}, {"gh"}) == (spec_change.links, spec_change.providers)


# --- memory grows with links, not with what tenants label (contract §9.16) --------------

def full_secret(rv: str, name: str = "tok", **data: str) -> Any:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv,
                         "labels": {"externalauth.io/provider": "gh"},
                         "managedFields": [{"manager": "kubectl"}]},
            "type": "Opaque", "data": data}


def test_a_secret_no_link_reads_is_not_cached_and_one_a_link_reads_keeps_only_the_keys_the_engine_reads() -> None:
    caches = Caches()
    assert frozenset() == caches.store_secret(full_secret("1", access_token="YQ==", blob="x" * 4000)).links
    assert {} == caches.secrets, "a labelled Secret no link names is not kept"
    caches.store_link(link("1"))
    caches.store_secret(full_secret("2", access_token="YQ==", refresh_token="cg==", blob="x" * 4000,
                                    **{"git-credentials": "Zw=="}))
    kept = caches.secrets[("ns", "tok")]
    assert {"access_token": "YQ==", "refresh_token": "cg==", "git-credentials": "Zw=="} == kept["data"]
    assert 4 + 3000 == kept["omittedBytes"], "the size of what was left out is kept, for the size check"
    assert "managedFields" not in kept["metadata"]


def test_a_secret_leaves_the_cache_when_its_last_link_goes_or_moves() -> None:
    caches = Caches()
    caches.store_link(link("1"))
    caches.store_secret(full_secret("1", access_token="YQ=="))
    caches.store_link(link("2", secret="other"))
    assert ("ns", "tok") not in caches.secrets
    caches.store_secret(full_secret("3", name="other", access_token="YQ=="))
    caches.forget_link(("ns", "l"))
    assert {} == caches.secrets


def test_a_secret_event_cut_down_in_the_watch_thread_before_a_link_named_it_is_not_kept() -> None:
    """The watch thread prepared the event while no link named the Secret (no data); the
    link arrived before the loop stored it: the cache keeps nothing (the link's first look
    reads the Secret), never a Secret without its tokens."""
    caches = Caches()
    prepared = caches.prepare_secret(full_secret("1", access_token="YQ==", blob="x" * 4000))
    assert prepared.get("dataOmitted") and "data" not in prepared
    caches.store_link(link("1"))
    assert {("ns", "l")} == caches.store_secret(prepared).links
    assert ("ns", "tok") not in caches.secrets


def test_a_client_secret_is_kept_whole() -> None:
    caches = Caches()
    caches.index_client_secret("gh", ("ops", "client"))
    body = full_secret("1", name="client", clientSecret="cw==")
    body["metadata"]["namespace"] = "ops"
    caches.store_secret(body)
    assert {"clientSecret": "cw=="} == caches.secrets[("ops", "client")]["data"]
    caches.index_client_secret("gh", None)
    assert ("ops", "client") not in caches.secrets


def test_a_new_version_of_a_link_keeps_its_secret_cached() -> None:
    """Re-indexing a link (its status or finalizer written) must not drop the Secret it reads
    (it did, between un-indexing and indexing again)."""
    caches = Caches()
    caches.store_link(link("1"))
    caches.store_secret(full_secret("1", access_token="YQ=="))
    caches.store_link(link("2"))
    assert ("ns", "tok") in caches.secrets


def test_a_links_spec_is_parsed_once_for_all_its_versions_with_that_spec() -> None:
    """A status write stores a new version of the link with the same spec: the spec parsed
    before is what the next look reads (no second parse)."""
    caches = Caches()
    caches.store_link(link("1"))
    first = caches.link_spec(("ns", "l"), caches.links[("ns", "l")])
    caches.store_link(link("2"))
    again = caches.link_spec(("ns", "l"), caches.links[("ns", "l")])
    assert first[0] is not None
    assert again[0] is first[0]


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param({"providerName": "gl", "secretName": "tok"}, ("gl", "tok", None),
                 id="a changed provider is read from the new spec"),
    pytest.param({"providerName": "gh", "secretName": "other"}, ("gh", "other", None),
                 id="a changed Secret name is read from the new spec"),
    pytest.param({"providerName": "gh"}, (None, None, "spec.secretName is required"),
                 id="a spec that became invalid says why"),
])
def test_a_changed_spec_is_parsed_again(spec: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    caches = Caches()
    caches.store_link(link("1"))
    caches.link_spec(("ns", "l"), caches.links[("ns", "l")])
    caches.store_link({**link("2"), "spec": spec})
    parsed, error = caches.link_spec(("ns", "l"), caches.links[("ns", "l")])
    assert expected == (parsed.provider_name if parsed else None, parsed.secret_name if parsed else None, error)


def test_the_parsed_spec_of_a_link_no_longer_cached_is_not_kept() -> None:
    """Remembered only while the link is cached (memory grows with cached links only)."""
    caches = Caches()
    caches.store_link(link("1"))
    body = caches.links[("ns", "l")]
    remembered = caches.link_spec(("ns", "l"), body)[0]
    caches.forget_link(("ns", "l"))
    after = caches.link_spec(("ns", "l"), body)[0]
    assert (False, False) == (after is remembered, caches.link_spec(("ns", "l"), body)[0] is after)


def token_secret(rv: str, **data: str) -> Any:
    return {"metadata": {"namespace": "ns", "name": "tok", "resourceVersion": rv}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_a_secrets_tokens_are_parsed_once_for_all_its_versions_with_that_data() -> None:
    """The claim's answer is a new version of the Secret with the same data: the tokens
    parsed in the look before it are what the claim reads (their fingerprints with them)."""
    caches = Caches()
    caches.store_link(link("1"))
    caches.store_secret(token_secret("1", access_token="a", refresh_token="r"))
    first = caches.secret_tokens(("ns", "tok"), caches.secrets[("ns", "tok")])
    caches.store_secret({**token_secret("2", access_token="a", refresh_token="r"),
                         "metadata": {"namespace": "ns", "name": "tok", "resourceVersion": "2",
                                      "annotations": {"externalauth.io/claim": "me"}}})
    again = caches.secret_tokens(("ns", "tok"), caches.secrets[("ns", "tok")])
    assert first[0] is not None
    assert again[0] is first[0]


@pytest.mark.parametrize(("data", "expected"), [
    pytest.param({"access_token": "a2", "refresh_token": "r2"}, ("a2", "r2", None),
                 id="new tokens are read from the new data"),
    pytest.param({"access_token": "a"}, ("a", None, None), id="a refresh token taken out is gone"),
    pytest.param({"refresh_token": "r"}, (None, None, "key access_token is missing or empty"),
                 id="data that became unusable say why"),
])
def test_changed_data_are_parsed_again(data: dict[str, str], expected: tuple[str | None, ...]) -> None:
    caches = Caches()
    caches.store_link(link("1"))
    caches.store_secret(token_secret("1", access_token="a", refresh_token="r"))
    caches.secret_tokens(("ns", "tok"), caches.secrets[("ns", "tok")])
    caches.store_secret(token_secret("2", **data))
    tokens, error = caches.secret_tokens(("ns", "tok"), caches.secrets[("ns", "tok")])
    assert expected == (tokens.access_token.reveal() if tokens else None,
                        tokens.refresh_token.reveal() if tokens and tokens.refresh_token else None, error)


def test_the_tokens_of_a_secret_no_longer_cached_are_not_kept() -> None:
    """Dropped with the cached Secret: no token outlives it in memory."""
    caches = Caches()
    caches.store_link(link("1"))
    caches.store_secret(token_secret("1", access_token="a", refresh_token="r"))
    body = caches.secrets[("ns", "tok")]
    remembered = caches.secret_tokens(("ns", "tok"), body)[0]
    caches.forget_secret(("ns", "tok"))
    after = caches.secret_tokens(("ns", "tok"), body)[0]
    assert (False, False) == (after is remembered, caches.secret_tokens(("ns", "tok"), body)[0] is after)


def test_only_the_last_links_asked_about_are_remembered() -> None:
    """Memory stays bounded with 10,000s of links: the link asked about longest ago is
    parsed again, the latest is not."""
    caches = Caches()
    keys = [("ns", f"l{i}") for i in range(PARSED + 1)]
    for key in keys:
        caches.store_link({"metadata": {"namespace": "ns", "name": key[1], "resourceVersion": "1"},
                           "spec": {"providerName": "gh", "secretName": "tok"}})
    first = [caches.link_spec(key, caches.links[key])[0] for key in keys]
    again = [caches.link_spec(key, caches.links[key])[0] for key in (keys[0], keys[-1])]
    assert (False, True) == (again[0] is first[0], again[1] is first[-1])


def test_the_tokens_of_a_body_the_cache_does_not_hold_are_not_kept() -> None:
    """A Secret read by a GET (the watch lags) comes whole, other keys included: its
    parsed tokens are not kept beside it (the cache keeps only the keys it reads)."""
    caches = Caches()
    caches.store_link(link("1"))
    whole = token_secret("1", access_token="a", refresh_token="r", other="x" * 1000)
    caches.store_secret(whole)
    first = caches.secret_tokens(("ns", "tok"), whole)[0]
    again = caches.secret_tokens(("ns", "tok"), whole)[0]
    assert (True, False) == (first is not None and again is not None, again is first)


@pytest.mark.parametrize(("before", "after", "suspended"), [
    pytest.param(True, 1, False, id="suspend 1 after suspend true is read again (equal, not alike)"),
    pytest.param(1, True, True, id="suspend true after suspend 1 is read again"),
    pytest.param(True, True, True, id="suspend true again is the spec read before"),
])
def test_a_spec_equal_to_the_last_but_of_another_type_is_parsed_again(
        before: object, after: object, suspended: bool) -> None:
    """``True == 1`` in Python, but only ``suspend: true`` suspends a link."""
    caches = Caches()
    caches.store_link({**link("1"), "spec": {"providerName": "gh", "secretName": "tok", "suspend": before}})
    caches.link_spec(("ns", "l"), caches.links[("ns", "l")])
    caches.store_link({**link("2"), "spec": {"providerName": "gh", "secretName": "tok", "suspend": after}})
    parsed = caches.link_spec(("ns", "l"), caches.links[("ns", "l")])[0]
    assert parsed is not None
    assert suspended == parsed.suspend
