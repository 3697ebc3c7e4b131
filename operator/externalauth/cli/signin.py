"""``externalauth login``: sign in at a provider, then write the token Secret and the link.

gather (the provider, the Secret, the link) → decide (which flow, which namespace, which
formats: pure helpers here and in :mod:`externalauth.cli.plans`) → sign in (device flow, or
authorization code + PKCE in a browser) → write. Nothing is written before the sign-in
succeeded, and a Secret that cannot be written is refused before the user signs in.
The client secret is never read: both flows are public-client flows.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import os
import secrets
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from externalauth.cli import exits, formatting, kubeflags, namespaces, plans
from externalauth.cli.countdown import Countdown
from externalauth.errors import ConflictError, InvalidInputError, NotFoundError, PermanentError
from externalauth.kube.api import Kube
from externalauth.model import formats as fmtmod
from externalauth.model import tokens as tokmod
from externalauth.model.durations import format_duration
from externalauth.model.specs import ProviderSpec, parse_provider

#: How long a browser sign-in may take unless ``--timeout`` says otherwise.
BROWSER_TIMEOUT = dt.timedelta(minutes=5)


class Flow(enum.StrEnum):
    DEVICE = "device"
    PKCE = "pkce"


# --- pure decisions ------------------------------------------------------------------------
def choose_flow(asked: str, *, provider: ProviderSpec) -> Flow:
    """``--flow``: ``device`` needs the provider's device endpoint; ``auto`` takes it when
    there is one, else the browser (PKCE)."""
    if asked == Flow.DEVICE:
        if not provider.device_url:
            raise InvalidInputError(
                f"ExternalAuthProvider {provider.name} has no device authorization endpoint "
                "(spec.deviceAuthorizationURL): use --flow pkce to sign in with a browser on this machine")
        return Flow.DEVICE
    if asked == Flow.PKCE:
        return Flow.PKCE
    return Flow.DEVICE if provider.device_url else Flow.PKCE


def browser_wanted(*, no_browser: bool, env: Mapping[str, str], platform: str) -> bool:
    """Open a browser only where one can show: macOS and Windows always, elsewhere only with
    an X11 or Wayland display (not over plain SSH, not in a container)."""
    if no_browser:
        return False
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def merged_formats(existing_link: Mapping[str, Any] | None, asked: Sequence[str]) -> list[fmtmod.OutputFormat]:
    """The link's outputFormats after login: those it has, plus those asked for (login never
    drops a key a pod may mount)."""
    had = ((existing_link or {}).get("spec") or {}).get("outputFormats") or []
    merged: list[fmtmod.OutputFormat] = []
    for value in [*had, *asked]:
        try:
            fmt = fmtmod.OutputFormat(value)
        except ValueError:
            continue  # an unknown format on the link is the operator's to report
        if fmt not in merged:
            merged.append(fmt)
    return merged


def browser_instructions(*, provider: str, host: str, url: str, opened: bool, port: int) -> str:
    """What ``login`` prints for the browser flow. The URL is printed even when a browser
    was opened (it may not have shown up)."""
    who = f"{formatting.printable(provider)} ({formatting.printable(host)})"
    if opened:
        lines = [f"Opening a browser to sign in to {who}.",
                 "If it did not open, open this URL in a browser on this machine:"]
    else:
        lines = [f"To sign in to {who}, open this URL in a browser on this machine:"]
    lines.append(f"  {formatting.printable(url)}")
    if not opened:
        lines.append(f"(The browser must run here: the provider sends it back to 127.0.0.1:{port}.)")
    return "\n".join(lines) + "\n"


# --- the command -----------------------------------------------------------------------------
def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def login_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    cluster = namespaces.connect(kubeflags.from_args(args))
    ns = namespaces.of_command(cluster, args.namespace)
    link = args.link or args.provider
    secret_name = args.secret or f"{link}-token"
    formatting.check_name("secret", secret_name)

    try:
        raw = cluster.get_provider(args.provider)
    except NotFoundError:
        raise NotFoundError(f"ExternalAuthProvider {args.provider} not found "
                            "(kubectl get externalauthproviders lists them)") from None
    raw_spec = raw.get("spec") or {}
    try:
        provider = parse_provider(args.provider, raw_spec)
    except InvalidInputError as e:
        raise InvalidInputError(f"ExternalAuthProvider {args.provider} is invalid: {e}") from None
    flow = choose_flow(args.flow, provider=provider)

    # Fail before the user signs in, not after.
    existing = cluster.get_secret(ns, secret_name)
    if existing is not None and not args.force and not plans.is_token_secret(existing):
        plans.plan_secret(existing, namespace=ns, name=secret_name, provider=provider.name, token_data={},
                          force=False)
    try:
        existing_link: dict[str, Any] | None = cluster.get_link(ns, link)
    except NotFoundError:
        existing_link = None
    wanted = merged_formats(existing_link, args.output_formats)

    if flow is Flow.DEVICE:
        tokens = _device(provider, args, out=out, err=err)
    else:
        tokens = _browser(provider, raw_spec, args, out=out, err=err)

    _show_account(provider, tokens, out=out, err=err)
    rendering = fmtmod.render_all(wanted, host=provider.host, username=provider.quirks.git_username,
                                  token=tokens.access_token)
    data: dict[str, str | None] = {**tokmod.render_token_keys(tokens), **rendering.keys}
    how_secret = _write_secret(cluster, namespace=ns, name=secret_name, provider_name=provider.name,
                               data=data, force=args.force, link=link)
    how_link = _write_link(cluster, namespace=ns, name=link, provider=provider.name, secret=secret_name,
                           formats=[f.value for f in wanted])
    print(f"Secret {ns}/{secret_name} {how_secret}; ExternalAuthLink {ns}/{link} {how_link}.", file=out, flush=True)
    if rendering.problem:
        print(f"Note: no output format was written: {rendering.problem}.", file=err, flush=True)
    return 0


def _show_account(provider: ProviderSpec, tokens: tokmod.TokenSet, *, out: TextIO, err: TextIO) -> None:
    """Whose token this is, said before anything is written (security review finding 9: a
    sign-in someone else completed would otherwise store their token unseen). A token the
    provider refuses at once is not written at all."""
    from externalauth import transport
    from externalauth.oauth import pkce
    from externalauth.policy.classifying import ValidationVerdict

    if provider.validate_url is None:
        print(f"Signed in at {formatting.printable(provider.host)} (the provider has no validation endpoint "
              "to name the account).", file=out, flush=True)
        return
    pool = transport.Pool(transport.provider_context(provider.ca_bundle), maxsize=1)  # proxies honoured
    try:
        outcome = pkce.whoami(provider, access_token=tokens.access_token, pool=pool, now=dt.datetime.now(dt.UTC))
    finally:
        pool.close()
    if outcome.verdict is ValidationVerdict.INVALID:
        raise pkce.SignInError("sign-in failed: the provider did not accept the token it just issued; "
                               "nothing was written")
    if outcome.verdict is ValidationVerdict.VALID:
        who = formatting.printable(outcome.account) if outcome.account else "an account the provider did not name"
        print(f"Signed in as {who} at {formatting.printable(provider.host)}.", file=out, flush=True)
    else:
        print(f"Signed in at {formatting.printable(provider.host)}; the account could not be confirmed "
              f"({outcome.message}).", file=err, flush=True)


# --- the two flows -------------------------------------------------------------------------------
def _device(provider: ProviderSpec, args: argparse.Namespace, *, out: TextIO, err: TextIO) -> tokmod.TokenSet:
    from externalauth.oauth.device import DeviceFlow, DeviceFlowError

    countdown: Countdown | None = None

    def sleep(seconds: float) -> None:
        assert countdown is not None
        countdown.sleep(seconds)

    flow = DeviceFlow(provider, sleep=sleep)  # a public-client flow: login never reads the client secret
    auth = flow.start()
    if args.timeout is not None:
        auth = dataclasses.replace(auth, expires_in=int(min(auth.expires_in, args.timeout.total_seconds())))
    out.write(formatting.login_instructions(
        provider=provider.name, host=provider.host, verification_uri=auth.verification_uri,
        user_code=auth.user_code, verification_uri_complete=auth.verification_uri_complete,
        expires_in=auth.expires_in, hint=not args.no_browser_hint))
    out.flush()
    countdown = Countdown(err, doing="Waiting for approval", what="the code", seconds=auth.expires_in,
                          tty=_tty(err))
    try:
        return flow.wait(auth)
    except DeviceFlowError as e:
        if e.error == "expired_token":
            raise exits.TimedOut(str(e)) from None
        raise
    finally:
        countdown.close()


def _browser(provider: ProviderSpec, raw_spec: Mapping[str, Any], args: argparse.Namespace, *,
             out: TextIO, err: TextIO) -> tokmod.TokenSet:
    from externalauth import transport
    from externalauth.oauth import pkce
    from externalauth.oauth.loopback import LoopbackReceiver

    endpoint = pkce.authorization_endpoint(provider, raw_spec)
    verifier = pkce.verifier_from(secrets.token_bytes(pkce.VERIFIER_BYTES))
    state = pkce.state_from(secrets.token_bytes(pkce.STATE_BYTES))
    receiver = LoopbackReceiver(state=state)
    try:
        url = pkce.authorization_url(endpoint, client_id=provider.client_id, redirect_uri=receiver.redirect_uri,
                                     scopes=provider.scopes, state=state, code_challenge=pkce.challenge(verifier))
        opened = browser_wanted(no_browser=args.no_browser, env=os.environ, platform=sys.platform)
        if opened:
            _open_browser(url)
        out.write(browser_instructions(provider=provider.name, host=provider.host, url=url, opened=opened,
                                       port=receiver.port))
        out.flush()
        timeout = (args.timeout or BROWSER_TIMEOUT).total_seconds()
        countdown = Countdown(err, doing="Waiting for the browser", what="the sign-in", seconds=timeout,
                              tty=_tty(err))
        try:
            callback = receiver.wait(seconds=timeout, tick=countdown.show)
        finally:
            countdown.close()
    finally:
        receiver.close()
    if callback is None:
        waited = format_duration(dt.timedelta(seconds=timeout))
        raise exits.TimedOut(f"no sign-in came back from the browser within {waited}; run login again")
    if callback.code is None:
        raise pkce.SignInError(f"sign-in failed: {callback.message}", error=callback.error)
    pool = transport.Pool(transport.provider_context(provider.ca_bundle), maxsize=1)  # proxies honoured
    try:
        return pkce.exchange_code(provider, code=callback.code, verifier=verifier,
                                  redirect_uri=receiver.redirect_uri, pool=pool, now=dt.datetime.now(dt.UTC))
    finally:
        pool.close()


def _open_browser(url: str) -> None:
    """In a daemon thread: a browser command may block until it exits (a text browser in
    this terminal), while the loopback listener must be answering."""
    import webbrowser

    def run() -> None:
        try:
            webbrowser.open(url, new=1)
        except Exception:  # noqa: S110 - the printed URL is the fallback
            pass

    threading.Thread(target=run, name="browser", daemon=True).start()


# --- writes ------------------------------------------------------------------------------------
def _write_secret(cluster: Kube, *, namespace: str, name: str, provider_name: str,
                  data: Mapping[str, str | None], force: bool, link: str) -> str:
    for _ in range(5):
        existing = cluster.get_secret(namespace, name)
        plan = plans.plan_secret(existing, namespace=namespace, name=name, provider=provider_name,
                                 token_data=data, force=force, link=link)
        try:
            if plan.write is plans.Write.CREATE:
                cluster.create_secret(namespace, plan.body)
                return "created"
            if plan.write is plans.Write.PATCH:
                cluster.patch_secret(namespace, name, plan.body, resource_version=plan.resource_version)
                return "updated"
            assert existing is not None
            cluster.delete_secret(namespace, name, uid=(existing.get("metadata") or {}).get("uid"))
            cluster.create_secret(namespace, plan.body)
            return "replaced"
        except (ConflictError, NotFoundError):
            continue  # someone else wrote it meanwhile: look again
    raise PermanentError(f"Secret {namespace}/{name} kept changing while writing it; try again")


def _write_link(cluster: Kube, *, namespace: str, name: str, provider: str, secret: str,
                formats: Sequence[str]) -> str:
    for _ in range(3):
        try:
            cluster.get_link(namespace, name)
        except NotFoundError:
            try:
                cluster.create_link(namespace, plans.link_body(
                    namespace=namespace, name=name, provider=provider, secret=secret, formats=formats))
                return "created"
            except ConflictError:
                continue
        cluster.patch_link(namespace, name, plans.link_patch(provider=provider, secret=secret, formats=formats))
        return "updated"
    raise PermanentError(f"ExternalAuthLink {namespace}/{name} kept changing; try again")
