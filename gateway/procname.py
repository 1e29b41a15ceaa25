"""Names the gateway's helper processes as `ps`, `top` and the kernel show
them ("gridveil-pes", "gridveil-pool"), so that an operator can tell them
apart from the event loop's process and a test can find them. Linux only;
elsewhere a no-op."""

from __future__ import annotations

import ctypes
import ctypes.util

PR_SET_NAME = 15  # <linux/prctl.h>; the kernel keeps 15 bytes


def name_process(name: str) -> None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError, TypeError):
        pass  # not Linux, or no libc to ask: the name is only for people
