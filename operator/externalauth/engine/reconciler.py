"""The engine: watch caches in, refreshes out.

For each link the scheduler picks, one loop: *gather* (caches and memory into a
:class:`~externalauth.policy.deciding.LinkInput`) → *decide* (pure) → *act* (refresh,
write formats or validate, each in its own room and each returning an outcome) →
*apply* the outcome to the link's memory here, in one place → decide again → *record*
(status, gauges) and schedule the next look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import uuid
from typing import cast

from externalauth import metrics
from externalauth.engine.background import Background
from externalauth.engine.caches import Affected, Caches
from externalauth.engine.ports import Clock, KubePort, ProviderFactory, SystemClock
from externalauth.engine.provider_states import Providers
from externalauth.engine.recording import Recorder, Written
from externalauth.engine.refreshing import Refresher
from externalauth.engine.revoking import Revoker
from externalauth.engine.scheduling import Scheduler, due_work
from externalauth.engine.settings import Settings
from externalauth.engine.validating import Validator
from externalauth.engine.writing import SecretWriter
from externalauth.errors import ExternalAuthError, InvalidInputError
from externalauth.model import bodies, sizes
from externalauth.model import tokens as tokmod
from externalauth.model.bodies import RawBody
from externalauth.model.names import MAX_REFRESH_REQUEST, PROVIDER_LABEL, REFRESH_ANNOTATION, LinkKey
from externalauth.model.reasons import EventReason
from externalauth.model.specs import LinkSpec, ProviderSpec, render_formats
from externalauth.policy import budgets, deciding, effects, remembering, timing
from externalauth.policy.deciding import Action, LinkMemory

log = logging.getLogger(__name__)
#: The memory of a link nothing was learnt about yet (frozen: shared, not built on each look).
_NOTHING_LEARNT = LinkMemory()


@dataclasses.dataclass
class SecretFacts:
    """What gathering learnt from a link's token Secret (defaults: nothing found)."""

    found: bool = False
    label: str | None = None  # its externalauth.io/provider label
    opted_in: bool = True  # not known to be opted out (a missing Secret says SecretNotFound)
    tokens: tokmod.TokenSet | None = None
    error: str | None = None  # why its data is unusable
    formats_stale: bool = False
    format_problem: str | None = None
    unwritable: str | None = None
    claimed_by: str | None = None  # another replica's live claim
    claimed_until: dt.datetime | None = None
    claimed_since: dt.datetime | None = None
    marked_dead: bool = False  # its externalauth.io/dead-grant names its refresh token


def _namespace_of(key: object) -> str:
    """A link key's tenant (contract §9.16: fair shares go by namespace)."""
    return cast(LinkKey, key)[0]


def default_holder() -> str:
    """This replica's name on claims: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Engine:
    def __init__(self, kube: KubePort, *, make_client: ProviderFactory,
                 settings: Settings | None = None, clock: Clock | None = None,
                 holder: str | None = None) -> None:
        self.kube = kube
        self.settings = settings = settings or Settings()
        self.clock = clock = clock or SystemClock()
        self.holder = holder or default_holder()
        self.caches = Caches()
        self.memory: dict[LinkKey, LinkMemory] = {}
        self.providers = Providers(kube=kube, caches=self.caches, clock=clock, settings=settings,
                                   make_client=make_client, fetch_secret=self._client_secret)
        self.writer = SecretWriter(kube=kube, caches=self.caches, clock=clock, holder=self.holder,
                                   claim_lease=settings.claim_lease)
        self.refresher = Refresher(writer=self.writer, providers=self.providers, clock=clock,
                                   renew_below=settings.provider_call_budget)
        self.validator = Validator(providers=self.providers, clock=clock)
        self.recorder = Recorder(kube=kube, caches=self.caches, clock=clock)
        self.revoker = Revoker(kube=kube, caches=self.caches, writer=self.writer, providers=self.providers,
                               recorder=self.recorder, clock=clock, settings=settings)
        self.scheduler = Scheduler(self._reconcile_key, concurrency=settings.concurrency, clock=clock,
                                   tenant=_namespace_of)
        self._warned_rt: dict[LinkKey, str] = {}
        self.background = Background()  # provider reconciles started by a watch event
        #: Each (provider, namespace)'s budget of calls that are not due (contract §9.16),
        #: and the moment booked for each link that waits for it.
        self.budgets: dict[tuple[str, str], budgets.Bucket] = {}
        self._booked: dict[LinkKey, dt.datetime] = {}

    # --- watch events in -------------------------------------------------------------
    def on_link(self, kind: str, body: RawBody) -> None:
        if not self.settings.shard.serves(bodies.key_of(body)[0]):
            return  # another replica's shard: not cached, not decided
        if kind == "DELETED":
            key = bodies.key_of(body)
            self.caches.forget_link(key)
            self.memory.pop(key, None)
            self._warned_rt.pop(key, None)
            self._booked.pop(key, None)
            self.scheduler.forget(key)
            self.recorder.forget(key)
            self.revoker.forget(key)
            return
        self._schedule(self.caches.store_link(body))

    def on_secret(self, kind: str, body: RawBody) -> None:
        namespace = bodies.key_of(body)[0]
        if namespace != self.settings.operator_namespace and not self.settings.shard.serves(namespace):
            return
        if kind == "DELETED":
            key = bodies.key_of(body)
            self.revoker.secret_deleted(key, self.caches.secrets.get(key))
            affected = self.caches.forget_secret(key)
        else:
            affected = self.caches.store_secret(body)
        self._schedule(affected)
        for name in affected.providers:  # a client secret changed
            self.background.start(self._reconcile_provider(name), name=f"provider {name}")

    def on_namespace(self, kind: str, body: RawBody) -> None:
        """A namespace's labels (for providers' namespaceSelector): its links are decided
        again when they change."""
        name = bodies.key_of(body)[1]
        if not self.settings.shard.serves(name):
            return
        if kind == "DELETED":
            self._schedule(self.caches.forget_namespace(name))
        else:
            self._schedule(self.caches.store_namespace(body))

    async def _reconcile_provider(self, name: str) -> None:
        await self.providers.reconcile(name)
        self._schedule(Affected(links=self.caches.links_of_provider(name)))

    async def on_provider(self, kind: str, body: RawBody) -> None:
        if kind == "DELETED":
            affected = self.caches.forget_provider(bodies.key_of(body)[1])
        else:
            affected = self.caches.store_provider(body)
        for name in affected.providers:
            before = self.providers.view(name)
            await self.providers.reconcile(name)
            if self.providers.view(name) != before:  # e.g. its client secret became readable
                self._schedule(Affected(links=self.caches.links_of_provider(name)))
        self._schedule(affected)

    def _schedule(self, affected: Affected) -> None:
        for key in affected.links:
            self.scheduler.schedule(key)

    # --- the token Secret of a link ---------------------------------------------------
    async def _token_secret(self, key: LinkKey, provider: str) -> tuple[RawBody | None, str | None, bool]:
        """(the Secret, the provider label it carries, whether it exists).

        Opted-in Secrets come from the watch cache. One that is not there is looked up by
        its metadata only, so that the link can say whether it is missing or has not opted
        in; its data is read only when it carries this provider's label (the watch lags)."""
        cached = self.caches.secrets.get(key)
        if cached is not None:
            return cached, bodies.labels_of(cached).get(PROVIDER_LABEL), True
        try:
            meta = await self.kube.get_secret_metadata(*key)
        except ExternalAuthError as e:
            log.warning("cannot look up Secret %s/%s: %s", key[0], key[1], e)
            return None, None, False
        if meta is None:
            return None, None, False
        label = bodies.labels_of(meta).get(PROVIDER_LABEL)
        if label != provider:
            return None, label, True
        full = await self.writer.reread(key)
        return full, label, full is not None

    async def _client_secret(self, key: LinkKey) -> RawBody | None:
        """A provider's client Secret (operator namespace only): the watch cache, else a read
        (the watch may not have delivered it yet)."""
        return self.caches.secrets.get(key) or await self.writer.reread(key)

    # --- gather → decide → act → apply → record --------------------------------------
    async def _reconcile_key(self, key: object) -> None:
        await self.reconcile_link(key)  # type: ignore[arg-type]

    async def reconcile_link(self, key: LinkKey) -> None:
        done, again = await self.revoker.handle(key)  # revokeOnDelete: finalizer, deletion
        if done:
            if again is not None:
                self.scheduler.schedule(key, again)
            return
        acted: set[Action] = set()
        deferred: dt.timedelta | None = None
        while True:
            gathered = await self._gather(key)
            if gathered is None:
                return
            inp, body = gathered
            plan = deciding.decide(inp)
            if plan.action is Action.NONE or plan.action in acted:
                break
            if plan.budgeted and inp.spec is not None:
                deferred = self._spend(key, inp.spec.provider_name, now=inp.now)
                if deferred is not None:
                    break  # the namespace's budget of calls that are not due is spent: later
            acted.add(plan.action)
            await self._act(key, inp, plan)
        await self._record(key, inp, body, plan, deferred=deferred)

    def _spend(self, key: LinkKey, provider: str, *, now: dt.datetime) -> dt.timedelta | None:
        """One call from the link's namespace's budget at ``provider`` (contract §9.16): None
        (go ahead), or how long until the moment booked for it."""
        at = self._booked.pop(key, None)
        if at is None:
            where = (provider, key[0])
            bucket = self.budgets.get(where)
            if bucket is not None and budgets.idle(bucket, now=now):
                bucket = None
            self.budgets[where], at = budgets.book(bucket, now=now, burst=self.settings.tenant_burst,
                                                   rate=self.settings.tenant_rate)
        if at <= now:
            return None
        self._booked[key] = at
        return at - now

    async def _gather(self, key: LinkKey) -> tuple[deciding.LinkInput, RawBody] | None:
        body = self.caches.links.get(key)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        spec, spec_error = self.caches.link_spec(key, body)
        provider_view = self.providers.view(spec.provider_name) if spec is not None else None
        facts = SecretFacts()
        namespace_labels = self.caches.namespaces.get(key[0])
        if spec is not None and provider_view is not None and provider_view.spec is not None \
                and provider_view.spec.allows(namespace_labels):  # else ProviderNotAllowed: not read
            facts = await self._look_at_secret(key, spec, provider_view.spec)
        tokens = facts.tokens
        request = bodies.annotation(body, REFRESH_ANNOTATION)
        if request is not None and len(request) > MAX_REFRESH_REQUEST:
            self._reject_request(key, request)
            request = None
        uid = meta.get("uid", "")
        if tokens is not None:
            self.memory[key] = remembering.seen(self._memory(key), access_fp=tokens.access_token.fingerprint(),
                                                now=self.clock.now(), claimed_elsewhere=facts.claimed_by is not None)
        inp = deciding.LinkInput(
            now=self.clock.now(),
            uid=uid,
            generation=meta.get("generation", 0),
            spec=spec,
            spec_error=spec_error,
            provider=provider_view,
            secret_found=facts.found,
            tokens=tokens,
            secret_error=facts.error,
            refresh_requested=request,
            status=body.get("status") or {},
            memory=self._memory(key),
            validation_interval=self.settings.validation_interval,
            formats_stale=facts.formats_stale,
            format_problem=facts.format_problem,
            token_digest=tokens.access_token.digest(uid) if tokens is not None else None,
            refresh_digest=(tokens.refresh_token.digest(uid)
                            if tokens is not None and tokens.refresh_token is not None else None),
            claimed_by=facts.claimed_by,
            claimed_until=facts.claimed_until,
            claimed_since=facts.claimed_since,
            secret_opted_in=facts.opted_in,
            secret_label=facts.label,
            secret_unwritable=facts.unwritable,
            secret_marked_dead=facts.marked_dead,
            namespace_labels=namespace_labels,
        )
        return inp, body

    async def _look_at_secret(self, key: LinkKey, spec: LinkSpec, provider: ProviderSpec) -> SecretFacts:
        """What the link's token Secret says, as far as the link may read it: all reads
        first (the Secret, its claim, the account), then what they mean."""
        account = self._account(key)
        secret_key = (key[0], spec.secret_name)
        secret, label, found = await self._token_secret(secret_key, spec.provider_name)
        facts = SecretFacts(found=found, label=label, opted_in=label == spec.provider_name)
        if secret is None or not facts.opted_in:
            return facts
        claim = self.writer.claim_of(secret)
        if claim is not None and claim.holder != self.holder:
            facts.claimed_by = claim.holder
            facts.claimed_until = dt.datetime.fromtimestamp(claim.until, dt.UTC)
            facts.claimed_since = facts.claimed_until - dt.timedelta(seconds=self.settings.claim_lease)
        try:
            tokmod.check_secret_type(secret.get("type"))
        except InvalidInputError as e:
            facts.error = str(e)
            return facts
        facts.tokens, facts.error = self.caches.secret_tokens(secret_key, secret)
        if facts.tokens is None:
            return facts
        facts.marked_dead = self.writer.marked_dead(secret, facts.tokens.refresh_token)
        rendering = render_formats(spec, provider, token=facts.tokens.access_token, account=account)
        data = secret.get("data") or {}
        facts.formats_stale = any(data.get(k) != v for k, v in rendering.keys.items())
        facts.format_problem = rendering.problem
        facts.unwritable = sizes.unwritable(secret, extra=rendering.keys)
        return facts

    async def _act(self, key: LinkKey, inp: deciding.LinkInput, plan: deciding.Plan) -> None:
        spec, tokens = inp.spec, inp.tokens
        assert spec is not None and tokens is not None
        assert inp.provider is not None and inp.provider.spec is not None
        provider = inp.provider.spec
        secret_key = (key[0], spec.secret_name)
        account = self._account(key)
        if plan.action is Action.REFRESH:
            assert tokens.refresh_token is not None
            log.info("ExternalAuthLink %s/%s: refreshing (%s)", key[0], key[1], plan.why)

            def render(new: tokmod.TokenSet) -> dict[str, str | None]:
                # Token keys and format keys in one write: a pod never sees a format key
                # that disagrees with access_token.
                return {**tokmod.render_token_keys(new),
                        **render_formats(spec, provider, token=new.access_token, account=account).keys}

            # A due refresh's claim and re-reads go before status writes and events in the
            # API-server calls' line (ThreadedKube), as its call does at the provider.
            with due_work(not plan.budgeted):
                result = await self.refresher.refresh(secret_key, provider=provider.name,
                                                      consumed=tokens.refresh_token, render=render,
                                                      due=not plan.budgeted)
            memory, acted, warned = self._memory(key), self._latest_request(key), self._warned_rt.get(key)
            rejected_until = await self._tell_provider(provider.name, skew=result.clock_skew,
                                                       news=effects.client_news(result.outcome))
            done = effects.refresh_effects(result, effects.Context(
                memory=memory, now=self.clock.now(), acted=acted, consumed_fp=tokens.refresh_token.fingerprint(),
                seed=f"{key}", backoff_base=self.settings.backoff_base, backoff_cap=self.settings.backoff_cap,
                asked_at=inp.now if plan.requested else None, rejected_until=rejected_until, rt_warned=warned))
            self._apply(key, provider.name, done)
        elif plan.action is Action.WRITE_FORMATS:
            data = render_formats(spec, provider, token=tokens.access_token, account=account).keys
            await self.writer.write_formats(secret_key, access_token=tokens.access_token, data=data)
        elif plan.action is Action.VALIDATE:
            outcome = await self.validator.validate(provider=provider.name,
                                                    access_token=tokens.access_token)
            if outcome is None:
                return
            memory, account = self._memory(key), inp.status.get("account")
            await self._tell_provider(provider.name, skew=outcome.clock_skew, news=None)
            done = effects.validation_effects(
                outcome, memory=memory, access_fp=tokens.access_token.fingerprint(),
                digest=tokens.access_token.digest(inp.uid), now=self.clock.now(), seed=f"{key}/v",
                cap=self.settings.backoff_cap, status_account=account if isinstance(account, str) else None)
            self._apply(key, provider.name, done)

    async def _tell_provider(self, provider: str, *, skew: float | None,
                             news: effects.ClientNews | None) -> dt.datetime | None:
        """What an answer taught about the provider: its clock, and whether it takes its
        OAuth client; its links are decided again when that changes their lot. Returns the
        provider's backoff, if it rejected the client."""
        self.providers.note_clock_skew(provider, skew)
        until = None
        if news is effects.ClientNews.ACCEPTED:
            changed = await self.providers.client_accepted(provider)
        elif news is effects.ClientNews.REJECTED:
            until, changed = await self.providers.client_rejected(provider), True
        else:
            return None
        for link in self.caches.links_of_provider(provider) if changed else ():
            self.scheduler.schedule(link)
        return until

    def _apply(self, key: LinkKey, provider: str, done: effects.Effects) -> None:
        """The one place where an outcome changes the link's memory, metrics and events:
        what it means was decided by :mod:`externalauth.policy.effects`."""
        self.memory[key] = done.memory
        if done.refresh_seconds is not None:
            metrics.child(metrics.REFRESH_DURATION, provider).observe(done.refresh_seconds)
        if done.unsaved_seconds is not None:
            metrics.child(metrics.UNSAVED_DURATION, provider).observe(done.unsaved_seconds)
        if done.verdict is not None:
            metrics.child(metrics.VALIDATION_TOTAL, provider, done.verdict).inc()
        if done.count is not None:
            metrics.child(metrics.REFRESH_TOTAL, provider, done.count).inc()
        if done.lost is not None:
            metrics.child(metrics.TOKENS_LOST, provider, done.lost).inc()
        if done.rt_warned is not None:
            self._warned_rt[key] = done.rt_warned
        for event in done.events:
            self.recorder.event(key, event.type, event.reason, event.message)

    async def _record(self, key: LinkKey, inp: deciding.LinkInput, body: RawBody,
                      plan: deciding.Plan, *, deferred: dt.timedelta | None = None) -> None:
        written = await self.recorder.write_status(key, body=body, plan=plan, now=inp.now,
                                                   generation=inp.generation)
        if written.result is Written.GONE:
            return
        if written.body is not None:
            self.caches.store_link(written.body)
        self.recorder.gauges(key, provider=inp.spec.provider_name if inp.spec else "", ready=plan.ready,
                             expiry=inp.tokens.expiry if inp.tokens else None)
        if written.result is Written.FAILED:
            self.scheduler.schedule(key, inp.now + timing.STATUS_RETRY)
        elif written.result is Written.STALE:  # the newer link's watch event decides again
            self.scheduler.schedule(key, inp.now + timing.RETRY_SOON)  # (or this, if it was missed)
        elif deferred is not None:  # over the namespace's budget: when it has a call again
            self.scheduler.reset(key, inp.now + deferred)
        elif plan.action is not Action.NONE:
            # The action could not be done now (e.g. another replica holds the claim).
            self.scheduler.schedule(key, inp.now + timing.RETRY_SOON)
        else:
            self.scheduler.reset(key, plan.wake_at)

    def _reject_request(self, key: LinkKey, request: str) -> None:
        """A refresh request too long to echo into the status: not acted on, said once."""
        mem = self._memory(key)
        fingerprint = str(hash(request))
        if mem.rejected_request != fingerprint:
            self.memory[key] = remembering.request_rejected(mem, fingerprint=fingerprint)
            self.recorder.event(key, "Warning", EventReason.INVALID_INPUT,
                                f"the {REFRESH_ANNOTATION} annotation is longer than {MAX_REFRESH_REQUEST} "
                                "characters: not acted on")

    # --- helpers ---------------------------------------------------------------------
    def _memory(self, key: LinkKey) -> LinkMemory:
        memory = self.memory.get(key)
        return _NOTHING_LEARNT if memory is None else memory

    def _latest_request(self, key: LinkKey) -> str | None:
        """The refresh annotation as it is now: a request that arrived while a refresh was
        in flight is answered by that refresh (single-flight), not by another exchange."""
        return bodies.annotation(self.caches.links.get(key), REFRESH_ANNOTATION)

    def _account(self, key: LinkKey) -> str | None:
        """The identity the provider reported for this link (memory, else its status)."""
        mem = self.memory.get(key)
        if mem is not None and mem.validation is not None and mem.validation.account:
            return mem.validation.account
        account = ((self.caches.links.get(key) or {}).get("status") or {}).get("account")
        return account if isinstance(account, str) else None

    # --- lifecycle -------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop scheduling; wait for in-flight reconciles, every pending persist and event."""
        grace = self.settings.shutdown_grace
        await self.scheduler.stop(grace=grace)
        await self.writer.drain(grace=grace)
        await self.background.wait(timeout=timing.BACKGROUND_GRACE)
        await self.recorder.drain(grace=timing.BACKGROUND_GRACE)
        self.providers.close()
