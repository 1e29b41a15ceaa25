"""Set up the parties' directories: the key authority, the gateway, and each
meter (its key in the gateway's key store, its settings and secrets files).
Secrets go to owner-only files and are never printed."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from authority import setup as authority_setup
from authority.policy import Policy
from common import customer, paillier, tariff
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
    signing.generate(h.signing_key, h.signing_pub)
    ks = KeyStore(h.keystore)
    ks.gateway_id = GATEWAY_ID
    ks.save()
    store = Store(h.db)
    store.add_key_epoch(pub, 0)
    store.close()
    return h


def rekey_gateway(home: Path, paillier_pub: Path, from_day: int) -> str:
    """Switch to a new Paillier key epoch from a future day on. Old
    accumulators stay under the old key (the authority keeps old keys)."""
    store = Store(GatewayHome(home).db)
    try:
        return store.add_key_epoch(paillier.load_public(paillier_pub), from_day)
    finally:
        store.close()


def init_authority(home: Path, bits: int, k: int = 5, threshold: bool = True,
                   passphrases: dict | None = None) -> str:
    return authority_setup.init(home, bits, Policy(k=k), threshold, passphrases or {})


def trust_gateway(authority_home: Path, gateway_home: Path) -> None:
    """Give every key holder the gateway's public signing key."""
    authority_setup.trust_gateway(authority_home, GatewayHome(gateway_home).signing_pub)


def add_tariff(gateway_home: Path, tariff_file: Path) -> str:
    t = tariff.parse(read_json(tariff_file, "tariff"))
    store = Store(GatewayHome(gateway_home).db)
    try:
        store.add_tariff(t)
    finally:
        store.close()
    return t.id


def create_customer(home: Path, gateway_home: Path, customer_id: str, password: str,
                    iterations: int = customer.PBKDF2_ITERATIONS) -> Path:
    """A customer key pair: the password-wrapped key file goes to the
    customer side (<home>/customers/), the public key to the gateway."""
    path = Path(home) / "customers" / f"{customer_id}.json"
    if path.exists():
        raise ConfigError(f"customer {customer_id} already exists")
    keyfile = customer.create(customer_id, password, iterations)
    store = Store(GatewayHome(gateway_home).db)
    try:
        store.add_customer(customer_id, customer.public_key(keyfile).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    finally:
        store.close()
    write_json(path, keyfile, secret=True)
    # The web portal keeps a slow hash of the login verifier, never the password.
    from mdms.portal import register_customer
    from mdms.store import MdmsStore

    web = MdmsStore(Path(home) / "mdms" / "mdms.db")
    try:
        register_customer(web, customer_id, keyfile, password)
    finally:
        web.close()
    return path


def _next_kid(store: Store) -> bytes:
    n = store.db.execute("SELECT COUNT(*) FROM meters").fetchone()[0] + 1
    while True:
        kid = n.to_bytes((n.bit_length() + 7) // 8, "big")
        if not store.db.execute("SELECT 1 FROM meters WHERE kid=?", (kid,)).fetchone():
            return kid
        n += 1


def provision_meter(gateway_home: Path, meter_id: str, neighbourhood: str, out_dir: Path,
                    customer_id: str | None = None, host: str | None = None,
                    extra: dict | None = None, tariff_id: str = "flat",
                    extra_secrets: dict | None = None) -> Path:
    """Register a meter with the gateway and write its device files.
    `extra` goes into settings.json (board, sensor, replay); `extra_secrets`
    into secrets.json (Wi-Fi credentials)."""
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
        # The database checks tariff and customer first; if anything after
        # it fails, the registration is taken back: no half-provisioned meter.
        store.add_meter(meter_id, kid, neighbourhood, customer_id, tariff_id)
        try:
            write_json(out_dir / "settings.json", settings)
            write_json(out_dir / "secrets.json", {
                "master_secret": secret.master_secret.hex(),
                "master_salt": secret.master_salt.hex(),
                "sender_id": kid.hex(), "recipient_id": ks.gateway_id.hex(),
                **(extra_secrets or {})}, secret=True)
            ks.save()
        except BaseException:
            store.db.execute("DELETE FROM meters WHERE meter_id=?", (meter_id,))
            raise
    finally:
        store.close()
    return out_dir
