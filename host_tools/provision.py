"""Set up the parties' directories: the key authority, the gateway, and each
meter (its key in the gateway's key store, its settings and secrets files).
Secrets go to owner-only files and are never printed."""

from __future__ import annotations

import shutil
from pathlib import Path

from authority.service import Authority, AuthorityHome
from common import paillier
from common.files import ConfigError, read_json, write_json
from gateway import signing
from gateway.config import GatewayConfig, GatewayHome
from gateway.keystore import KeyStore
from gateway.store import Store

GATEWAY_ID = b""  # the gateway's OSCORE sender id; unique per meter context anyway


def init_gateway(home: Path, paillier_pub: Path, cfg: GatewayConfig) -> GatewayHome:
    h = GatewayHome(home)
    if h.config_file.exists():
        raise ConfigError(f"a gateway is already set up in {h.path}")
    pub = paillier.load_public(paillier_pub)
    h.path.mkdir(parents=True, exist_ok=True)
    h.save_config(cfg)
    shutil.copyfile(paillier_pub, h.paillier_pub)
    signing.generate(h.signing_key, h.signing_pub)
    ks = KeyStore(h.keystore)
    ks.gateway_id = GATEWAY_ID
    ks.save()
    store = Store(h.db)
    store.set_meta("paillier_key_id", paillier.key_id(pub))
    store.close()
    return h


def init_authority(home: Path, bits: int, k: int = 5) -> str:
    from authority.policy import Policy

    return Authority.init(home, bits, Policy(k=k))


def trust_gateway(authority_home: Path, gateway_home: Path) -> None:
    """Give the authority the gateway's public signing key."""
    shutil.copyfile(GatewayHome(gateway_home).signing_pub, AuthorityHome(authority_home).gateway_pub)


def _next_kid(store: Store) -> bytes:
    n = store.db.execute("SELECT COUNT(*) FROM meters").fetchone()[0] + 1
    while True:
        kid = n.to_bytes((n.bit_length() + 7) // 8, "big")
        if not store.db.execute("SELECT 1 FROM meters WHERE kid=?", (kid,)).fetchone():
            return kid
        n += 1


def provision_meter(gateway_home: Path, meter_id: str, neighbourhood: str, out_dir: Path,
                    customer: str | None = None, host: str | None = None,
                    extra: dict | None = None) -> Path:
    """Register a meter with the gateway and write its device files."""
    if not meter_id or len(meter_id) > 64 or not meter_id.isprintable() or " " in meter_id:
        raise ConfigError("meter id must be 1..64 printable characters without spaces")
    h = GatewayHome(gateway_home)
    cfg = h.load_config()
    ks = KeyStore(h.keystore)
    store = Store(h.db)
    try:
        kid = _next_kid(store)
        secret = ks.new_meter(meter_id, kid)
        out_dir = Path(out_dir)
        if (out_dir / "secrets.json").exists():
            raise ConfigError(f"{out_dir} already holds a provisioned meter")
        settings = {
            "meter_id": meter_id,
            "gateway_host": host or (cfg.bind if cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1"),
            "gateway_port": cfg.port,
            "interval_s": cfg.interval_s,
        }
        settings.update(extra or {})
        write_json(out_dir / "settings.json", settings)
        write_json(out_dir / "secrets.json", {
            "master_secret": secret.master_secret.hex(), "master_salt": secret.master_salt.hex(),
            "sender_id": kid.hex(), "recipient_id": ks.gateway_id.hex()}, secret=True)
        # Key store last: a failure above leaves no half-registered meter.
        store.add_meter(meter_id, kid, neighbourhood, customer)
        ks.save()
    finally:
        store.close()
    return out_dir


def set_meter_port(meter_dir: Path, port: int) -> None:
    p = Path(meter_dir) / "settings.json"
    s = read_json(p, "meter settings")
    s["gateway_port"] = port
    write_json(p, s)
