# DSMR P1 telegram reader (Dutch/Belgian smart meters, DSMR 4 and 5).
#
# A telegram runs from "/" to "!" followed by a CRC-16 (polynomial 0xA001,
# reflected, initial value 0) in four hex digits. The P1 port's data line
# is inverted (open collector): invert the UART's RX (UART.INV_RX on the
# ESP32) or add a transistor. Registers used, in kWh with 3 decimals:
#   1-0:1.8.1 / 1-0:1.8.2  energy delivered to the customer, tariff 1 / 2
#   1-0:2.8.1 / 1-0:2.8.2  energy returned by the customer, tariff 1 / 2
# A telegram whose CRC does not match is dropped and counted, never parsed.

REGISTERS = ("1.8.1", "1.8.2", "2.8.1", "2.8.2")
MJ_PER_WH = 3600000
MAX_TELEGRAM = 4096


def crc16(data, crc=0):
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _wh(value):
    # "000123.456*kWh" -> 123456 Wh, without floats
    num, _, unit = value.partition("*")
    if unit != "kWh":
        raise ValueError("unexpected unit %r" % unit)
    whole, _, frac = num.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def parse(telegram):
    """bytes of one telegram -> {register: Wh}; ValueError if the CRC or
    the layout is wrong."""
    bang = telegram.rfind(b"!")
    if not telegram.startswith(b"/") or bang < 0 or len(telegram) < bang + 5:
        raise ValueError("not a complete telegram")
    try:
        expected = int(telegram[bang + 1:bang + 5], 16)
    except ValueError:
        raise ValueError("telegram CRC is not hex")
    if crc16(telegram[:bang + 1]) != expected:
        raise ValueError("telegram CRC mismatch")
    out = {}
    for line in telegram[:bang].split(b"\n"):
        line = line.strip()
        if not line.startswith(b"1-0:") or b"(" not in line:
            continue
        obis, _, rest = line[4:].partition(b"(")
        key = obis.decode()
        if key in REGISTERS:
            out[key] = _wh(rest.rstrip(b")").decode())
    if "1.8.1" not in out:
        raise ValueError("telegram has no 1.8.1 register")
    return out


class P1Reader:
    """Collects telegrams from a UART-like object (read() -> bytes or None)
    and turns the import registers into energy since the previous read."""

    # DSMR 5 sends a telegram (up to about 1 KB) every second, DSMR 4 every
    # 10 s. The board polls at this pace between samples, so the UART's
    # 2 KB receive buffer never overflows and no telegram is cut.
    tick_ms = 250

    def __init__(self, uart):
        self.uart = uart
        self._buf = b""
        self.registers = None
        self._reported = None
        self.good = 0
        self.bad = 0

    def tick(self):
        self.poll()

    def poll(self):
        data = self.uart.read()
        if data:
            self._buf += data
        while True:
            start = self._buf.find(b"/")
            if start < 0:
                self._buf = b""
                return
            bang = self._buf.find(b"!", start)
            if bang < 0 or len(self._buf) < bang + 5:
                self._buf = self._buf[start:]
                if len(self._buf) > MAX_TELEGRAM:
                    self._buf = b""  # garbage without an end: start over
                return
            telegram = self._buf[start:bang + 5]
            self._buf = self._buf[bang + 5:]
            try:
                self.registers = parse(telegram)
                self.good += 1
            except ValueError:
                self.bad += 1
                continue
            if self._reported is None:  # energy counts from the first telegram on
                self._reported = self.imported_wh()

    def rejects_permille(self):
        """Telegrams dropped for a bad CRC, per mille of all received."""
        return self.bad * 1000 // ((self.good + self.bad) or 1)

    def mark(self):
        """The meter's import register (Wh) that the energy handed out so
        far reaches; None before the first telegram."""
        return self._reported

    def resume(self, mark):
        """After a restart: count from the mark saved before it, so the
        first telegram brings the energy of the whole gap."""
        self._reported = mark

    def imported_wh(self):
        r = self.registers
        return None if r is None else r["1.8.1"] + r.get("1.8.2", 0)

    def read(self):
        """Energy in mJ since the previous read (0 until a first telegram)."""
        self.poll()
        now = self.imported_wh()
        if now is None:
            return 0
        if self._reported is None or now < self._reported:
            self._reported = now  # first telegram, or a meter swap: no jump
            return 0
        delta = now - self._reported
        self._reported = now
        return delta * MJ_PER_WH
