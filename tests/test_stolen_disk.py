"""A stolen gateway disk and a tap on the meters' network, as the utility
would use them: it records every datagram of a day, steals the gateway's
disk the next day, and tries to read the recorded readings.

The meters' master secrets are sealed on that disk under the gateway's
passphrase, which is not on it; and each meter steps its master secret
once a day (here: every 48 readings) through a one-way hash, with the
gateway following and overwriting its copy. So the disk alone opens
nothing, and the disk with the passphrase opens only the traffic since the
meters' last step, never the day before it. A positive control decrypts
the same recordings with the secrets the meters had that day, so the
attack code is shown to work."""

from __future__ import annotations

import json
import shutil

import aiocoap
import cbor2
import pytest
from aiocoap import oscore
from helpers.relay import UdpRelay
from helpers.system import System

from common.files import ConfigError
from gateway.keystore import KeyStore, next_secret
from gateway.store import Store

STEP = 48  # readings per key generation here (a day's worth, 96, by default)


class Tap(UdpRelay):
    """The utility's network: every request datagram, kept."""

    def __init__(self, gateway_port: int):
        self.requests: list[bytes] = []
        super().__init__(gateway_port, self._keep)

    def _keep(self, data: bytes) -> bytes:
        self.requests.append(data)
        return data


class Opener(oscore.CanUnprotect, oscore.SecurityContextUtils):
    """The gateway's side of a context, as anyone with a master secret and
    the ID context from a recorded request can build it."""

    def __init__(self, secret: bytes, salt: bytes, kid: bytes, id_context: bytes):
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context, self.sender_id, self.recipient_id = id_context, b"", kid
        self.derive_keys(salt, secret)
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.echo_recovery = None


def readings_opened(datagrams, secrets: dict[bytes, list[tuple[bytes, bytes]]]) -> list:
    """The readings of every recorded request that one of `secrets` (per
    kid: [(master secret, salt)]) decrypts."""
    found = []
    for data in datagrams:
        msg = aiocoap.Message.decode(data)
        if not msg.code.is_request() or msg.opt.oscore is None:
            continue
        u = oscore.verify_start(msg)
        kid, ctx_id = u.get(oscore.COSE_KID), u.get(oscore.COSE_KID_CONTEXT)
        for secret, salt in secrets.get(kid, []):
            try:
                inner, _ = Opener(secret, salt, kid, ctx_id).unprotect(msg)
            except (oscore.ProtectionInvalid, oscore.ReplayError, oscore.DecodeError):
                continue
            if inner.payload:
                found += cbor2.loads(inner.payload)[2]
            break
    return found


def test_a_stolen_disk_and_a_day_of_recorded_traffic_open_no_reading(tmp_path, sample_files):
    s = System(tmp_path / "gv", sample_files[:5], settings={"key_step_readings": STEP})
    tap = Tap(s.port)
    first = {}  # what each meter was provisioned with: its secret of the first "day"
    try:
        for d in s.meter_dirs():
            sec = s.meter_secrets(d.name)
            first[bytes.fromhex(sec["sender_id"])] = (bytes.fromhex(sec["master_secret"]),
                                                      bytes.fromhex(sec["master_salt"]))
            p = d / "settings.json"
            p.write_text(json.dumps({**json.loads(p.read_text()), "gateway_port": tap.port}))
        s.start_gateway()
        runs = s.run_meters()
        s.stop_gateway()
    finally:
        tap.close()
    for r in runs:
        assert "key generation 1: a new master secret" in r.output, r.output[-1500:]
        assert "96 readings delivered, 0 still queued" in r.output
    # The meters stepped once more at the end: their flash holds generation 2.
    assert {s.meter_secrets(d.name)["generation"] for d in s.meter_dirs()} == {2}

    # The next day, the gateway's disk is taken.
    disk = tmp_path / "stolen"
    shutil.copytree(s.gw.home, disk)
    everything = b"".join(f.read_bytes() for f in disk.rglob("*") if f.is_file())
    for secret, salt in first.values():  # no generation's secret lies on it in the clear
        for _ in range(3):
            assert secret not in everything and secret.hex().encode() not in everything
            secret = next_secret(secret, salt)
    store = Store(disk / "gateway.db")
    with pytest.raises(ConfigError, match="does not open with this passphrase"):
        KeyStore(store, "a guess at the passphrase").load()

    # Worst case: the thief has the passphrase too (from the running machine, say).
    stolen = KeyStore(store, s.gw.env["GRIDVEIL_GATEWAY_PASSPHRASE"]).load()
    store.close()
    assert {m.generation for m in stolen.meters.values()} == {1}
    with_later = {}
    for m in stolen.meters.values():  # and every generation after it
        chain, secret = [], m.master_secret
        for _ in range(5):
            chain.append((secret, m.master_salt))
            secret = next_secret(secret, m.master_salt)
        with_later[m.kid] = chain
    got = readings_opened(tap.requests, with_later)
    yesterday = [r for r in got if r[0] < STEP]
    assert yesterday == []  # nothing recorded before the step opens
    assert {r[0] for r in got} == set(range(STEP, 96))  # the day since the step does: stated

    # The control: with the secrets the meters had that first day, the same
    # recordings open, reading by reading.
    control = readings_opened(tap.requests, {k: [v] for k, v in first.items()})
    assert {r[0] for r in control} == set(range(STEP))
    assert len(control) >= 5 * STEP
    s.close()
