"""Credentials for the API server that stay good for as long as the process runs. I/O.

A kubeconfig user gives a bearer token (or, from an exec plugin, a client certificate) in
one of three ways, each a :class:`CredentialSource`:

* ``token``: a fixed string (:class:`StaticToken`);
* ``tokenFile``, which is what a pod's projected ServiceAccount token is: the kubelet
  rewrites the file as the token rotates, and the API server rejects the old token once it
  expires or its pod is gone. :class:`TokenFile` re-reads the file whenever it changed (a
  ``stat`` per use) and after a 401;
* ``exec``, a credential plugin (EKS, GKE, AKS, kubelogin, Teleport's ``tsh``):
  :class:`ExecPlugin` runs it once and keeps its token or client certificate until the
  plugin's ``expirationTimestamp``, or until a 401.

:func:`authenticated` is the one place where a refused credential is replaced: it sends a
request with the source's credential and, when the API server answers 401, asks the source
for a newer one and sends it once more (kopf's ``auth.py`` decorator does the same job).
:func:`source_for` shares one source per user across the process, so the operator's own
client, kopf's login and the preflight run a plugin once between them.
:func:`load_certificate_chain` puts a client certificate given as PEM into a TLS context
through private files that exist only while :mod:`ssl` reads them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from externalauth.errors import PermanentError, TransientError
from externalauth.kube import kubeconfigs
from externalauth.model.secure import SecretStr

log = logging.getLogger(__name__)
#: The longest a non-interactive exec plugin may take, in seconds.
EXEC_TIMEOUT = 120.0

Now = Callable[[], dt.datetime]
Credential = kubeconfigs.Credential


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CredentialSource(Protocol):
    """Where a user's credential comes from."""

    def current(self) -> Credential:
        """The credential to send now (re-read or re-obtained if the one held is stale)."""

    def rejected(self, credential: Credential) -> None:
        """The API server answered 401 to ``credential``: do not hand it out again if a newer
        one can be had (a source that can get nothing newer keeps it)."""


class Refused(Protocol):
    """What :func:`authenticated` needs of an answer: its status, and a way to give its
    connection back before the request is sent again."""

    @property
    def status_code(self) -> int: ...

    def discard(self) -> None: ...


AnswerT = TypeVar("AnswerT", bound=Refused)


def authenticated(source: CredentialSource | None, send: Callable[[Credential | None], AnswerT]) -> AnswerT:
    """``send`` with the source's current credential; after a 401, once more with a newer
    credential if the source has one (a rotated token file, a plugin run again). The one
    place where a refused credential is replaced."""
    credential = source.current() if source is not None else None
    answer = send(credential)
    if answer.status_code != 401 or source is None or credential is None:
        return answer
    source.rejected(credential)
    fresh = source.current()
    if fresh == credential:
        return answer
    answer.discard()
    return send(fresh)


class StaticToken:
    def __init__(self, token: str) -> None:
        self._credential = Credential(token=SecretStr(token), expiration=None)

    def current(self) -> Credential:
        return self._credential

    def rejected(self, credential: Credential) -> None:
        return None


class TokenFile:
    """A token file that may be replaced at any time (the kubelet swaps a symlink)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._token: Credential | None = None
        self.reads = 0  # how often the file was read (for tests and debugging)

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> Credential:
        stamp = self._stat()
        held = self._token
        if held is not None and stamp is not None and stamp == self._stamp:
            return held
        with self._lock:
            if self._token is not None and stamp is not None and stamp == self._stamp:
                return self._token
            return self._read(stamp)

    def _read(self, stamp: tuple[int, int, int, int] | None) -> Credential:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            if self._token is not None:  # mid-swap: keep the token held until the file is back
                return self._token
            raise PermanentError(f"cannot read the token file {self.path} ({type(e).__name__})") from e
        if not text:
            if self._token is not None:
                return self._token
            raise PermanentError(f"the token file {self.path} is empty")
        self.reads += 1
        fresh = Credential(token=SecretStr(text), expiration=None)
        if self._token is not None and self._token.token != fresh.token:
            log.info("the token in %s changed; using the new one", self.path)
        self._token, self._stamp = fresh, stamp
        return fresh

    def rejected(self, credential: Credential) -> None:
        with self._lock:
            if self._token is not None and self._token == credential:
                self._stamp = None  # read the file again on the next use


class ExecPlugin:
    """An exec credential plugin, run at most once per credential lifetime."""

    def __init__(self, exec_: Mapping[str, Any], *, cluster: Mapping[str, Any], ca_data: str | None,
                 now: Now = _utcnow) -> None:
        self.exec = dict(exec_)
        self.cluster = dict(cluster)
        self.ca_data = ca_data
        self._now = now
        self._lock = threading.Lock()
        self._token: Credential | None = None
        self.runs = 0

    @property
    def command(self) -> str:
        return str(self.exec["command"])

    def current(self) -> Credential:
        with self._lock:
            held = self._token
            if held is not None and (held.expiration is None or self._now() < held.expiration):
                return held
            self._token = self._run()
            return self._token

    def rejected(self, credential: Credential) -> None:
        with self._lock:
            if self._token is not None and self._token == credential:
                self._token = None

    def _interactive(self) -> bool:
        mode = self.exec["interactiveMode"]
        tty = sys.stdin is not None and sys.stdin.isatty()
        if mode == "Always" and not tty:
            raise PermanentError(f"the kubeconfig exec plugin {self.command} needs a terminal "
                                 "(interactiveMode: Always) and there is none")
        return mode != "Never" and tty

    def _run(self) -> Credential:
        interactive = self._interactive()
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in self.exec["env"]})
        env["KUBERNETES_EXEC_INFO"] = kubeconfigs.exec_request(
            self.exec, cluster=self.cluster, interactive=interactive, ca_data=self.ca_data)
        self.runs += 1
        log.debug("running the kubeconfig exec plugin %s", self.command)
        try:
            done = subprocess.run([self.command, *self.exec["args"]], env=env, stdout=subprocess.PIPE,
                                  stdin=None if interactive else subprocess.DEVNULL,
                                  timeout=None if interactive else EXEC_TIMEOUT, check=False)
        except FileNotFoundError as e:
            hint = str(self.exec.get("installHint") or "").strip().splitlines()
            raise PermanentError(f"the kubeconfig exec plugin {self.command} was not found"
                                 + (f": {hint[0][:200]}" if hint else "")) from e
        except subprocess.TimeoutExpired as e:
            raise TransientError(f"the kubeconfig exec plugin {self.command} did not answer "
                                 f"within {EXEC_TIMEOUT:.0f}s") from e
        except OSError as e:
            raise PermanentError(f"cannot run the kubeconfig exec plugin {self.command} "
                                 f"({type(e).__name__})") from e
        if done.returncode != 0:
            raise TransientError(f"the kubeconfig exec plugin {self.command} exited with {done.returncode}")
        return kubeconfigs.exec_credential(done.stdout, api_version=self.exec["apiVersion"])


_SOURCES: dict[str, CredentialSource] = {}
_SOURCES_LOCK = threading.Lock()


def source_for(selection: kubeconfigs.Selection, *, ca_data: str | None) -> CredentialSource | None:
    """The credential source of the selected user (None: it authenticates with the
    kubeconfig's client certificate alone, or not at all), one per distinct user and
    cluster for the whole process."""
    user = selection.user
    exec_ = kubeconfigs.exec_config(user)
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if not user.get("tokenFile") and exec_ is None:
        return None
    key = json.dumps([selection.cluster.get("server"), user], sort_keys=True, default=str)
    with _SOURCES_LOCK:
        source = _SOURCES.get(key)
        if source is None:
            if user.get("tokenFile"):
                source = TokenFile(str(user["tokenFile"]))
            else:
                assert exec_ is not None
                source = ExecPlugin(exec_, cluster=selection.cluster, ca_data=ca_data)
            _SOURCES[key] = source
        return source


def load_certificate_chain(context: ssl.SSLContext, *, certificate: str | bytes, key: str | bytes) -> None:
    """A client certificate and key given as PEM, loaded into ``context``. :mod:`ssl` reads
    only files: they are written with mode 0600 into a fresh private directory (a random
    name, mode 0700) and deleted, with the directory, as soon as they are read."""
    with tempfile.TemporaryDirectory(prefix="externalauth-") as scratch:
        paths = []
        for name, pem in (("client.crt", certificate), ("client.key", key)):
            target = os.path.join(scratch, name)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem.encode("ascii") if isinstance(pem, str) else pem)
            paths.append(target)
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])
