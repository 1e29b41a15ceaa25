"""TLS between hosts: a server's key and certificate, and the client side
that trusts only what it was configured with.

Each HTTPS server (key holder, MDMS) can make its own key and a
self-signed certificate for the names it is reached by; its clients are
given that certificate (pinning) or the CA that issued it, and refuse any
other. Certificates are made with `cryptography`'s x509, never fetched.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .files import ConfigError, write_atomic

VALID_DAYS = 825


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def self_signed(key_path: Path, cert_path: Path, name: str, hosts: list[str]) -> None:
    """A P-256 key (owner-only) and a self-signed certificate for `hosts`.
    The certificate is its own trust anchor: give it to the clients."""
    if not hosts:
        raise ConfigError("a TLS certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    write_atomic(Path(key_path), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), secret=True)
    write_atomic(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM))


def client_context(ca_file: str | Path | None) -> ssl.SSLContext | None:
    """Verification against exactly `ca_file` (a CA or a pinned server
    certificate); never the system's store, so a public CA cannot vouch
    for a GridVeil server."""
    if ca_file is None:
        return None
    path = Path(ca_file)
    if not path.exists():
        raise ConfigError(f"TLS trust file not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(path))
    except ssl.SSLError as e:
        raise ConfigError(f"TLS trust file {path} is not a PEM certificate: {e}") from None
    return ctx


def check_server_files(cert: str | None, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    for p in (cert, key):
        if p and not Path(p).exists():
            raise ConfigError(f"TLS file not found: {p}")
