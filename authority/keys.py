"""The key authority's secrets at rest.

A private key or a threshold share is always encrypted under its holder's
passphrase: scrypt (n = 2^15, r = 8, p = 1) derives an AES-256-GCM key; the
key file holds the KDF parameters, salt, nonce and ciphertext. A file in
the clear is refused: a stolen disk must not give away a share.

Files are named by key epoch: keys/<key_id>.pub.json, keys/<key_id>.key.json
(single holder) or keys/<key_id>.share.json (threshold holder).

Shares travel from the dealer to each holder sealed to that holder's
X25519 transport key (ephemeral X25519, HKDF-SHA-256, AES-256-GCM), so the
dealer never learns a passphrase and never writes into a holder's home.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from phe import PaillierPrivateKey, PaillierPublicKey

from common import paillier
from common.files import ConfigError, read_json, write_json

from .threshold import Share

PASSPHRASE_ENV = "GRIDVEIL_HOLDER_PASSPHRASE"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSPHRASE = 12


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(obj: dict, passphrase: str | None) -> dict:
    if passphrase is None:
        raise ConfigError(f"a key holder's secrets are encrypted at rest: give its passphrase in"
                          f" ${PASSPHRASE_ENV} or with --passphrase-file")
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = _kdf(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ct = AESGCM(key).encrypt(nonce, json.dumps(obj).encode(), b"gridveil-authority-key")
    return {"encrypted": True, "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R,
                                       "p": SCRYPT_P, "salt": _b64(salt)},
            "nonce": _b64(nonce), "ciphertext": _b64(ct)}


def unseal(d: dict, passphrase: str | None, what: str) -> dict:
    if not d.get("encrypted"):
        raise ConfigError(f"{what} is stored unencrypted; refusing it. Import the key again with"
                          " a passphrase (`gridveil holder import-share`)")
    if passphrase is None:
        raise ConfigError(f"{what} is encrypted: give the passphrase in ${PASSPHRASE_ENV}"
                          " or with --passphrase-file")
    k = d["kdf"]
    key = _kdf(passphrase, base64.b64decode(k["salt"]), k["n"], k["r"], k["p"])
    try:
        return json.loads(AESGCM(key).decrypt(base64.b64decode(d["nonce"]),
                                              base64.b64decode(d["ciphertext"]),
                                              b"gridveil-authority-key"))
    except InvalidTag:
        raise ConfigError(f"wrong passphrase for {what}") from None


class KeyDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._public: dict[str, PaillierPublicKey] = {}

    def pub_file(self, key_id: str) -> Path:
        return self.path / f"{key_id}.pub.json"

    def key_file(self, key_id: str) -> Path:
        return self.path / f"{key_id}.key.json"

    def share_file(self, key_id: str) -> Path:
        return self.path / f"{key_id}.share.json"

    def epochs(self) -> list[str]:
        return sorted(p.name[:-len(".pub.json")] for p in self.path.glob("*.pub.json"))

    def save_public(self, pub: PaillierPublicKey) -> str:
        kid = paillier.key_id(pub)
        paillier.save_public(self.pub_file(kid), pub)
        return kid

    def public(self, key_id: str) -> PaillierPublicKey:
        # Read once: a key id names one public key for good (it is its hash),
        # and a release asks for it once per value.
        if key_id not in self._public:
            self._public[key_id] = paillier.load_public(self.pub_file(key_id))
        return self._public[key_id]

    def save_private(self, priv: PaillierPrivateKey, passphrase: str | None) -> None:
        kid = paillier.key_id(priv.public_key)
        write_json(self.key_file(kid), {"kind": "gridveil-paillier-private", "key_id": kid,
                                        **seal({"p": str(priv.p), "q": str(priv.q)}, passphrase)},
                   secret=True)

    def private(self, key_id: str, passphrase: str | None) -> PaillierPrivateKey:
        path = self.key_file(key_id)
        d = read_json(path, "Paillier private key", secret=True)
        pub = self.public(key_id)
        try:
            s = unseal(d, passphrase, f"private key {path}")
            p, q = int(s["p"]), int(s["q"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"Paillier private key {path} is malformed: {e}") from None
        if p * q != pub.n:
            raise ConfigError(f"private key {path} does not match its public key")
        return PaillierPrivateKey(pub, p, q)

    def save_share(self, share: Share, passphrase: str | None) -> None:
        write_json(self.share_file(share.key_id), {
            "kind": "gridveil-paillier-share", "key_id": share.key_id, "index": share.index,
            **seal({"n": str(share.n), "d": str(share.d_i)}, passphrase)}, secret=True)

    def share(self, key_id: str, passphrase: str | None) -> Share:
        path = self.share_file(key_id)
        d = read_json(path, "key share", secret=True)
        try:
            s = unseal(d, passphrase, f"key share {path}")
            share = Share(key_id, int(d["index"]), int(s["n"]), int(s["d"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"key share {path} is malformed: {e}") from None
        if share.n != self.public(key_id).n:
            raise ConfigError(f"key share {path} does not match its public key")
        return share


# --- shares in transit: dealer -> holder ---------------------------------------
BOX_INFO = b"gridveil-share-transport-v1"


def _box_key(shared: bytes, eph_pub: bytes, to_pub: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=eph_pub + to_pub, info=BOX_INFO).derive(shared)


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def seal_to(to_pub_raw: bytes, obj: dict) -> dict:
    """Encrypt `obj` so that only the holder of the X25519 key opens it."""
    try:
        to_pub = X25519PublicKey.from_public_bytes(to_pub_raw)
    except ValueError as e:
        raise ConfigError(f"not an X25519 transport key: {e}") from None
    eph = X25519PrivateKey.generate()
    key = _box_key(eph.exchange(to_pub), _raw(eph.public_key()), to_pub_raw)
    nonce = secrets.token_bytes(12)
    return {"kind": "gridveil-sealed-share", "to": _b64(to_pub_raw),
            "eph": _b64(_raw(eph.public_key())), "nonce": _b64(nonce),
            "ciphertext": _b64(AESGCM(key).encrypt(nonce, json.dumps(obj).encode(), BOX_INFO))}


def open_box(priv: X25519PrivateKey, box: dict, what: str) -> dict:
    try:
        eph = base64.b64decode(box["eph"], validate=True)
        me = _raw(priv.public_key())
        if base64.b64decode(box["to"], validate=True) != me:
            raise ConfigError(f"{what} was sealed for another holder")
        key = _box_key(priv.exchange(X25519PublicKey.from_public_bytes(eph)), eph, me)
        return json.loads(AESGCM(key).decrypt(base64.b64decode(box["nonce"], validate=True),
                                              base64.b64decode(box["ciphertext"], validate=True),
                                              BOX_INFO))
    except InvalidTag:
        raise ConfigError(f"{what} does not open with this holder's transport key") from None
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{what} is malformed: {e}") from None


def new_transport_key(path: Path, passphrase: str | None) -> bytes:
    """A holder's X25519 key for receiving its share, sealed under its
    passphrase; returns the raw public key to give to the dealer."""
    priv = X25519PrivateKey.generate()
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    write_json(path, {"kind": "gridveil-transport-key", **seal({"x25519": _b64(raw)}, passphrase)},
               secret=True)
    return _raw(priv.public_key())


def load_transport_key(path: Path, passphrase: str | None) -> X25519PrivateKey:
    d = read_json(path, "transport key", secret=True)
    s = unseal(d, passphrase, f"transport key {path}")
    try:
        return X25519PrivateKey.from_private_bytes(base64.b64decode(s["x25519"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"transport key {path} is malformed: {e}") from None


# --- the holder's own signing key (for its log heads) ----------------------------
def new_signing_key(path: Path, passphrase: str | None):
    """An Ed25519 key, sealed under the passphrase; returns its public half."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    write_json(path, {"kind": "gridveil-holder-signing-key",
                      **seal({"ed25519": _b64(raw)}, passphrase)}, secret=True)
    return key.public_key()


def load_signing_key(path: Path, passphrase: str | None):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    s = unseal(read_json(path, "holder signing key", secret=True), passphrase,
               f"holder signing key {path}")
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(s["ed25519"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"holder signing key {path} is malformed: {e}") from None
