"""A small private PKI: one x509 helper for the simulator and the test control plane (I/O: files).

Both need the same things: a throwaway CA, certificates it signs for a server
(SANs, ``serverAuth``) or for a client (``clientAuth``, organisations as
Kubernetes groups), and PEM files only their owner can read. This module lives
in ``providersim`` because the simulator is an installed package that must not
import from ``tests/``; the harness (``tests/harness/controlplane.py``) imports
it from here.

The simulator's own files: a self-signed CA signs one server certificate valid
for ``localhost``, ``127.0.0.1`` and ``::1`` (plus any extra host names asked
for). Clients trust the simulator through the CA PEM only, exactly as a user
trusts a private GitHub Enterprise through ``caBundle``.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"

#: How long the simulator's certificates are valid: its state dir may be reused for weeks.
SIMULATOR_VALIDITY = datetime.timedelta(days=30)
#: Allowed clock skew between the machine that signs and the one that checks.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A certificate, its private key, and both as PEM."""

    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str, orgs: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue(
    *,
    cn: str,
    orgs: Iterable[str] = (),
    issuer: KeyPair | None = None,
    is_ca: bool = False,
    hosts: Sequence[str] = (),
    client: bool = False,
    valid_for: datetime.timedelta = datetime.timedelta(days=2),
) -> KeyPair:
    """A fresh P-256 key and a certificate for it, signed by ``issuer`` (self-signed if None).

    ``hosts`` (DNS names or IP addresses) make it a server certificate; ``client``
    a client certificate whose ``orgs`` are the Kubernetes groups. A CA may sign
    only end-entity certificates (path length 0).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = _name(cn, orgs)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    if client:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return KeyPair(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
        cert=cert,
        key=key,
    )


def signing_key_pem() -> tuple[bytes, bytes]:
    """A fresh RSA-2048 key as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM).

    For signing tokens rather than TLS (kube-apiserver's service-account key).
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_pem(key), public


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write each ``name: PEM`` into ``directory``, readable by the owner only (created 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


# ------------------------------------------------------------- the simulator's files


@dataclasses.dataclass(frozen=True)
class CertPaths:
    """Where the simulator's PEM files live."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()


def _paths(directory: Path) -> CertPaths:
    return CertPaths(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)


def _server_hosts(hosts: Iterable[str]) -> list[str]:
    """Loopback names first, then ``hosts``; no duplicates, no wildcard listen addresses."""
    out: list[str] = []
    for host in ["localhost", "127.0.0.1", "::1", *hosts]:
        if host and host not in out and host not in ("0.0.0.0", "::"):
            out.append(host)
    return out


def generate(directory: Path, *, hosts: list[str] | None = None) -> CertPaths:
    """Create a fresh CA and a server certificate in ``directory``."""
    ca = issue(cn="providersim test CA", is_ca=True, valid_for=SIMULATOR_VALIDITY)
    server = issue(
        cn="localhost", issuer=ca, hosts=_server_hosts(hosts or []), valid_for=SIMULATOR_VALIDITY
    )
    write_files(directory, {CA_FILE: ca.cert_pem, CERT_FILE: server.cert_pem, KEY_FILE: server.key_pem})
    return _paths(directory)


def load_or_generate(directory: Path, *, hosts: list[str] | None = None) -> CertPaths:
    """Reuse the PEM files in ``directory`` if all three exist, else generate them."""
    paths = _paths(directory)
    if paths.ca_file.exists() and paths.cert_file.exists() and paths.key_file.exists():
        return paths
    return generate(directory, hosts=hosts)
