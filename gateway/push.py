"""The gateway's side of gateway -> MDMS: push the outbox to the MDMS intake
API (POST /v1/intake), oldest first, in signed batches.

Each request body is signed with the gateway's Ed25519 key (header
X-GridVeil-Signature) and names the gateway (X-GridVeil-Gateway); the MDMS
knows each gateway's public key. The MDMS stores every item idempotently
(by record id) and answers 200 only after its commit; only then are the
items deleted here. A crash on either side at any point therefore resends
at most one batch, which the MDMS recognises: nothing is lost or stored
twice. A replayed request is harmless for the same reason.
"""

from __future__ import annotations

import json
import logging
import random
import time

from common import signing
from common.files import ConfigError
from common.http import HttpError, JsonClient

from .store import Store

log = logging.getLogger("gridveil.push")

BATCH_ITEMS = 200
HEALTH_METERS = 5000  # meter statuses per push (about 300 bytes each)
HEALTH_FIELDS = ("meter_id", "neighbourhood", "last_seq", "last_end", "last_seen", "fw_version",
                 "backlog", "accepted", "duplicates", "late", "telemetry")


def next_wait(wait: float, base: float, cap: float, rng=random) -> float:
    """The wait before the next push while the MDMS is away: doubled each
    time up to `cap`, then drawn at random from its upper half, so that a
    thousand gateways cut off together do not come back in step (and hit
    the MDMS in one wave) when it returns."""
    ceiling = min(max(wait, base) * 2, max(cap, base))
    return rng.uniform(ceiling / 2, ceiling)


class PushError(Exception):
    """The MDMS could not be reached or refused the batch; nothing was lost."""


class Pusher:
    def __init__(self, store: Store, key, gateway_id: str, url: str, ca_file=None,
                 timeout: float = 60, batch: int = BATCH_ITEMS, health_every_s: float = 60.0):
        if not url:
            raise ConfigError("this gateway has no MDMS to push to: set mdms_url with"
                              " `gridveil gateway init --mdms-url` (or in gateway.json)")
        self.store = store
        self.key = key
        self.gateway_id = gateway_id
        self.client = JsonClient(url, ca_file or None, timeout=timeout)
        self.batch = batch
        self.health_every_s = health_every_s
        self._health_due = 0.0  # the first push carries it
        self.emptied_at = time.time()  # when the outbox was last pushed empty (/metrics)
        self.pushed = 0  # items the MDMS took, since this process started
        self._acked: dict[str, tuple] = {}  # meter -> the status the MDMS has

    def health(self) -> tuple[dict, dict]:
        """The fleet's health as changes: the meters whose status differs
        from what the MDMS last acknowledged (all of them after a start),
        at most HEALTH_METERS per push; and those statuses, to mark sent."""
        changed = {}
        for m in self.store.meters():
            status = tuple(m[k] for k in HEALTH_FIELDS)
            if self._acked.get(m["meter_id"]) != status:
                changed[m["meter_id"]] = status
                if len(changed) == HEALTH_METERS:
                    break
        return {"at": time.time(),
                "meters": [dict(zip(HEALTH_FIELDS, s, strict=True)) for s in changed.values()],
                "rejects": [[m, r, n] for (m, r), n in sorted(self.store.rejects().items())],
                "counters": self.store.counters()}, changed

    def push_once(self, with_health: bool = True) -> int:
        """Send the oldest batch; returns how many items the MDMS took."""
        rows = self.store.outbox_batch(self.batch)
        if not rows and not with_health:
            return 0
        health, changed = self.health() if with_health else (None, {})
        body = json.dumps({"gateway": self.gateway_id, "items": [item for _, item in rows],
                           "health": health}).encode()
        try:
            self.client.request("POST", "/v1/intake", body, {
                "X-GridVeil-Gateway": self.gateway_id,
                "X-GridVeil-Signature": signing.sign_b64(self.key, body)})
        except (HttpError, ConfigError) as e:
            raise PushError(str(e)) from None
        if rows:
            self.store.outbox_done(rows[-1][0])
        self.pushed += len(rows)
        self._acked.update(changed)
        return len(rows)

    def drain(self, progress=None) -> int:
        """Push until the outbox is empty, the fleet's health with the first
        batch when it is due; returns the items pushed."""
        with_health = time.monotonic() >= self._health_due
        total = self.push_once(with_health=with_health)
        if with_health:
            self._health_due = time.monotonic() + self.health_every_s
        while self.store.outbox_count():
            total += self.push_once(with_health=False)
            if progress:
                progress(total)
        self.emptied_at = time.time()
        return total
