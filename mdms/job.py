"""The release job: find the guardian's decisions, release what they
allow, apply the retention. Never inside a web request.

Any number of MDMS processes may run it (`gridveil mdms release --every S`,
or `mdms serve` with release_every_s in mdms.json); a lease in the
database lets one run at a time, renewed as it goes, and taken over by
another process when its holder stops renewing (crashed, killed, cut off).
What a run leaves half done, the next one resumes: results are stored page
by page behind per-neighbourhood cursors, and the key holders answer a
request they already granted with the same values.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from authority.client import Authority
from common.files import ConfigError

from . import releases
from .store import DbError, MdmsStore

log = logging.getLogger("gridveil.mdms.job")
LEASE = "release-job"
LEASE_S = 300.0  # a run renews it before every page; a dead holder's lapses after this


class LeaseLost(Exception):
    """Another MDMS process took the release job over."""


class ReleaseJob:
    def __init__(self, store: MdmsStore, authority: Authority, period=None,
                 retention_days: int | None = None):
        self.store = store
        self.authority = authority
        self.period = period
        self.retention_days = retention_days
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()

    def keep(self) -> None:
        """Renew the lease; LeaseLost if another process has it now."""
        if not self.store.take_lease(LEASE, self.owner, LEASE_S):
            raise LeaseLost("another MDMS process runs the release job now")

    def run_once(self) -> releases.Released | None:
        """One pass, if this process gets the lease; None if another has it."""
        if not self.store.take_lease(LEASE, self.owner, LEASE_S):
            return None
        try:
            out = releases.release_all(self.store, self.authority, self.period, keep=self.keep)
            if self.retention_days:
                self.retain()
            return out
        finally:
            self.store.drop_lease(LEASE, self.owner)

    def retain(self) -> list[str]:
        """Drop the months wholly older than the retention, once everything
        in them was released and billed (never data still to be used)."""
        keep_from = int(time.time()) // releases.DAY - self.retention_days
        settled = self.store.bill_periods_done()
        cutoff = min(keep_from, settled if settled is not None else 0)
        gone = self.store.drop_before(cutoff)
        if gone:
            log.info("retention (%d days): dropped %s", self.retention_days, ", ".join(gone))
        return gone

    def wake(self) -> None:
        self._wake.set()

    def serve(self, every_s: float, stop: threading.Event) -> None:
        """Run every `every_s` seconds (sooner when woken) until `stop`."""
        while not stop.is_set():
            try:
                out = self.run_once()
                if out and (out.aggregates or out.bills or out.refusals):
                    log.info("release job: %d aggregates, %d bills released, %d refused",
                             len(out.aggregates), len(out.bills), len(out.refusals))
            except LeaseLost as e:
                log.warning("release job stopped: %s", e)
            except (ConfigError, DbError) as e:
                log.warning("release job: %s; trying again in %.0f s", str(e)[:300], every_s)
            self._wake.wait(every_s)
            self._wake.clear()


def wait_for_lease(job: ReleaseJob, timeout_s: float = 120) -> releases.Released:
    """One pass for the command line: waits while another process runs one."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = job.run_once()
        if out is not None:
            return out
        if time.monotonic() > deadline:
            raise ConfigError(f"another MDMS process has run the release job for over"
                              f" {timeout_s:.0f} s; try again later")
        time.sleep(1)
