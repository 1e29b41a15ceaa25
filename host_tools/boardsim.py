"""An emulated MicroPython board on a pseudo-terminal, for testing
`gridveil deploy` and `gridveil monitor` with the real mpremote.

The board's flash is a folder. On power-up it runs `main.py` from there in
the MicroPython Unix port (with `lib/` on its path), its console on the
pty. Ctrl-C stops it and gives the friendly REPL; Ctrl-A enters the raw
REPL, including the raw-paste mode that mpremote uses; code runs in a
MicroPython agent (host_tools/mp/emu_agent.py) confined to the folder;
`machine.reset()` power-cycles the board.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import tty
from pathlib import Path

from .fleet import HEAP, micropython

MP_DIR = Path(__file__).resolve().parent / "mp"
BANNER = b"MicroPython v1.29 on gridveil-emu; GridVeil board emulator\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
END_OUT = b"\x00\x1bGV-OUT\x1b\x00"
END_ERR = b"\x00\x1bGV-ERR\x1b\x00"
RESET = b"\x00\x1bGV-RESET\x1b\x00"
WINDOW = 128  # raw-paste flow-control window


class BoardEmulator:
    def __init__(self, fs_dir: Path, heap: str = HEAP, link: Path | None = None):
        self.fs = Path(fs_dir).resolve()
        self.fs.mkdir(parents=True, exist_ok=True)
        self.heap = heap
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.link = link
        if link is not None:
            tmp = Path(str(link) + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.port)
            os.replace(tmp, link)
        self.mode = "off"
        self.buf = b""
        self.paste = False
        self.paste_count = 0
        self.agent: subprocess.Popen | None = None
        self.firmware: subprocess.Popen | None = None
        self.boots = 0
        self._lock = threading.RLock()
        self._stop = False
        self._thread = threading.Thread(target=self._input_loop, daemon=True)

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> BoardEmulator:
        self.power_on()
        self._thread.start()
        return self

    def close(self) -> None:
        """Power off and unplug: the pty goes away, as a USB cable would."""
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._kill_firmware()
        self._kill_agent()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def power_on(self) -> None:
        with self._lock:
            self._kill_agent()
            self._kill_firmware()
            self.boots += 1
            self._write(BANNER)
            if (self.fs / "main.py").exists():
                self._start_firmware()
            else:
                self._friendly()

    # --- console -----------------------------------------------------------
    def _write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except OSError:
            pass

    def _friendly(self) -> None:
        self.mode = "friendly"
        self._write(b">>> ")

    def _start_firmware(self) -> None:
        env = dict(os.environ, MICROPYPATH=f"{self.fs}/lib:{self.fs}:.frozen")
        self.firmware = subprocess.Popen(
            [micropython(), "-X", f"heapsize={self.heap}", "main.py"], cwd=self.fs, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.mode = "running"
        threading.Thread(target=self._forward_firmware, args=(self.firmware,), daemon=True).start()

    def _forward_firmware(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stdout.readline, b""):
            self._write(line.replace(b"\n", b"\r\n"))
        proc.wait()
        with self._lock:
            if self.firmware is proc and self.mode == "running":
                self.firmware = None
                self._friendly()

    def _kill_firmware(self) -> None:
        if self.firmware is not None:
            self.firmware.kill()
            self.firmware.wait()
            self.firmware = None

    # --- raw REPL ----------------------------------------------------------
    def _start_agent(self) -> None:
        env = dict(os.environ, MICROPYPATH=f"{self.fs}/lib:{self.fs}:.frozen")
        self.agent = subprocess.Popen([micropython(), "-X", "heapsize=2M",
                                       str(MP_DIR / "emu_agent.py")], cwd=self.fs, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)

    def _kill_agent(self) -> None:
        if self.agent is not None:
            self.agent.kill()
            self.agent.wait()
            self.agent = None

    def _raw(self, banner: bool = True) -> None:
        self.mode = "raw"
        self.buf = b""
        self.paste = False
        if self.agent is None:
            self._start_agent()
        self._write((RAW_BANNER if banner else b"") + b">")

    def _exec(self, code: bytes) -> None:
        """Run code in the agent; stream output, then \\x04 err \\x04 >."""
        if self.agent is None:
            self._start_agent()
        a = self.agent
        a.stdin.write(b"%d\n" % len(code) + code)
        a.stdin.flush()
        data = b""
        while END_ERR not in data and RESET not in data:
            chunk = a.stdout.read1(4096)
            if not chunk:
                break
            data += chunk
        if RESET in data:
            self._write(data.split(RESET)[0] + b"\x04\x04")
            threading.Timer(0.2, self.power_on).start()  # like a real reset, a moment later
            return
        if END_OUT not in data:
            self._kill_agent()
            self._write(b"\x04MicroPython agent died\r\n\x04>")
            return
        out, rest = data.split(END_OUT, 1)
        err = rest.split(END_ERR, 1)[0]
        self._write(out + b"\x04" + err + b"\x04>")

    def _soft_reset(self) -> None:
        self._kill_agent()
        self._write(b"soft reboot\r\n")
        self._raw()

    def _raw_byte(self, b: int) -> None:
        if self.paste:
            if b == 0x04:
                self._write(b"\x04")
                self.paste = False
                code, self.buf = self.buf, b""
                self._exec(code)
                return
            self.buf += bytes([b])
            self.paste_count += 1
            if self.paste_count % WINDOW == 0:
                self._write(b"\x01")
            return
        if b == 0x01:
            self._raw()
        elif b == 0x02:
            self._kill_agent()
            self._write(b"\r\n" + BANNER)
            self._friendly()
        elif b == 0x03:
            self.buf = b""
        elif b == 0x04:
            if not self.buf:
                self._soft_reset()
            else:
                code, self.buf = self.buf, b""
                self._write(b"OK")
                self._exec(code)
        else:
            self.buf += bytes([b])
            if self.buf == b"\x05A\x01":
                self.buf = b""
                self.paste = True
                self.paste_count = 0
                self._write(b"R\x01" + WINDOW.to_bytes(2, "little"))

    def _input_byte(self, b: int) -> None:
        if self.mode == "raw":
            self._raw_byte(b)
        elif b == 0x03:  # Ctrl-C: stop the program, friendly REPL
            if self.mode == "running":
                self._kill_firmware()
                self._write(b"\r\nKeyboardInterrupt\r\n")
            self._friendly()
        elif b == 0x01:
            self._kill_firmware()
            self._raw()
        elif b == 0x04 and self.mode == "friendly":
            self._write(b"MPY: soft reboot\r\n")
            self.power_on()
        elif self.mode == "friendly" and b == 0x0D:
            self._write(b"\r\n>>> ")

    def _input_loop(self) -> None:
        while not self._stop:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            with self._lock:
                for b in data:
                    self._input_byte(b)
