"""The key ceremony: a trusted dealer makes a Paillier key pair and hands
each key holder its part, then forgets the key.

Threshold mode: the private key is split into two additive shares
(threshold.split), one sealed to the utility holder's transport key, one to
the guardian's. Single mode: the whole key sealed to one holder. The dealer
writes only into its own output folder: the public key and the sealed
parts, which are useless to anyone but their holder. The whole private key
exists in the dealer's memory for the length of this function and is never
written anywhere; that is the trusted-dealer assumption (docs/privacy.md).
"""

from __future__ import annotations

import base64
from pathlib import Path

from common import paillier
from common.files import ConfigError, read_json, write_json

from . import keys, threshold


def _transport_pub(path: Path) -> bytes:
    d = read_json(path, "holder transport key")
    try:
        if d.get("kind") != "gridveil-transport-public":
            raise ValueError("not a holder transport key")
        return base64.b64decode(d["x25519"], validate=True)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path} is malformed: {e}") from None


def save_transport_pub(path: Path, raw: bytes, role: str) -> None:
    write_json(path, {"kind": "gridveil-transport-public", "role": role,
                      "x25519": base64.b64encode(raw).decode()})


def deal(out_dir: Path, bits: int, holders: dict[str, Path]) -> str:
    """`holders` maps role ("single", or "utility" and "guardian") to that
    holder's transport public key file. Writes <key_id>.pub.json and
    <key_id>.<role>.sealed.json to out_dir; returns the key id."""
    if set(holders) not in ({"single"}, {"utility", "guardian"}):
        raise ConfigError("deal to one single holder, or to the utility and the guardian")
    if bits < paillier.MIN_BITS or bits % 8:
        raise ConfigError(f"Paillier key size must be a multiple of 8 and at least"
                          f" {paillier.MIN_BITS} bits")
    to = {role: _transport_pub(Path(p)) for role, p in holders.items()}
    pub, priv = paillier.generate(bits)
    kid = paillier.key_id(pub)
    if set(holders) == {"single"}:
        parts = {"single": {"key_id": kid, "p": str(priv.p), "q": str(priv.q)}}
    else:
        u, g = threshold.split(priv, kid)
        parts = {role: {"key_id": kid, "index": s.index, "n": str(s.n), "d": str(s.d_i)}
                 for role, s in (("utility", u), ("guardian", g))}
    del priv
    out_dir = Path(out_dir)
    paillier.save_public(out_dir / f"{kid}.pub.json", pub)
    for role, secret in parts.items():
        write_json(out_dir / f"{kid}.{role}.sealed.json", keys.seal_to(to[role], secret))
    return kid
