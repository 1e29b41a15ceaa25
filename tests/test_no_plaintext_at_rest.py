"""No plaintext reading at rest: meters send readings with distinctive
values through the real system; afterwards no file the gateway or the key
authority wrote contains any of them, in any plausible encoding, and no
database cell holds one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
from helpers.system import System

START = 1767225600
METERS = 5
INTERVALS = 4


def energy(i: int, j: int) -> int:
    """Wh of meter i in interval j: distinct 7-digit values, all > 2**16."""
    return 1_200_000 + 104_729 * i + 7_919 * j + 13


def write_meter_file(path: Path, i: int) -> None:
    lines = ["# distinctive test readings"]
    for j in range(INTERVALS):
        mw = energy(i, j) * 4000  # constant power: exactly energy(i, j) Wh in 15 minutes
        for minute in range(15):
            lines.append(f"{START + (j * 15 + minute) * 60},{mw}")
    path.write_text("\n".join(lines) + "\n")


def encodings(v: int) -> list[bytes]:
    return [str(v).encode(), cbor2.dumps(v), v.to_bytes(8, "big"), v.to_bytes(8, "little"),
            str(v).encode("utf-16-le")]


def test_no_reading_value_in_any_file_or_cell(tmp_path):
    files = []
    for i in range(METERS):
        f = tmp_path / f"meter{i}.csv"
        write_meter_file(f, i)
        files.append(f)
    s = System(tmp_path / "gv", files, gateways=2, customers=True)
    s.start_gateway()
    runs = s.run_meters()
    s.stop_gateway()
    assert all(r.returncode == 0 for r in runs), [r.output for r in runs]
    s.seal_all()
    released = s.release()
    ok, line = s.cross_check(released)
    assert ok, line  # the values really went through the system
    s.close()

    secrets_values = set()
    for i in range(METERS):
        register = 0
        for j in range(INTERVALS):
            register += energy(i, j)
            secrets_values |= {energy(i, j), register}

    needles = {enc: v for v in secrets_values for enc in encodings(v)}
    # Every file every party wrote: both gateways, both key holders, the MDMS
    # (its database holds the customers' sealed copies), and their logs.
    written = [p for party in s.parties() for p in party.home.rglob("*") if p.is_file()]
    written += list(s.logs.iterdir())
    assert {"gateway.db", "authority.db", "mdms.db"} <= {p.name for p in written}
    for p in written:
        data = p.read_bytes()
        for needle, v in needles.items():
            assert needle not in data, f"reading value {v} found in {p} as {needle!r}"

    for db in [p for p in written if p.suffix == ".db"]:
        con = sqlite3.connect(db)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            for row in con.execute(f"SELECT * FROM {table}"):
                for cell in row:
                    assert cell not in secrets_values, f"{db.name}:{table} holds {cell}"
                    if isinstance(cell, str):
                        assert not any(str(v) in cell for v in secrets_values), (table, cell)
        con.close()
