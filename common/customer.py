"""Customer key pairs and the sealed copies of their readings, built only
from algorithms that WebCrypto offers, so that a browser can do the
customer's side:

- key pair: RSA-OAEP, 3072-bit modulus, SHA-256;
- from the password, PBKDF2-HMAC-SHA-256 with two different salts derives
  two unrelated 256-bit values: an authentication verifier (what a login
  server may check) and a wrapping key (AES-GCM) for the private key, which
  never leaves the customer's side unwrapped;
- each (meter, day) gets a fresh AES-256-GCM data key, wrapped to the
  customer's public key with RSA-OAEP; each reading is sealed under it with
  a random 96-bit nonce, and the meter id and reading seq as associated
  data, so a sealed reading cannot be moved to another meter or slot.
"""

from __future__ import annotations

import base64
import secrets

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .files import ConfigError

PBKDF2_ITERATIONS = 600_000  # OWASP 2023 recommendation for PBKDF2-HMAC-SHA256
MIN_PASSWORD = 10
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _ub64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def derive(password: str, salt: bytes, iterations: int) -> bytes:
    return PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password.encode())


def create(customer_id: str, password: str, iterations: int = PBKDF2_ITERATIONS) -> dict:
    """A new key pair; returns the customer's key file (safe to store on a
    server: the private key inside is wrapped under the password)."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    priv = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    salt_auth, salt_wrap, nonce = (secrets.token_bytes(16), secrets.token_bytes(16),
                                   secrets.token_bytes(12))
    wrap_key = derive(password, salt_wrap, iterations)
    pkcs8 = priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    return {
        "kind": "gridveil-customer-key", "customer_id": customer_id,
        "kdf": {"name": "PBKDF2-SHA256", "iterations": iterations,
                "salt_auth": _b64(salt_auth), "salt_wrap": _b64(salt_wrap)},
        "public_key": _b64(priv.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "wrapped_private_key": {"alg": "AES-GCM", "nonce": _b64(nonce),
                                "ciphertext": _b64(AESGCM(wrap_key).encrypt(
                                    nonce, pkcs8, customer_id.encode()))},
    }


def auth_verifier(keyfile: dict, password: str) -> bytes:
    k = keyfile["kdf"]
    return derive(password, _ub64(k["salt_auth"]), k["iterations"])


def unlock(keyfile: dict, password: str) -> rsa.RSAPrivateKey:
    try:
        k = keyfile["kdf"]
        w = keyfile["wrapped_private_key"]
        wrap_key = derive(password, _ub64(k["salt_wrap"]), k["iterations"])
        der = AESGCM(wrap_key).decrypt(_ub64(w["nonce"]), _ub64(w["ciphertext"]),
                                       keyfile["customer_id"].encode())
    except InvalidTag:
        raise ConfigError("wrong password") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"customer key file is malformed: {e!r}") from None
    return serialization.load_der_private_key(der, password=None)


def public_key(keyfile_or_der) -> rsa.RSAPublicKey:
    der = keyfile_or_der if isinstance(keyfile_or_der, bytes) else _ub64(keyfile_or_der["public_key"])
    key = serialization.load_der_public_key(der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("customer public key is not an RSA key")
    return key


def new_day_key(pub: rsa.RSAPublicKey) -> tuple[bytes, bytes]:
    """(data key, the data key wrapped to the customer)."""
    key = secrets.token_bytes(32)
    return key, pub.encrypt(key, OAEP)


def _aad(meter_id: str, seq: int) -> bytes:
    return f"gridveil-reading-v1|{meter_id}|{seq}".encode()


def seal_reading(key: bytes, meter_id: str, seq: int, end: int, energy: int,
                 register: int) -> tuple[bytes, bytes]:
    nonce = secrets.token_bytes(12)
    return nonce, AESGCM(key).encrypt(nonce, cbor2.dumps([seq, end, energy, register]),
                                      _aad(meter_id, seq))


def open_day_key(priv: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    return priv.decrypt(wrapped, OAEP)


def open_reading(key: bytes, meter_id: str, seq: int, nonce: bytes, ct: bytes) -> list[int]:
    return cbor2.loads(AESGCM(key).decrypt(nonce, ct, _aad(meter_id, seq)))
