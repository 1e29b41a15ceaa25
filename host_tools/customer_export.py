"""The customer's side of a sealed copy: unwrap the private key with the
password, unwrap each day key, open each reading. The same steps run in the
browser portal with WebCrypto."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.exceptions import InvalidTag

from common import customer
from common.files import ConfigError, read_json
from gateway.store import Store


def readings(home: Path, store: Store, customer_id: str, password: str) -> list[list]:
    keyfile = read_json(Path(home) / "customers" / f"{customer_id}.json", "customer key file",
                        secret=True)
    priv = customer.unlock(keyfile, password)
    meters = [r[0] for r in store.db.execute("SELECT meter_id FROM meters WHERE customer=?"
                                             " ORDER BY meter_id", (customer_id,))]
    if not meters:
        raise ConfigError(f"customer {customer_id} has no meters")
    rows = []
    for meter_id in meters:
        keys = {(day, n): customer.open_day_key(priv, w) for day, n, w in store.db.execute(
            "SELECT day, key_no, wrapped FROM customer_day_keys WHERE meter_id=?", (meter_id,))}
        for seq, day, n, nonce, ct in store.db.execute(
                "SELECT seq, day, key_no, nonce, ciphertext FROM sealed_readings"
                " WHERE meter_id=? ORDER BY seq", (meter_id,)):
            try:
                s, end, energy, register = customer.open_reading(keys[(day, n)], meter_id, seq,
                                                                 nonce, ct)
            except (KeyError, InvalidTag):
                raise ConfigError(f"sealed reading {meter_id}#{seq} does not open: it was"
                                  " altered, or belongs to another key") from None
            stamp = dt.datetime.fromtimestamp(end, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
            rows.append([meter_id, s, stamp, energy, register])
    return rows
