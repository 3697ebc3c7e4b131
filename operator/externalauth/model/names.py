"""Every label and annotation key that crosses a boundary (operator, CLI, users' YAML),
defined once. Pure."""

from __future__ import annotations

from externalauth import PREFIX

#: Label by which a token Secret opts in to one provider (contract §3): the operator uses a
#: Secret only for links whose ``spec.providerName`` equals its value, and watches only
#: Secrets that carry it. Written by ``externalauth login`` and by users, never by the operator.
PROVIDER_LABEL = f"{PREFIX}provider"
#: On an ExternalAuthLink with spec.revokeOnDelete: the grant is revoked before it goes.
REVOKE_FINALIZER = f"{PREFIX}revoke"
#: The label an earlier version put on Secrets itself; it opts nothing in any more.
LEGACY_MANAGED_LABEL = f"{PREFIX}managed"
#: Annotation ``externalauth login`` puts on a token Secret it created, naming the link it
#: created it for: ``externalauth logout LINK`` deletes only such a Secret (never one a user made).
LOGIN_ANNOTATION = f"{PREFIX}created-by-login-for"
#: Annotation on an ExternalAuthLink: any new value asks for one refresh now (contract §5).
REFRESH_ANNOTATION = f"{PREFIX}refresh-requested"
#: Annotation on a token Secret: the cross-replica claim ``<holder>;<unix-until>`` (contract §5).
CLAIM_ANNOTATION = f"{PREFIX}refresh-claim"
#: Annotation on a token Secret: a salted digest of the refresh token the provider refused
#: (a dead grant), written in the same write that drops the claim of the replica that sent
#: it, so that no replica can claim the Secret again for that token without seeing the
#: verdict; removed in the same write as new tokens. Never the token itself.
DEAD_GRANT_ANNOTATION = f"{PREFIX}dead-grant"
#: Longest refresh-request value acted on (contract §5).
MAX_REFRESH_REQUEST = 253

#: Where the operator runs when it is not told (``--operator-namespace``), outside a pod.
DEFAULT_OPERATOR_NAMESPACE = "externalauth-system"

LinkKey = tuple[str, str]
"""(namespace, name) of a namespaced object."""
