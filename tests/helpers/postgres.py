"""A throw-away PostgreSQL server for the tests: Debian's `postgresql`
binaries, a cluster made with initdb in a temporary directory, listening
only on a Unix socket there, stopped and deleted at the end. As root the
server runs as the `postgres` user (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresUnavailable(Exception):
    pass


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise PostgresUnavailable(f"PostgreSQL's {name} is not installed (Debian: apt-get install"
                                  " postgresql; .ci/run does it)")
    return path


class Cluster:
    def __init__(self):
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="gvpg-"))  # short: socket paths are limited
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root, but there is no `postgres` user to run"
                                          " the server as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir.chmod(0o755)
        self.port = 54000 + os.getpid() % 1000
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "gridveil", "-E", "UTF8",
                   "--no-sync"])
        opts = f"-k {self.dir} -p {self.port} -c listen_addresses='' -c fsync=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"),
                   "-w", "start"])

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise PostgresUnavailable(f"{Path(cmd[0]).name} failed: {r.stderr.strip()[-500:]}")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://gridveil@/{db}?host={self.dir}&port={self.port}"

    def new_database(self) -> str:
        import psycopg

        name = "gv_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
