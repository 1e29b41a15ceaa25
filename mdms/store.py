"""The MDMS database (SQLite by default, PostgreSQL or a Citus cluster for a
utility with many gateways): what the gateways pushed (signed aggregate
parts, signed bill days, customers' sealed copies, meter registrations and
health), web users, sessions, login throttling, release requests, and what
the key holders released. It holds no plaintext reading and nothing that
decrypts one. Every SQL statement of the MDMS is a named method of
MdmsStore: here (the web app's state), in intakestore.py (what gateways
push) and in releasestore.py (releases, bills, retention). Where each
table lives on a cluster: schema.py.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time

from common import backup as archive
from common import records
from common.files import ConfigError

from . import schema
from .db import Database, DbError, IntegrityError
from .intakestore import IntakeStore
from .releasestore import ReleaseStore

__all__ = ["MdmsStore", "DbError", "IntegrityError"]


class MdmsStore(IntakeStore, ReleaseStore):
    def __init__(self, url: str):
        self.db = Database(url)
        self._partitions: set[str] = set()
        old = self._table_exists("meters") and not self._table_exists("settings")
        made = None if old or not self._table_exists("settings") else \
            self.db.scalar("SELECT value FROM settings WHERE name='schema'")
        if made is not None and int(made) > schema.SCHEMA_VERSION:
            raise ConfigError(f"the MDMS database was made by a newer GridVeil (schema {made};"
                              f" this release knows {schema.SCHEMA_VERSION}): run that release,"
                              " or restore the backup made before the upgrade")
        if old:
            if self.db.dialect == "sqlite":  # a copy first, as it was
                con = sqlite3.connect(self.db.path)
                try:
                    archive.snapshot(con, self.db.path.with_name(
                        f"{self.db.path.name}.before-schema-{schema.SCHEMA_VERSION}"))
                finally:
                    con.close()
            self._before_v2()
        schema.create(self.db)
        if old:
            self._after_v2()
        self.db.execute("INSERT INTO settings VALUES ('schema', ?) ON CONFLICT (name) DO NOTHING",
                        (str(schema.SCHEMA_VERSION),))

    def _table_exists(self, name: str) -> bool:
        if self.db.dialect == "sqlite":
            return self.db.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type='table'"
                                  " AND name=?", (name,)) > 0
        return bool(self.db.scalar("SELECT to_regclass(?) IS NOT NULL", (name,)))

    def _columns(self, table: str) -> list[str]:
        if self.db.dialect == "sqlite":
            return [r["name"] for r in self.db.rows(f"PRAGMA table_info({table})")]
        return [r["column_name"] for r in self.db.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_name=?"
            " ORDER BY ordinal_position", (table,))]

    def _before_v2(self) -> None:
        """A database made before schema 2: columns added since, the
        sparkline's old unbounded table dropped (it held a day), and on
        PostgreSQL the tables that grow with time moved into monthly
        partitions (on SQLite only the one whose key changed)."""
        for table, column in (("gateways", "counters"), ("requests", "reason"),
                              ("meters", "telemetry"), ("meters", "trouble")):
            if column not in self._columns(table):
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
        self.db.execute("DROP TABLE IF EXISTS meter_history")
        moved = schema.PARTITIONED if self.db.dialect == "postgresql" else ("sealed_readings",)
        self._moved = [t for t in moved if self._table_exists(t)]
        for t in self._moved:
            self.db.execute(f"ALTER TABLE {t} RENAME TO {t}_v1")
            if self.db.dialect == "postgresql":
                self.db.execute(f"ALTER INDEX IF EXISTS {t}_pkey RENAME TO {t}_v1_pkey")

    def _after_v2(self) -> None:
        for t in self._moved:
            cols = ", ".join(self._columns(t))
            column, unit = schema.PARTITIONED[t]
            self.ensure_partitions(t, [r["d"] for r in self.db.rows(
                f"SELECT DISTINCT {column} * {unit} / {schema.DAY} AS d FROM {t}_v1")])
            self.db.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {t}_v1")
            self.db.execute(f"DROP TABLE {t}_v1")
        self.db.execute("INSERT INTO gateway_neighbourhoods SELECT DISTINCT neighbourhood,"
                        " gateway_id FROM meters ON CONFLICT DO NOTHING")
        members = set()
        for r in self.db.rows("SELECT p.record FROM aggregate_parts p JOIN released_aggregates r"
                              " ON r.neighbourhood = p.neighbourhood"
                              " AND r.interval_end = p.interval_end"):
            rec = records.parse(r["record"])
            members.update((m, (rec.interval_end - 1) // schema.DAY, rec.neighbourhood)
                           for m in rec.meters)
        self.add_day_members(members)
        first = self.db.scalar("SELECT MIN(day) FROM bill_days")
        if first is not None:
            self.set_anchor_day(first)

    def close(self) -> None:
        self.db.close()

    def secret(self, name: str) -> bytes:
        """A random server-side key, made on first use (e.g. for decoys)."""
        self.db.execute("INSERT INTO secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                        (name, secrets.token_bytes(32)))
        return self.db.scalar("SELECT value FROM secrets WHERE name=?", (name,))

    def db_bytes(self) -> int:
        """The database's size on disk (on a Citus cluster, its coordinator's)."""
        if self.db.dialect == "sqlite":
            return sum(p.stat().st_size for p in (self.db.path, self.db.path.with_name(
                self.db.path.name + "-wal")) if p.exists())
        return int(self.db.scalar("SELECT pg_database_size(current_database())"))

    def counts(self) -> dict[str, int]:
        """How much the MDMS holds of each kind (tests and `mdms status`:
        these count whole tables)."""
        return {t: self.db.scalar(f"SELECT COUNT(*) FROM {t}") for t in (
            "meters", "aggregate_parts", "bill_days", "customer_day_keys", "sealed_readings",
            "released_aggregates", "bills")}

    # --- staff accounts and sessions ------------------------------------------
    def add_user(self, username: str, role: str, pw_hash: str) -> None:
        self.db.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                        (username, role, pw_hash, time.time()))

    def user(self, username: str) -> dict | None:
        rows = self.db.rows("SELECT username, role, pw_hash FROM users WHERE username=?",
                            (username,))
        return rows[0] if rows else None

    def users(self) -> list[dict]:
        return self.db.rows("SELECT username, role, created FROM users ORDER BY username")

    def delete_user(self, username: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM users WHERE username=?", (username,))
            self.db.execute("DELETE FROM sessions WHERE username=? AND role!='customer'",
                            (username,))

    def update_user(self, username: str, role: str | None = None,
                    pw_hash: str | None = None) -> bool:
        """A new role or password; the user's sessions end either way, so
        the change holds from the next request on."""
        with self.db.transaction():
            changed = self.db.execute("UPDATE users SET role=COALESCE(?, role),"
                                  " pw_hash=COALESCE(?, pw_hash) WHERE username=?",
                                  (role, pw_hash, username))
            self.db.execute("DELETE FROM sessions WHERE username=? AND role!='customer'",
                            (username,))
        return changed == 1

    def add_session(self, token_hash: str, username: str, role: str, csrf: str,
                    expires: float) -> None:
        self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                        (token_hash, username, role, csrf, expires))

    def session(self, token_hash: str) -> dict | None:
        rows = self.db.rows("SELECT username, role, csrf, expires FROM sessions"
                            " WHERE token_hash=?", (token_hash,))
        return rows[0] if rows else None

    def end_sessions_of(self, username: str, role: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE username=? AND role=?", (username, role))

    def end_session(self, token_hash: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))

    def failures(self, key: str) -> tuple | None:
        """(count, first failure at, locked until) for a throttling key."""
        return self.db.one("SELECT count, first_at, locked_until FROM login_failures"
                           " WHERE key=?", (key,))

    def put_failures(self, key: str, count: int, first: float, locked: float) -> None:
        self.db.execute("INSERT INTO login_failures VALUES (?, ?, ?, ?) ON CONFLICT (key) DO"
                        " UPDATE SET count=excluded.count, first_at=excluded.first_at,"
                        " locked_until=excluded.locked_until", (key, count, first, locked))

    def clear_failures(self, key: str) -> None:
        self.db.execute("DELETE FROM login_failures WHERE key=?", (key,))

    # --- customers ------------------------------------------------------------
    def put_customer(self, customer_id: str, keyfile: dict, verifier_hash: str) -> None:
        self.db.execute("INSERT INTO customers VALUES (?, ?, ?) ON CONFLICT (customer_id) DO"
                        " UPDATE SET keyfile=excluded.keyfile,"
                        " verifier_hash=excluded.verifier_hash",
                        (customer_id, json.dumps(keyfile), verifier_hash))

    def customer(self, customer_id: str) -> tuple[dict, str] | None:
        row = self.db.one("SELECT keyfile, verifier_hash FROM customers WHERE customer_id=?",
                          (customer_id,))
        return None if row is None else (json.loads(row[0]), row[1])

    def customer_meters(self, customer_id: str) -> list[str]:
        return [r["meter_id"] for r in self.db.rows(
            "SELECT meter_id FROM meters WHERE customer_id=? ORDER BY meter_id", (customer_id,))]

    def day_keys(self, meter_id: str, since_day: int = 0) -> list[tuple]:
        return [tuple(r.values()) for r in self.db.rows(
            "SELECT day, key_no, wrapped FROM customer_day_keys WHERE meter_id=? AND day >= ?"
            " ORDER BY day, key_no", (meter_id, since_day))]

    def sealed_readings(self, meter_id: str, limit: int) -> list[tuple]:
        """The meter's newest `limit` sealed copies, oldest first."""
        rows = self.db.rows("SELECT seq, day, key_no, nonce, ciphertext FROM sealed_readings"
                            " WHERE meter_id=? ORDER BY day DESC, seq DESC LIMIT ?",
                            (meter_id, limit))
        return [tuple(r.values()) for r in reversed(rows)]

    # --- release requests ---------------------------------------------------
    def add_request(self, kind: str, params: dict, who: str) -> int:
        return self.db.scalar("INSERT INTO requests (kind, params, requested_by, requested_at,"
                              " status) VALUES (?, ?, ?, ?, 'pending') RETURNING id",
                              (kind, json.dumps(params), who, time.time()))

    def request(self, rid: int, pending_only: bool = True) -> dict | None:
        rows = self.db.rows("SELECT * FROM requests WHERE id=?" +
                            (" AND status='pending'" if pending_only else ""), (rid,))
        return {**rows[0], "params_json": json.loads(rows[0]["params"])} if rows else None

    def set_request_params(self, rid: int, params: dict) -> None:
        self.db.execute("UPDATE requests SET params=? WHERE id=?", (json.dumps(params), rid))

    def requests(self, status: str | None = None, kind: str | None = None,
                 limit: int = 100) -> list[dict]:
        """Newest first; status 'decided' means approved or declined."""
        where, args = [], []
        if status == "decided":
            where.append("status != 'pending'")
        elif status:
            where.append("status = ?")
            args.append(status)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "")
        return self.db.rows(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))

    def decide(self, rid: int, status: str, who: str, outcome: str, reason: str = "") -> bool:
        """Only a pending request can be decided, once."""
        return self.db.execute("UPDATE requests SET status=?, decided_by=?, decided_at=?,"
                               " outcome=?, reason=? WHERE id=? AND status='pending'",
                               (status, who, time.time(), outcome, reason, rid)) == 1
