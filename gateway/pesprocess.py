"""The PES in a process of its own, beside the gateway's event loop.

Why: at a thousand requests a second the event loop (aiocoap, OSCORE, the
guard) takes most of a core, and so do Paillier and SQLite; gmpy2 and the
sqlite3 module hold the GIL for much of their work, so in one process the
two take turns. Here the PES (gateway/pes.py) runs in a child process with
its own database connection. The event loop sends it one group of batches
at a time (gateway/groupcommit.py) and is woken when the answer is there;
it never blocks on it.

The child answers a group only after its commit: a meter's ACK still never
precedes its readings on disk. It ends when its pipe closes: when the
gateway stops, and also when the gateway is killed (no orphan keeps
writing). It ignores SIGINT and SIGTERM, so that a group in hand is
finished, not cut. If the child dies, the group in flight is refused
(nothing of it was acknowledged, so the meters send it again) and the
next group starts a new child.

Randomness from the pool (gateway/fastenc.py) reaches the child through
the pool's queue; the child makes h_s, and the pool's workers start with it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import signal
from pathlib import Path

from common import LOG_FORMAT

from .fastenc import PoolTap, RandomnessPool
from .pes import PES, Batch, BatchResult
from .procname import name_process
from .store import Store, StoreError

log = logging.getLogger("gridveil.pes")

START_TIMEOUT_S = 120  # the fixed-base table takes about a second at 2048 bits
RESTART_EVERY_S = 5.0  # while a new child cannot start, groups are refused in between


class PesProcess:
    def __init__(self, db: Path, interval_s: int, exponent_bits: int,
                 pool: RandomnessPool | None = None):
        self.args = (str(db), interval_s, exponent_bits)
        self.pool = pool
        self.proc = self.conn = None
        self.key_id: str | None = None
        self.h_s: int | None = None  # kept: a new child goes on with the pool's base
        self.nsquare: int | None = None
        self._restart_at = 0.0  # loop time before which no new start is tried

    def start(self) -> None:
        """Start the child and wait until it can ingest (blocking). Raises
        StoreError with the child's reason if it cannot (no Paillier key)."""
        ctx = mp.get_context("spawn")  # never fork a process that runs threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child, name="gridveil-pes", daemon=True,
            args=(child, *self.args, (self.key_id, self.h_s) if self.h_s else None,
                  self.pool.queue if self.pool else None,
                  logging.getLogger().getEffectiveLevel()))
        self.proc.start()
        child.close()  # the child's end lives in the child alone: its death is our EOF
        try:
            ready = self.conn.recv() if self.conn.poll(START_TIMEOUT_S) else StoreError(
                f"the PES process did not start within {START_TIMEOUT_S} s")
        except EOFError:
            self.proc.join(timeout=1)
            ready = StoreError(f"the PES process ended at start ({self._exit()})")
        if isinstance(ready, Exception):
            self.close()
            raise ready
        if self.key_id is not None and ready[0] != self.key_id:
            log.warning("the PES process now encrypts under key %s, not %s: the randomness"
                        " pool, made for the old key, is no longer used", ready[0], self.key_id)
        self.key_id, self.h_s, self.nsquare = ready

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive() and self.conn is not None

    async def ingest_group(self, batches: list[Batch]) -> list[BatchResult | Exception]:
        """PES.ingest_group in the child. One call at a time (GroupCommit's
        drain is the only caller)."""
        loop = asyncio.get_running_loop()
        if not self.alive():
            await self._restart(loop)
        fut = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, self._answer, fut)
        try:
            self.conn.send(batches)
            return await fut
        except OSError as e:  # the pipe broke: the child is gone
            raise StoreError(f"the PES process ended ({self._exit()})") from e
        finally:
            loop.remove_reader(fd)
            if not fut.done():
                # Cancelled while the child works: its answer would be read
                # as the next group's. Close; the next group starts afresh.
                fut.cancel()
                self.close()

    async def _restart(self, loop) -> None:
        """A new child, at most every RESTART_EVERY_S: one that cannot start
        (its database gone) must not be tried, and logged, for every group."""
        if loop.time() < self._restart_at:
            raise StoreError("the PES process is not running")
        first = self._restart_at == 0
        if first:
            log.warning("starting the PES process again (%s)", self._exit())
        self.close()
        try:
            await loop.run_in_executor(None, self.start)
        except (StoreError, OSError) as e:  # OSError: no process could be made
            self._restart_at = loop.time() + RESTART_EVERY_S
            if first:
                log.error("cannot start the PES process: %s; trying again every %.0f s", e,
                          RESTART_EVERY_S)
            raise StoreError(f"the PES process cannot start: {e}") from None
        if not first:
            log.info("the PES process runs again")
        self._restart_at = 0.0

    def _answer(self, fut: asyncio.Future) -> None:
        if fut.done():
            return
        try:
            out = self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(timeout=1)
            log.error("the PES process ended while storing a group (%s); its meters will"
                      " send it again", self._exit())
            fut.set_exception(StoreError("the PES process ended"))
            return
        if isinstance(out, Exception):
            fut.set_exception(out)
        else:
            fut.set_result(out)

    def _exit(self) -> str:
        code = self.proc.exitcode if self.proc is not None else None
        if code is None:
            return "not running"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self, timeout: float = 30) -> None:
        """Close the pipe; the child finishes the group in hand and ends."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join(timeout)
            if self.proc.is_alive():
                log.warning("the PES process did not end within %d s; killing it", timeout)
                self.proc.kill()
                self.proc.join()
            self.proc = None


def _child(conn, db: str, interval_s: int, exponent_bits: int,
           base: tuple[str, int] | None, values, log_level: int) -> None:
    """`base`: (key id, h_s) of the pool's workers, when restarted; `values`:
    the pool's queue. Both serve only the key they were made for: h_s^x is
    an n-th residue modulo that key's n² alone."""
    name_process("gridveil-pes")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    try:
        pes = PES(Store(Path(db)), interval_s, exponent_bits)
        same_key = base is None or base[0] == pes.key_id
        enc = pes.encryptor(pes.key_id, base[1] if base and same_key else None)
    except Exception as e:  # noqa: BLE001 -- the gateway reports it in one line
        conn.send(e if isinstance(e, StoreError) else
                  StoreError(f"cannot start the PES: {type(e).__name__}: {e}"))
        return
    if values is not None and same_key:
        enc.pool = PoolTap(values)
    conn.send((pes.key_id, enc.h_s, enc.pub.nsquare))
    try:
        while True:
            try:
                batches = conn.recv()
            except (EOFError, OSError):
                return  # the gateway stopped, or died
            try:
                out = [_portable(r) for r in pes.ingest_group(batches)]
            except StoreError as e:
                out = e
            except Exception as e:  # noqa: BLE001 -- refused as a whole; the meters retry
                out = _portable(e)
            try:
                conn.send(out)
            except OSError:
                return
    finally:
        pes.store.close()


def _portable(r):
    """What crosses the pipe: results, and StoreErrors (the server answers
    those with 5.03). Anything else failing is a bug: one log line here,
    a StoreError for the meter, never a traceback."""
    if not isinstance(r, Exception) or isinstance(r, StoreError):
        return r
    log.error("storing a batch failed: %s: %s", type(r).__name__, r)
    return StoreError(f"internal error ({type(r).__name__})")
