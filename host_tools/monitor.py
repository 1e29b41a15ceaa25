"""`gridveil monitor`: a serial console that survives the board resetting or
the cable being pulled: it reopens the port and carries on."""

from __future__ import annotations

import sys
import time

import serial


def monitor(port: str, baud: int = 115200, duration: float | None = None, out=None,
            retry_s: float = 1.0) -> None:
    write = out or (lambda b: (sys.stdout.buffer.write(b), sys.stdout.flush()))
    end = None if duration is None else time.monotonic() + duration
    connected = None
    while end is None or time.monotonic() < end:
        try:
            with serial.Serial(port, baud, timeout=0.2) as s:
                sys.stderr.write(f"monitor: {'re' if connected is False else ''}connected to"
                                 f" {port}\n")
                connected = True
                while end is None or time.monotonic() < end:
                    data = s.read(4096)
                    if data:
                        write(data)
        except (serial.SerialException, OSError) as e:
            if connected is not False:  # say it once per outage
                sys.stderr.write(f"monitor: {port} unavailable ({e}); retrying every"
                                 f" {retry_s:g} s\n")
            connected = False
            time.sleep(retry_s)
