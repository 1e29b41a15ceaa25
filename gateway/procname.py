"""Names the gateway's helper processes as `ps`, `top` and the kernel show
them ("gridveil-pes", "gridveil-pool"), so that an operator can tell them
apart from the event loop's process and a test can find them. Linux only;
elsewhere a no-op."""

from __future__ import annotations

import ctypes

PR_SET_NAME = 15  # <linux/prctl.h>; the kernel keeps 15 bytes


def name_process(name: str) -> None:
    try:
        # The running program's own symbols, libc's among them: no search
        # for the library (find_library runs ldconfig) at every start.
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError, TypeError):
        pass  # not Linux, or no libc to ask: the name is only for people
