"""Log lines that hostile traffic cannot multiply: the first event of each
kind in a window is logged as it happens, the rest are counted and
summed up in one line when the window closes. A flood of bad datagrams
costs a few lines a minute, not one per datagram (which filled disks at
~250 bytes a datagram)."""

from __future__ import annotations

import logging
import time
from collections import Counter


class RateLog:
    def __init__(self, logger: logging.Logger, window_s: float = 60.0, max_kinds: int = 64):
        self.log = logger
        self.window_s = window_s
        self.max_kinds = max_kinds  # kinds are ours (reason names), but bound them anyway
        self._opened: dict[str, float] = {}
        self._suppressed: Counter = Counter()

    def warning(self, kind: str, msg: str, *args) -> None:
        now = time.monotonic()
        opened = self._opened.get(kind)
        if opened is not None and now - opened < self.window_s:
            self._suppressed[kind] += 1
            return
        self._summarise(kind)
        if kind not in self._opened and len(self._opened) >= self.max_kinds:
            kind = "other"
        self._opened[kind] = now
        self.log.warning(msg, *args)

    def _summarise(self, kind: str) -> None:
        n = self._suppressed.pop(kind, 0)
        if n:
            self.log.warning("... and %d more %s in the last %d s", n, kind.replace("_", " "),
                             self.window_s)

    def flush(self) -> None:
        """Close windows that are over; called every few seconds."""
        now = time.monotonic()
        for kind, opened in list(self._opened.items()):
            if now - opened >= self.window_s:
                self._summarise(kind)
                del self._opened[kind]
