"""A gateway's backup and restore, online: `gridveil gateway backup` while
the gateway runs, `gridveil gateway restore` onto a stopped or new host.

A backup is one tar.gz of the gateway's home (common/backup.py): a
consistent snapshot of its database, its settings and its keys, which stay
encrypted under the gateway's passphrase as they are on its disk; the
archive needs the same care as the disk (docs/deploy.md). Logs are left
out.

Going back to a backup must not break what the live gateway promised:

- No reading it acknowledged is lost. Every acknowledgement tells the
  meter how far the newest backup holds its readings ("kept"), and a meter
  holds acknowledged readings until then (firmware/readingqueue.py). A
  first backup freezes that mark before its snapshot; a snapshot on disk
  moves it to what the snapshot holds. (A gateway never backed up says
  "all of it": its meters forget what it acknowledged, as before.)
  A restored gateway tells each meter (B.2 Response #1) where its readings
  stand, and the meter sends again what came after.
- No (key, nonce) is used twice. Our meters agree fresh keys with the
  gateway in every gateway process (RFC 8613 B.2); the few plain contexts
  keep their own sequence numbers above the clock's line
  (keystore.SEQ_RATE), which a restore cannot take back, so a restore
  waits keystore.RESTORE_WAIT_S before it returns.
- Nothing is counted twice. What the restored gateway seals again reaches
  the MDMS under record ids it already holds, and the MDMS keeps the first
  (mdms/intake.py). Customers' day keys take numbers above any the lost
  state could have handed out (Store.next_day_key_no).
- Meters that stepped their key ratchet since the backup are followed for
  as many days as passed (`catch_up_days`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from common import backup as archive
from common.files import ConfigError

from .config import GatewayHome
from .keystore import RESTORE_WAIT_S
from .store import Store, last_seqs_of

CATCH_UP_FOR_S = 30 * 86400  # how long after a restore meters' ratchets are followed further
DAY = 86400


def backup(home: Path, out: Path) -> dict:
    """Write the archive to `out` and mark what it holds as kept. Returns
    its manifest."""
    h = GatewayHome(home)
    if not h.db.exists():
        raise ConfigError(f"no gateway database in {h.path}: nothing to back up")
    gateway_id = h.load_config().gateway_id
    store = Store(h.db)
    try:
        store.freeze_kept()  # before the snapshot: what follows it is kept by the meters
    finally:
        store.close()

    def through(snapshot) -> dict:
        seqs = last_seqs_of(snapshot)
        return {"meters": len(seqs), "readings_through": seqs}

    manifest = archive.write_archive(h.path, h.db, out, {"party": "gateway",
                                                         "gateway_id": gateway_id},
                                     left_out={h.log.name}, read_snapshot=through)
    # Only now that the archive is on disk may the meters forget these.
    store = Store(h.db)
    try:
        store.mark_kept(manifest["readings_through"])
    finally:
        store.close()
    return manifest


def read_manifest(path: Path) -> dict:
    return archive.read_manifest(path, "gateway")


def restore(path: Path, home: Path, replace: bool = False, wait=time.sleep) -> dict:
    """Restore the archive into `home` (see common/backup.unpack); the
    gateway must not be running."""
    manifest = archive.unpack(path, home, "gateway", replace)
    now = time.time()
    store = Store(GatewayHome(home).db)
    try:
        with store.transaction():
            # The restored state is exactly the backup: everything in it is kept.
            store.keep_all()
            store.set_setting("restored_at", int(now))
            store.set_setting("backup_made_at", int(manifest["made_at"]))
            store.set_setting("last_backup_at", int(manifest["made_at"]))
            store.set_setting("day_key_floor", int(now * 1000))
    finally:
        store.close()
    wait(RESTORE_WAIT_S)  # see keystore.SEQ_RATE
    return manifest


def catch_up_days(store: Store, now: float | None = None) -> int:
    """After a restore, how many ratchet steps a meter may be ahead of the
    secret the backup held (0 when there was no recent restore)."""
    now = time.time() if now is None else now
    restored_at = store.setting_int("restored_at")
    if not restored_at or now > restored_at + CATCH_UP_FOR_S:
        return 0
    made_at = store.setting_int("backup_made_at", restored_at)
    return math.ceil((now - made_at) / DAY) + 1
