"""The simulated provider's state and its answers (no network I/O).

``Provider`` holds clients, grants, device codes, faults, rate limits and
counters behind one lock, and turns a parsed request into a ``Reply``. The
HTTP layer (``serving``) only parses, injects faults and encodes. The clock is
passed in so the logic can be driven without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import enum
import secrets
import string
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from providersim.profiles import Account, DeadWhy, Dialect, LimitKind, Mode, Reply, dialect_for

__all__ = ["DEVICE_GRANT_TYPE", "Call", "Endpoint", "FaultKind", "Grant", "Mode", "Provider", "RateLimitKind",
           "Reply", "Request", "Stats"]

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


class Endpoint(enum.StrEnum):
    """Endpoints that faults and counters are keyed by."""

    TOKEN = "token"  # token endpoint, refresh_token (or any non-device) grant
    DEVICE_TOKEN = "device_token"  # token endpoint, device_code grant (polling)
    VALIDATE = "validate"  # GET /user (the profile's account endpoints)
    DEVICE_CODE = "device_code"  # POST /login/device/code (the profile's device endpoint)
    REVOKE = "revoke"  # RFC 7009 revocation, or GitHub's DELETE /applications/{client_id}/grant


class FaultKind(enum.StrEnum):
    LATENCY = "latency"
    STATUS = "status"
    DROP = "drop"
    # The request is processed (a refresh token rotated), then the connection is closed
    # unanswered: an answer lost in flight.
    LOST_ANSWER = "lost-answer"
    MALFORMED = "malformed"
    REDIRECT = "redirect"  # value = 301..308; headers={"location": <URL>}
    BODY = "body"  # value = any JSON value, answered with HTTP 200 as it is (hostile answers)
    HUGE = "huge"  # value = bytes: HTTP 200 with a JSON body that long, streamed
    TRICKLE = "trickle"  # value = seconds between bytes of the (real) answer, status line included


RateLimitKind = LimitKind


@dataclasses.dataclass(frozen=True)
class Grant:
    """A fresh grant as a user login would produce. Token values never show in repr."""

    access_token: str = dataclasses.field(repr=False)
    refresh_token: str | None = dataclasses.field(repr=False)
    expires_in: int | None
    refresh_token_expires_in: int | None
    scope: str
    login: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of the simulator's counters."""

    token_calls: int
    validation_calls: int
    device_calls: int
    exchanges_by_refresh_token: dict[str, int] = dataclasses.field(repr=False)
    reuse_attempts: int
    revoked_grants: int
    max_exchanges_per_refresh_token: int
    successful_refreshes: int
    by_status: dict[str, dict[int | str, int]]
    requests_received: int = 0  # every request on any path, control API excepted
    # Refreshes of a grant whose access token had already expired (on the simulator's clock):
    # a refresh that came too late for the workspace using the token.
    late_refreshes: int = 0
    # Revocation requests answered, and grants they revoked (a token of a revoked grant
    # is dead at the token, validation and git endpoints).
    revocation_calls: int = 0
    grants_revoked_by_request: int = 0
    # Refresh-token grant calls refused because the refresh token is dead (spent, revoked,
    # expired, unknown or another client's), per refresh token: the first refusal is how a
    # client learns that a grant is dead; any further one sent a token already known dead.
    refusals_by_refresh_token: dict[str, int] = dataclasses.field(default_factory=dict, repr=False)
    max_refusals_per_refresh_token: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["by_status"] = {ep: {str(k): v for k, v in c.items()} for ep, c in self.by_status.items()}
        return d


@dataclasses.dataclass
class Fault:
    kind: FaultKind
    value: Any = None
    remaining: int | None = None  # None = forever
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RateLimit:
    kind: LimitKind
    remaining: int | None  # answers left to limit (None: until ``until``, or forever)
    reset_after: int  # seconds from each answer to the reset it announces
    until: float | None = None  # limited until this time (simulator clock); announced as the reset


@dataclasses.dataclass(frozen=True)
class Call:
    """One answered request: when (simulator clock), at which endpoint, with which status."""

    at: float
    endpoint: str
    status: int | str


@dataclasses.dataclass
class Request:
    """A parsed request. ``headers`` keys are lower-case; ``params`` merges query and body."""

    headers: Mapping[str, str]
    params: Mapping[str, str]
    path: str = ""


@dataclasses.dataclass
class _Grant:
    id: int
    client_id: str
    login: str
    user_id: int
    scope: str
    access_token: str
    refresh_token: str | None
    revoked: bool = False
    created_at: float = 0.0


@dataclasses.dataclass
class _Access:
    grant_id: int
    expires_at: float | None
    revoked: bool = False


@dataclasses.dataclass
class _Refresh:
    grant_id: int
    expires_at: float | None
    spent: bool = False


@dataclasses.dataclass
class _Device:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    interval: int
    last_poll: float | None = None
    polls: int = 0
    state: str = "pending"  # pending | approved | denied | consumed
    login: str | None = None


class Provider:
    """Thread-safe state of one simulated OAuth2 provider, speaking the dialect of its
    ``mode`` (a profile: ``github``, ``gitlab``, ``gitea``, ``bitbucket-cloud``,
    ``azure-devops-entra``, ``generic``)."""

    def __init__(
        self,
        *,
        mode: Mode | str = Mode.GITHUB,
        access_token_lifetime: int | None = 8 * 3600,
        refresh_token_lifetime: int | None = None,
        rotate_refresh_tokens: bool = True,
        keep_used_refresh_tokens: bool | None = None,
        replay_detection: bool = False,
        tenant: str = "",
        device_interval: int = 5,
        slow_down_increment: int = 5,
        device_code_lifetime: int = 900,
        device_auto_approve_after: int | None = None,
        device_auto_approve_login: str = "alice",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = Mode(mode)
        self.dialect: Dialect = dialect_for(self.mode, tenant=tenant)
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        # A rotated-out refresh token keeps working (Entra; Gitea without
        # INVALIDATE_REFRESH_TOKENS): the profile's default unless said otherwise.
        self.keep_used_refresh_tokens = (self.dialect.old_refresh_token_stays_valid
                                         if keep_used_refresh_tokens is None else keep_used_refresh_tokens)
        self.replay_detection = replay_detection
        self.device_interval = device_interval
        self.slow_down_increment = slow_down_increment
        self.device_code_lifetime = device_code_lifetime
        self.device_auto_approve_after = device_auto_approve_after
        self.device_auto_approve_login = device_auto_approve_login
        self.clock = clock

        self._lock = threading.RLock()
        self._clients: dict[str, str | None] = {}
        self._grants: dict[int, _Grant] = {}
        self._access: dict[str, _Access] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._devices: dict[str, _Device] = {}
        self._user_codes: dict[str, str] = {}
        self._user_ids: dict[str, int] = {}
        self._faults: dict[Endpoint, list[Fault]] = defaultdict(list)
        self._rate_limits: dict[Endpoint, RateLimit] = {}
        self._reset_counters()

    @property
    def base_url(self) -> str:
        return self.dialect.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.dialect.base_url = value

    # ------------------------------------------------------------------ admin

    def _reset_counters(self) -> None:
        self._token_calls = 0
        self._validation_calls = 0
        self._device_calls = 0
        self._exchanges: Counter[str] = Counter()
        self._reuse_attempts = 0
        self._revoked_grants = 0
        self._by_status: dict[str, Counter[int | str]] = defaultdict(Counter)
        self._requests_received = 0
        self._late_refreshes = 0
        self._revocation_calls = 0
        self._revoked_by_request = 0
        self._refusals: Counter[str] = Counter()
        self._calls: collections.deque[Call] = collections.deque(maxlen=100_000)

    def reset_stats(self) -> None:
        with self._lock:
            self._reset_counters()

    def stats(self) -> Stats:
        with self._lock:
            exchanges = dict(self._exchanges)
            refusals = dict(self._refusals)
            return Stats(
                token_calls=self._token_calls,
                validation_calls=self._validation_calls,
                device_calls=self._device_calls,
                exchanges_by_refresh_token=exchanges,
                reuse_attempts=self._reuse_attempts,
                revoked_grants=self._revoked_grants,
                max_exchanges_per_refresh_token=max(exchanges.values(), default=0),
                successful_refreshes=sum(exchanges.values()),
                by_status={ep: dict(c) for ep, c in self._by_status.items()},
                requests_received=self._requests_received,
                late_refreshes=self._late_refreshes,
                revocation_calls=self._revocation_calls,
                grants_revoked_by_request=self._revoked_by_request,
                refusals_by_refresh_token=refusals,
                max_refusals_per_refresh_token=max(refusals.values(), default=0),
            )

    def calls(self, endpoint: Endpoint | str | None = None) -> list[Call]:
        """The answered requests (the last 100,000), oldest first; those of ``endpoint``."""
        with self._lock:
            wanted = None if endpoint is None else Endpoint(endpoint).value
            return [c for c in self._calls if wanted is None or c.endpoint == wanted]

    def register_client(self, client_id: str, client_secret: str | None = None) -> None:
        with self._lock:
            self._clients[client_id] = client_secret

    def set_client_secret(self, client_id: str, client_secret: str | None) -> None:
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            self._clients[client_id] = client_secret

    def issue_grant(self, client_id: str, *, login: str = "alice", scope: str = "repo") -> Grant:
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            return self._mint(self._new_grant(client_id, login=login, scope=scope), new_refresh=True)

    def revoke_grant(self, token: str) -> bool:
        """Revoke the grant that ``token`` (access or refresh) belongs to."""
        with self._lock:
            g = self._grant_of(token)
            if g is None:
                return False
            self._revoke(g)
            return True

    def expire_access_token(self, access_token: str) -> bool:
        with self._lock:
            a = self._access.get(access_token)
            if a is None:
                return False
            a.expires_at = self.clock() - 1
            return True

    def access_token_live(self, access_token: str) -> bool:
        """Whether the provider honours this access token now (not expired or revoked)."""
        now = self.clock()
        with self._lock:
            a = self._access.get(access_token)
            g = self._grants.get(a.grant_id) if a else None
            return a is not None and g is not None and self._live(a, g, now)

    def add_fault(
        self,
        endpoint: Endpoint | str,
        kind: FaultKind | str,
        *,
        count: int | None = None,
        value: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        kind = FaultKind(kind)
        if kind is FaultKind.LATENCY and not isinstance(value, int | float):
            raise ValueError("a latency fault needs value=<seconds>")
        if kind is FaultKind.STATUS and not isinstance(value, int):
            raise ValueError("a status fault needs value=<HTTP status code>")
        if kind is FaultKind.REDIRECT and (
            not isinstance(value, int) or not 300 <= value < 400 or "location" not in {
                k.lower() for k in (headers or {})}
        ):
            raise ValueError("a redirect fault needs value=<3xx> and headers={'location': <URL>}")
        if kind is FaultKind.HUGE and not (isinstance(value, int) and value > 0):
            raise ValueError("a huge fault needs value=<bytes>")
        if kind is FaultKind.TRICKLE and not (isinstance(value, int | float) and value > 0):
            raise ValueError("a trickle fault needs value=<seconds between bytes>")
        with self._lock:
            self._faults[Endpoint(endpoint)].append(
                Fault(kind, value, count, {k.lower(): str(v) for k, v in (headers or {}).items()})
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_faults(self, endpoint: Endpoint) -> list[Fault]:
        """The faults that apply to this request, consuming one use of each counted fault."""
        with self._lock:
            active = self._faults.get(endpoint, [])
            taken = list(active)
            for f in taken:
                if f.remaining is not None:
                    f.remaining -= 1
            self._faults[endpoint] = [f for f in active if f.remaining is None or f.remaining > 0]
            return taken

    def set_rate_limit(
        self,
        kind: LimitKind | str | None,
        *,
        count: int | None = None,
        reset_after: int = 60,
        duration: float | None = None,
        endpoint: Endpoint | str = Endpoint.VALIDATE,
    ) -> None:
        """Limit ``endpoint`` (``validate``, or ``token`` for refresh grants): for ``count``
        answers (each announcing a reset ``reset_after`` seconds ahead), or for ``duration``
        seconds from now (announcing that end as the reset), or until cleared (``kind`` None).
        """
        where = Endpoint(endpoint)
        with self._lock:
            if kind is None:
                self._rate_limits.pop(where, None)
                return
            until = None if duration is None else self.clock() + duration
            self._rate_limits[where] = RateLimit(LimitKind(kind), count, reset_after, until)

    def approve_device(self, user_code: str, *, login: str = "alice") -> None:
        with self._lock:
            d = self._device_by_user_code(user_code)
            d.state, d.login = "approved", login

    def deny_device(self, user_code: str) -> None:
        with self._lock:
            self._device_by_user_code(user_code).state = "denied"

    def expire_device_code(self, user_code: str) -> None:
        with self._lock:
            self._device_by_user_code(user_code).expires_at = self.clock() - 1

    def record_status(self, endpoint: Endpoint, status: int | str) -> None:
        with self._lock:
            self._by_status[endpoint.value][status] += 1
            self._calls.append(Call(self.clock(), endpoint.value, status))

    def count_request(self) -> None:
        """Any request on any path (the control API excepted): did anything reach us?"""
        with self._lock:
            self._requests_received += 1

    def count_call(self, endpoint: Endpoint) -> None:
        with self._lock:
            if endpoint in (Endpoint.TOKEN, Endpoint.DEVICE_TOKEN):
                self._token_calls += 1
            elif endpoint is Endpoint.VALIDATE:
                self._validation_calls += 1
            elif endpoint is Endpoint.REVOKE:
                self._revocation_calls += 1
            else:
                self._device_calls += 1

    # ------------------------------------------------------------- endpoints

    def token(self, req: Request) -> Reply:
        p = req.params
        with self._lock:
            wrong = self.dialect.wrong_tenant(req.path)
            if wrong is not None:
                return wrong
            grant_type = p.get("grant_type", "")
            if grant_type != DEVICE_GRANT_TYPE:
                limited = self._rate_limited(Endpoint.TOKEN, self.clock())
                if limited is not None:
                    return limited
            # Like GitHub, the device flow needs no client secret (public clients use it).
            client_id, failure = self._authenticate(
                req, secret_optional=grant_type == DEVICE_GRANT_TYPE
            )
            if failure is not None:
                return failure
            if grant_type == "refresh_token":
                if self.dialect.scope_required_on_refresh and not p.get("scope"):
                    return self.dialect.missing_scope()
                return self._refresh_grant(client_id, p.get("refresh_token", ""))
            if grant_type == DEVICE_GRANT_TYPE:
                return self._device_grant(client_id, p.get("device_code", ""))
            return self.dialect.error("unsupported_grant_type", "The grant type is not supported.")

    def validate(self, req: Request) -> Reply:
        now = self.clock()
        with self._lock:
            limited = self._rate_limited(Endpoint.VALIDATE, now)
            if limited is not None:
                return limited
            reset = int(now // 3600 + 1) * 3600
            headers = self.dialect.budget_headers(now=now, used=self._validation_calls % 5000, reset_at=reset)
            token = _bearer(req.headers.get("authorization", ""))
            a = self._access.get(token) if token else None
            g = self._grants.get(a.grant_id) if a else None
            if a is None or g is None or not self._live(a, g, now):
                reply = self.dialect.unauthorized(req.path)
                reply.headers = {**headers, **reply.headers}
                return reply
            needed = self.dialect.account_scopes
            if needed is not None and self.dialect.needs_scope(req.path) and not needed & set(g.scope.split()):
                reply = self.dialect.insufficient_scope(req.path)
                reply.headers = {**headers, **reply.headers}
                return reply
            who = Account(login=g.login, user_id=g.user_id, client_id=g.client_id, scope=g.scope,
                          expires_in=None if a.expires_at is None else max(0, int(a.expires_at - now)),
                          created_at=int(g.created_at))
            return Reply(200, self.dialect.account(req.path, who), headers)

    def revoke(self, req: Request) -> Reply:
        """Revoke the grant a token belongs to: RFC 7009 (``token``, ``token_type_hint``,
        the client authenticated as at the token endpoint), or GitHub's grant API (the
        client id in the path, HTTP Basic with the app's secret, ``access_token`` in a JSON
        body). A token of another client is not revoked (RFC 7009 §2.1)."""
        with self._lock:
            limited = self._rate_limited(Endpoint.REVOKE, self.clock())
            if limited is not None:
                return limited
            path_client = self.dialect.revoke_client(req.path)
            if path_client is not None and _basic(req.headers.get("authorization", "")) is None:
                return Reply(401, {"message": "Requires authentication"})
            client_id, failure = self._authenticate(req)
            if failure is not None:
                return failure
            if path_client is not None and path_client != client_id:
                return Reply(404, {"message": "Not Found"})
            token = req.params.get("access_token" if path_client is not None else "token", "")
            if not token:
                return self.dialect.revoke_refused("invalid_request", "The token parameter is missing.")
            hint = req.params.get("token_type_hint")
            if hint not in (None, "access_token", "refresh_token"):
                return self.dialect.revoke_refused("unsupported_token_type", "The token type is not supported.")
            g = self._grant_of(token)
            if g is not None and g.client_id == client_id and not g.revoked:
                self._revoke(g)
                self._revoked_by_request += 1
            elif path_client is not None:
                return Reply(404, {"message": "Not Found"})  # GitHub: no such (live) authorization
            return self.dialect.revoked()

    def discovery(self, req: Request) -> Reply:
        return Reply(200, self.dialect.discovery_document())

    def device_code(self, req: Request) -> Reply:
        p = req.params
        now = self.clock()
        with self._lock:
            wrong = self.dialect.wrong_tenant(req.path)
            if wrong is not None:
                return wrong
            client_id = p.get("client_id", "")
            if client_id not in self._clients:
                return self.dialect.client_error()
            device_code = secrets.token_hex(20)
            user_code = self._new_user_code()
            self._devices[device_code] = _Device(
                client_id=client_id,
                scope=p.get("scope", ""),
                user_code=user_code,
                expires_at=now + self.device_code_lifetime,
                interval=self.device_interval,
            )
            self._user_codes[user_code] = device_code
            body = {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": self.base_url + self.dialect.device_page_path,
                "expires_in": self.device_code_lifetime,
                "interval": self.device_interval,
            }
            return Reply(200, body, negotiable=True)

    # -------------------------------------------------------------- internals

    def _authenticate(
        self, req: Request, *, secret_optional: bool = False
    ) -> tuple[str, Reply | None]:
        client_id = req.params.get("client_id", "")
        secret: str | None = req.params.get("client_secret")
        basic = _basic(req.headers.get("authorization", ""))
        if basic is not None:
            client_id, secret = basic
        if client_id not in self._clients:
            return client_id, self.dialect.client_error()
        expected = self._clients[client_id]
        if secret is None and secret_optional:
            return client_id, None
        if expected is not None and (
            secret is None or not secrets.compare_digest(secret.encode(), expected.encode())
        ):
            return client_id, self.dialect.client_error()
        return client_id, None

    def _refused(self, token: str, why: DeadWhy) -> Reply:
        self._refusals[token] += 1
        return self.dialect.dead_refresh(why)

    def _refresh_grant(self, client_id: str, token: str) -> Reply:
        now = self.clock()
        r = self._refresh.get(token)
        g = self._grants.get(r.grant_id) if r else None
        if r is None or g is None:
            return self._refused(token, DeadWhy.UNKNOWN)
        if g.client_id != client_id:
            return self._refused(token, DeadWhy.OTHER_CLIENT)
        if r.spent:
            self._reuse_attempts += 1
            if self.replay_detection and not g.revoked:
                self._revoke(g)
                self._revoked_grants += 1
            return self._refused(token, DeadWhy.SPENT)
        if g.revoked:
            return self._refused(token, DeadWhy.REVOKED)
        if r.expires_at is not None and r.expires_at <= now:
            return self._refused(token, DeadWhy.EXPIRED)
        self._exchanges[token] += 1
        old = self._access.get(g.access_token)
        if old is not None:
            if old.expires_at is not None and old.expires_at <= now and not old.revoked:
                self._late_refreshes += 1
            old.revoked = True
        if self.rotate_refresh_tokens and not self.keep_used_refresh_tokens:
            r.spent = True
        grant = self._mint(g, new_refresh=self.rotate_refresh_tokens)
        return Reply(200, self.dialect.token_body(_token_body(grant), now=now), negotiable=True)

    def _device_grant(self, client_id: str, device_code: str) -> Reply:
        now = self.clock()
        d = self._devices.get(device_code)
        if d is None or d.client_id != client_id or d.state == "consumed":
            return self.dialect.unknown_device_code()
        if d.expires_at <= now:
            return self.dialect.error("expired_token", "The device code has expired.")
        if d.state == "denied":
            return self.dialect.error("access_denied", "The authorization request was denied.")
        if d.last_poll is not None and now - d.last_poll < d.interval:
            d.last_poll = now
            d.interval += self.slow_down_increment
            return self.dialect.error(
                "slow_down",
                "Too many requests have been made in the same timeframe.",
                extra={"interval": d.interval},
            )
        d.last_poll = now
        d.polls += 1
        auto = self.device_auto_approve_after
        if d.state == "pending" and auto is not None and d.polls >= auto:
            d.state, d.login = "approved", self.device_auto_approve_login
        if d.state != "approved":
            return self.dialect.error(
                "authorization_pending", "The authorization request is still pending."
            )
        d.state = "consumed"
        g = self._new_grant(client_id, login=d.login or self.device_auto_approve_login, scope=d.scope)
        return Reply(200, self.dialect.token_body(_token_body(self._mint(g, new_refresh=True)), now=now),
                     negotiable=True)

    def _new_grant(self, client_id: str, *, login: str, scope: str) -> _Grant:
        gid = len(self._grants) + 1
        user_id = self._user_ids.setdefault(login, 1000 + len(self._user_ids))
        g = _Grant(gid, client_id, login, user_id, scope, access_token="", refresh_token=None,
                   created_at=self.clock())
        self._grants[gid] = g
        return g

    def _mint(self, g: _Grant, *, new_refresh: bool) -> Grant:
        now = self.clock()
        access = self.dialect.new_access_token()
        self._access[access] = _Access(
            g.id, None if self.access_token_lifetime is None else now + self.access_token_lifetime
        )
        g.access_token = access
        refresh_out: str | None = None
        if new_refresh:
            refresh_out = self.dialect.new_refresh_token()
            self._refresh[refresh_out] = _Refresh(
                g.id,
                None if self.refresh_token_lifetime is None else now + self.refresh_token_lifetime,
            )
            g.refresh_token = refresh_out
        return Grant(
            access_token=access,
            refresh_token=refresh_out,
            expires_in=self.access_token_lifetime,
            refresh_token_expires_in=self.refresh_token_lifetime if new_refresh else None,
            scope=g.scope,
            login=g.login,
        )

    def _grant_of(self, token: str) -> _Grant | None:
        holder = self._access.get(token) or self._refresh.get(token)
        return None if holder is None else self._grants.get(holder.grant_id)

    def _revoke(self, g: _Grant) -> None:
        g.revoked = True
        a = self._access.get(g.access_token)
        if a is not None:
            a.revoked = True

    @staticmethod
    def _live(a: _Access, g: _Grant, now: float) -> bool:
        return not a.revoked and not g.revoked and (a.expires_at is None or a.expires_at > now)

    def _rate_limited(self, endpoint: Endpoint, now: float) -> Reply | None:
        rl = self._rate_limits.get(endpoint)
        if rl is None:
            return None
        if rl.until is not None:
            if now >= rl.until:
                del self._rate_limits[endpoint]
                return None
            return self.dialect.limited(rl.kind, now=now, reset_at=rl.until)
        if rl.remaining is not None:
            rl.remaining -= 1
            if rl.remaining <= 0:
                del self._rate_limits[endpoint]
        return self.dialect.limited(rl.kind, now=now, reset_at=now + rl.reset_after)

    def _device_by_user_code(self, user_code: str) -> _Device:
        device_code = self._user_codes.get(user_code.upper())
        if device_code is None:
            raise KeyError(f"unknown user code {user_code!r}")
        return self._devices[device_code]

    def _new_user_code(self) -> str:
        letters = "BCDFGHJKLMNPQRSTVWXZ"
        while True:
            code = (
                "".join(secrets.choice(letters) for _ in range(4))
                + "-"
                + "".join(secrets.choice(string.digits) for _ in range(4))
            )
            if code not in self._user_codes:
                return code


def _token_body(grant: Grant) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": grant.access_token, "token_type": "bearer"}
    if grant.expires_in is not None:
        body["expires_in"] = grant.expires_in
    if grant.refresh_token is not None:
        body["refresh_token"] = grant.refresh_token
        if grant.refresh_token_expires_in is not None:
            body["refresh_token_expires_in"] = grant.refresh_token_expires_in
    body["scope"] = grant.scope
    return body


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    # RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
    return unquote_plus(user), unquote_plus(password)
