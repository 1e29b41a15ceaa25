"""The MDMS database (SQLite by default, PostgreSQL for a utility with many
gateways): what the gateways pushed (signed aggregate parts, signed bill
days, customers' sealed copies, meter registrations and health), web users,
sessions, login throttling, release requests, and what the key holders
released. It holds no plaintext reading and nothing that decrypts one.
Every SQL statement of the MDMS is a named method here.
"""

from __future__ import annotations

import json
import secrets
import time

from .db import Database, DbError, IntegrityError

__all__ = ["MdmsStore", "DbError", "IntegrityError"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value {blob} NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created {real} NOT NULL
);
-- a customer's key file (private key wrapped under the password: safe here)
-- and a slow hash of the login verifier their browser derives
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    keyfile TEXT NOT NULL,
    verifier_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS login_failures (
    key TEXT PRIMARY KEY,
    count {int} NOT NULL,
    first_at {real} NOT NULL,
    locked_until {real} NOT NULL DEFAULT 0
);
-- gateways the intake API accepts, by id, with their Ed25519 public keys
CREATE TABLE IF NOT EXISTS gateways (
    gateway_id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    health_at {real},
    rejects TEXT,
    counters TEXT
);
CREATE TABLE IF NOT EXISTS meters (
    meter_id TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    neighbourhood TEXT NOT NULL,
    customer_id TEXT,
    tariff TEXT NOT NULL,
    last_seq {int}, last_end {int}, last_seen {real}, fw_version TEXT, backlog {int},
    accepted {int} NOT NULL DEFAULT 0, duplicates {int} NOT NULL DEFAULT 0,
    late {int} NOT NULL DEFAULT 0,
    telemetry TEXT                  -- JSON map of names to integers: the meter's latest health
);
-- readings stored so far per meter, sampled once per quarter hour (a day kept)
CREATE TABLE IF NOT EXISTS meter_history (
    meter_id TEXT NOT NULL,
    bucket {int} NOT NULL,
    accepted {int} NOT NULL,
    PRIMARY KEY (meter_id, bucket)
);
CREATE TABLE IF NOT EXISTS tariffs (
    gateway_id TEXT NOT NULL,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (gateway_id, id)
);
-- one signed part per (gateway, neighbourhood, interval)
CREATE TABLE IF NOT EXISTS aggregate_parts (
    gateway_id TEXT NOT NULL,
    neighbourhood TEXT NOT NULL,
    interval_end {int} NOT NULL,
    record {blob} NOT NULL,
    signature {blob} NOT NULL,
    PRIMARY KEY (gateway_id, neighbourhood, interval_end)
);
CREATE TABLE IF NOT EXISTS sealed_through (
    gateway_id TEXT NOT NULL,
    neighbourhood TEXT NOT NULL,
    through {int} NOT NULL,
    PRIMARY KEY (gateway_id, neighbourhood)
);
-- the newest signed version of each (meter, day)
CREATE TABLE IF NOT EXISTS bill_days (
    meter_id TEXT NOT NULL,
    day {int} NOT NULL,
    version {int} NOT NULL,
    gateway_id TEXT NOT NULL,
    record {blob} NOT NULL,
    signature {blob} NOT NULL,
    PRIMARY KEY (meter_id, day)
);
CREATE TABLE IF NOT EXISTS customer_day_keys (
    meter_id TEXT NOT NULL,
    day {int} NOT NULL,
    key_no {int} NOT NULL,
    wrapped {blob} NOT NULL,
    PRIMARY KEY (meter_id, day, key_no)
);
CREATE TABLE IF NOT EXISTS sealed_readings (
    meter_id TEXT NOT NULL,
    seq {int} NOT NULL,
    day {int} NOT NULL,
    key_no {int} NOT NULL,
    nonce {blob} NOT NULL,
    ciphertext {blob} NOT NULL,
    PRIMARY KEY (meter_id, seq)
);
CREATE TABLE IF NOT EXISTS released_aggregates (
    neighbourhood TEXT NOT NULL,
    interval_end {int} NOT NULL,
    wh {int} NOT NULL,
    contributors {int} NOT NULL DEFAULT 0,
    noisy {int} NOT NULL DEFAULT 0,
    released_at {real} NOT NULL,
    PRIMARY KEY (neighbourhood, interval_end)
);
CREATE TABLE IF NOT EXISTS bills (
    meter_id TEXT NOT NULL,
    first_day {int} NOT NULL,
    days {int} NOT NULL,
    amount_uct {int} NOT NULL,
    released_at {real} NOT NULL,
    PRIMARY KEY (meter_id, first_day)
);
CREATE TABLE IF NOT EXISTS requests (
    id {serial},
    kind TEXT NOT NULL,             -- aggregates | bills
    params TEXT NOT NULL,           -- JSON
    requested_by TEXT NOT NULL,
    requested_at {real} NOT NULL,
    status TEXT NOT NULL,           -- pending | approved | declined
    decided_by TEXT,
    decided_at {real},
    outcome TEXT,
    reason TEXT                     -- the guardian's words, shown to the requester
)
"""

METER_HEALTH = ("last_seq", "last_end", "last_seen", "fw_version", "backlog", "accepted",
                "duplicates", "late", "telemetry")


def _int_map(raw, limit: int = 16) -> str | None:
    """A gateway's {name: integer} map (JSON text or a dict) as JSON, with
    anything else dropped: what a gateway sends is shown on a page."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if not isinstance(raw, dict):
        return None
    kept = {str(k)[:32]: v for k, v in list(raw.items())[:limit] if type(v) is int}
    return json.dumps(kept, sort_keys=True) if kept else None


class MdmsStore:
    def __init__(self, url: str):
        self.db = Database(url)
        self.db.script(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a database was made."""
        for table, column in (("gateways", "counters"), ("requests", "reason"),
                              ("meters", "telemetry")):
            if self.db.dialect == "postgresql":
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} TEXT")
            elif column not in {r["name"] for r in self.db.rows(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self.db.close()

    def secret(self, name: str) -> bytes:
        """A random server-side key, made on first use (e.g. for decoys)."""
        self.db.execute("INSERT INTO secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                        (name, secrets.token_bytes(32)))
        return self.db.scalar("SELECT value FROM secrets WHERE name=?", (name,))

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
            cur = self.db.execute("UPDATE users SET role=COALESCE(?, role),"
                                  " pw_hash=COALESCE(?, pw_hash) WHERE username=?",
                                  (role, pw_hash, username))
            self.db.execute("DELETE FROM sessions WHERE username=? AND role!='customer'",
                            (username,))
        return cur.rowcount == 1

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

    def day_keys(self, meter_id: str) -> list[tuple]:
        return [tuple(r.values()) for r in self.db.rows(
            "SELECT day, key_no, wrapped FROM customer_day_keys WHERE meter_id=?"
            " ORDER BY day, key_no", (meter_id,))]

    def sealed_readings(self, meter_id: str, limit: int) -> list[tuple]:
        return [tuple(r.values()) for r in self.db.rows(
            "SELECT seq, day, key_no, nonce, ciphertext FROM sealed_readings WHERE meter_id=?"
            " ORDER BY seq LIMIT ?", (meter_id, limit))]

    # --- gateways and what they push ------------------------------------------
    def trust_gateway(self, gateway_id: str, public_key_pem: str) -> None:
        self.db.execute("INSERT INTO gateways (gateway_id, public_key) VALUES (?, ?)"
                        " ON CONFLICT (gateway_id) DO UPDATE SET public_key=excluded.public_key",
                        (gateway_id, public_key_pem))

    def gateway_key(self, gateway_id: str) -> str | None:
        return self.db.scalar("SELECT public_key FROM gateways WHERE gateway_id=?",
                              (gateway_id,))

    def gateways(self) -> list[dict]:
        return self.db.rows("SELECT gateway_id, health_at, rejects, counters FROM gateways"
                            " ORDER BY gateway_id")

    def meter_gateway(self, meter_id: str) -> str | None:
        return self.db.scalar("SELECT gateway_id FROM meters WHERE meter_id=?", (meter_id,))

    def put_meter(self, gateway_id: str, meter_id: str, nbh: str, customer_id, tariff: str):
        self.db.execute("INSERT INTO meters (meter_id, gateway_id, neighbourhood, customer_id,"
                        " tariff) VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
                        " gateway_id=excluded.gateway_id, neighbourhood=excluded.neighbourhood,"
                        " customer_id=excluded.customer_id, tariff=excluded.tariff",
                        (meter_id, gateway_id, nbh, customer_id, tariff))

    def meter(self, meter_id: str) -> dict | None:
        rows = self.db.rows("SELECT * FROM meters WHERE meter_id=?", (meter_id,))
        return rows[0] if rows else None

    def tariff(self, gateway_id: str, tariff_id: str) -> dict | None:
        """The definition a gateway bands its meters' readings with."""
        found = self.db.scalar("SELECT definition FROM tariffs WHERE gateway_id=? AND id=?",
                               (gateway_id, tariff_id))
        return json.loads(found) if found else None

    def put_tariff(self, gateway_id: str, tariff_id: str, definition: dict) -> None:
        self.db.execute("INSERT INTO tariffs VALUES (?, ?, ?) ON CONFLICT (gateway_id, id) DO"
                        " UPDATE SET definition=excluded.definition",
                        (gateway_id, tariff_id, json.dumps(definition)))

    def put_aggregate_part(self, gateway_id: str, nbh: str, end: int, record: bytes,
                           signature: bytes) -> None:
        # A gateway seals each (neighbourhood, interval) once; a resent copy
        # of the same part changes nothing.
        self.db.execute("INSERT INTO aggregate_parts VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (gateway_id, neighbourhood, interval_end) DO NOTHING",
                        (gateway_id, nbh, end, record, signature))

    def put_sealed_through(self, gateway_id: str, nbh: str, through: int) -> None:
        self.db.execute("INSERT INTO sealed_through VALUES (?, ?, ?) ON CONFLICT"
                        " (gateway_id, neighbourhood) DO UPDATE SET through=excluded.through"
                        " WHERE sealed_through.through < excluded.through",
                        (gateway_id, nbh, through))

    def put_bill_day(self, gateway_id: str, meter_id: str, day: int, version: int,
                     record: bytes, signature: bytes) -> None:
        self.db.execute("INSERT INTO bill_days VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT"
                        " (meter_id, day) DO UPDATE SET version=excluded.version,"
                        " gateway_id=excluded.gateway_id, record=excluded.record,"
                        " signature=excluded.signature WHERE bill_days.version < excluded.version",
                        (meter_id, day, version, gateway_id, record, signature))

    def put_day_key(self, meter_id: str, day: int, key_no: int, wrapped: bytes) -> None:
        self.db.execute("INSERT INTO customer_day_keys VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (meter_id, day, key_no) DO NOTHING",
                        (meter_id, day, key_no, wrapped))

    def put_sealed_reading(self, meter_id: str, seq: int, day: int, key_no: int, nonce: bytes,
                           ct: bytes) -> None:
        self.db.execute("INSERT INTO sealed_readings VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (meter_id, seq) DO NOTHING",
                        (meter_id, seq, day, key_no, nonce, ct))

    def put_health(self, gateway_id: str, health: dict) -> None:
        """The gateway's latest view of its meters; an older one is ignored."""
        at = float(health["at"])
        if (self.db.scalar("SELECT health_at FROM gateways WHERE gateway_id=?",
                           (gateway_id,)) or 0) >= at:
            return
        self.db.execute("UPDATE gateways SET health_at=?, rejects=?, counters=? WHERE gateway_id=?",
                        (at, json.dumps(health.get("rejects", [])),
                         _int_map(health.get("counters"), 64) or "{}", gateway_id))
        bucket = int(at) // 900
        for m in health.get("meters", []):
            cur = self.db.execute("UPDATE meters SET " + ", ".join(f"{c}=?" for c in METER_HEALTH)
                                  + " WHERE meter_id=? AND gateway_id=?",
                                  [_int_map(m.get(c)) if c == "telemetry" else m.get(c)
                                   for c in METER_HEALTH] + [m["meter_id"], gateway_id])
            if cur.rowcount == 1 and type(m.get("accepted")) is int:
                self.db.execute("INSERT INTO meter_history VALUES (?, ?, ?) ON CONFLICT"
                                " (meter_id, bucket) DO UPDATE SET accepted=excluded.accepted",
                                (m["meter_id"], bucket, m["accepted"]))
        self.db.execute("DELETE FROM meter_history WHERE bucket < ?", (bucket - 96,))

    def meter_history(self, since_bucket: int) -> dict[str, list[tuple[int, int]]]:
        out: dict[str, list] = {}
        for r in self.db.rows("SELECT meter_id, bucket, accepted FROM meter_history"
                              " WHERE bucket >= ? ORDER BY meter_id, bucket", (since_bucket,)):
            out.setdefault(r["meter_id"], []).append((r["bucket"], r["accepted"]))
        return out

    def meters(self) -> list[dict]:
        return self.db.rows("SELECT * FROM meters ORDER BY meter_id")

    def counts(self) -> dict[str, int]:
        """How much the MDMS holds of each kind (for tests and `mdms status`)."""
        return {t: self.db.scalar(f"SELECT COUNT(*) FROM {t}") for t in (
            "meters", "aggregate_parts", "bill_days", "customer_day_keys", "sealed_readings",
            "released_aggregates", "bills")}

    # --- releases ----------------------------------------------------------------
    def unreleased_aggregate_parts(self) -> dict[tuple[str, int], list[tuple[bytes, bytes]]]:
        """(neighbourhood, interval end) -> every gateway's (record, signature),
        for intervals not released yet that every gateway serving that
        neighbourhood has sealed past."""
        rows = self.db.rows(
            "SELECT p.neighbourhood, p.interval_end, p.record, p.signature FROM aggregate_parts p"
            " WHERE NOT EXISTS (SELECT 1 FROM released_aggregates r"
            "   WHERE r.neighbourhood = p.neighbourhood AND r.interval_end = p.interval_end)"
            " AND NOT EXISTS (SELECT 1 FROM (SELECT DISTINCT gateway_id, neighbourhood FROM meters)"
            "   g LEFT JOIN sealed_through s ON s.gateway_id = g.gateway_id"
            "   AND s.neighbourhood = g.neighbourhood"
            "   WHERE g.neighbourhood = p.neighbourhood"
            "   AND (s.through IS NULL OR s.through < p.interval_end))"
            " ORDER BY p.neighbourhood, p.interval_end, p.gateway_id")
        out: dict[tuple[str, int], list] = {}
        for r in rows:
            out.setdefault((r["neighbourhood"], r["interval_end"]), []).append(
                (r["record"], r["signature"]))
        return out

    def released_parts(self) -> list[dict]:
        """Every gateway's part of every released aggregate: which meters
        each released (neighbourhood, interval) counted."""
        return self.db.rows("SELECT p.neighbourhood, p.interval_end, p.record FROM aggregate_parts p"
                            " JOIN released_aggregates r ON r.neighbourhood = p.neighbourhood AND"
                            " r.interval_end = p.interval_end ORDER BY p.interval_end")

    def signed_bill_days(self) -> list[dict]:
        return self.db.rows("SELECT d.meter_id, d.day, d.record, d.signature FROM bill_days d"
                            " ORDER BY d.meter_id, d.day")

    def save_aggregate(self, nbh: str, end: int, wh: int, contributors: int, noisy: bool) -> None:
        self.db.execute("INSERT INTO released_aggregates VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (neighbourhood, interval_end) DO NOTHING",
                        (nbh, end, wh, contributors, int(noisy), time.time()))

    def save_bill(self, meter_id: str, first_day: int, days: int, amount_uct: int) -> None:
        self.db.execute("INSERT INTO bills VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (meter_id, first_day) DO NOTHING",
                        (meter_id, first_day, days, amount_uct, time.time()))

    def released_aggregates(self, neighbourhood: str | None = None) -> list[dict]:
        where, args = (" WHERE neighbourhood=?", (neighbourhood,)) if neighbourhood else ("", ())
        return self.db.rows("SELECT neighbourhood, interval_end, wh, contributors, noisy FROM"
                            " released_aggregates" + where + " ORDER BY neighbourhood,"
                            " interval_end", args)

    def bills(self, meter_id: str | None = None) -> list[dict]:
        where, args = (" WHERE meter_id=?", (meter_id,)) if meter_id else ("", ())
        return self.db.rows("SELECT meter_id, first_day, days, amount_uct FROM bills" + where +
                            " ORDER BY meter_id, first_day", args)

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
        cur = self.db.execute("UPDATE requests SET status=?, decided_by=?, decided_at=?,"
                              " outcome=?, reason=? WHERE id=? AND status='pending'",
                              (status, who, time.time(), outcome, reason, rid))
        return cur.rowcount == 1
