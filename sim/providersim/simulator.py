"""``Simulator``: the in-process face of the provider simulator (I/O: server thread, files)."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from providersim import authorize, pki
from providersim.gitserving import GitRepos
from providersim.provider import (
    Call,
    Endpoint,
    FaultKind,
    Grant,
    Mode,
    Provider,
    RateLimitKind,
    Stats,
)
from providersim.serving import SimServer


class Simulator:
    """A running HTTPS provider simulator. See the package docstring for usage."""

    def __init__(
        self,
        mode: Mode | str = "github",
        *,
        profile: Mode | str | None = None,
        tenant: str = "contoso",
        clock_offset: float = 0.0,
        access_token_lifetime: int | None = 8 * 3600,
        refresh_token_lifetime: int | None = None,
        rotate_refresh_tokens: bool = True,
        keep_used_refresh_tokens: bool | None = None,
        replay_detection: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        device_interval: int = 5,
        slow_down_increment: int = 5,
        device_code_lifetime: int = 900,
        device_auto_approve_after: int | None = None,
        device_auto_approve_login: str = "alice",
        latency: float = 0.0,
        state_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``profile`` (or ``mode``, its older name) picks the provider dialect: ``github``,
        ``gitlab``, ``gitea``, ``bitbucket-cloud``, ``azure-devops-entra`` or ``generic``
        (see ``providersim.profiles``). ``tenant``: the Entra tenant its token path
        accepts (besides ``organizations`` and ``common``).

        ``clock`` (seconds since the epoch) decides every expiry, the device-flow interval,
        rate-limit resets and the ``Date`` header; tests pass a fake one and advance it
        instead of sleeping. ``clock_offset`` sets the simulator's clock that many seconds
        apart from ``clock`` (a provider whose clock is off, or an operator's).
        ``keep_used_refresh_tokens``: a rotated-out refresh token keeps working (None: as
        the profile does; Entra and Gitea do)."""
        base_clock = clock
        self.clock_offset = clock_offset
        self.provider = Provider(
            mode=profile if profile is not None else mode,
            tenant=tenant,
            access_token_lifetime=access_token_lifetime,
            refresh_token_lifetime=refresh_token_lifetime,
            rotate_refresh_tokens=rotate_refresh_tokens,
            keep_used_refresh_tokens=keep_used_refresh_tokens,
            replay_detection=replay_detection,
            device_interval=device_interval,
            slow_down_increment=slow_down_increment,
            device_code_lifetime=device_code_lifetime,
            device_auto_approve_after=device_auto_approve_after,
            device_auto_approve_login=device_auto_approve_login,
            clock=(lambda: base_clock() + self.clock_offset) if clock_offset else base_clock,
        )
        self.authorizer = authorize.Authorizer(
            self.provider, path=authorize.authorize_path(self.provider.dialect.token_path)
        )
        self.host = host
        self.port = port
        self.latency = latency
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._own_state_dir = state_dir is None
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._certs: pki.CertPaths | None = None
        self._git: GitRepos | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="providersim-"))
        self._certs = pki.load_or_generate(self._state_dir, hosts=[self.host])
        self._git = GitRepos(self._state_dir / "git")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._certs.cert_file, self._certs.key_file)
        self._server = SimServer(
            (self.host, self.port),
            provider=self.provider,
            ssl_context=ctx,
            base_latency=lambda: self.latency,
            authorizer=self.authorizer,
            git_repos=self._git,
        )
        self.port = int(self._server.server_address[1])
        self.provider.base_url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"providersim-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._git = None
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<Simulator {self.provider.mode.value} {state}>"

    # ---------------------------------------------------------------- addresses

    @property
    def url(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    @property
    def profile(self) -> Mode:
        return self.provider.mode

    @property
    def base_url(self) -> str:
        """What an ExternalAuthProvider of this profile's type puts in ``spec.baseURL`` (for
        Entra: with the tenant)."""
        if self.profile is Mode.AZURE_DEVOPS_ENTRA:
            return f"{self.url}/{self.provider.dialect.tenant}"
        return self.url

    @property
    def token_url(self) -> str:
        path = self.provider.dialect.token_path
        if self.profile is Mode.AZURE_DEVOPS_ENTRA:
            path = path.replace("/organizations/", f"/{self.provider.dialect.tenant}/", 1)
        return self.url + path

    @property
    def validate_url(self) -> str:
        return self.url + self.provider.dialect.validate_paths[0]

    @property
    def authorize_url(self) -> str:
        """The browser sign-in page (authorization code + PKCE; see ``providersim.authorize``)."""
        return self.url + self.authorizer.path

    @property
    def device_authorization_url(self) -> str:
        path = self.provider.dialect.device_code_path
        if path is None:
            raise RuntimeError(f"the {self.profile} profile has no device endpoint")
        if self.profile is Mode.AZURE_DEVOPS_ENTRA:
            path = path.replace("/organizations/", f"/{self.provider.dialect.tenant}/", 1)
        return self.url + path

    @property
    def issuer_url(self) -> str:
        """The OIDC issuer (profiles that publish a discovery document)."""
        return self.url

    def git_url(self, repo: str) -> str:
        """Where ``git clone`` finds repository ``repo`` (see :attr:`git`)."""
        return f"{self.url}/git/{repo}.git"

    @property
    def git(self) -> GitRepos:
        """The git repositories served under ``/git/<name>.git`` to holders of a live
        access token (user ``x-access-token``): ``sim.git.create("demo", {"README": "hi"})``."""
        if self._git is None:
            raise RuntimeError("the simulator is not started")
        return self._git

    @property
    def ca_file(self) -> str:
        if self._certs is None:
            raise RuntimeError("the simulator is not started")
        return str(self._certs.ca_file)

    @property
    def ca_pem(self) -> str:
        if self._certs is None:
            raise RuntimeError("the simulator is not started")
        return self._certs.ca_pem

    # -------------------------------------------------------------- the world

    def register_client(self, client_id: str, client_secret: str | None = None) -> None:
        self.provider.register_client(client_id, client_secret)

    def set_client_secret(self, client_id: str, new_secret: str | None) -> None:
        self.provider.set_client_secret(client_id, new_secret)

    def issue_grant(self, client_id: str, login: str = "alice", scope: str = "repo") -> Grant:
        return self.provider.issue_grant(client_id, login=login, scope=scope)

    def revoke_grant(self, token: str) -> bool:
        return self.provider.revoke_grant(token)

    def expire_access_token(self, access_token: str) -> bool:
        return self.provider.expire_access_token(access_token)

    def add_fault(
        self,
        endpoint: Endpoint | str,
        kind: FaultKind | str,
        *,
        count: int | None = None,
        value: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider.add_fault(endpoint, kind, count=count, value=value, headers=headers)

    def clear_faults(self) -> None:
        self.provider.clear_faults()

    def set_rate_limit(
        self,
        kind: RateLimitKind | str | None,
        *,
        count: int | None = None,
        reset_after: int = 60,
        duration: float | None = None,
        endpoint: Endpoint | str = Endpoint.VALIDATE,
    ) -> None:
        self.provider.set_rate_limit(kind, count=count, reset_after=reset_after, duration=duration,
                                     endpoint=endpoint)

    def calls(self, endpoint: Endpoint | str | None = None) -> list[Call]:
        """Answered requests (simulator clock, endpoint, status), oldest first."""
        return self.provider.calls(endpoint)

    def now(self) -> float:
        """The simulator's clock."""
        return self.provider.clock()

    def approve_device(self, user_code: str, login: str = "alice") -> None:
        self.provider.approve_device(user_code, login=login)

    def deny_device(self, user_code: str) -> None:
        self.provider.deny_device(user_code)

    def expire_device_code(self, user_code: str) -> None:
        self.provider.expire_device_code(user_code)

    @property
    def stats(self) -> Stats:
        return self.provider.stats()

    def reset_stats(self) -> None:
        self.provider.reset_stats()

    def wait_for(
        self, predicate: Callable[[Stats], bool], *, timeout: float = 10.0, interval: float = 0.05
    ) -> Stats:
        """Poll ``predicate(stats)`` until true; return the stats that satisfied it."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats
            if predicate(s):
                return s
            if time.monotonic() >= deadline:
                raise TimeoutError("simulator condition not reached")
            time.sleep(interval)
