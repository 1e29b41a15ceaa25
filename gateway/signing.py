"""The gateway's Ed25519 signing key (owner-only file) and its public half."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.files import ConfigError, check_owner_only, write_atomic


def generate(private_path: Path, public_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    write_atomic(private_path, key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), secret=True)
    write_atomic(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"gateway signing key not found: {path}")
    check_owner_only(path, "gateway signing key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"gateway signing key {path} is malformed: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"gateway signing key {path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"gateway public key not found: {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as e:
        raise ConfigError(f"gateway public key {path} is malformed: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"gateway public key {path} is not an Ed25519 key")
    return key
