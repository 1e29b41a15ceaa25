"""The key authority's secrets at rest.

A full private key is always encrypted under a passphrase: scrypt
(n = 2^15, r = 8, p = 1) derives an AES-256-GCM key; the key file holds the
KDF parameters, salt, nonce and ciphertext. A threshold share may be
encrypted the same way, or kept in the clear (owner-only file): a share
alone decrypts nothing.

Files are named by key epoch: keys/<key_id>.pub.json, keys/<key_id>.key.json
(single holder) or keys/<key_id>.share.json (threshold holder).
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from phe import PaillierPrivateKey, PaillierPublicKey

from common import paillier
from common.files import ConfigError, read_json, write_json

from .threshold import Share

PASSPHRASE_ENV = "GRIDVEIL_AUTHORITY_PASSPHRASE"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSPHRASE = 12


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _kdf(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def seal(obj: dict, passphrase: str | None) -> dict:
    if passphrase is None:
        return {"encrypted": False, "secret": obj}
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
        return d["secret"]
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
        return paillier.load_public(self.pub_file(key_id))

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
