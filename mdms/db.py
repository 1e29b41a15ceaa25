"""Connections to the MDMS database, SQLite (WAL, the embedded default),
PostgreSQL, or PostgreSQL with the Citus extension (a cluster, for a
utility with millions of meters), behind the same few calls.

SQL is written once with `?` placeholders and `ON CONFLICT`, which all
three understand. Connections come from a small pool: the web app's
threads, the intake and the release job each hold one only for the
statement or the transaction they run, so a slow page never queues the
gateways' pushes behind it. Where the engines differ (column types, how a
table is placed on a cluster, time partitions) mdms/schema.py says so.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from common.files import ConfigError

POOL = 8  # connections per process: the web app's threads, the intake, the release job


class DbError(Exception):
    """The database cannot be reached or written; the message says why."""


class IntegrityError(DbError):
    """A unique key was already taken."""


def describe(url: str) -> str:
    """The URL without a password, for logs and messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


class Database:
    def __init__(self, url: str, pool: int = POOL):
        self.url = url
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = Path(url[len("sqlite:///"):])
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DbError(f"cannot open the MDMS database {self.path}: {e}") from None
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise ConfigError("PostgreSQL needs psycopg 3 (pip install 'psycopg[binary]')") \
                    from None
        else:
            raise ConfigError(f"database must be sqlite:///PATH or postgresql://..., not"
                              f" {describe(url)!r}")
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool)
        self._pinned = threading.local()  # the connection of a transaction in progress
        self.citus = self.dialect == "postgresql" and bool(self.scalar(
            "SELECT COUNT(*) FROM pg_extension WHERE extname = 'citus'"))

    # --- the pool -------------------------------------------------------------
    def _connect(self):
        if self.dialect == "sqlite":
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                return conn
            except (sqlite3.Error, OSError) as e:
                raise DbError(f"cannot open the MDMS database {self.path}: {e}") from None
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except Exception as e:  # psycopg.OperationalError and friends
            raise DbError(f"cannot connect to {describe(self.url)}: {str(e).strip()}") from None

    @contextmanager
    def _conn(self):
        pinned = getattr(self._pinned, "conn", None)
        if pinned is not None:
            yield pinned
            return
        if not self._slots.acquire(timeout=60):
            raise DbError("no database connection free for 60 s (the pool is exhausted)")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            yield conn
        finally:
            if conn is not None and self._healthy(conn):
                self._idle.put(conn)
            elif conn is not None:
                self._close(conn)
            self._slots.release()

    def _healthy(self, conn) -> bool:
        if self.dialect == "sqlite":
            return not conn.in_transaction
        from psycopg.pq import TransactionStatus

        return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE

    @staticmethod
    def _close(conn) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped
            pass

    def close(self) -> None:
        while True:
            try:
                self._close(self._idle.get_nowait())
            except queue.Empty:
                return

    # --- statements -----------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _errors(self, e: Exception):
        """Our exception for an engine's, or None if it is not a database error."""
        if isinstance(e, sqlite3.IntegrityError):
            return IntegrityError(str(e))
        if isinstance(e, sqlite3.Error):
            return DbError(f"database error: {e}")
        if self.dialect == "postgresql":
            import psycopg

            if isinstance(e, psycopg.errors.UniqueViolation):
                return IntegrityError(str(e).strip())
            if isinstance(e, psycopg.Error):
                return DbError(f"database error: {str(e).strip()}")
        return None

    def _run(self, work):
        with self._conn() as conn:
            try:
                return work(conn)
            except Exception as e:
                mine = self._errors(e)
                if mine is None:
                    raise
                raise mine from None

    def execute(self, sql: str, args=()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return self._run(lambda c: c.execute(self._sql(sql), tuple(args)).rowcount)

    def many(self, sql: str, rows) -> None:
        """One statement for each row of arguments, in one round trip where
        the engine can (psycopg pipelines executemany)."""
        rows = [tuple(r) for r in rows]
        if not rows:
            return

        def work(conn):
            if self.dialect == "sqlite":
                conn.executemany(sql, rows)
                return
            multi = _multi_row(sql)
            with conn.cursor() as cur:
                if multi is None:
                    cur.executemany(self._sql(sql), rows)
                    return
                head, group, tail = multi
                # One statement for up to MULTI_ROWS rows: a cluster routes
                # them shard by shard, not a planned statement per row. The
                # sizes are powers of two, so that few distinct statements
                # exist, and none is prepared on the server (each would keep
                # a plan for thousands of parameters in every connection).
                i = 0
                while i < len(rows):
                    size = min(MULTI_ROWS, 1 << (len(rows) - i).bit_length() - 1)
                    chunk = rows[i:i + size]
                    cur.execute(self._sql(head + ", ".join([group] * size) + tail),
                                [v for r in chunk for v in r], prepare=False)
                    i += size
        self._run(work)

    def rows(self, sql: str, args=()) -> list[dict]:
        def work(conn):
            cur = conn.execute(self._sql(sql), tuple(args))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, (bytes(v) if isinstance(v, memoryview) else v for v in r),
                             strict=True)) for r in cur.fetchall()]
        return self._run(work)

    def one(self, sql: str, args=()):
        row = self._run(lambda c: c.execute(self._sql(sql), tuple(args)).fetchone())
        return None if row is None else tuple(bytes(v) if isinstance(v, memoryview) else v
                                              for v in row)

    def scalar(self, sql: str, args=()):
        row = self.one(sql, args)
        return None if row is None else row[0]

    @contextmanager
    def transaction(self):
        """All or nothing on one connection, committed before it returns;
        statements of this thread inside it run on that connection."""
        if getattr(self._pinned, "conn", None) is not None:
            yield self
            return
        with self._conn() as conn:
            self._pinned.conn = conn
            try:
                self._run(lambda c: c.execute(
                    "BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN"))
                try:
                    yield self
                    self._run(lambda c: c.execute("COMMIT"))
                except BaseException:
                    try:
                        conn.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001 - the engine may have rolled back already
                        pass
                    raise
            finally:
                self._pinned.conn = None


MULTI_ROWS = 1024


def _multi_row(sql: str) -> tuple[str, str, str] | None:
    """(head, "(?, ...)", tail) of an INSERT that may take many rows in one
    VALUES list: plain, or ON CONFLICT DO NOTHING. An upsert that updates
    stays a statement per row (two rows of one key in one statement fail)."""
    at = sql.find(" VALUES (")
    if not sql.startswith("INSERT INTO ") or at < 0 or "DO UPDATE" in sql:
        return None
    end = sql.index(")", at) + 1
    return sql[:at + 8], sql[at + 8:end], sql[end:]
