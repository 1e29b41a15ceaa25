"""A meter whose flash is wiped and written again with the same secrets (what
docs/hardware.md's `erase_flash` followed by `gridveil deploy` does), while
the gateway restarts too.

The utility runs the network, so it sees every datagram. A proxy between
the meters and the gateway records, for each OSCORE request, the key id,
the ID context and the Partial IV: together they fix the AES-CCM key and
nonce. A (key, nonce) pair seen with two different ciphertexts is a nonce
reuse, which in CCM gives away the XOR of the plaintexts. Retransmissions
carry the same bytes and are not reuse.

Each household's day is replayed in two halves: the first before the wipe,
the second after it (new time, the energy measured since). Every one of the
96 quarter-hours must be stored, once."""

from __future__ import annotations

import json
from pathlib import Path

import aiocoap
from aiocoap import oscore
from helpers.relay import UdpRelay
from helpers.system import System

KEEP = {"settings.json", "secrets.json"}  # what `gridveil deploy` pushes again


class NonceRecorder(UdpRelay):
    """A UDP relay on loopback that notes every OSCORE request's (kid, ID
    context, Partial IV) and ciphertext, and every response's Partial IV."""

    def __init__(self, gateway_port: int):
        self.ciphertexts: dict[tuple, set[bytes]] = {}
        self.contexts: set[bytes | None] = set()
        self.gateway_pivs = 0
        super().__init__(gateway_port, self._note_request, self._note_response)

    def _note_request(self, data: bytes) -> bytes:
        msg = aiocoap.Message.decode(data)
        if not msg.code.is_request() or msg.opt.oscore is None:
            return data
        u = oscore.verify_start(msg)
        ctx = u.get(oscore.COSE_KID_CONTEXT)
        self.contexts.add(ctx)
        key = (u.get(oscore.COSE_KID), ctx, u.get(oscore.COSE_PIV))
        self.ciphertexts.setdefault(key, set()).add(msg.payload)
        return data

    def _note_response(self, data: bytes) -> bytes:
        msg = aiocoap.Message.decode(data)
        if msg.opt.oscore and msg.opt.oscore[0] & 0x07:
            self.gateway_pivs += 1  # a response under the gateway's own nonce
        return data


def halves(src: Path, out: Path) -> tuple[Path, Path]:
    """The first 12 hours of a sample file and the last 12."""
    lines = src.read_text().splitlines(keepends=True)
    head = [x for x in lines if x.startswith("#")]
    rows = [x for x in lines if not x.startswith("#")]
    a, b = out / f"{src.stem}-am.csv", out / f"{src.stem}-pm.csv"
    a.write_text("".join(head + rows[:720]))
    b.write_text("".join(head + rows[720:]))
    return a, b


def set_settings(meter_dir: Path, **changes) -> dict:
    p = meter_dir / "settings.json"
    s = {**json.loads(p.read_text()), **changes}
    p.write_text(json.dumps(s))
    return s


def test_wiped_flash_reuses_no_nonce_and_loses_no_reading(tmp_path, sample_files):
    s = System(tmp_path / "gv", sample_files[:5])
    rec = NonceRecorder(s.port)
    try:
        second = {}
        for d in s.meter_dirs():
            replay = json.loads((d / "settings.json").read_text())["replay"]
            am, pm = halves(Path(replay["file"]), tmp_path)
            set_settings(d, gateway_port=rec.port, replay={**replay, "file": str(am)})
            second[d] = {**replay, "file": str(pm)}
        s.start_gateway()
        s.run_meters()
        s.stop_gateway()

        for d in s.meter_dirs():  # erase_flash, then deploy the same secrets again
            for f in d.iterdir():
                if f.name not in KEEP:
                    f.unlink()
            set_settings(d, replay=second[d])
        s.start_gateway()
        runs = s.run_meters()
        s.stop_gateway()
    finally:
        rec.close()
        meters = s.meter_rows()
        s.close()

    reused = {k: len(v) for k, v in rec.ciphertexts.items() if len(v) > 1}
    assert not reused, f"(key id, ID context, Partial IV) with several ciphertexts: {reused}"
    assert len(rec.ciphertexts) >= 5 * 96 // 8  # the recorder saw the traffic
    assert None not in rec.contexts  # never the context that is the same in every boot
    assert rec.gateway_pivs == 0  # the gateway only ever answered under request nonces
    for r in runs:
        assert "queued readings renumbered by 48" in r.output, r.output[-2000:]
    assert len(meters) == 5
    for m in meters:
        assert (m["accepted"], m["last_seq"], m["duplicates"]) == (96, 95, 0), m
