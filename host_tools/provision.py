"""Set-up steps of the gateway party and the customer's own tool. Each
function works in one party's home and reads only files handed to it (a
public key, a customer's registration file); secrets go to owner-only files
and are never printed."""

from __future__ import annotations

import shutil
from pathlib import Path

from common import customer, paillier, signing, tariff
from common.files import ConfigError, read_json, write_json
from gateway.config import GatewayConfig, GatewayHome
from gateway.keystore import KeyStore
from gateway.store import Store


def init_gateway(home: Path, paillier_pub: Path, cfg: GatewayConfig, epoch_signature: Path,
                 guardian_key: Path, passphrase: str | None,
                 mdms_ca: Path | None = None) -> GatewayHome:
    """A new gateway. It takes a Paillier key only with the privacy
    guardian's signature on it, and keeps the guardian's public key to check
    every later epoch; its own signing key is encrypted under `passphrase`."""
    h = GatewayHome(home)
    if h.config_file.exists():
        raise ConfigError(f"a gateway is already set up in {h.path}")
    pub = paillier.load_public(paillier_pub)
    guardian = signing.load_public(guardian_key)
    clip_wh = paillier.check_epoch(guardian, pub, epoch_signature)
    h.path.mkdir(parents=True, exist_ok=True)
    h.path.chmod(0o700)
    # The key first: a refused passphrase leaves no half-made gateway behind.
    signing.generate(h.signing_key, h.signing_pub, passphrase)
    shutil.copyfile(guardian_key, h.guardian_pub)
    if mdms_ca:
        shutil.copyfile(mdms_ca, h.path / "mdms-ca.pem")  # kept in the home: read at run time
        cfg.mdms_ca = str((h.path / "mdms-ca.pem").resolve())
    h.save_config(cfg)
    store = Store(h.db)
    store.add_key_epoch(pub, 0, clip_wh)
    store.close()
    return h


def rekey_gateway(home: Path, paillier_pub: Path, from_day: int, epoch_signature: Path) -> str:
    """Switch to a new Paillier key epoch from a future day on, if the
    guardian signed it. Old accumulators stay under the old key (the holders
    keep old keys)."""
    h = GatewayHome(home)
    pub = paillier.load_public(paillier_pub)
    clip_wh = paillier.check_epoch(signing.load_public(h.guardian_pub), pub, epoch_signature)
    store = Store(h.db)
    try:
        return store.add_key_epoch(pub, from_day, clip_wh)
    finally:
        store.close()


def add_tariff(gateway_home: Path, tariff_file: Path) -> str:
    t = tariff.parse(read_json(tariff_file, "tariff"))
    store = Store(GatewayHome(gateway_home).db)
    try:
        store.add_tariff(t)
    finally:
        store.close()
    return t.id


def add_customer(gateway_home: Path, binding: Path) -> tuple[str, list[str]]:
    """A household's sealing key, from the privacy guardian's signed binding
    (its holder's `/v1/bindings`, `gridveil mdms bindings`): the gateway
    seals the readings of the meters the household consented to, and only
    those, to the key the household made itself. Returns (household, meters)."""
    from common.consent import BadConsent, check_binding

    h = GatewayHome(gateway_home)
    try:
        cid, meters, der = check_binding(signing.load_public(h.guardian_pub),
                                         read_json(binding, "binding"))
        customer.public_key(der)  # refuses anything but an RSA key
    except (BadConsent, ConfigError) as e:
        raise ConfigError(f"{binding}: {e}") from None
    store = Store(h.db)
    try:
        store.add_customer(cid, der, meters)
    finally:
        store.close()
    return cid, meters


def _next_kid(store: Store) -> bytes:
    n = store.meter_count() + 1
    while True:
        kid = n.to_bytes((n.bit_length() + 7) // 8, "big")
        if not store.kid_in_use(kid):
            return kid
        n += 1


def provision_meter(gateway_home: Path, meter_id: str, neighbourhood: str, out_dir: Path,
                    customer_id: str | None = None, host: str | None = None,
                    extra: dict | None = None, tariff_id: str = "flat",
                    extra_secrets: dict | None = None, passphrase: str | None = None,
                    ratchet: bool = True) -> Path:
    """One meter (see Provisioner.meter)."""
    with Provisioner(gateway_home, passphrase) as p:
        return p.meter(meter_id, neighbourhood, out_dir, customer_id, host, extra, tariff_id,
                       extra_secrets, ratchet)


class Provisioner:
    """Registers meters with one gateway. Each meter's secret is sealed under
    the gateway's passphrase (one key derivation for however many meters)."""

    def __init__(self, gateway_home: Path, passphrase: str | None):
        self.home = GatewayHome(gateway_home)
        self.cfg = self.home.load_config()
        self.store = Store(self.home.db)
        try:
            self.keys = KeyStore(self.store, passphrase)
        except BaseException:
            self.store.close()
            raise

    def __enter__(self) -> Provisioner:
        return self

    def __exit__(self, *exc) -> None:
        self.store.close()

    def meter(self, meter_id: str, neighbourhood: str, out_dir: Path,
              customer_id: str | None = None, host: str | None = None, extra: dict | None = None,
              tariff_id: str = "flat", extra_secrets: dict | None = None,
              ratchet: bool = True) -> Path:
        """Register a meter with the gateway and write its device files to
        out_dir (what gets flashed onto the meter). `extra` goes into
        settings.json (board, sensor, replay); `extra_secrets` into
        secrets.json (Wi-Fi credentials). With `ratchet` (our firmware) the
        meter steps its secret daily; without, it keeps one (a peer that
        only speaks plain OSCORE)."""
        if not meter_id or len(meter_id) > 64 or not meter_id.isprintable() or " " in meter_id:
            raise ConfigError("meter id must be 1..64 printable characters without spaces")
        out_dir = Path(out_dir)
        if (out_dir / "secrets.json").exists():
            raise ConfigError(f"{out_dir} already holds a provisioned meter")
        cfg, store = self.cfg, self.store
        kid = _next_kid(store)
        secret, sealed = self.keys.new_meter(meter_id, kid, ratchet)
        settings = {
            "meter_id": meter_id,
            "gateway_host": host or (cfg.bind if cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1"),
            "gateway_port": cfg.port,
            "interval_s": cfg.interval_s,
        }
        settings.update(extra or {})
        # Device files first: if anything fails there, nothing is registered.
        write_json(out_dir / "settings.json", settings)
        write_json(out_dir / "secrets.json", {
            "master_secret": secret.master_secret.hex(),
            "master_salt": secret.master_salt.hex(),
            "sender_id": kid.hex(), "recipient_id": self.keys.gateway_id.hex(),
            **({"generation": 0} if ratchet else {}),
            **(extra_secrets or {})}, secret=True)
        try:
            store.add_meter(meter_id, kid, neighbourhood, customer_id, tariff_id,
                            (ratchet, sealed))
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        return out_dir
