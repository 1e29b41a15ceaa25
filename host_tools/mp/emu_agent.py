# Runs inside the MicroPython Unix port for the board emulator
# (host_tools/boardsim.py): executes the code that the raw REPL received,
# with the board's folder as its whole filesystem, and reports output and
# errors between markers. Paths are confined to the folder: "/lib/x" and
# "lib/x" both mean <folder>/lib/x, and ".." cannot climb out.
import io
import os as _os
import sys

ROOT = _os.getcwd()
END_OUT = "\x00\x1bGV-OUT\x1b\x00"
END_ERR = "\x00\x1bGV-ERR\x1b\x00"
RESET = "\x00\x1bGV-RESET\x1b\x00"


def _path(p):
    if not isinstance(p, str):
        return p
    parts = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not parts:
                raise OSError(2)
            parts.pop()
        else:
            parts.append(seg)
    return ROOT + "/" + "/".join(parts) if parts else ROOT


class _OS:
    sep = "/"

    def __getattr__(self, name):
        return getattr(_os, name)

    def listdir(self, p="."):
        return _os.listdir(_path(p))

    def ilistdir(self, p="."):
        return _os.ilistdir(_path(p))

    def stat(self, p):
        return _os.stat(_path(p))

    def statvfs(self, p="/"):
        return _os.statvfs(_path(p))

    def mkdir(self, p):
        return _os.mkdir(_path(p))

    def rmdir(self, p):
        return _os.rmdir(_path(p))

    def remove(self, p):
        return _os.remove(_path(p))

    def rename(self, a, b):
        return _os.rename(_path(a), _path(b))

    def getcwd(self):
        return "/"

    def chdir(self, p):
        if _path(p) != ROOT:
            raise OSError(1)

    def uname(self):
        return ("unix", "gridveil-emu", "1.29", "emulated board", "GridVeil board emulator")


class _Machine:
    def reset(self):
        sys.stdout.write(RESET)
        sys.exit(0)


def _open(p, *a, **k):
    return open(_path(p), *a, **k)


sys.modules["os"] = _OS()
sys.modules["uos"] = sys.modules["os"]
sys.modules["machine"] = _Machine()

g = {"__name__": "__main__", "open": _open}
stdin = sys.stdin.buffer
while True:
    line = stdin.readline()
    if not line:
        break
    n = int(line)
    code = b""
    while len(code) < n:
        chunk = stdin.read(n - len(code))
        if not chunk:
            break
        code += chunk
    err = ""
    try:
        exec(code.decode(), g)
    except SystemExit:
        raise
    except BaseException as e:  # report like a board would, keep serving
        buf = io.StringIO()
        sys.print_exception(e, buf)
        err = buf.getvalue()
    sys.stdout.write(END_OUT)
    sys.stdout.write(err)
    sys.stdout.write(END_ERR)
