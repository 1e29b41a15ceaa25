"""The gateway daemon: an aiocoap server with one OSCORE-protected resource,
POST /readings, plus periodic sealing and pushing to the MDMS. Every
datagram passes gateway/guard.py first. See docs/protocol.md."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.constants import TransportTuning
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from common import signing
from common.files import ConfigError

from . import backup, payload, seal, updates
from .config import GatewayHome
from .fastenc import RandomnessPool
from .groupcommit import GroupCommit, Saturated
from .guard import Guard
from .keystore import Keyring, KeyStore, MeterContext, Request1Context
from .metrics import MetricsServer
from .pesprocess import PesProcess
from .push import Pusher, PushError, next_wait
from .ratelog import RateLog
from .store import Store, StoreError

log = logging.getLogger("gridveil.gateway")

READINGS_PATH = ("readings",)
FIRMWARE_PATH = ("fw",)
PUSH_BACKOFF_MAX_S = 60.0  # the longest wait between pushes while the MDMS is unreachable


class MeterResource(resource.Resource):
    """A resource only meters reach, inside OSCORE."""

    def __init__(self, gw: Gateway):
        super().__init__()
        self.gw = gw

    async def needs_blockwise_assembly(self, request):
        # No reassembly by aiocoap, ever: a batch fits one request (the guard
        # refuses an outer Block1; this covers one inside OSCORE), and
        # /fw serves its Block2 blocks one by one itself.
        return False

    def refusal(self, ctx) -> aiocoap.Message | None:
        """The answer to a request that is not (yet) a meter's, or None."""
        if not isinstance(ctx, MeterContext):
            self.gw.rejects[("", "unprotected")] += 1
            return aiocoap.Message(code=aiocoap.UNAUTHORIZED, payload=b"OSCORE required")
        if isinstance(ctx, Request1Context):
            # RFC 8613 B.2: verified under a context new to us, so possibly a
            # replay; not processed. The protected 4.01 carries R2 (see
            # keystore.py) and this meter's position.
            log.info("meter %s: agreeing a new security context", ctx.meter_id)
            seq, end = self.gw.seq_store.position(ctx.meter_id)
            return aiocoap.Message(code=aiocoap.UNAUTHORIZED, content_format=60,
                                   payload=payload.position(seq, end, int(time.time()),
                                                            self.gw.seq_store.kept_seq(ctx.meter_id)))
        return None


class ReadingsResource(MeterResource):
    async def render_post(self, request):
        ctx = getattr(request.remote, "security_context", None)
        if request.opt.block1 is not None:
            return aiocoap.Message(code=aiocoap.REQUEST_ENTITY_TOO_LARGE, size1=payload.MAX_PAYLOAD,
                                   payload=b"no block-wise transfer: one request carries one batch")
        refused = self.refusal(ctx)
        if refused is not None:
            return refused
        try:
            batch = payload.parse(request.payload, self.gw.config.interval_s)
        except payload.PayloadError as e:
            self.gw.rejects[(ctx.meter_id, "malformed")] += 1
            self.gw.ratelog.warning("malformed", "meter %s: malformed payload: %s", ctx.meter_id, e)
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=str(e).encode())
        if batch.meter_id != ctx.meter_id:
            # Meter A's context claiming meter B's readings.
            self.gw.rejects[(ctx.meter_id, "wrong_meter")] += 1
            self.gw.ratelog.warning("wrong_meter", "meter %s: payload claims to be from %r;"
                                    " rejected", ctx.meter_id, batch.meter_id)
            return aiocoap.Message(code=aiocoap.FORBIDDEN, payload=b"meter id does not match key")
        try:
            result = await self.gw.commits.ingest(batch)
        except Saturated as e:
            # Back-pressure: come back when the backlog has drained (RFC 7252
            # 5.9.3.4), each meter at its own time; nothing was stored.
            self.gw.rejects[(ctx.meter_id, "busy")] += 1
            self.gw.ratelog.warning("busy", "gateway saturated: meter %s asked to retry in %d s",
                                    ctx.meter_id, e.retry_s)
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, max_age=e.retry_s,
                                   payload=b"busy")
        except StoreError as e:
            # Nothing was committed and nothing is acknowledged: the meter
            # keeps the readings and retries.
            self.gw.ratelog.warning("store_error", "meter %s: cannot store readings: %s",
                                    ctx.meter_id, e)
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, max_age=30,
                                   payload=b"storage unavailable")
        if result.stale:
            self.gw.rejects[(ctx.meter_id, "stale_interval")] += result.stale
            self.gw.ratelog.warning("stale_interval", "meter %s: %d readings for intervals it"
                                    " had already reported; not counted", ctx.meter_id,
                                    result.stale)
        log.debug("meter %s: %d stored, %d duplicate, %d late (seq %d-%d)", ctx.meter_id,
                  result.accepted, result.duplicates, result.late,
                  batch.readings[0].seq, batch.readings[-1].seq)
        self.gw.ingested.add(ctx.meter_id, result)
        rollout = self.gw.firmware.current()
        offer = rollout.offer(ctx.meter_id, batch.fw_version) if rollout else None
        return aiocoap.Message(code=aiocoap.CHANGED,
                               payload=payload.ack(result.acked, int(time.time()), offer,
                                                   self.gw.seq_store.kept_seq(ctx.meter_id)),
                               content_format=60)


class FirmwareResource(MeterResource):
    """GET /fw: the image offered to this meter, one Block2 block per
    request (RFC 7959), inside OSCORE like everything a meter asks."""

    MAX_SZX = 6  # 1024-byte blocks at most: one block stays one datagram

    async def render_get(self, request):
        ctx = getattr(request.remote, "security_context", None)
        refused = self.refusal(ctx)
        if refused is not None:
            return refused
        rollout = self.gw.firmware.current()
        if rollout is None or not rollout.includes(ctx.meter_id):
            return aiocoap.Message(code=aiocoap.NOT_FOUND, payload=b"no firmware offered")
        b2 = request.opt.block2
        num, szx = (0, 4) if b2 is None else (b2.block_number, min(b2.size_exponent,
                                                                    self.MAX_SZX))
        block = rollout.block(num, szx)
        if block is None:
            return aiocoap.Message(code=aiocoap.BAD_OPTION, payload=b"block past the image's end")
        data, more = block
        if num == 0 or not more:
            log.info("meter %s: firmware %s, %s", ctx.meter_id, rollout.version,
                     "transfer started" if num == 0 else "last block sent")
        return aiocoap.Message(code=aiocoap.CONTENT, payload=data,
                               block2=(num, more, szx))


class Routes(resource.Resource):
    """The gateway's root: its few paths looked up directly. aiocoap's Site
    would copy every request (a deep copy of its options) and format its
    full URI to strip the path: about 30 µs of the event loop's 0.6 ms per
    one-reading request. Our resources never read the path, so they get
    the request as it came."""

    def __init__(self, routes: dict[tuple[str, ...], resource.Resource]):
        super().__init__()
        self.routes = routes

    async def render_to_pipe(self, pipe):
        child = self.routes.get(pipe.request.opt.uri_path)
        if child is None:
            raise aiocoap.error.NotFound()
        await child.render_to_pipe(pipe)


class IngestSummary:
    """What was stored, as one log line every SUMMARY_S while meters send:
    a line per request would be a thousand a second at a fleet's peak
    (`gridveil -v` still logs each one)."""

    SUMMARY_S = 10.0

    def __init__(self):
        self.counts: Counter = Counter()
        self.meters: set[str] = set()
        self.since = time.monotonic()

    def add(self, meter_id: str, result) -> None:
        self.meters.add(meter_id)
        c = self.counts
        c["requests"] += 1
        c["stored"] += result.accepted
        c["duplicate"] += result.duplicates
        c["late"] += result.late

    def flush(self, final: bool = False) -> None:
        now = time.monotonic()
        if now - self.since < self.SUMMARY_S and not final:
            return
        if self.counts:
            c = self.counts
            log.info("last %.0f s: %d readings stored from %d meters in %d requests"
                     " (%d duplicate, %d late)", now - self.since, c["stored"],
                     len(self.meters), c["requests"], c["duplicate"], c["late"])
        self.counts, self.meters, self.since = Counter(), set(), now


class MeterSiteWrapper(OscoreSiteWrapper):
    """aiocoap's OSCORE site wrapper, behind the guard (which already refused
    what does not parse). Should anything still raise in aiocoap's OSCORE
    code, the meter gets a 4.00 and the log one line, not a traceback."""

    def __init__(self, site, keyring: Keyring):
        super().__init__(site, keyring)
        self.keyring = keyring

    async def render_to_pipe(self, pipe):
        try:
            await super().render_to_pipe(pipe)
        except Exception as e:  # aiocoap's own errors know their codes; the rest do not
            if isinstance(e, aiocoap.error.RenderableError):
                raise
            self.keyring.rejects[("", "undecodable")] += 1
            self.keyring.ratelog.warning("undecodable", "request could not be processed: %s",
                                         type(e).__name__)
            if pipe.request.mtype == aiocoap.CON:
                pipe.add_response(aiocoap.Message(code=aiocoap.BAD_REQUEST,
                                                  payload=b"request could not be processed"),
                                  is_last=True)


def open_keystore(home: GatewayHome, store: Store, passphrase: str | None) -> KeyStore:
    """The meters' keys, opened with the passphrase; a keystore.json left by
    an older gateway is sealed into the database and removed. A meter that
    is registered without its key cannot be served: refuse to start."""
    ks = KeyStore(store, passphrase).load()
    if home.keystore.exists():
        n = ks.import_file(home.keystore)
        log.info("the keys of %d meters moved from %s into the database, sealed under the"
                 " passphrase; the clear file is gone", n, home.keystore.name)
    missing = sorted(store.meter_ids() - set(ks.meters))
    if missing:
        raise ConfigError(f"the keys of {len(missing)} registered meter(s) are missing from"
                          f" {home.db} ({', '.join(missing[:5])}): restore this gateway's home"
                          " from its backup; meters cannot be served without their keys")
    return ks


class Gateway:
    def __init__(self, home: Path, port: int | None = None, passphrase: str | None = None):
        self.home = GatewayHome(home)
        self.config = self.home.load_config()
        if port is not None:
            self.config.port = port
        self.store = Store(self.home.db)
        self.seq_store = Store(self.home.db)  # own connection for the event loop thread
        self.signing_key = signing.load_private(self.home.signing_key, passphrase)
        self.keystore = open_keystore(self.home, self.seq_store, passphrase)
        self.rejects: Counter = Counter()
        self.ingested = IngestSummary()
        self.firmware = updates.Rollouts(self.home.firmware)
        self.ratelog = RateLog(log)
        window = self.config.key_ratchet_window
        catch_up = backup.catch_up_days(self.seq_store)
        if catch_up > window:
            log.info("restored from a backup: following meters' key ratchets up to %d steps"
                     " ahead for a while", catch_up)
        self.keyring = Keyring(self.keystore, self.seq_store, self.rejects,
                               max(window, catch_up))

        self.guard = Guard(self.keyring.knows, self.rejects, rate=self.config.source_rate,
                           burst=self.config.source_burst)
        workers = self.config.encryption_workers
        if workers == -1:
            workers = max(1, (os.cpu_count() or 2) - 1)
        # Randomness made ahead on the other cores, for the current key.
        self.pool = RandomnessPool(workers) if workers else None
        self.pes = PesProcess(self.home.db, self.config.interval_s,
                              self.config.encryption_exponent_bits, self.pool)
        self.commits = GroupCommit(self.pes.ingest_group)
        # Sealing and the reject counters: off the event loop, in this process.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        # Pushing waits on the network: its own thread and connection, so
        # that ingest never waits for the MDMS.
        self.pusher = None
        if self.config.mdms_url:
            self.pusher = Pusher(Store(self.home.db), self.signing_key, self.config.gateway_id,
                                 self.config.mdms_url, self.config.mdms_ca,
                                 batch=self.config.push_batch,
                                 health_every_s=self.config.health_every_s)
        self.push_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push")
        self._tasks: list[asyncio.Task] = []
        self.context = None
        self.metrics = MetricsServer(self)

    async def start(self) -> None:
        site = Routes({READINGS_PATH: ReadingsResource(self),
                       FIRMWARE_PATH: FirmwareResource(self)})
        bind = (self.config.bind, self.config.port)
        await asyncio.get_running_loop().run_in_executor(None, self.pes.start)
        if self.pool is not None:
            self.pool.start(self.pes.h_s, self.pes.nsquare, self.config.encryption_exponent_bits)
        # Process-wide in aiocoap; this process is the gateway alone.
        TransportTuning.EMPTY_ACK_DELAY = self.config.empty_ack_delay_s
        self.context = await aiocoap.Context.create_server_context(
            MeterSiteWrapper(site, self.keyring), bind=bind, transports=["udp6"])
        if not self.guard.install(self.context):
            raise RuntimeError("aiocoap has no UDP interface to guard")
        granted = Guard.size_receive_buffer(self.context, self.config.receive_buffer_bytes)
        if granted < self.config.receive_buffer_bytes:
            log.warning("UDP receive buffer is %d bytes, not the %d asked for: raise"
                        " net.core.rmem_max (sysctl) or a fleet's burst may overflow it",
                        granted, self.config.receive_buffer_bytes)
        if self.config.metrics_port:
            try:
                await self.metrics.start(self.config.metrics_bind, self.config.metrics_port)
            except OSError as e:  # the readings matter more than their figures
                log.error("cannot serve /metrics on %s:%d (%s); set metrics_port in"
                          " gateway.json (0: off)", self.config.metrics_bind,
                          self.config.metrics_port, e.strerror or e)
        self._tasks = [asyncio.create_task(self._seal_loop()),
                       asyncio.create_task(self._every_second())]
        if self.pusher is not None:
            self._tasks.append(asyncio.create_task(self._push_loop()))
        log.info("gateway %s listening on %s:%d for %d meters (Paillier key %s, %d randomness"
                 " workers, clock %s, pushing to %s)", self.config.gateway_id, bind[0], bind[1],
                 len(self.keyring), self.pes.key_id, len(self.pool.procs) if self.pool else 0,
                 self.config.clock, self.config.mdms_url or "no MDMS")

    async def _seal_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.seal_every_s)
            try:
                await loop.run_in_executor(self.executor, self.seal_due)
            except StoreError as e:
                log.error("sealing failed: %s", e)

    def seal_due(self, seal_all: bool = False) -> seal.SealResult:
        c = self.config
        return seal.seal(self.store, self.signing_key, c.gateway_id, c.interval_s, c.grace_s,
                         c.clock, seal_all=seal_all, bill_grace_s=c.bill_grace_s)

    async def _push_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        wait = self.config.push_every_s
        while True:
            await asyncio.sleep(wait)
            try:
                await loop.run_in_executor(self.push_executor, self.pusher.drain)
                if failing:
                    log.info("pushing to the MDMS works again")
                failing = False
                wait = self.config.push_every_s
            except PushError as e:
                if not failing:  # one line per outage, not one per attempt
                    log.warning("cannot push to the MDMS, will retry: %s", e)
                failing = True
                # Each attempt reads, encodes and signs a whole batch: while
                # the MDMS is away, try less and less often, up to a minute,
                # jittered (push.next_wait).
                wait = next_wait(wait, self.config.push_every_s, PUSH_BACKOFF_MAX_S)
            except StoreError as e:
                log.error("cannot read the outbox: %s", e)

    async def _every_second(self) -> None:
        """Housekeeping: reject counters to the database, rate-limited log
        windows closed, old duplicates expired, the stored-readings summary."""
        while True:
            await asyncio.sleep(1.0)
            await self.flush_rejects()
            for r in (self.ratelog, self.keyring.ratelog):
                r.flush()
            self.guard.tick()
            self.ingested.flush()


    async def flush_rejects(self) -> None:
        """Write the rejected-message counters. The counter is only touched
        on the event loop; the database write runs on the store thread."""
        counts = {k: v for k, v in self.rejects.items() if v > 0}
        if not counts:
            return
        self.rejects.clear()
        try:
            await asyncio.get_running_loop().run_in_executor(self.executor,
                                                             self.store.add_rejects, counts)
        except StoreError as e:
            log.error("cannot record rejected messages: %s", e)
            self.rejects.update(counts)  # try again next time

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.metrics.stop()
        if self.context is not None:
            await self.context.shutdown()
        await self.flush_rejects()
        self.ingested.flush(final=True)
        self.executor.shutdown(wait=True)
        self.push_executor.shutdown(wait=True)
        self.pes.close()
        if self.pool is not None:
            self.pool.close()
        if self.pusher is not None:
            self.pusher.store.close()
        self.store.close()
        self.seq_store.close()
        log.info("gateway stopped")


async def serve(home: Path, port: int | None = None, passphrase: str | None = None) -> None:
    gw = Gateway(home, port, passphrase)
    await gw.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {gw.config.bind}:{gw.config.port}", flush=True)
    await stop.wait()
    await gw.stop()
