"""``externalauth logout LINK``: unlink. Revoke the grant at the provider through the operator,
delete the link, then delete the token Secret ``login`` created for it (unless ``--keep-secret``).

gather (the link, its Secret, where the link's events stand) → decide (which Secret goes:
:func:`externalauth.cli.plans.secret_to_delete`; what the operator's event means:
:func:`outcome_of`) → act, in order:

1. revocation: set ``spec.revokeOnDelete`` and wait (on a watch) until the operator put its
   finalizer on the link, so that the deletion cannot outrun it;
2. delete the link (the finalizer holds it while the operator revokes), then wait (on a
   watch of the link's events) for ``Revoked`` or ``RevocationFailed``;
3. delete the Secret.

Nothing is deleted when step 1 times out (the operator is not there to revoke). A failed
revocation still deletes (the link is gone by then) and exits 1 with what to do by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import Any

from externalauth.cli import exits, formatting, kubeflags, namespaces, plans
from externalauth.cli.commands import follow
from externalauth.errors import NotFoundError
from externalauth.kube.api import Kube, WatchExpired
from externalauth.model.durations import format_duration
from externalauth.model.names import REVOKE_FINALIZER
from externalauth.model.reasons import EventReason


@dataclasses.dataclass(frozen=True)
class Outcome:
    revoked: bool
    message: str


def outcome_of(event: Mapping[str, Any]) -> Outcome | None:
    """What an event about the deleted link says about its revocation (None: nothing). Pure."""
    reason = event.get("reason")
    message = formatting.printable(" ".join(str(event.get("message") or "").split()))
    if reason == EventReason.REVOKED:
        return Outcome(True, message)
    if reason == EventReason.REVOCATION_FAILED:
        return Outcome(False, message)
    return None


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _has_finalizer(link: Mapping[str, Any]) -> bool:
    return REVOKE_FINALIZER in (_meta(link).get("finalizers") or [])


def logout_command(args: argparse.Namespace) -> int:
    cluster = namespaces.connect(kubeflags.from_args(args))
    ns, name = namespaces.of_command(cluster, args.namespace), args.link
    until = time.monotonic() + args.timeout.total_seconds()
    waited = format_duration(args.timeout)
    try:
        link = cluster.get_link(ns, name)
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthLink {ns}/{name} not found") from None
    uid = str(_meta(link).get("uid") or "")
    secret_name = str((link.get("spec") or {}).get("secretName") or "")
    secret = cluster.get_secret(ns, secret_name) if secret_name else None
    delete_secret, secret_note = plans.secret_to_delete(link, secret, keep=args.keep_secret)
    selector = f"involvedObject.uid={uid}"
    _, events_rv = cluster.list_events(ns, selector=selector)

    # 1. the revocation, through the operator
    if not _meta(link).get("deletionTimestamp"):
        if not _has_finalizer(link):
            print(f"Asking the operator to revoke the grant of ExternalAuthLink {ns}/{name} ...",
                  file=sys.stderr, flush=True)
            link = cluster.patch_link(ns, name, {"spec": {"revokeOnDelete": True}})
            if not _wait_for_finalizer(cluster, ns, name, link, until=until):
                raise exits.TimedOut(
                    f"the operator did not take up the revocation of {ns}/{name} within {waited} (is it running "
                    "and serving this namespace?); nothing was deleted")
        # 2. the link
        try:
            cluster.delete_link(ns, name, uid=uid)
        except NotFoundError:
            pass  # gone meanwhile: its events still say how the revocation went
    outcome = _wait_for_outcome(cluster, ns, selector, events_rv, until=until)
    if outcome is None:
        raise exits.TimedOut(
            f"ExternalAuthLink {ns}/{name} is being deleted, but the operator did not report the revocation "
            f"within {waited}; see: kubectl get events -n {ns} --field-selector {selector}"
            + ("" if not delete_secret else f" (Secret {secret_name} not deleted yet: run logout again or "
               "delete it)"))

    # 3. the Secret
    if delete_secret and secret is not None:
        try:
            cluster.delete_secret(ns, secret_name, uid=_meta(secret).get("uid"))
        except NotFoundError:
            secret_note = f"Secret {secret_name} was already gone"
    said = f"ExternalAuthLink {ns}/{name} deleted; {secret_note}."
    if not outcome.revoked:
        raise exits.CommandError(f"{said} The grant was NOT revoked: {outcome.message}")
    print(f"{said} Grant revoked: {outcome.message}.", flush=True)
    return 0


def _wait_for_finalizer(cluster: Kube, ns: str, name: str, link: dict[str, Any], *, until: float) -> bool:
    if _has_finalizer(link):
        return True
    rv = str(_meta(link).get("resourceVersion") or "")
    for change in follow(cluster, ns, name=name, resource_version=rv, until=until):
        current = change.listed[0] if change.kind == "LISTED" and change.listed else change.link
        if change.kind == "DELETED" or current is None:
            raise NotFoundError(f"ExternalAuthLink {ns}/{name} was deleted by someone else meanwhile")
        if _has_finalizer(current):
            return True
    return False


def _wait_for_outcome(cluster: Kube, ns: str, selector: str, rv: str, *, until: float) -> Outcome | None:
    while time.monotonic() < until:
        try:
            for _, event in cluster.watch_events(ns, selector=selector, resource_version=rv,
                                                 seconds=max(1, int(until - time.monotonic()))):
                rv = str(_meta(event).get("resourceVersion") or rv)
                outcome = outcome_of(event)
                if outcome is not None:
                    return outcome
        except WatchExpired:
            events, rv = cluster.list_events(ns, selector=selector)
            for event in events:
                outcome = outcome_of(event)
                if outcome is not None:
                    return outcome
    return None
