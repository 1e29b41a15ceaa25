"""The meters' OSCORE master secrets and the security contexts built from
them.

At rest, in the gateway's database, each secret is sealed (AES-256-GCM)
under a key derived with scrypt from the gateway's passphrase, which is not
on its disk: a stolen disk holds no key that opens a reading (the table
only says which meters this gateway serves). In memory, while the gateway
runs, they are in the clear.

Forward secrecy for recorded traffic: a meter moves to a new master secret
every day, HKDF-derived one way from the old one (a hash ratchet,
`next_secret`), and starts a new context agreement (RFC 8613 B.2) under it;
the gateway follows when a Request #1 verifies under a later generation and
overwrites the old secret. So the thief of a disk and its passphrase opens
at most the traffic since the meter's last step, never what was recorded
before it. Meters provisioned before the ratchet (and peers that do not
speak B.2) keep one secret.

aiocoap looks up a server context by walking every credential it has; with
thousands of meters that is a linear scan per packet. `Keyring.find_oscore`
is a dict lookup by key id instead, and it counts what it rejects.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from aiocoap import oscore
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.files import ConfigError, check_owner_only, read_json

from .ratelog import RateLog

log = logging.getLogger("gridveil.keystore")

SEQ_CHUNK = 100  # sender sequence numbers reserved per database write
# A plain context's own sequence numbers also never fall below a line that
# the clock draws (SEQ_RATE a second from SEQ_EPOCH), and never run more
# than SEQ_SLACK above it: so a gateway restored from an old backup, whose
# stored reservations went back with it, still starts above every number it
# used before, provided SEQ_SLACK / SEQ_RATE seconds passed since it last
# sent (`gridveil gateway restore` waits that long). 2^40 numbers last 349
# years at this rate.
SEQ_EPOCH = 1_767_225_600  # 2026-01-01
SEQ_RATE = 100
SEQ_SLACK = 2000
RESTORE_WAIT_S = SEQ_SLACK / SEQ_RATE
RATCHET_INFO = b"gridveil-ratchet-v1"
SCRYPT = {"n": 2**15, "r": 8, "p": 1, "maxmem": 64 << 20}


def clock_line(now: float | None = None) -> int:
    return max(0, int(((time.time() if now is None else now) - SEQ_EPOCH) * SEQ_RATE))


def next_secret(master_secret: bytes, master_salt: bytes) -> bytes:
    """The ratchet's one-way step: the next generation's master secret."""
    return HKDF(hashes.SHA256(), len(master_secret), master_salt,
                RATCHET_INFO).derive(master_secret)


@dataclass(frozen=True)
class MeterSecret:
    meter_id: str
    kid: bytes  # the meter's OSCORE sender id; our recipient id
    master_secret: bytes
    master_salt: bytes
    generation: int = 0  # steps of the ratchet taken so far
    ratchet: bool = False  # False: a meter (or peer) that keeps one secret


class KeyStore:
    """The meters' secrets, sealed in the gateway's database (gateway/store.py)
    under a key derived from the passphrase."""

    def __init__(self, store, passphrase: str | None):
        if not passphrase:
            raise ConfigError("the meters' keys are encrypted at rest: give the gateway's"
                              " passphrase in $GRIDVEIL_GATEWAY_PASSPHRASE or with"
                              " --passphrase-file")
        self.store = store
        salt = store.keystore_salt()
        self._aead = AESGCM(hashlib.scrypt(passphrase.encode(), salt=salt, dklen=32, **SCRYPT))
        self.gateway_id = b""  # our OSCORE sender id; unique per meter context anyway
        self.meters: dict[str, MeterSecret] = {}

    def load(self) -> KeyStore:
        """Open every meter's secret (a gateway that serves them)."""
        for meter_id, kid, generation, ratchet, sealed in self.store.meter_keys():
            raw = self._open(meter_id, kid, generation, sealed)
            self.meters[meter_id] = MeterSecret(meter_id, kid, raw[:16], raw[16:], generation,
                                                bool(ratchet))
        return self

    @staticmethod
    def _aad(meter_id: str, kid: bytes, generation: int) -> bytes:
        return f"gridveil-meter-key-v1|{meter_id}|{kid.hex()}|{generation}".encode()

    def _seal(self, m: MeterSecret) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, m.master_secret + m.master_salt,
                                          self._aad(m.meter_id, m.kid, m.generation))

    def _open(self, meter_id: str, kid: bytes, generation: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:],
                                      self._aad(meter_id, kid, generation))
        except (InvalidTag, ValueError):
            raise ConfigError(f"meter {meter_id}'s key does not open with this passphrase (a"
                              " wrong passphrase, or the key was damaged or moved)") from None

    def new_meter(self, meter_id: str, kid: bytes, ratchet: bool = True
                  ) -> tuple[MeterSecret, bytes]:
        """A new meter's secret and its sealed form, for the database row
        that registers the meter (Store.add_meter writes both at once, and
        refuses a meter id or key id already in use)."""
        m = MeterSecret(meter_id, kid, secrets.token_bytes(16), secrets.token_bytes(8), 0,
                        ratchet)
        return m, self._seal(m)

    def advance(self, m: MeterSecret, steps: int) -> MeterSecret:
        """The meter's secret `steps` generations on; the older one is
        overwritten in the database (and dropped here)."""
        secret = m.master_secret
        for _ in range(steps):
            secret = next_secret(secret, m.master_salt)
        new = replace(m, master_secret=secret, generation=m.generation + steps)
        self.store.advance_meter_key(m.kid, new.generation, self._seal(new))
        self.meters[m.meter_id] = new
        return new

    def import_file(self, path: Path) -> int:
        """Meters from a keystore.json of a gateway from before the keys were
        sealed: they keep their one secret (their firmware has no ratchet).
        The clear file is overwritten and removed once all are in."""
        check_owner_only(path, "meter key store")
        d = read_json(path, "meter key store", secret=True)
        try:
            found = [(mid, bytes.fromhex(m["kid"]), bytes.fromhex(m["master_secret"]),
                      bytes.fromhex(m["master_salt"])) for mid, m in d["meters"].items()]
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"meter key store {path} is malformed: {e}") from None
        for mid, kid, ms, salt in found:
            if mid not in self.meters:
                m = MeterSecret(mid, kid, ms, salt, 0, False)
                self.store.put_meter_key(mid, kid, 0, False, self._seal(m))
                self.meters[mid] = m
        with open(path, "r+b") as f:  # the best a file system allows: overwrite, then unlink
            size = f.seek(0, 2)
            f.seek(0)
            f.write(b"\0" * size)
            f.flush()
            os.fsync(f.fileno())
        path.unlink()
        return len(found)


class MeterContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """The gateway's side of one meter's OSCORE context.

    Without an ID context (a peer that keeps its own sequence numbers, such
    as aiocoap-client), the replay window lives in memory only and starts
    uninitialised at every gateway start, so the first request after a
    restart is answered with an Echo challenge (RFC 8613 B.1.2, RFC 9175),
    and the gateway's own sequence numbers are reserved in the database in
    chunks (B.1.1) and kept above the clock's line (SEQ_RATE), which a
    restored backup cannot take back.

    With an ID context agreed as in Appendix B.2 (our firmware, every boot;
    see MeterKeys), the keys are new to both sides: the replay window starts
    empty and valid, and sequence numbers start at 0 with nothing stored.
    """

    def __init__(self, secret: MeterSecret, gateway_id: bytes, seq_store, rejects: Counter,
                 ratelog: RateLog, id_context: bytes | None = None):
        self.meter_id = secret.meter_id
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context = id_context
        self.sender_id = gateway_id
        self.recipient_id = secret.kid
        self.derive_keys(secret.master_salt, secret.master_secret)
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        if id_context is None:
            self.echo_recovery = secrets.token_bytes(8)
            self._seq_store = seq_store
            self.sender_sequence_number = max(seq_store.reserved_seq(secret.kid), clock_line())
            self._seq_bound = self.sender_sequence_number
        else:
            self.recipient_replay_window.initialize_empty()
            self.echo_recovery = None
            self._seq_store = None
            self.sender_sequence_number = 0
        self._rejects = rejects
        self._ratelog = ratelog

    def new_sequence_number(self):
        if self._seq_store is not None:
            self.sender_sequence_number = max(self.sender_sequence_number, clock_line())
        return super().new_sequence_number()

    def seqs_left(self) -> bool:
        """Whether this context may use one more of its own sequence numbers
        without running SEQ_SLACK ahead of the clock's line."""
        return self._seq_store is None or \
            self.sender_sequence_number < clock_line() + SEQ_SLACK

    def post_seqnoincrease(self):
        if self._seq_store is None:
            return  # a B.2 context: its keys die with this process
        if self.sender_sequence_number > self._seq_bound:
            self._seq_bound = self.sender_sequence_number + SEQ_CHUNK
            self._seq_store.reserve_seq(self.recipient_id, self._seq_bound)

    def _unprotect(self, protected_message, request_id):
        return oscore.CanUnprotect.unprotect(self, protected_message, request_id)

    def unprotect(self, protected_message, request_id=None):
        try:
            result = self._unprotect(protected_message, request_id)
        except oscore.ReplayErrorWithEcho:
            # Not an attack: the normal first exchange after a restart. Its
            # answer takes one of our sequence numbers; under a flood of
            # them, past SEQ_SLACK, the answer goes unprotected and the
            # meter asks again later.
            if not self.seqs_left():
                self._rejects[(self.meter_id, "seq_budget")] += 1
                self._ratelog.warning("seq_budget", "meter %s: too many Echo challenges; this"
                                      " one is refused", self.meter_id)
                raise oscore.ReplayError("no sequence number left to answer with") from None
            raise
        except oscore.ReplayError:
            self._rejects[(self.meter_id, "replay")] += 1
            self._ratelog.warning("replay", "meter %s: replayed request rejected", self.meter_id)
            raise
        except oscore.ProtectionInvalid:
            self._rejects[(self.meter_id, "forged")] += 1
            self._ratelog.warning("forged", "meter %s: request failed OSCORE verification",
                                  self.meter_id)
            raise
        self._verified()
        return result

    def _verified(self):
        pass

    def __repr__(self):
        return f"<MeterContext {self.meter_id}>"


class Request1Context(MeterContext):
    """B.2 step 2: a request under an ID context this gateway does not hold
    (a meter that booted, or one whose context died with a gateway restart).
    It is verified, never processed: the resource answers 4.01 and the
    response, protected under R2 || ID1, hands the meter R2."""

    def __init__(self, keys: MeterKeys, id1: bytes):
        super().__init__(keys.secret, keys.gateway_id, None, keys.rejects, keys.ratelog, id1)
        self.keys = keys

    def _unprotect(self, protected_message, request_id):
        """Verified under the meter's secret, or under one of its next
        generations: a meter that stepped its ratchet starts its new
        agreement under the next secret, and the gateway follows it there
        (and forgets the old one) only once a request verifies."""
        try:
            return super()._unprotect(protected_message, request_id)
        except oscore.ProtectionInvalid:
            m = self.keys.secret
            if not m.ratchet:
                raise
            secret = m.master_secret
            for step in range(1, self.keys.window + 1):
                secret = next_secret(secret, m.master_salt)
                self.derive_keys(m.master_salt, secret)
                try:
                    result = super()._unprotect(protected_message, request_id)
                except oscore.ProtectionInvalid:
                    continue
                self.keys.advance(step)
                return result
            self.derive_keys(m.master_salt, m.master_secret)
            raise

    def context_for_response(self):
        r2 = secrets.token_bytes(B2_NONCE_BYTES)
        self.keys.pending_r2 = r2
        return Response1Context(self.keys, r2, self.id_context)


class Response1Context(MeterContext):
    def __init__(self, keys: MeterKeys, r2: bytes, id1: bytes):
        super().__init__(keys.secret, keys.gateway_id, None, keys.rejects, keys.ratelog,
                         r2 + id1)
        self.r2 = r2

    def protect(self, message, request_id=None, *, kid_context=True):
        # aiocoap puts a kid context in requests only; Response #1 carries R2
        # in its option (RFC 8613 6.1 'h' flag). The option is not part of
        # the AAD, so adding it after sealing changes nothing that is checked.
        outer, request_id = super().protect(message, request_id, kid_context=False)
        value = outer.opt.oscore
        flags = value[0] if value else 0
        n = flags & 0x07
        outer.opt.oscore = (bytes((flags | 0x10,)) + value[1:1 + n] + bytes((len(self.r2),))
                            + self.r2 + value[1 + n:])
        return outer, request_id


class EstablishedCandidate(MeterContext):
    """B.2 step 4: R2 || R3 with the R2 this gateway handed out. It becomes
    the meter's context once a request verifies under it."""

    def __init__(self, keys: MeterKeys, id2: bytes):
        super().__init__(keys.secret, keys.gateway_id, None, keys.rejects, keys.ratelog, id2)
        self.keys = keys

    def _verified(self):
        if self.keys.current is not self:
            self.keys.current = self
            self.keys.pending_r2 = None


B2_NONCE_BYTES = 8
MAX_KID_CONTEXT = 2 * B2_NONCE_BYTES


class MeterKeys:
    """Everything the gateway holds for one meter: its plain context, and
    the B.2 context agreed in this process (at most one, plus one R2 handed
    out and not yet used, so a flood of replayed Request #1s costs one slot)."""

    def __init__(self, secret: MeterSecret, keystore: KeyStore, seq_store, rejects: Counter,
                 ratelog: RateLog, window: int = 1):
        self.secret = secret
        self.window = window  # generations a Request #1 may be ahead (GatewayConfig)
        self.keystore = keystore
        self.gateway_id = keystore.gateway_id
        self.seq_store = seq_store
        self.rejects = rejects
        self.ratelog = ratelog
        self.plain = MeterContext(secret, self.gateway_id, seq_store, rejects, ratelog)
        self.current: MeterContext | None = None
        self.pending_r2: bytes | None = None

    def advance(self, steps: int) -> None:
        """The meter stepped its ratchet: follow it, and forget the old secret."""
        self.secret = self.keystore.advance(self.secret, steps)
        self.plain = MeterContext(self.secret, self.gateway_id, self.seq_store, self.rejects,
                                  self.ratelog)
        self.current, self.pending_r2 = None, None
        log.info("meter %s: key generation %d", self.secret.meter_id, self.secret.generation)

    def for_kid_context(self, kid_context: bytes) -> MeterContext:
        if self.current is not None and kid_context == self.current.id_context:
            return self.current
        if (self.pending_r2 is not None and len(kid_context) == MAX_KID_CONTEXT
                and kid_context[:B2_NONCE_BYTES] == self.pending_r2):
            return EstablishedCandidate(self, kid_context)
        return Request1Context(self, kid_context)


class Keyring:
    """What aiocoap's OscoreSiteWrapper asks for server credentials."""

    def __init__(self, keystore: KeyStore, seq_store, rejects: Counter, window: int = 1):
        self.rejects = rejects
        self.ratelog = RateLog(log)
        self._by_kid = {m.kid: MeterKeys(m, keystore, seq_store, rejects, self.ratelog, window)
                        for m in keystore.meters.values()}

    def knows(self, kid) -> bool:
        return kid in self._by_kid

    def __len__(self):
        return len(self._by_kid)

    def find_oscore(self, unprotected):
        kid = unprotected.get(oscore.COSE_KID)
        # Pairwise OSCORE only: group mode (whose code paths expect
        # attributes these contexts do not have) finds no context.
        plain = not set(unprotected) - {oscore.COSE_KID, oscore.COSE_PIV, oscore.COSE_KID_CONTEXT}
        keys = self._by_kid.get(kid) if plain else None
        if keys is None:
            self.rejects[("", "unknown_kid")] += 1
            self.ratelog.warning("unknown_kid", "request with unknown OSCORE key id rejected")
            raise KeyError(kid)
        kid_context = unprotected.get(oscore.COSE_KID_CONTEXT)
        if kid_context is None:
            return keys.plain
        if not 1 <= len(kid_context) <= MAX_KID_CONTEXT:
            self.rejects[(keys.secret.meter_id, "kid_context")] += 1
            self.ratelog.warning("kid_context", "meter %s: kid context of %d bytes rejected",
                                 keys.secret.meter_id, len(kid_context))
            raise KeyError(kid)
        return keys.for_kid_context(kid_context)

    def find_all_used_contextless_oscore_kid(self):
        return set(self._by_kid)

    def get(self, key, default=None):  # EDHOC lookups: none configured
        return default
