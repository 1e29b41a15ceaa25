"""A gateway's backup and restore, online: `gridveil gateway backup` while
the gateway runs, `gridveil gateway restore` onto a stopped or new host.

A backup is one tar.gz of the gateway's home: a consistent snapshot of its
database (SQLite's online backup, page by page, while the gateway goes on
writing), its settings and its keys, which stay encrypted under the
gateway's passphrase as they are on its disk; the archive needs the same
care as the disk (docs/deploy.md). Logs are left out.

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

import io
import json
import math
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from common.files import ConfigError

from .config import GatewayHome
from .keystore import RESTORE_WAIT_S
from .store import Store, StoreError

MANIFEST = "backup.json"
FORMAT = 1
LEFT_OUT = {"gateway.db", "gateway.db-wal", "gateway.db-shm", "gateway.log"}
CATCH_UP_FOR_S = 30 * 86400  # how long after a restore meters' ratchets are followed further
DAY = 86400


def backup(home: Path, out: Path) -> dict:
    """Write the archive to `out` (atomically, owner-only) and mark what it
    holds as kept. Returns its manifest."""
    h = GatewayHome(home)
    if not h.db.exists():
        raise ConfigError(f"no gateway database in {h.path}: nothing to back up")
    gateway_id = h.load_config().gateway_id
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = Store(h.db)
    try:
        store.freeze_kept()  # before the snapshot: what follows it is kept by the meters
    finally:
        store.close()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".backup-") as tmp:
        snap = Path(tmp) / "gateway.db"
        try:
            src = sqlite3.connect(h.db, timeout=30)
            dst = sqlite3.connect(snap)
            try:
                src.backup(dst, pages=1024)  # the gateway writes between the steps
                seqs = dict(dst.execute("SELECT meter_id, last_seq FROM meters").fetchall())
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read {h.db} for the backup: {e}") from None
        manifest = {"format": FORMAT, "party": "gateway", "gateway_id": gateway_id,
                    "made_at": time.time(), "meters": len(seqs),
                    "readings_through": seqs}
        partial = Path(tmp) / "backup.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
                tar.add(snap, "gateway.db")
                for p in sorted(h.path.rglob("*")):
                    rel = p.relative_to(h.path)
                    if p.is_file() and str(rel) not in LEFT_OUT and not p.is_symlink():
                        tar.add(p, str(rel))
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
    # Only now that the archive is on disk may the meters forget these.
    store = Store(h.db)
    try:
        store.mark_kept(seqs)
    finally:
        store.close()
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def read_manifest(archive: Path) -> dict:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            f = tar.extractfile(MANIFEST)
            manifest = json.loads(f.read()) if f else None
    except (OSError, tarfile.TarError, KeyError, ValueError) as e:
        raise ConfigError(f"{archive} is not a gateway backup: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("party") != "gateway":
        raise ConfigError(f"{archive} is not a gateway backup (no gateway manifest)")
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{archive} is a backup of format {manifest.get('format')}; this"
                          f" release reads format {FORMAT}")
    return manifest


def restore(archive: Path, home: Path, replace: bool = False, wait=time.sleep) -> dict:
    """Restore the archive into `home`, which must be empty or missing (or,
    with replace, is moved aside). The gateway must not be running."""
    manifest = read_manifest(archive)
    home = Path(home)
    if home.exists() and any(home.iterdir()):
        if not replace:
            raise ConfigError(f"{home} is not empty: stop the gateway, then restore with"
                              " --replace (the old home is kept beside it)")
        aside = home.with_name(f"{home.name}.replaced-{int(time.time())}")
        home.rename(aside)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".restore-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (OSError, tarfile.TarError) as e:
            raise ConfigError(f"cannot unpack {archive}: {e}") from None
        os.remove(Path(tmp) / MANIFEST)
        for p in Path(tmp).iterdir():
            shutil.move(str(p), home / p.name)
    now = time.time()
    store = Store(GatewayHome(home).db)
    try:
        with store.transaction():
            # The restored state is exactly the backup: everything in it is kept.
            store.db.execute("UPDATE meters SET kept_seq=last_seq")
            store.set_setting("restored_at", int(now))
            store.set_setting("backup_made_at", int(manifest["made_at"]))
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
