"""A party's home as one archive, taken while the party runs, and put back.

`write_archive` snapshots the party's SQLite database with SQLite's online
backup (page by page; the service goes on writing between the steps) and
packs it, every other file of the home (keys stay encrypted as they are on
disk) and a manifest into one owner-only tar.gz, written atomically.
`unpack` puts an archive back into an empty home, or moves the old one
aside first. What going back in time means for each party, and what it
must then refuse or redo, is the party's own business (gateway/backup.py,
authority/backup.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path

from .files import ConfigError

MANIFEST = "backup.json"
FORMAT = 1


class BackupError(ConfigError):
    pass


def snapshot(con: sqlite3.Connection, to: Path) -> None:
    """A consistent copy of an open SQLite database (kept if it exists:
    the first copy is the one made before anything changed)."""
    to = Path(to)
    if to.exists():
        return
    tmp = to.with_name(to.name + ".partial")
    dst = sqlite3.connect(tmp)
    try:
        con.backup(dst)
    finally:
        dst.close()
    os.replace(tmp, to)


def write_archive(home: Path, db: Path, out: Path, manifest: dict, left_out=(),
                  read_snapshot=None) -> dict:
    """Archive `home` with a consistent snapshot of `db` in it. The
    manifest gets the format, the time and what `read_snapshot(connection)`
    returns, read from the snapshot itself (not from the live database,
    which has moved on)."""
    home, db, out = Path(home), Path(db), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    skip = {db.name, db.name + "-wal", db.name + "-shm", *left_out}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".backup-") as tmp:
        snap = Path(tmp) / db.name
        made_at = time.time()
        try:
            src = sqlite3.connect(db, timeout=30)
            dst = sqlite3.connect(snap)
            try:
                src.backup(dst, pages=1024)
                extra = read_snapshot(dst) if read_snapshot else {}
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as e:
            raise BackupError(f"cannot read {db} for the backup: {e}") from None
        manifest = {"format": FORMAT, **manifest, "made_at": made_at, **extra}
        partial = Path(tmp) / "archive.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                data = json.dumps(manifest, indent=1).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(data), 0o600, int(made_at)
                tar.addfile(info, io.BytesIO(data))
                tar.add(snap, db.name)
                for p in sorted(home.rglob("*")):
                    rel = p.relative_to(home)
                    if p.is_file() and not p.is_symlink() and str(rel) not in skip:
                        tar.add(p, str(rel))
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
    return manifest


def read_manifest(archive: Path, party: str) -> dict:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            f = tar.extractfile(MANIFEST)
            manifest = json.loads(f.read()) if f else None
    except (OSError, tarfile.TarError, KeyError, ValueError) as e:
        raise BackupError(f"{archive} is not a {party} backup: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("party") != party:
        raise BackupError(f"{archive} is not a {party} backup (its manifest names"
                          f" {manifest.get('party') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is a backup of format {manifest.get('format')}; this"
                          f" release reads format {FORMAT}")
    return manifest


def unpack(archive: Path, home: Path, party: str, replace: bool = False) -> dict:
    """Put the archive's files into `home`: empty or missing, or with
    `replace`, moved aside (kept as <home>.replaced-<time>). The party must
    not be running."""
    manifest = read_manifest(archive, party)
    home = Path(home)
    if home.exists() and any(home.iterdir()):
        if not replace:
            raise BackupError(f"{home} is not empty: stop the {party}, then restore with"
                              " --replace (the old home is kept beside it)")
        home.rename(home.with_name(f"{home.name}.replaced-{int(time.time())}"))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".restore-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")  # no links out, no absolute paths
        except (OSError, tarfile.TarError) as e:
            raise BackupError(f"cannot unpack {archive}: {e}") from None
        os.remove(Path(tmp) / MANIFEST)
        for p in Path(tmp).iterdir():
            shutil.move(str(p), home / p.name)
    return manifest
