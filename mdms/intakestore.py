"""The SQL of what the gateways push: meters, tariffs, signed aggregate
parts and bill days, customers' sealed copies, and the fleet's health.

A push is written in one transaction with one statement per kind of item
(executemany: one round trip per kind on PostgreSQL, whatever the batch
size). Health arrives as changes only and is written after that
transaction, in its own: a slow health update never holds up the records.
The fleet's sparkline is a ring of one row per meter and quarter hour of
a day, overwritten the next day, so it never grows.
"""

from __future__ import annotations

import json

from . import schema

HISTORY = 96  # the sparkline's ring: a day of quarter hours
BUCKET = 900
METER_HEALTH = ("last_seq", "last_end", "last_seen", "fw_version", "backlog", "accepted",
                "duplicates", "late", "telemetry", "trouble")
IN_CHUNK = 500  # ids per IN (...) list


def int_map(raw, limit: int = 16) -> str | None:
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


def chunks(items: list, n: int = IN_CHUNK):
    for i in range(0, len(items), n):
        yield items[i:i + n]


class IntakeStore:
    db = None  # mdms.db.Database, set by MdmsStore
    _partitions: set

    # --- gateways ---------------------------------------------------------------
    def trust_gateway(self, gateway_id: str, public_key_pem: str, add: bool = False) -> None:
        """This key for the gateway's pushes and records: instead of its
        others, or with `add` beside them (a rotation's overlap)."""
        if add:
            old = self.gateway_key(gateway_id) or ""
            if public_key_pem.strip() not in old:
                public_key_pem = old + public_key_pem
        self.db.execute("INSERT INTO gateways (gateway_id, public_key) VALUES (?, ?)"
                        " ON CONFLICT (gateway_id) DO UPDATE SET public_key=excluded.public_key",
                        (gateway_id, public_key_pem))

    def retire_gateway(self, gateway_id: str) -> int:
        """A gateway out of service (decommissioned, dead): its pushes are
        refused from now on, no neighbourhood waits for it to seal (what it
        pushed is still released with the rest), and its meters may be
        registered through another gateway. Returns how many it had."""
        with self.db.transaction():
            self.db.execute("UPDATE gateways SET public_key='' WHERE gateway_id=?",
                            (gateway_id,))
            self.db.execute("DELETE FROM gateway_neighbourhoods WHERE gateway_id=?",
                            (gateway_id,))
            n = self.db.scalar("SELECT COUNT(*) FROM meters WHERE gateway_id=?", (gateway_id,))
            self.db.execute("UPDATE meters SET gateway_id='' WHERE gateway_id=?", (gateway_id,))
        return int(n or 0)

    def gateway_key(self, gateway_id: str) -> str | None:
        return self.db.scalar("SELECT public_key FROM gateways WHERE gateway_id=?",
                              (gateway_id,))

    def gateways(self) -> list[dict]:
        return self.db.rows("SELECT gateway_id, health_at, rejects, counters FROM gateways"
                            " ORDER BY gateway_id")

    # --- meters -------------------------------------------------------------------
    def meter_gateway(self, meter_id: str) -> str | None:
        return self.db.scalar("SELECT gateway_id FROM meters WHERE meter_id=?", (meter_id,))

    def meter_owners(self, meter_ids) -> dict[str, str]:
        """meter -> the gateway it is registered through, for those known
        ('' for a meter whose gateway was retired)."""
        out = {}
        for part in chunks(sorted(set(meter_ids))):
            out.update((r["meter_id"], r["gateway_id"]) for r in self.db.rows(
                "SELECT meter_id, gateway_id FROM meters WHERE meter_id IN ("
                + ",".join("?" * len(part)) + ")", part))
        return out

    def put_meters(self, gateway_id: str, rows) -> None:
        """[(meter, neighbourhood, customer, tariff)] registered through this gateway."""
        self.db.many("INSERT INTO meters (meter_id, gateway_id, neighbourhood, customer_id, tariff)"
                     " VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id) DO UPDATE SET"
                     " gateway_id=excluded.gateway_id, neighbourhood=excluded.neighbourhood,"
                     " customer_id=excluded.customer_id, tariff=excluded.tariff",
                     [(m, gateway_id, n, c, t) for m, n, c, t in rows])
        self.db.many("INSERT INTO gateway_neighbourhoods VALUES (?, ?) ON CONFLICT DO NOTHING",
                     sorted({(n, gateway_id) for _, n, _, _ in rows}))

    def put_meter(self, gateway_id: str, meter_id: str, nbh: str, customer_id, tariff: str):
        self.put_meters(gateway_id, [(meter_id, nbh, customer_id, tariff)])

    def meter(self, meter_id: str) -> dict | None:
        rows = self.db.rows("SELECT * FROM meters WHERE meter_id=?", (meter_id,))
        return rows[0] if rows else None

    def meters(self, after: str = "", limit: int | None = None) -> list[dict]:
        """Meters in id order, a page at a time (after the id `after`)."""
        return self.db.rows("SELECT * FROM meters WHERE meter_id > ? ORDER BY meter_id"
                            + (" LIMIT ?" if limit else ""),
                            (after, limit) if limit else (after,))

    def households(self, meter_ids) -> dict[str, str]:
        """meter -> its household (the meter itself if none is known)."""
        out = {m: m for m in meter_ids}
        for part in chunks(sorted(set(meter_ids))):
            out.update((r["meter_id"], r["customer_id"]) for r in self.db.rows(
                "SELECT meter_id, customer_id FROM meters WHERE customer_id IS NOT NULL AND"
                " meter_id IN (" + ",".join("?" * len(part)) + ")", part))
        return out

    def neighbourhood_sizes(self, limit: int = 1000) -> list[tuple[str, int]]:
        return [(r["neighbourhood"], r["n"]) for r in self.db.rows(
            "SELECT neighbourhood, COUNT(*) AS n FROM meters GROUP BY neighbourhood"
            " ORDER BY neighbourhood LIMIT ?", (limit,))]

    def tariff(self, gateway_id: str, tariff_id: str) -> dict | None:
        """The definition a gateway bands its meters' readings with."""
        found = self.db.scalar("SELECT definition FROM tariffs WHERE gateway_id=? AND id=?",
                               (gateway_id, tariff_id))
        return json.loads(found) if found else None

    def put_tariff(self, gateway_id: str, tariff_id: str, definition: dict) -> None:
        self.db.execute("INSERT INTO tariffs VALUES (?, ?, ?) ON CONFLICT (gateway_id, id) DO"
                        " UPDATE SET definition=excluded.definition",
                        (gateway_id, tariff_id, json.dumps(definition)))

    # --- records --------------------------------------------------------------
    def ensure_partitions(self, table: str, days) -> None:
        schema.ensure_partitions(self.db, table, days, self._partitions)

    def put_aggregate_parts(self, gateway_id: str, rows) -> None:
        """[(neighbourhood, interval end, record, signature)]. A gateway seals
        each (neighbourhood, interval) once; a resent copy changes nothing."""
        self.db.many("INSERT INTO aggregate_parts VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (neighbourhood, interval_end, gateway_id) DO NOTHING",
                     [(n, e, gateway_id, r, s) for n, e, r, s in rows])

    def put_aggregate_part(self, gateway_id: str, nbh: str, end: int, record: bytes,
                           signature: bytes) -> None:
        self.put_aggregate_parts(gateway_id, [(nbh, end, record, signature)])

    def put_sealed_through(self, gateway_id: str, nbh: str, through: int) -> None:
        self.db.execute("INSERT INTO sealed_through VALUES (?, ?, ?) ON CONFLICT"
                        " (neighbourhood, gateway_id) DO UPDATE SET through=excluded.through"
                        " WHERE sealed_through.through < excluded.through",
                        (nbh, gateway_id, through))

    def put_bill_days(self, gateway_id: str, rows) -> None:
        """[(meter, day, version, record, signature)]: the newest version wins."""
        self.db.many("INSERT INTO bill_days VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT"
                     " (meter_id, day) DO UPDATE SET version=excluded.version,"
                     " gateway_id=excluded.gateway_id, record=excluded.record,"
                     " signature=excluded.signature WHERE bill_days.version < excluded.version",
                     [(m, d, v, gateway_id, r, s) for m, d, v, r, s in rows])

    def put_day_keys(self, rows) -> None:
        """[(meter, day, key number, wrapped key)]"""
        self.db.many("INSERT INTO customer_day_keys VALUES (?, ?, ?, ?)"
                     " ON CONFLICT (meter_id, day, key_no) DO NOTHING", rows)

    def put_sealed_readings(self, rows) -> None:
        """[(meter, day, seq, key number, nonce, ciphertext)]"""
        self.db.many("INSERT INTO sealed_readings VALUES (?, ?, ?, ?, ?, ?)"
                     " ON CONFLICT (meter_id, day, seq) DO NOTHING", rows)

    # --- health ------------------------------------------------------------------
    def put_health(self, gateway_id: str, health: dict) -> None:
        """The gateway's latest view: its counters, and the meters whose
        status changed since its last push. An older report is ignored."""
        at = float(health["at"])
        if (self.db.scalar("SELECT health_at FROM gateways WHERE gateway_id=?",
                           (gateway_id,)) or 0) >= at:
            return
        self.db.execute("UPDATE gateways SET health_at=?, rejects=?, counters=? WHERE gateway_id=?",
                        (at, json.dumps(health.get("rejects", [])[:1000]),
                         int_map(health.get("counters"), 64) or "{}", gateway_id))
        meters = [m for m in health.get("meters", []) if isinstance(m, dict)
                  and isinstance(m.get("meter_id"), str)]
        if not meters:
            return
        known = {m for m, g in self.meter_owners([m["meter_id"] for m in meters]).items()
                 if g == gateway_id}
        mine = [m for m in meters if m["meter_id"] in known]
        self.db.many("UPDATE meters SET " + ", ".join(f"{c}=?" for c in METER_HEALTH)
                     + " WHERE meter_id=?",
                     [[int_map(m.get(c)) if c == "telemetry" else m.get(c)
                       for c in METER_HEALTH] + [m["meter_id"]] for m in mine])
        bucket = int(at) // BUCKET
        self.db.many("INSERT INTO meter_history VALUES (?, ?, ?, ?) ON CONFLICT (meter_id, slot)"
                     " DO UPDATE SET bucket=excluded.bucket, accepted=excluded.accepted",
                     [(m["meter_id"], bucket % HISTORY, bucket, m["accepted"]) for m in mine
                      if type(m.get("accepted")) is int])

    def meter_history(self, since_bucket: int, meter_ids) -> dict[str, list[tuple[int, int]]]:
        """meter -> [(bucket, readings stored so far)] since `since_bucket`."""
        out: dict[str, list] = {}
        for part in chunks(sorted(set(meter_ids))):
            for r in self.db.rows("SELECT meter_id, bucket, accepted FROM meter_history"
                                  " WHERE bucket >= ? AND meter_id IN ("
                                  + ",".join("?" * len(part)) + ")", (since_bucket, *part)):
                out.setdefault(r["meter_id"], []).append((r["bucket"], r["accepted"]))
        return {m: sorted(v) for m, v in out.items()}

    def fleet_counts(self, late_before: float, silent_before: float) -> dict[str, int]:
        row = self.db.one("SELECT COUNT(*), SUM(CASE WHEN last_seen IS NULL OR last_seen < ?"
                          " THEN 1 ELSE 0 END), SUM(CASE WHEN last_seen >= ? AND last_seen < ?"
                          " THEN 1 ELSE 0 END) FROM meters",
                          (silent_before, silent_before, late_before))
        total, silent, late = (int(v or 0) for v in row)
        return {"ok": total - silent - late, "late": late, "silent": silent}

    def troubled_meters(self, late_before: float, backlog: int, limit: int) -> list[dict]:
        """Meters that need a look (no recent reading, a backlog, device
        trouble), the longest silent first; at most `limit`."""
        return self.db.rows("SELECT * FROM meters WHERE last_seen IS NULL OR last_seen < ?"
                            " OR backlog >= ? OR trouble IS NOT NULL"
                            " ORDER BY COALESCE(last_seen, 0), meter_id LIMIT ?",
                            (late_before, backlog, limit))
