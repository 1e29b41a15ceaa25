"""Throw-away database servers for the tests and `make bench-scale`: a
PostgreSQL server or a 3-node Citus cluster from Debian's `postgresql`
binaries, made with initdb in a temporary directory, listening only on a
Unix socket or loopback, stopped and deleted at the end. As root the
servers run as the `postgres` user (initdb refuses root). Not for
production: fsync is off (docs/deploy.md says how to run the real one)."""

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CitusCluster:
    """A throw-away 3-node Citus cluster (a coordinator and two workers) on
    loopback, like ../shared/tools/citus/selftest.sh starts one: Debian's
    PostgreSQL 15 with the citus extension preloaded. `new_database` makes
    a database on every node with the extension and the workers added
    (the same one for every test, emptied in between)."""

    NODES = ("coord", "worker1", "worker2")

    def __init__(self, shards: int = 4):
        if not glob.glob("/usr/lib/postgresql/*/lib/citus.so"):
            raise PostgresUnavailable("Citus is not installed (.ci/run installs it from"
                                      " ../shared/tools/citus; docs/deploy.md says how)")
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="gvcitus-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir.chmod(0o755)
        self.ports = [_free_port() for _ in self.NODES]
        self.started: list[Path] = []
        self._db: str | None = None
        try:
            for name, port in zip(self.NODES, self.ports, strict=True):
                data = self.dir / name
                self._run([initdb, "-D", str(data), "-A", "trust", "-U", "gridveil", "-E", "UTF8",
                           "--no-sync"])
                opts = (f"-c shared_preload_libraries=citus -c port={port}"
                        f" -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
                        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                        " -c max_connections=200 -c shared_buffers=64MB"
                        f" -c citus.shard_count={shards}")  # tests: 4, quick to make, spread
                self._run([self.pg_ctl, "-D", str(data), "-o", opts, "-l",
                           str(self.dir / f"{name}.log"), "-w", "start"])
                self.started.append(data)
        except BaseException:
            self.stop()
            raise

    _run = Cluster._run

    def url(self, db: str = "postgres", node: int = 0) -> str:
        return f"postgresql://gridveil@127.0.0.1:{self.ports[node]}/{db}"

    def new_database(self) -> str:
        """An empty database: made once (a Citus database takes seconds: one
        on each node, the extension, the workers added), then emptied for
        each test that asks (every table truncated, identities restarted)."""
        import psycopg

        if self._db is not None:
            with psycopg.connect(self._db, autocommit=True) as con:
                tables = [r[0] for r in con.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
                if tables:
                    con.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            return self._db
        name = "gv_" + uuid.uuid4().hex[:12]
        for node in range(len(self.NODES)):
            with psycopg.connect(self.url(node=node), autocommit=True) as con:
                con.execute(f"CREATE DATABASE {name}")
            with psycopg.connect(self.url(name, node), autocommit=True) as con:
                con.execute("CREATE EXTENSION citus")
        with psycopg.connect(self.url(name), autocommit=True) as con:
            con.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.ports[0],))
            for port in self.ports[1:]:
                con.execute("SELECT citus_add_node('127.0.0.1', %s)", (port,))
        self._db = self.url(name)
        return self._db

    def stop(self) -> None:
        try:
            for data in self.started:
                subprocess.run(self.as_user + [self.pg_ctl, "-D", str(data), "-m", "immediate",
                                               "stop"], capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
