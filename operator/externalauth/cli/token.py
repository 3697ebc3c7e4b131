"""``externalauth token LINK``: print the link's current access token, like ``gh auth token``.

gather (the link, then the Secret it names) → decide (:func:`access_token`, pure: the Secret
must be opted in to the link's provider, contract §3) → print the token alone on stdout.
Anything else (an expired token's note) goes to stderr, so that ``$(externalauth token gh)``
is the token and nothing more.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from collections.abc import Mapping
from typing import Any

from externalauth.cli import exits, kubeflags
from externalauth.errors import InvalidInputError, NotFoundError
from externalauth.model import tokens as tokmod
from externalauth.model.durations import format_time
from externalauth.model.names import PROVIDER_LABEL


@dataclasses.dataclass(frozen=True)
class Found:
    token: str
    expired_at: dt.datetime | None  # set when the token's expiry has passed


def access_token(link: Mapping[str, Any], secret: Mapping[str, Any] | None, *, now: dt.datetime) -> Found:
    """The access token of ``link`` from its Secret (None: there is none), or a
    :class:`~externalauth.cli.exits.CommandError` that says why not. Pure.

    Only an opted-in Secret is read (the label ``externalauth.io/provider`` equal to the
    link's provider): the same rule as the operator's, so that a link cannot be pointed at
    someone else's Secret to print it. A missing or unusable Secret is "sign in again" (4).
    """
    meta = link.get("metadata") or {}
    spec = link.get("spec") or {}
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    provider = str(spec.get("providerName") or "")
    name = str(spec.get("secretName") or "")
    hint = f"externalauth login {provider or 'PROVIDER'} --link {meta.get('name', 'LINK')}"
    if secret is None:
        raise exits.SignInAgain(f"ExternalAuthLink {where}: its Secret {name} does not exist (sign in: {hint})")
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if not provider or labels.get(PROVIDER_LABEL) != provider:
        raise exits.SignInAgain(
            f"Secret {name} is not opted in to provider {provider} (it needs the label "
            f"{PROVIDER_LABEL}={provider}); add the label or sign in: {hint}")
    try:
        tokens = tokmod.parse_secret_data(secret.get("data"), secret_type=secret.get("type"))
    except InvalidInputError as e:
        raise exits.SignInAgain(f"Secret {name} holds no usable token: {e} (sign in: {hint})") from None
    expired = tokens.expiry if tokens.expiry is not None and tokens.expiry <= now else None
    return Found(tokens.access_token.reveal(), expired)


def token_command(args: argparse.Namespace) -> int:
    from externalauth.cli import namespaces

    cluster = namespaces.connect(kubeflags.from_args(args))
    ns = namespaces.of_command(cluster, args.namespace)
    try:
        link = cluster.get_link(ns, args.link)
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthLink {ns}/{args.link} not found") from None
    name = str((link.get("spec") or {}).get("secretName") or "")
    secret = cluster.get_secret(ns, name) if name else None
    found = access_token(link, secret, now=dt.datetime.now(dt.UTC))
    if found.expired_at is not None:
        print(f"{args.link}: note: this token expired at {format_time(found.expired_at)} (is the operator "
              f"refreshing it? externalauth status {args.link})", file=sys.stderr, flush=True)
    sys.stdout.write(found.token + "\n")
    sys.stdout.flush()
    return 0
