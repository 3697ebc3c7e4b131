"""The watch caches: links, token Secrets and providers as the API server last sent
them, with the indexes the engine looks things up by. No I/O, no scheduling: every
``on_*``/``store_*`` returns what it affected, and the engine decides what to do about it.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from externalauth.errors import InvalidInputError
from externalauth.model import bodies, formats, tokens
from externalauth.model.bodies import RawBody
from externalauth.model.names import LinkKey
from externalauth.model.specs import LinkSpec, parse_link


@dataclasses.dataclass(frozen=True)
class Affected:
    """Links and providers whose decision may have changed."""

    links: frozenset[LinkKey] = frozenset()
    providers: frozenset[str] = frozenset()


NOTHING = Affected()
#: A link's spec as parsed (None and why, when it is invalid).
ParsedSpec = tuple[LinkSpec | None, str | None]
#: A token Secret's data as parsed (None and why, when they are unusable).
ParsedTokens = tuple[tokens.TokenSet | None, str | None]
#: How many links' specs, and Secrets' tokens, :class:`Parsed` keeps: twice as many as
#: the links reconciled at once (Settings.concurrency), the only ones that ask again soon.
PARSED = 1024
P = TypeVar("P")


def _parse_spec(raw: object) -> ParsedSpec:
    try:
        return parse_link(raw), None  # type: ignore[arg-type]
    except InvalidInputError as e:
        return None, str(e)


def _parse_tokens(raw: object) -> ParsedTokens:
    try:
        return tokens.parse_secret_data(raw), None  # type: ignore[arg-type]
    except InvalidInputError as e:
        return None, str(e)


def _same(a: object, b: object) -> bool:
    """Would a parser read ``a`` and ``b`` alike? Equal, and their values of the same types
    (``True == 1``: a spec's ``suspend: 1`` is not ``suspend: true``)."""
    if a is b:
        return True
    if type(a) is not dict or type(b) is not dict or a != b:
        return False
    return all(type(value) is type(b[key]) for key, value in a.items())


class Parsed(Generic[P]):
    """A pure parser's answers for cached objects, each kept beside the raw value it was
    given and used again while an object's raw value is equal to it: the last
    :data:`PARSED` objects asked about, and only while cached (:meth:`drop`)."""

    def __init__(self, parse: Callable[[object], P]) -> None:
        self._parse = parse
        self._known: collections.OrderedDict[LinkKey, tuple[object, P]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def of(self, key: LinkKey, raw: object, *, keep: bool) -> P:
        """``raw`` parsed; remembered for ``key`` if ``keep`` (``raw`` is the cached
        object's: what is kept beside an answer is never more than the cache holds)."""
        known = self._known.get(key)
        if known is not None and _same(known[0], raw):
            if keep:  # the cached object's own copy from now on (the older one can go)
                self._known[key] = (raw, known[1])
                self._known.move_to_end(key)
            return known[1]
        parsed = self._parse(raw)
        if keep:
            self._known[key] = (raw, parsed)
            self._known.move_to_end(key)
            if len(self._known) > PARSED:
                self._known.popitem(last=False)
        return parsed

    def drop(self, key: LinkKey) -> None:
        self._known.pop(key, None)


#: The data keys of a token Secret the engine reads: the token keys and the output-format
#: keys (their values are compared with what the token renders to).
SECRET_KEYS = frozenset((*tokens.TOKEN_KEYS, *formats.KEYS.values()))
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _discard(index: dict[K, set[V]], at: K, value: V) -> None:
    """Remove ``value`` from ``index[at]``, and the entry once it is empty."""
    values = index.get(at)
    if values is not None:
        values.discard(value)
        if not values:
            del index[at]


def _held(old: RawBody | None, new: RawBody) -> bool:
    """Is ``new`` a version the cache already holds, or an older one (the echo of our own
    write, whose answer was stored first)?"""
    if old is None:
        return False
    was = bodies.resource_version(old)
    return was == bodies.resource_version(new) or not bodies.newer(old, new)


class Caches:
    def __init__(self) -> None:
        self.links: dict[LinkKey, RawBody] = {}
        self.secrets: dict[LinkKey, RawBody] = {}
        self.providers: dict[str, RawBody] = {}
        #: Each namespace's labels (all of them: a provider's namespaceSelector may name any).
        self.namespaces: dict[str, dict[str, str]] = {}
        self._links_by_secret: dict[LinkKey, set[LinkKey]] = collections.defaultdict(set)
        self._links_by_provider: dict[str, set[LinkKey]] = collections.defaultdict(set)
        self._providers_by_secret: dict[LinkKey, set[str]] = collections.defaultdict(set)
        #: Links' specs as parsed: a refresh reads its link's three times (finalizers, the
        #: look before and the one after the exchange), and a status write stores a new
        #: version with the same spec.
        self._link_specs: Parsed[ParsedSpec] = Parsed(_parse_spec)
        #: Token Secrets' data as parsed: a refresh reads them in the look before the
        #: exchange and at the claim, and the claim's answer holds the same data.
        self._secret_tokens: Parsed[ParsedTokens] = Parsed(_parse_tokens)

    # --- links ------------------------------------------------------------------------
    def store_link(self, body: RawBody) -> Affected:
        key = bodies.key_of(body)
        old = self.links.get(key)
        if _held(old, body):
            return NOTHING  # older, or the echo of our own status write: nothing new to decide
        was = self._unindex_link(key, old)
        body = bodies.slim(body)
        self.links[key] = body
        spec = body.get("spec") or {}
        if isinstance(spec.get("secretName"), str):
            self._links_by_secret[(key[0], spec["secretName"])].add(key)
        if isinstance(spec.get("providerName"), str):
            self._links_by_provider[spec["providerName"]].add(key)
        if was is not None:
            self._drop_unread(was)  # after re-indexing: the same Secret stays
        return Affected(links=frozenset({key}))

    def forget_link(self, key: LinkKey) -> None:
        self._link_specs.drop(key)
        was = self._unindex_link(key, self.links.pop(key, None))
        if was is not None:
            self._drop_unread(was)

    def _unindex_link(self, key: LinkKey, old: RawBody | None) -> LinkKey | None:
        """Take ``old`` out of the indexes; the Secret it named."""
        if old is None:
            return None
        spec = old.get("spec") or {}
        secret = (key[0], spec.get("secretName", ""))
        _discard(self._links_by_secret, secret, key)
        _discard(self._links_by_provider, spec.get("providerName", ""), key)
        return secret

    def _drop_unread(self, key: LinkKey) -> None:
        """A Secret no link or provider reads any more leaves the cache (read again, by
        one GET, if a link names it later)."""
        if not self.reads_secret(key):
            self._uncache_secret(key)

    def holds_link(self, body: RawBody) -> bool:
        """Is this link event one :meth:`store_link` would ignore (a version already held, or
        older)? Asked by the watch thread, so that the echo of our own status write is dropped
        there instead of waiting in the inbox (it only reads)."""
        return _held(self.links.get(bodies.key_of(body)), body)

    def link_spec(self, key: LinkKey, body: RawBody) -> ParsedSpec:
        """``body``'s spec parsed, or why it is invalid: parsed again only when the spec
        differs from the one last parsed for the link ``key`` (remembered when ``body`` is the
        cached link, while it is cached, for the last :data:`PARSED` links asked about)."""
        raw = body.get("spec")
        return self._link_specs.of(key, raw, keep=(self.links.get(key) or {}).get("spec") is raw)

    def links_of_provider(self, name: str) -> frozenset[LinkKey]:
        return frozenset(self._links_by_provider.get(name, ()))

    # --- Secrets ----------------------------------------------------------------------
    def reads_secret(self, key: LinkKey) -> bool:
        """Does a cached link (its token Secret) or provider (its client Secret) read it?"""
        return key in self._links_by_secret or key in self._providers_by_secret

    def holds_secret(self, body: RawBody) -> bool:
        """Is this Secret event one :meth:`store_secret` would ignore (a version already held,
        or older)? Asked by the watch thread before :meth:`prepare_secret`: the echoes of our
        claim and persist (whose answers were stored first) are dropped there, not cut down,
        queued and handled by the loop (it only reads)."""
        return _held(self.secrets.get(bodies.key_of(body)), body)

    def prepare_secret(self, body: RawBody) -> RawBody:
        """``body`` as the cache would keep it: a client Secret whole, a token Secret a link
        reads with only the keys the engine reads, any other one without its data. Called
        by the watch threads too, before an event is queued for the loop (it only reads the
        indexes), so that a tenant's 1,000 large labelled Secrets nobody links to never
        wait in the inbox whole (contract §9.16)."""
        key = bodies.key_of(body)
        if key in self._providers_by_secret:
            return bodies.slim(body)
        return bodies.slim_secret(body, keep=SECRET_KEYS, read=key in self._links_by_secret)

    def store_secret(self, body: RawBody) -> Affected:
        """Keep a Secret that a link or provider reads; forget one that none reads, or whose
        data was left out (read by a GET when a link needs it)."""
        key = bodies.key_of(body)
        old = self.secrets.get(key)
        if _held(old, body):
            return NOTHING
        body = self.prepare_secret(body)
        if body.get("dataOmitted") or not self.reads_secret(key):
            self._uncache_secret(key)
        else:
            self.secrets[key] = body
        return self._readers_of(key)

    def forget_secret(self, key: LinkKey) -> Affected:
        self._uncache_secret(key)
        return self._readers_of(key)

    def _uncache_secret(self, key: LinkKey) -> None:
        self.secrets.pop(key, None)
        self._secret_tokens.drop(key)

    def secret_tokens(self, key: LinkKey, body: RawBody) -> ParsedTokens:
        """The tokens in ``body``'s data (its type is not looked at), or why they are
        unusable: parsed again only when the data differ from those last parsed for the
        Secret ``key`` (remembered when ``body`` is the cached Secret, while it is cached, for
        the last :data:`PARSED` Secrets asked about: a GET's whole body is not kept)."""
        data = body.get("data")
        return self._secret_tokens.of(key, data, keep=(self.secrets.get(key) or {}).get("data") is data)

    def links_of_secret(self, key: LinkKey) -> frozenset[LinkKey]:
        return frozenset(self._links_by_secret.get(key, ()))

    def _readers_of(self, key: LinkKey) -> Affected:
        return Affected(links=frozenset(self._links_by_secret.get(key, ())),
                        providers=frozenset(self._providers_by_secret.get(key, ())))

    # --- namespaces (their labels only) ----------------------------------------------
    def store_namespace(self, body: RawBody) -> Affected:
        name = bodies.key_of(body)[1]
        labels = {sys.intern(k): sys.intern(v) for k, v in bodies.labels_of(body).items()
                  if isinstance(k, str) and isinstance(v, str)}
        if self.namespaces.get(name) == labels:
            return NOTHING
        self.namespaces[name] = labels
        return self._links_in(name)

    def forget_namespace(self, name: str) -> Affected:
        if self.namespaces.pop(name, None) is None:
            return NOTHING
        return self._links_in(name)

    def _links_in(self, namespace: str) -> Affected:
        """The links in ``namespace`` whose provider selects namespaces (a walk of the links:
        only a namespace's labels changing asks)."""
        selective = {name for name, body in self.providers.items()
                     if (body.get("spec") or {}).get("namespaceSelector") is not None}
        if not selective:
            return NOTHING
        return Affected(links=frozenset(
            key for key, body in self.links.items()
            if key[0] == namespace and (body.get("spec") or {}).get("providerName") in selective))

    # --- providers --------------------------------------------------------------------
    def store_provider(self, body: RawBody) -> Affected:
        name = bodies.key_of(body)[1]
        old = self.providers.get(name)
        if _held(old, body):
            return NOTHING  # older, or the echo of our own status write
        self.providers[name] = body = bodies.slim(body)
        if old is not None and old.get("spec") == body.get("spec"):
            # Only the status changed (ours, mostly): the provider is looked at again, and
            # its links only if that changes what they see (Engine.on_provider).
            return Affected(providers=frozenset({name}))
        return Affected(links=self.links_of_provider(name), providers=frozenset({name}))

    def forget_provider(self, name: str) -> Affected:
        self.providers.pop(name, None)
        self.index_client_secret(name, None)
        return Affected(links=self.links_of_provider(name), providers=frozenset({name}))

    def index_client_secret(self, provider: str, ref: LinkKey | None) -> None:
        """Record which Secret holds ``provider``'s client secret (None: none)."""
        for key in [k for k, names in self._providers_by_secret.items() if provider in names]:
            _discard(self._providers_by_secret, key, provider)
            if key != ref:
                self._drop_unread(key)
        if ref is not None:
            self._providers_by_secret[ref].add(provider)
