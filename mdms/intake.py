"""The MDMS intake API: POST /v1/intake from the gateways.

The body is JSON {"gateway": id, "items": [...], "health": {...}|null},
signed as it stands with the gateway's Ed25519 key (headers
X-GridVeil-Gateway and X-GridVeil-Signature). Items:

    aggregate       {"record": b64, "signature": b64}   a sealed (neighbourhood, interval)
    billday         {"record": b64, "signature": b64}   one (meter, day), newest version wins
    sealed_through  {"neighbourhood", "through"}        every interval up to `through` sealed
    meter           {"meter_id", "neighbourhood", "customer", "tariff"}
    tariff          {"definition": {...}}
    daykey          {"meter_id", "day", "key_no", "wrapped": b64}    a customer's sealed copy
    copy            {"meter_id", "seq", "day", "key_no", "nonce": b64, "ct": b64}

Every record's signature is checked again here against the gateway that
sent it, and a gateway may only speak for its own meters. A batch is stored
in one transaction with one statement per kind of item, idempotently (a
resent batch changes nothing), and answered 200 only after the commit;
anything malformed rejects the whole batch with a 400 that says what.

`health` carries the gateway's counters and only the meters whose status
changed since its last push; it is stored after the records' commit, in a
transaction of its own, so a fleet's health never holds up its readings.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import Counter

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from common import records, signing
from common.asgi import BodyTooLarge, read_body
from common.files import ConfigError

from . import fleet, schema
from .intakestore import int_map
from .store import DbError, MdmsStore

log = logging.getLogger("gridveil.mdms.intake")
MAX_BODY = 8 << 20
MAX_HEALTH_METERS = 20_000  # per push; a gateway sends only the meters that changed
DAY = 86400


class BadItem(ValueError):
    pass


def _b64(v) -> bytes:
    return base64.b64decode(v, validate=True)


def _signed(pubs, gateway_id: str, item: dict, kind):
    raw, sig = _b64(item["record"]), _b64(item["signature"])
    rec = records.parse(raw)
    if not isinstance(rec, kind):
        raise BadItem(f"{item['kind']} item holds another kind of record")
    if rec.gateway_id != gateway_id:
        raise BadItem(f"record names gateway {rec.gateway_id!r}, sent by {gateway_id!r}")
    if not any(records.verify(pub, rec, sig) for pub in pubs):
        raise BadItem(f"record {records.record_id(rec)} has a bad signature")
    return rec, raw, sig


class Batch:
    """A push's items, checked and sorted by kind, ready to store: one
    statement per kind, whatever the batch's size."""

    def __init__(self):
        self.meters, self.tariffs, self.parts, self.through = [], [], [], []
        self.billdays, self.daykeys, self.copies = [], [], []
        self.named: set[str] = set()  # meters the items speak for

    def add(self, pubs, gw: str, item: dict) -> None:
        kind = item.get("kind")
        if kind == "aggregate":
            rec, raw, sig = _signed(pubs, gw, item, records.AggregateRecord)
            _check_day((rec.interval_end - 1) // DAY)
            self.parts.append((rec.neighbourhood, rec.interval_end, raw, sig))
        elif kind == "billday":
            rec, raw, sig = _signed(pubs, gw, item, records.BillDayRecord)
            _check_day(rec.day)
            self.named.add(rec.meter_id)
            self.billdays.append((rec.meter_id, rec.day, rec.version, raw, sig))
        elif kind == "sealed_through":
            self.through.append((str(item["neighbourhood"]), int(item["through"])))
        elif kind == "meter":
            customer = item.get("customer")
            self.meters.append((str(item["meter_id"]), str(item["neighbourhood"]),
                                None if customer is None else str(customer), str(item["tariff"])))
        elif kind == "tariff":
            d = item["definition"]
            self.tariffs.append((str(d["id"]), d))
        elif kind == "daykey":
            m, day = str(item["meter_id"]), _check_day(int(item["day"]))
            self.named.add(m)
            self.daykeys.append((m, day, int(item["key_no"]), _b64(item["wrapped"])))
        elif kind == "copy":
            m, day = str(item["meter_id"]), _check_day(int(item["day"]))
            self.named.add(m)
            self.copies.append((m, day, int(item["seq"]), int(item["key_no"]),
                                _b64(item["nonce"]), _b64(item["ct"])))
        else:
            raise BadItem(f"unknown item kind {kind!r}")

    def check_owners(self, store: MdmsStore, gw: str) -> None:
        """A gateway registers only meters no other gateway has, and speaks
        only for meters registered through it (here or in this batch)."""
        owners = store.meter_owners(self.named | {m for m, *_ in self.meters})
        for m, *_ in self.meters:
            if owners.get(m) not in (None, "", gw):  # '': its gateway was retired
                raise BadItem(f"meter {m!r} belongs to gateway {owners[m]}")
            owners[m] = gw
        for m in sorted(self.named):
            if owners.get(m) != gw:
                raise BadItem(f"meter {m!r} is not registered through gateway {gw}")

    def store(self, store: MdmsStore, gw: str) -> None:
        for table, days in (("aggregate_parts", {(e - 1) // DAY for _, e, _, _ in self.parts}),
                            ("bill_days", {d for _, d, *_ in self.billdays}),
                            ("customer_day_keys", {d for _, d, *_ in self.daykeys}),
                            ("sealed_readings", {d for _, d, *_ in self.copies})):
            if days:  # made outside the transaction: DDL and DML apart, on a cluster too
                store.ensure_partitions(table, days)
        with store.db.transaction():
            if self.meters:
                store.put_meters(gw, self.meters)
            for tid, d in self.tariffs:
                store.put_tariff(gw, tid, d)
            store.put_aggregate_parts(gw, self.parts)
            for nbh, through in self.through:
                store.put_sealed_through(gw, nbh, through)
            store.put_bill_days(gw, self.billdays)
            store.put_day_keys(self.daykeys)
            store.put_sealed_readings(self.copies)
        if self.billdays:
            store.set_anchor_day(min(d for _, d, *_ in self.billdays))


def _check_day(day: int) -> int:
    if not schema.FIRST_DAY <= day < schema.END_DAY:
        raise BadItem(f"day {day} is outside 2000..2099")
    return day


def intake(store: MdmsStore, body: bytes, gateway_id: str, signature: str) -> int:
    """Verify and store one pushed batch; returns the number of items."""
    pem = store.gateway_key(gateway_id)
    if pem is None:
        raise PermissionError(f"unknown gateway {gateway_id!r}")
    if not pem:
        raise PermissionError(f"gateway {gateway_id!r} was retired")
    pubs = signing.parse_public_set(pem.encode(), f"key of gateway {gateway_id}")
    if not any(signing.verify_b64(p, body, signature) for p in pubs):
        raise PermissionError(f"bad signature on a push from gateway {gateway_id!r}")
    d = json.loads(body)
    if not isinstance(d, dict) or d.get("gateway") != gateway_id or \
            not isinstance(d.get("items"), list):
        raise BadItem("body must be {gateway, items: [...], health}")
    batch = Batch()
    for i, item in enumerate(d["items"]):
        if not isinstance(item, dict):
            raise BadItem(f"item {i} is not an object")
        try:
            batch.add(pubs, gateway_id, item)
        except BadItem as e:
            raise BadItem(f"item {i}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise BadItem(f"item {i} ({item.get('kind')}): malformed: {e!r}") from None
    batch.check_owners(store, gateway_id)
    batch.store(store, gateway_id)
    health = d.get("health")
    if health:
        # After the records' commit and apart from it: health is best
        # effort, the records are not.
        try:
            put_health(store, gateway_id, health)
        except (DbError, KeyError, TypeError, ValueError) as e:
            log.warning("health from %s not stored: %s", gateway_id[:64], str(e)[:300])
    return len(d["items"])


def put_health(store: MdmsStore, gateway_id: str, health: dict) -> None:
    """Store a gateway's health report with each meter's device alerts,
    worked out here from its telemetry, so that the operator's page finds
    the meters that need a look with one query."""
    if not isinstance(health, dict) or not isinstance(health.get("meters"), list):
        raise ValueError("health must be {at, meters: [...]}")
    meters = []
    for m in health["meters"][:MAX_HEALTH_METERS]:
        if isinstance(m, dict):
            t = int_map(m.get("telemetry"))
            trouble = fleet.device(json.loads(t))[1] if t else []
            meters.append({**m, "trouble": json.dumps(trouble) if trouble else None})
    store.put_health(gateway_id, {**health, "meters": meters})


def route(store: MdmsStore, stats: Counter | None = None):
    """The POST handler; `stats` counts items stored and pushes refused (/metrics)."""
    stats = Counter() if stats is None else stats

    async def post(request: Request):
        response = await _post(request)
        if response.status_code != 200:
            stats[f"refused:{response.status_code}"] += 1
        return response

    async def _post(request: Request):
        gw = request.headers.get("x-gridveil-gateway", "")
        sig = request.headers.get("x-gridveil-signature", "")
        try:
            body = await read_body(request, MAX_BODY)
            n = await run_in_threadpool(intake, store, body, gw, sig)
        except BodyTooLarge:
            return JSONResponse({"error": f"a push is at most {MAX_BODY} bytes"}, 413)
        except PermissionError as e:
            log.warning("intake refused: %s", e)
            return JSONResponse({"error": str(e)}, 401)
        except (BadItem, ValueError, ConfigError) as e:
            log.warning("intake from %s rejected: %s", gw[:64], str(e)[:300])
            return JSONResponse({"error": str(e)[:500]}, 400)
        except DbError as e:
            log.error("intake from %s not stored: %s", gw[:64], e)
            return JSONResponse({"error": "storage unavailable; try again"}, 503)
        stats["items"] += n
        return JSONResponse({"stored": n})
    return post
