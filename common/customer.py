"""Customer key pairs and the sealed copies of their readings, built only
from algorithms that WebCrypto offers, so that a browser can do the
customer's side:

- two key pairs, made on the household's side: RSA-OAEP (3072-bit modulus,
  SHA-256) that its sealed readings are wrapped to, and ECDSA P-256 that
  signs its consent to the meters enrolled for it (common/consent.py);
- from the password and one random salt, PBKDF2-HMAC-SHA-256 derives a
  master value, and HKDF-SHA-256 with two labels (and the customer id)
  splits it into two unrelated 256-bit values: an authentication verifier
  (what a login server may check) and a wrapping key (AES-GCM) for the
  private keys, which never leave the customer's side unwrapped. With one
  salt and fixed labels, no server can make the two coincide (with two
  salts a server that sent the same salt twice got the wrapping key as
  the "verifier"), and clients refuse fewer iterations than their floor;
- each (meter, day) gets a fresh AES-256-GCM data key, wrapped to the
  customer's public key with RSA-OAEP; each reading is sealed under it with
  a random 96-bit nonce, and the meter id and reading seq as associated
  data, so a sealed reading cannot be moved to another meter or slot;
  every sealed reading has the same length, whatever it holds;
- a recovery code (128 random bits, shown once at activation) wraps the
  same private keys a second time: HKDF-SHA-256 with two more labels splits
  the code into a recovery verifier and a wrapping key. With 128 bits
  there is nothing to guess, so no stretching is needed and the wrapped
  copy may be handed to anyone who asks. It is the only way back after a
  forgotten password: the utility never had the key and cannot reset it.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .files import ConfigError

PBKDF2_ITERATIONS = 600_000  # OWASP 2023 recommendation for PBKDF2-HMAC-SHA256
# Whatever a server sends, clients never derive with fewer (mdms/static/portal.js
# has the same floor): the utility holds the wrapped key and can guess offline.
MIN_ITERATIONS = 600_000
MAX_ITERATIONS = 10_000_000  # more would only hang the customer's browser
KDF_NAME = "PBKDF2-SHA256/HKDF-SHA256"
LOGIN_LABEL = "gridveil-portal-login-v2|"
WRAP_LABEL = "gridveil-portal-wrap-v2|"
RECOVERY_LOGIN_LABEL = "gridveil-recovery-login-v1|"
RECOVERY_WRAP_LABEL = "gridveil-recovery-wrap-v1|"
MIN_PASSWORD = 10
# zxcvbn's score 4: at least 10^10 guesses. At 600,000 iterations a GPU tries
# on the order of 10^4 passwords a second, so that is weeks per customer.
MIN_STRENGTH = 4
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _ub64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def check_params(iterations, salt: bytes) -> int:
    """The client's own floor, whatever the server sent."""
    if type(iterations) is not int or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ConfigError(f"the server asks for {iterations!r} PBKDF2 iterations; this client"
                          f" derives keys only with {MIN_ITERATIONS:,} to {MAX_ITERATIONS:,}")
    if len(salt) < 16:
        raise ConfigError("the server sent a salt shorter than 16 bytes; refusing it")
    return iterations


def derive_keys(password: str, customer_id: str, salt: bytes,
                iterations: int) -> tuple[bytes, bytes]:
    """(login verifier, wrapping key): one PBKDF2, two HKDF labels."""
    check_params(iterations, salt)
    master = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password.encode())

    def expand(label: str) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=None,
                    info=(label + customer_id).encode()).derive(master)

    return expand(LOGIN_LABEL), expand(WRAP_LABEL)


def new_recovery_code() -> str:
    """128 random bits as 26 base32 letters, in groups of four for reading
    aloud and typing (letters A-Z and digits 2-7; case and dashes ignored)."""
    letters = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")
    return "-".join(letters[i:i + 4] for i in range(0, len(letters), 4))


def recovery_keys(code: str, customer_id: str, salt: bytes) -> tuple[bytes, bytes]:
    """(recovery verifier, recovery wrapping key) from a recovery code."""
    ikm = code.upper().replace("-", "").replace(" ", "").encode()
    if len(ikm) != 26:
        raise ConfigError("a recovery code has 26 letters and digits (dashes do not count)")

    def expand(label: str) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=salt, info=(label + customer_id).encode()).derive(ikm)

    return expand(RECOVERY_LOGIN_LABEL), expand(RECOVERY_WRAP_LABEL)


def _wrap(key: bytes, pkcs8: bytes, customer_id: str) -> dict:
    nonce = secrets.token_bytes(12)
    return {"alg": "AES-GCM", "nonce": _b64(nonce),
            "ciphertext": _b64(AESGCM(key).encrypt(nonce, pkcs8, customer_id.encode()))}


def check_strength(password: str, customer_id: str) -> None:
    """Refuse a password that an offline guesser would find quickly."""
    from zxcvbn import zxcvbn

    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD} characters")
    verdict = zxcvbn(password[:100], user_inputs=[customer_id, "gridveil", "meter"])
    if verdict["score"] < MIN_STRENGTH:
        hint = verdict["feedback"].get("warning") or "it is too easy to guess"
        tips = " ".join(verdict["feedback"].get("suggestions") or [])
        raise ConfigError(f"that password is too weak: {hint.rstrip('.')} (about"
                          f" {verdict['guesses']:.0e} guesses). {tips}".strip())


@dataclass
class NewHousehold:
    """What `create` makes on the household's side."""
    keyfile: dict  # safe on a server: both private keys wrapped (password, recovery code)
    verifier: bytes  # the login verifier
    recovery_code: str  # to show the household once, never to store
    recovery_verifier: bytes
    seal_key: rsa.RSAPrivateKey  # opens the sealed readings
    sign_key: ec.EllipticCurvePrivateKey  # signs the household's consents (common/consent.py)


def _pkcs8(priv) -> bytes:
    return priv.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())


def create(customer_id: str, password: str,
           iterations: int = PBKDF2_ITERATIONS, seal_key: rsa.RSAPrivateKey | None = None
           ) -> NewHousehold:
    """A household's two key pairs, made here on its side: RSA-OAEP for its
    sealed readings, ECDSA P-256 for its consents. The key file wraps both
    private halves under the password, and again under the recovery code.
    (`seal_key`: an RSA key made already; tests share one for speed.)"""
    check_strength(password, customer_id)
    seal = seal_key or rsa.generate_private_key(public_exponent=65537, key_size=3072)
    sign = ec.generate_private_key(ec.SECP256R1())
    salt, recovery_salt = secrets.token_bytes(16), secrets.token_bytes(16)
    verifier, wrap_key = derive_keys(password, customer_id, salt, iterations)
    code = new_recovery_code()
    recovery_verifier, recovery_wrap = recovery_keys(code, customer_id, recovery_salt)
    keys = (_pkcs8(seal), _pkcs8(sign))
    keyfile = {
        "kind": "gridveil-customer-key", "customer_id": customer_id,
        "kdf": {"name": KDF_NAME, "iterations": iterations, "salt": _b64(salt)},
        "public_key": _b64(seal.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "signing_public_key": _b64(sign.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "wrapped_private_key": _wrap(wrap_key, keys[0], customer_id),
        "wrapped_signing_key": _wrap(wrap_key, keys[1], customer_id),
        "recovery": {"salt": _b64(recovery_salt),
                     "wrapped_private_key": _wrap(recovery_wrap, keys[0], customer_id),
                     "wrapped_signing_key": _wrap(recovery_wrap, keys[1], customer_id)},
    }
    return NewHousehold(keyfile, verifier, code, recovery_verifier, seal, sign)


def kdf_params(kdf: dict) -> tuple[bytes, int]:
    """(salt, iterations) of a key file's "kdf", checked against the floor."""
    try:
        if kdf.get("name") != KDF_NAME:
            raise ConfigError(f"key derivation {kdf.get('name')!r} is not {KDF_NAME} (a key file"
                              " from an older version: run `gridveil customer create` again)")
        salt = _ub64(kdf["salt"])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ConfigError("the key-derivation parameters are malformed") from None
    return salt, check_params(kdf.get("iterations"), salt)


def unlock(keyfile: dict, password: str) -> rsa.RSAPrivateKey:
    salt, iterations = kdf_params(keyfile.get("kdf") or {})
    try:
        cid = keyfile["customer_id"]
    except (KeyError, TypeError):
        raise ConfigError("customer key file is malformed: no customer_id") from None
    return unwrap(keyfile, derive_keys(password, cid, salt, iterations)[1])


def unwrap(keyfile: dict, wrap_key: bytes, wrapped: dict | None = None):
    """A private key, with a wrapping key already derived (`wrapped`: the
    signing key's copy, or the recovery copy; by default the sealing key's
    under the password)."""
    try:
        w = wrapped or keyfile["wrapped_private_key"]
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


def reading_plaintext(seq: int, end: int, energy: int, register: int) -> bytes:
    """[seq, end, energy, register] in CBOR with every number 8 bytes wide
    (a valid, if not the shortest, encoding): every sealed copy is 37 bytes
    before its tag, so its length says nothing about how much was used."""
    return b"\x84" + b"".join(b"\x1b" + int(v).to_bytes(8, "big")
                               for v in (seq, end, energy, register))


def seal_reading(key: bytes, meter_id: str, seq: int, end: int, energy: int,
                 register: int) -> tuple[bytes, bytes]:
    nonce = secrets.token_bytes(12)
    return nonce, AESGCM(key).encrypt(nonce, reading_plaintext(seq, end, energy, register),
                                      _aad(meter_id, seq))


def open_day_key(priv: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    return priv.decrypt(wrapped, OAEP)


def open_reading(key: bytes, meter_id: str, seq: int, nonce: bytes, ct: bytes) -> list[int]:
    return cbor2.loads(AESGCM(key).decrypt(nonce, ct, _aad(meter_id, seq)))
