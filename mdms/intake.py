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
in one transaction, idempotently (a resent batch changes nothing), and
answered 200 only after the commit; anything malformed rejects the whole
batch with a 400 that says what.
"""

from __future__ import annotations

import base64
import json
import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from common import records, signing
from common.asgi import BodyTooLarge, read_body
from common.files import ConfigError

from .store import DbError, MdmsStore

log = logging.getLogger("gridveil.mdms.intake")
MAX_BODY = 8 << 20


class BadItem(ValueError):
    pass


def _b64(v) -> bytes:
    return base64.b64decode(v, validate=True)


def _signed(pub, gateway_id: str, item: dict, kind):
    raw, sig = _b64(item["record"]), _b64(item["signature"])
    rec = records.parse(raw)
    if not isinstance(rec, kind):
        raise BadItem(f"{item['kind']} item holds another kind of record")
    if rec.gateway_id != gateway_id:
        raise BadItem(f"record names gateway {rec.gateway_id!r}, sent by {gateway_id!r}")
    if not records.verify(pub, rec, sig):
        raise BadItem(f"record {records.record_id(rec)} has a bad signature")
    return rec, raw, sig


def _own_meter(store: MdmsStore, gateway_id: str, meter_id) -> str:
    if store.meter_gateway(str(meter_id)) != gateway_id:
        raise BadItem(f"meter {meter_id!r} is not registered through gateway {gateway_id}")
    return str(meter_id)


def store_item(store: MdmsStore, pub, gw: str, item: dict) -> None:
    kind = item.get("kind")
    if kind == "aggregate":
        rec, raw, sig = _signed(pub, gw, item, records.AggregateRecord)
        store.put_aggregate_part(gw, rec.neighbourhood, rec.interval_end, raw, sig)
    elif kind == "billday":
        rec, raw, sig = _signed(pub, gw, item, records.BillDayRecord)
        _own_meter(store, gw, rec.meter_id)
        store.put_bill_day(gw, rec.meter_id, rec.day, rec.version, raw, sig)
    elif kind == "sealed_through":
        store.put_sealed_through(gw, str(item["neighbourhood"]), int(item["through"]))
    elif kind == "meter":
        owner = store.meter_gateway(str(item["meter_id"]))
        if owner not in (None, gw):
            raise BadItem(f"meter {item['meter_id']!r} belongs to gateway {owner}")
        customer = item.get("customer")
        store.put_meter(gw, str(item["meter_id"]), str(item["neighbourhood"]),
                        None if customer is None else str(customer), str(item["tariff"]))
    elif kind == "tariff":
        d = item["definition"]
        store.put_tariff(gw, str(d["id"]), d)
    elif kind == "daykey":
        m = _own_meter(store, gw, item["meter_id"])
        store.put_day_key(m, int(item["day"]), int(item["key_no"]), _b64(item["wrapped"]))
    elif kind == "copy":
        m = _own_meter(store, gw, item["meter_id"])
        store.put_sealed_reading(m, int(item["seq"]), int(item["day"]), int(item["key_no"]),
                                 _b64(item["nonce"]), _b64(item["ct"]))
    else:
        raise BadItem(f"unknown item kind {kind!r}")


def intake(store: MdmsStore, body: bytes, gateway_id: str, signature: str) -> int:
    """Verify and store one pushed batch; returns the number of items."""
    pem = store.gateway_key(gateway_id)
    if pem is None:
        raise PermissionError(f"unknown gateway {gateway_id!r}")
    pub = signing.parse_public(pem.encode(), f"key of gateway {gateway_id}")
    if not signing.verify_b64(pub, body, signature):
        raise PermissionError(f"bad signature on a push from gateway {gateway_id!r}")
    d = json.loads(body)
    if not isinstance(d, dict) or d.get("gateway") != gateway_id or \
            not isinstance(d.get("items"), list):
        raise BadItem("body must be {gateway, items: [...], health}")
    with store.db.transaction():
        for i, item in enumerate(d["items"]):
            if not isinstance(item, dict):
                raise BadItem(f"item {i} is not an object")
            try:
                store_item(store, pub, gateway_id, item)
            except BadItem as e:
                raise BadItem(f"item {i}: {e}") from None
            except (KeyError, TypeError, ValueError) as e:
                raise BadItem(f"item {i} ({item.get('kind')}): malformed: {e!r}") from None
        if d.get("health"):
            store.put_health(gateway_id, d["health"])
    return len(d["items"])


def route(store: MdmsStore):
    async def post(request: Request):
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
        return JSONResponse({"stored": n})
    return post
