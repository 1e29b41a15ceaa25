"""The gateway's /metrics and /healthz, over plain HTTP on a local port
(gateway.json metrics_bind, metrics_port): the gateway speaks CoAP to its
meters and is only a client of the MDMS, so this small server is its only
TCP listener. It answers GET of those two paths and nothing else, reads at
most a few KiB of each request, and drops a client that is slow to send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from common import metrics

log = logging.getLogger("gridveil.metrics")

MAX_REQUEST = 8192
READ_TIMEOUT_S = 5.0
SILENT_AFTER_S = 3 * 3600  # a meter not heard from for this long counts as silent


def figures(gw, unflushed: dict):
    """What Prometheus scrapes, read from the gateway's store (on its store
    thread), its pusher, and the reject counts not yet written (`unflushed`,
    copied on the event loop that counts them)."""
    store = gw.store
    now = time.time()
    fleet = store.fleet_figures(now - SILENT_AFTER_S)
    yield metrics.gauge("gateway_meters", "meters registered at this gateway", fleet["meters"])
    yield metrics.gauge("gateway_meters_silent", f"meters not heard from for"
                        f" {SILENT_AFTER_S // 3600} h or more", fleet["silent"])
    yield metrics.counter("gateway_readings_stored", "readings stored, since the gateway's"
                          " database was made", fleet["stored"])
    yield metrics.counter("gateway_readings_duplicate", "readings received again and dropped",
                          fleet["duplicates"])
    yield metrics.counter("gateway_readings_late", "readings for intervals already sealed"
                          " (billed, not in demand)", fleet["late"])
    yield metrics.gauge("gateway_meter_queue_readings", "readings waiting in the meters' own"
                        " queues, as they last reported", fleet["backlog"])
    rejects: dict[str, int] = {}
    for (_, reason), n in store.rejects().items():
        rejects[reason] = rejects.get(reason, 0) + n
    for (_, reason), n in unflushed.items():
        rejects[reason] = rejects.get(reason, 0) + n
    yield metrics.counter("gateway_rejects", "messages rejected, by reason", label="reason",
                          values=rejects)
    outbox = store.outbox_count()
    yield metrics.gauge("gateway_outbox_items", "signed records and copies waiting to be"
                        " pushed to the MDMS", outbox)
    if gw.pusher is not None:
        lag = now - gw.pusher.emptied_at if outbox else 0.0
        yield metrics.gauge("gateway_push_lag_seconds", "since the outbox was last pushed"
                            " empty (0 while it is empty)", lag)
        yield metrics.counter("gateway_pushed_items", "items the MDMS took, since this process"
                              " started", gw.pusher.pushed)
    backup_at = store.setting_int("last_backup_at")
    yield metrics.gauge("gateway_backup_age_seconds", "since the newest backup (-1: none)",
                        now - backup_at if backup_at else -1)
    size = sum(os.path.getsize(p) for p in (store.path, store.path.with_name(
        store.path.name + "-wal")) if p.exists())
    yield metrics.gauge("gateway_db_bytes", "the gateway's database on disk", size)


def health(gw) -> tuple[bool, dict]:
    try:
        outbox = gw.store.outbox_count()
    except Exception as e:  # noqa: BLE001 -- any store failure is an unhealthy gateway
        return False, {"error": f"store: {type(e).__name__}"}
    return True, {"gateway": gw.config.gateway_id, "meters": len(gw.keyring),
                  "outbox_items": outbox}


class MetricsServer:
    def __init__(self, gw):
        self.gw = gw
        self._unflushed: dict = {}
        self.registry = metrics.registry(lambda: figures(gw, self._unflushed))
        self.server: asyncio.base_events.Server | None = None

    async def start(self, bind: str, port: int) -> None:
        self.server = await asyncio.start_server(self._client, bind, port, limit=MAX_REQUEST)
        log.info("metrics on http://%s:%d/metrics and /healthz", bind,
                 self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            status, ctype, body = await self._answer(method, path.split("?", 1)[0])
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        try:
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                         f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only\n"
        loop = asyncio.get_running_loop()
        if path == "/metrics":
            self._unflushed = dict(self.gw.rejects)
            body = await loop.run_in_executor(self.gw.executor, metrics.exposition,
                                              self.registry)
            return 200, metrics.CONTENT_TYPE, body
        if path == "/healthz":
            ok, detail = await loop.run_in_executor(self.gw.executor, health, self.gw)
            return (200 if ok else 503), "application/json", metrics.health_body(ok, detail)
        return 404, "text/plain", b"/metrics or /healthz\n"
