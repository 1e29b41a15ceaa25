"""The firmware's DSMR P1 reader (in MicroPython) against the independent
`dsmr-parser` package, on the same telegrams, good and corrupted."""

from __future__ import annotations

import random
import subprocess
from decimal import Decimal
from pathlib import Path

from dsmr_parser import telegram_specifications
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser

from host_tools import fleet

HERE = Path(__file__).parent


def crc16_reference(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def make_telegram(rng: random.Random) -> str:
    regs = [f"{rng.randrange(0, 999999)}.{rng.randrange(0, 1000):03d}" for _ in range(4)]
    body = (f"/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(260101{rng.randrange(10, 23)}0000W)\r\n"
            f"0-0:96.1.1(4B384547303034303436333935353037)\r\n"
            f"1-0:1.8.1({float(regs[0]):010.3f}*kWh)\r\n1-0:1.8.2({float(regs[1]):010.3f}*kWh)\r\n"
            f"1-0:2.8.1({float(regs[2]):010.3f}*kWh)\r\n1-0:2.8.2({float(regs[3]):010.3f}*kWh)\r\n"
            f"0-0:96.14.0(0001)\r\n1-0:1.7.0({rng.randrange(0, 99)}.{rng.randrange(0, 999):03d}*kW)\r\n"
            f"1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00004)\r\n!")
    return body + f"{crc16_reference(body.encode()):04X}\r\n"


def test_p1_reader_agrees_with_dsmr_parser(tmp_path):
    rng = random.Random(7)
    telegrams = []
    for i in range(30):
        t = make_telegram(rng)
        if i % 3 == 1:  # corrupt one byte inside the body
            pos = rng.randrange(1, t.index("!"))
            t = t[:pos] + chr(ord(t[pos]) ^ 0x04) + t[pos + 1:]
        elif i % 3 == 2 and i % 2:  # corrupt the CRC itself
            t = t[:-4] + ("0000" if not t.endswith("0000\r\n") else "FFFF") + "\r\n"
        telegrams.append(t)
    paths = []
    for i, t in enumerate(telegrams):
        p = tmp_path / f"t{i:02d}.txt"
        p.write_bytes(t.encode())
        paths.append(str(p))
    out = subprocess.run([fleet.micropython(), str(HERE / "firmware" / "p1_probe.py"), *paths],
                         env=fleet.mp_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ours = {line.split()[1]: line.split() for line in out.stdout.splitlines()}
    parser = TelegramParser(telegram_specifications.V5)
    good = bad = 0
    for path, t in zip(paths, telegrams, strict=True):
        try:
            ref = parser.parse(t, throw_ex=True)
        except (InvalidChecksumError, ParseError):
            assert ours[path][0] == "BAD", (path, ours[path])
            bad += 1
            continue
        assert ours[path][0] == "OK", (path, ours[path])
        expected = [ref.ELECTRICITY_USED_TARIFF_1.value, ref.ELECTRICITY_USED_TARIFF_2.value,
                    ref.ELECTRICITY_DELIVERED_TARIFF_1.value, ref.ELECTRICITY_DELIVERED_TARIFF_2.value]
        assert [int(x) for x in ours[path][2:]] == [int(Decimal(v) * 1000) for v in expected]
        good += 1
    assert good >= 15 and bad >= 10
