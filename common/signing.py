"""Ed25519 signing keys of the parties (owner-only PEM files) and their
public halves. A gateway signs its records and its pushes to the MDMS with
one; key holders and the MDMS verify with the public half."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .files import ConfigError, check_owner_only, write_atomic

PASSPHRASE_ENV = "GRIDVEIL_GATEWAY_PASSPHRASE"


def generate(private_path: Path, public_path: Path, passphrase: str | None) -> Ed25519PrivateKey:
    """A new key, its private half encrypted under `passphrase` (PKCS#8,
    PBES2 with AES-256): a stolen disk does not give away the key."""
    if not passphrase or len(passphrase) < 12:
        raise ConfigError(f"the signing key is encrypted at rest: give a passphrase of at least 12"
                          f" characters in ${PASSPHRASE_ENV} or with --passphrase-file")
    key = Ed25519PrivateKey.generate()
    write_atomic(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode())), secret=True)
    write_atomic(public_path, public_pem(key.public_key()))
    return key


def public_pem(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: Path, passphrase: str | None) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"signing key not found: {path}")
    check_owner_only(path, "signing key")
    data = path.read_bytes()
    if b"ENCRYPTED PRIVATE KEY" not in data:
        raise ConfigError(f"signing key {path} is stored unencrypted; refusing it (make a new"
                          " one with `gridveil gateway init`)")
    if not passphrase:
        raise ConfigError(f"signing key {path} is encrypted: give its passphrase in"
                          f" ${PASSPHRASE_ENV} or with --passphrase-file")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode())
    except (ValueError, TypeError):
        raise ConfigError(f"wrong passphrase for the signing key {path} (or it is damaged)") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
    return key


def parse_public(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} is not an Ed25519 public key")
    return key


def parse_public_set(pem: bytes, where: str) -> list[Ed25519PublicKey]:
    """Every key of a PEM text that holds one or more (a gateway's keys
    while it rotates: the old one's records still verify)."""
    marker = b"-----END PUBLIC KEY-----"
    blocks = [b + marker for b in pem.split(marker) if b.strip()]
    if not blocks:
        raise ConfigError(f"{where} holds no PEM public key")
    return [parse_public(b, where) for b in blocks]


def fingerprint(pub: Ed25519PublicKey) -> str:
    """A key's short id: the first 16 hex digits of SHA-256 of its raw bytes."""
    import hashlib

    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"public key not found: {path}")
    return parse_public(path.read_bytes(), str(path))


def sign_b64(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify_b64(pub: Ed25519PublicKey, data: bytes, signature_b64: str) -> bool:
    try:
        pub.verify(base64.b64decode(signature_b64, validate=True), data)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
