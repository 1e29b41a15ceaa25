"""Run a party's process so that it cannot open another party's files: in
its own mount namespace, with every other party's home covered by an
empty, read-only tmpfs. As root this is `unshare -m`; as another user,
`unshare -U -r -m` (a user namespace) does the same where the kernel allows
it. Where neither works the process runs unconfined and `available()`
says so; the isolation test requires it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

# Cover each directory named before "--", then run the rest.
SCRIPT = ('while [ "$1" != "--" ]; do [ -d "$1" ] && { mount -t tmpfs -o ro,size=4k,mode=000 '
          'gridveil-hidden "$1" || exit 97; }; shift; done; shift; exec "$@"')


@functools.lru_cache(maxsize=1)
def _unshare() -> list[str] | None:
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for flags in (["-m"], ["-U", "-r", "-m"]):
        probe = [exe, *flags, "--propagation", "private", "sh", "-c",
                 "mount -t tmpfs -o size=4k none /mnt 2>/dev/null || "
                 "mount -t tmpfs -o size=4k none /tmp"]
        try:
            if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
                return [exe, *flags, "--propagation", "private"]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def available() -> bool:
    return _unshare() is not None


def command(cmd: list[str], hide: list[Path]) -> list[str]:
    """`cmd`, wrapped so that the directories in `hide` are empty for it."""
    base = _unshare()
    if base is None or not hide:
        return list(cmd)
    return [*base, "sh", "-c", SCRIPT, "confine", *[str(Path(h).resolve()) for h in hide], "--",
            *cmd]
