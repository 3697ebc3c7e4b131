"""What kubeconfig files and exec credential plugins mean, as kubectl reads them. Pure: no
file, environment, process or network access (the caller reads the files and runs the plugin).

* :func:`files_to_load` is kubectl's lookup order: ``--kubeconfig``, else every file of
  ``KUBECONFIG``, else ``~/.kube/config``; the pod's ServiceAccount only when none of them
  exists.
* :func:`merge` merges the files of a multi-path ``KUBECONFIG`` the way kubectl does: for
  clusters, users and contexts the first file that names one wins; ``current-context`` comes
  from the first file that sets it. Relative file references are resolved against the
  directory of the file that holds them.
* :func:`select` picks the context (``--context`` or ``current-context``) and its cluster,
  user and namespace.
* :func:`impersonation` is who the user acts as (``as``, ``as-groups``, ``as-uid``,
  ``as-user-extra``, or ``--as``/``--as-group``), as ``Impersonate-*`` headers.
* :func:`in_cluster` is the kubeconfig a pod's ServiceAccount amounts to: the token is a
  ``tokenFile`` (the kubelet rotates it), never a copy of its content.
* :func:`exec_request` and :func:`exec_credential` are the two sides of an exec credential
  plugin call (``client.authentication.k8s.io`` v1 and v1beta1).

Errors are :class:`PermanentError` with one line that never quotes a credential or a
plugin's output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import posixpath
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from externalauth.errors import PermanentError
from externalauth.model.secure import SecretStr

#: The ExecCredential API versions understood (v1alpha1 was removed in Kubernetes 1.24).
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
#: Where a cluster keeps the configuration its exec plugin is given (``provideClusterInfo``).
EXEC_EXTENSION = "client.authentication.k8s.io/exec"
#: Keys holding a file name, per section, resolved against the kubeconfig's directory.
_CLUSTER_FILES = ("certificate-authority",)
_USER_FILES = ("client-certificate", "client-key", "tokenFile")
#: Kinds of credentials this client does not implement, with what to use instead.
_UNSUPPORTED_USER_KEYS = {
    "auth-provider": "the legacy auth-provider plugins are not supported; use an exec credential "
                     "plugin (for OIDC: kubelogin)",
    "username": "basic authentication (username/password) is not supported",
}


@dataclasses.dataclass(frozen=True)
class Selection:
    """The context in use and what it points at (raw kubeconfig mappings)."""

    context: str
    cluster: dict[str, Any]
    user: dict[str, Any]
    namespace: str  # the context's, else "default"
    namespace_set: bool = False  # the context names a namespace itself


@dataclasses.dataclass(frozen=True)
class Credential:
    """What a user proves itself with beyond the kubeconfig's own client certificate: a
    bearer token, or (from an exec plugin such as Teleport's ``tsh``) a client certificate
    and its key in PEM, or both; and, when its issuer said so, when it expires."""

    token: SecretStr | None
    expiration: dt.datetime | None
    client_certificate: str | None = None  # PEM
    client_key: SecretStr | None = None  # PEM

    @property
    def has_certificate(self) -> bool:
        return self.client_certificate is not None


def files_to_load(*, flag: str | None, env: str | None, home: str, in_cluster: bool,
                  exists: Callable[[str], bool], absolute: Callable[[str], str] = lambda p: p,
                  separator: str = ":") -> list[str] | None:
    """The kubeconfig files to merge, in kubectl's order, or None for the pod's ServiceAccount.

    ``--kubeconfig`` (``flag``) is the one file; else the files listed in ``KUBECONFIG``
    (``env``) that exist, merged; else ``home`` (``~/.kube/config``) if it exists. Only when
    none of these gives a file is the ServiceAccount used (``in_cluster``: a pod's
    environment and token are there), so that in a pod with a kubeconfig this command acts
    as the same identity as kubectl. ``exists`` and ``absolute`` are the caller's file checks.
    """
    if flag:
        if not exists(flag):
            raise PermanentError(f"kubeconfig {flag} does not exist")
        return [absolute(flag)]
    if env:
        paths: list[str] = []
        for entry in env.split(separator):
            path = absolute(entry) if entry else ""
            if path and path not in paths and exists(path):  # kubectl skips missing files
                paths.append(path)
        if paths:
            return paths
        if in_cluster:
            return None
        raise PermanentError(f"none of the kubeconfig files in KUBECONFIG exist ({env[:200]})")
    if exists(home):
        return [home]
    if in_cluster:
        return None
    raise PermanentError("no Kubernetes credentials: pass --kubeconfig, set KUBECONFIG, "
                         "create ~/.kube/config, or run in a pod")


def _absolute(path: str, base: str) -> str:
    return path if not path or posixpath.isabs(path) else posixpath.normpath(posixpath.join(base, path))


def _resolve_cluster(cluster: Mapping[str, Any], base: str) -> dict[str, Any]:
    out = dict(cluster)
    for key in _CLUSTER_FILES:
        if isinstance(out.get(key), str):
            out[key] = _absolute(out[key], base)
    return out


def _resolve_user(user: Mapping[str, Any], base: str) -> dict[str, Any]:
    out = dict(user)
    for key in _USER_FILES:
        if isinstance(out.get(key), str):
            out[key] = _absolute(out[key], base)
    exec_ = out.get("exec")
    if isinstance(exec_, Mapping):
        command = exec_.get("command")
        # kubectl: a command with a path separator is a file relative to the kubeconfig; a
        # bare name is looked up on PATH.
        if isinstance(command, str) and "/" in command:
            out["exec"] = {**exec_, "command": _absolute(command, base)}
    return out


def _named(doc: Mapping[str, Any], section: str, field: str, where: str) -> list[tuple[str, Any]]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise PermanentError(f"kubeconfig {where}: {section} is not a list")
    out = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise PermanentError(f"kubeconfig {where}: an entry of {section} has no name")
        body = entry.get(field)
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise PermanentError(f"kubeconfig {where}: {section} entry {entry['name']!r} has no {field} mapping")
        out.append((entry["name"], body))
    return out


def merge(files: Sequence[tuple[str, Mapping[str, Any] | None]]) -> dict[str, Any]:
    """One kubeconfig from ``(absolute path, parsed document)`` pairs in ``KUBECONFIG`` order.

    An empty document (an empty file) contributes nothing. The result is a kubeconfig in
    the usual list form with every file reference absolute.
    """
    clusters: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    contexts: dict[str, dict[str, Any]] = {}
    current = ""
    for path, doc in files:
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise PermanentError(f"kubeconfig {path} is not a mapping")
        base = posixpath.dirname(path)
        for name, body in _named(doc, "clusters", "cluster", path):
            clusters.setdefault(name, _resolve_cluster(body, base))
        for name, body in _named(doc, "users", "user", path):
            users.setdefault(name, _resolve_user(body, base))
        for name, body in _named(doc, "contexts", "context", path):
            contexts.setdefault(name, dict(body))
        if not current and isinstance(doc.get("current-context"), str):
            current = doc["current-context"]
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": c} for n, c in contexts.items()],
        "current-context": current,
    }


def select(doc: Mapping[str, Any], *, context: str | None) -> Selection:
    """The context named ``context`` (else the current one), its cluster, user and namespace."""
    name = context or doc.get("current-context") or ""
    if not name:
        raise PermanentError("the kubeconfig sets no current-context (pass --context)")
    contexts = dict(_named(doc, "contexts", "context", "(merged)"))
    if name not in contexts:
        raise PermanentError(f"kubeconfig has no context {name!r}")
    ctx = contexts[name]
    clusters = dict(_named(doc, "clusters", "cluster", "(merged)"))
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise PermanentError(f"kubeconfig context {name!r} names a cluster that is not in the kubeconfig")
    cluster = dict(clusters[cluster_name])
    if not isinstance(cluster.get("server"), str) or not cluster["server"]:
        raise PermanentError(f"kubeconfig cluster {cluster_name!r} has no server")
    users = dict(_named(doc, "users", "user", "(merged)"))
    user_name = ctx.get("user")
    if user_name and user_name not in users:
        raise PermanentError(f"kubeconfig context {name!r} names a user that is not in the kubeconfig")
    user = dict(users.get(user_name, {})) if user_name else {}
    for key, why in _UNSUPPORTED_USER_KEYS.items():
        if key in user:
            raise PermanentError(f"kubeconfig user {user_name!r}: {why}")
    namespace = ctx.get("namespace") or "default"
    return Selection(context=name, cluster=cluster, user=user, namespace=str(namespace),
                     namespace_set=bool(ctx.get("namespace")))


@dataclasses.dataclass(frozen=True)
class Impersonation:
    """Whom the requests act as (kubectl's ``--as``/``--as-group``, a kubeconfig user's
    ``as``/``as-groups``/``as-uid``/``as-user-extra``). Empty: the user itself."""

    user: str | None = None
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def headers(self) -> list[tuple[str, str]]:
        """The ``Impersonate-*`` request headers, one per value (a header may repeat)."""
        if self.user is None:
            return []
        out = [("Impersonate-User", self.user)]
        if self.uid is not None:
            out.append(("Impersonate-Uid", self.uid))
        out += [("Impersonate-Group", group) for group in self.groups]
        for key, values in self.extra:
            name = "Impersonate-Extra-" + urllib.parse.quote(key, safe="")
            out += [(name, value) for value in values]
        return out


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PermanentError(f"kubeconfig user {what} is not a list of strings")
    return tuple(value)


def impersonation(user: Mapping[str, Any], *, as_user: str | None = None,
                  as_groups: Sequence[str] = ()) -> Impersonation:
    """Whom to act as: ``as_user``/``as_groups`` (the command line) override the kubeconfig
    user's ``as``/``as-groups``, as kubectl's flags do. Groups, a uid or extras without a
    user to impersonate are refused, as the API server would refuse them."""
    name = as_user if as_user else user.get("as")
    if name is not None and (not isinstance(name, str) or not name):
        raise PermanentError("kubeconfig user as is not a user name")
    groups = tuple(as_groups) if as_groups else _strings(user.get("as-groups"), "as-groups")
    uid = user.get("as-uid")
    if uid is not None and (not isinstance(uid, str) or not uid):
        raise PermanentError("kubeconfig user as-uid is not a string")
    raw_extra = user.get("as-user-extra") or {}
    if not isinstance(raw_extra, Mapping):
        raise PermanentError("kubeconfig user as-user-extra is not a mapping")
    extra = tuple((str(k), _strings(v, f"as-user-extra {str(k)[:40]!r}")) for k, v in sorted(raw_extra.items()))
    if name is None and (groups or uid or extra):
        raise PermanentError("impersonating groups, a uid or extras needs a user to impersonate "
                             "(--as, or as: in the kubeconfig)")
    return Impersonation(user=name, uid=uid, groups=groups, extra=extra)


def in_cluster(*, host: str, port: str, directory: str) -> dict[str, Any]:
    """The kubeconfig of a pod's ServiceAccount mounted at ``directory``, as client-go builds it."""
    host_port = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": f"https://{host_port}",
            "certificate-authority": posixpath.join(directory, "ca.crt")}}],
        "users": [{"name": "service-account", "user": {"tokenFile": posixpath.join(directory, "token")}}],
        "contexts": [{"name": "in-cluster", "context": {"cluster": "in-cluster", "user": "service-account"}}],
        "current-context": "in-cluster",
    }


# --- exec credential plugins ----------------------------------------------------------


def exec_config(user: Mapping[str, Any]) -> dict[str, Any] | None:
    """The user's ``exec`` section, checked; None when the user has none."""
    exec_ = user.get("exec")
    if exec_ is None:
        return None
    if not isinstance(exec_, Mapping):
        raise PermanentError("kubeconfig exec section is not a mapping")
    api_version = exec_.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise PermanentError(f"kubeconfig exec plugin apiVersion {api_version!r} is not supported "
                             f"(supported: {', '.join(EXEC_API_VERSIONS)})")
    if not isinstance(exec_.get("command"), str) or not exec_["command"]:
        raise PermanentError("kubeconfig exec plugin has no command")
    args = exec_.get("args") or []
    env = exec_.get("env") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise PermanentError("kubeconfig exec plugin args are not a list of strings")
    if not isinstance(env, list) or not all(
            isinstance(e, Mapping) and isinstance(e.get("name"), str) and isinstance(e.get("value"), str)
            for e in env):
        raise PermanentError("kubeconfig exec plugin env is not a list of name/value pairs")
    mode = exec_.get("interactiveMode") or "IfAvailable"
    if mode not in ("Never", "IfAvailable", "Always"):
        raise PermanentError(f"kubeconfig exec plugin interactiveMode {mode!r} is not one of "
                             "Never, IfAvailable, Always")
    return {**exec_, "args": list(args), "env": list(env), "interactiveMode": mode}


def exec_request(exec_: Mapping[str, Any], *, cluster: Mapping[str, Any], interactive: bool,
                 ca_data: str | None) -> str:
    """The ``KUBERNETES_EXEC_INFO`` an exec plugin is given (the cluster only if it asked).

    ``ca_data`` is the cluster's CA bundle, base64-encoded, however the kubeconfig gave it."""
    spec: dict[str, Any] = {"interactive": interactive}
    if exec_.get("provideClusterInfo"):
        info: dict[str, Any] = {"server": cluster["server"]}
        for key in ("tls-server-name", "insecure-skip-tls-verify", "proxy-url"):
            if key in cluster:
                info[key] = cluster[key]
        if ca_data:
            info["certificate-authority-data"] = ca_data
        extensions = cluster.get("extensions") or []
        for ext in extensions if isinstance(extensions, list) else []:
            if isinstance(ext, Mapping) and ext.get("name") == EXEC_EXTENSION:
                info["config"] = ext.get("extension")
        spec["cluster"] = info
    return json.dumps({"apiVersion": exec_["apiVersion"], "kind": "ExecCredential", "spec": spec})


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 timestamp as Kubernetes writes it, timezone-aware."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("no timezone")
    return moment


def exec_credential(output: bytes, *, api_version: str) -> Credential:
    """What a plugin printed on stdout: a token, or a client certificate and key (PEM), or
    both; the output itself is never quoted."""
    try:
        answer = json.loads(output)
    except (ValueError, UnicodeDecodeError) as e:
        raise PermanentError("the kubeconfig exec plugin printed something that is not JSON") from e
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
        raise PermanentError("the kubeconfig exec plugin did not print an ExecCredential")
    if answer.get("apiVersion") != api_version:
        raise PermanentError(f"the kubeconfig exec plugin answered apiVersion {str(answer.get('apiVersion'))[:80]!r}, "
                             f"not the {api_version} it was asked for")
    status = answer.get("status")
    if not isinstance(status, dict):
        raise PermanentError("the kubeconfig exec plugin's ExecCredential has no status")
    token = status.get("token") or None
    certificate = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    if token is not None and not isinstance(token, str):
        raise PermanentError("the kubeconfig exec plugin's token is not a string")
    if not isinstance(certificate, str | None) or not isinstance(key, str | None):
        raise PermanentError("the kubeconfig exec plugin's clientCertificateData or clientKeyData is not a string")
    if (certificate is None) != (key is None):
        raise PermanentError("the kubeconfig exec plugin answered a client certificate without its key, "
                             "or a key without its certificate")
    if certificate is not None and not (certificate.lstrip().startswith("-----BEGIN")
                                        and key is not None and key.lstrip().startswith("-----BEGIN")):
        raise PermanentError("the kubeconfig exec plugin's clientCertificateData or clientKeyData is not PEM")
    if token is None and certificate is None:
        raise PermanentError("the kubeconfig exec plugin's ExecCredential has neither a token nor a "
                             "client certificate")
    expiry = status.get("expirationTimestamp")
    try:
        if expiry is not None and not isinstance(expiry, str):
            raise ValueError("not a string")
        expiration = parse_time(expiry) if expiry is not None else None
    except ValueError as e:
        raise PermanentError("the kubeconfig exec plugin's expirationTimestamp is not an RFC 3339 time") from e
    return Credential(token=SecretStr(token) if token is not None else None, expiration=expiration,
                      client_certificate=certificate,
                      client_key=SecretStr(key) if key is not None else None)
