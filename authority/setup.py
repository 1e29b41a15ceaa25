"""Creating a key authority, rotating its key epoch, trusting a gateway.

Single mode: one holder directory with the private key, encrypted under a
passphrase. Threshold mode: two holder directories, `utility/` and
`guardian/`, each with one share; the full key exists only in memory during
key generation (the trusted dealer) and is never written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import paillier
from common.files import ConfigError, read_json, write_json

from . import threshold
from .holder import HolderHome, KeyHolder
from .policy import Policy

LAYOUT = "authority.json"


def holder_dirs(home: Path) -> dict[str, Path]:
    home = Path(home)
    d = read_json(home / LAYOUT, "authority layout")
    try:
        return {role: home / sub for role, sub in d["holders"].items()}
    except (KeyError, AttributeError, TypeError) as e:
        raise ConfigError(f"{home / LAYOUT} is malformed: {e}") from None


def public_key_file(home: Path) -> Path:
    """The current epoch's public key, for the gateway."""
    d = read_json(Path(home) / LAYOUT, "authority layout")
    first = next(iter(holder_dirs(home).values()))
    return HolderHome(first).keys.pub_file(d["current_key_id"])


def _new_epoch(home: Path, bits: int, passphrases: dict[str, str | None]) -> str:
    dirs = holder_dirs(home)
    pub, priv = paillier.generate(bits)
    kid = paillier.key_id(pub)
    if set(dirs) == {"single"}:
        if passphrases.get("single") is None:
            raise ConfigError("the single key holder's private key must be encrypted: set"
                              " GRIDVEIL_AUTHORITY_PASSPHRASE or use --passphrase-file")
        keys = HolderHome(dirs["single"]).keys
        keys.save_public(pub)
        keys.save_private(priv, passphrases["single"])
    else:
        shares = dict(zip(("utility", "guardian"), threshold.split(priv, kid), strict=True))
        for role, share in shares.items():
            keys = HolderHome(dirs[role]).keys
            keys.save_public(pub)
            keys.save_share(share, passphrases.get(role))
    del priv
    layout = read_json(Path(home) / LAYOUT, "authority layout")
    layout["current_key_id"] = kid
    layout.setdefault("epochs", []).append(kid)
    write_json(Path(home) / LAYOUT, layout)
    return kid


def init(home: Path, bits: int, policy: Policy, threshold_mode: bool,
         passphrases: dict[str, str | None]) -> str:
    home = Path(home)
    if (home / LAYOUT).exists():
        raise ConfigError(f"a key authority already exists in {home}")
    policy.validate()
    if bits < paillier.MIN_BITS or bits % 8:
        raise ConfigError(f"Paillier key size must be a multiple of 8 and at least"
                          f" {paillier.MIN_BITS} bits")
    roles = {"utility": "utility", "guardian": "guardian"} if threshold_mode else {"single": "."}
    if not threshold_mode and passphrases.get("single") is None:
        raise ConfigError("the private key must be encrypted: set GRIDVEIL_AUTHORITY_PASSPHRASE"
                          " or use --passphrase-file (or use --threshold, where each holder"
                          " keeps only a share)")
    for role, sub in roles.items():
        KeyHolder.create(home / sub, role, policy)
    write_json(home / LAYOUT, {"mode": "threshold" if threshold_mode else "single",
                               "holders": roles})
    return _new_epoch(home, bits, passphrases)


def rotate(home: Path, bits: int, passphrases: dict[str, str | None]) -> str:
    """A new key epoch. Old keys stay, so records of old periods still open."""
    return _new_epoch(home, bits, passphrases)


def trust_gateway(home: Path, gateway_signing_pub: Path) -> None:
    for d in holder_dirs(home).values():
        shutil.copyfile(gateway_signing_pub, HolderHome(d).gateway_pub)
