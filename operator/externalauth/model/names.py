"""Every label and annotation key that crosses a boundary (operator, CLI, users' YAML),
defined once. Pure."""

from __future__ import annotations

from externalauth import PREFIX

#: Label on a token Secret: the operator watches only Secrets that carry it.
MANAGED_LABEL = f"{PREFIX}managed"
#: Annotation on an ExternalAuthLink: any new value asks for one refresh now (contract §5).
REFRESH_ANNOTATION = f"{PREFIX}refresh-requested"
#: Annotation on a token Secret: the cross-replica claim ``<holder>;<unix-until>`` (contract §5).
CLAIM_ANNOTATION = f"{PREFIX}refresh-claim"
#: Longest refresh-request value acted on (contract §5).
MAX_REFRESH_REQUEST = 253

LinkKey = tuple[str, str]
"""(namespace, name) of a namespaced object."""
