"""The meters' OSCORE secrets (an owner-only JSON file) and the security
contexts built from them.

aiocoap looks up a server context by walking every credential it has; with
thousands of meters that is a linear scan per packet. `Keyring.find_oscore`
is a dict lookup by key id instead, and it counts what it rejects.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiocoap import oscore

from common.files import ConfigError, read_json, write_json

from .ratelog import RateLog

log = logging.getLogger("gridveil.keystore")

SEQ_CHUNK = 100  # sender sequence numbers reserved per database write


@dataclass(frozen=True)
class MeterSecret:
    meter_id: str
    kid: bytes  # the meter's OSCORE sender id; our recipient id
    master_secret: bytes
    master_salt: bytes


class KeyStore:
    """keystore.json: {"gateway_id": hex, "meters": {meter_id: {...}}}."""

    def __init__(self, path: Path, must_exist: bool = False):
        self.path = Path(path)
        self.gateway_id = b""
        self.meters: dict[str, MeterSecret] = {}
        if self.path.exists():
            self._load()
        elif must_exist:
            # Serving without it would reject every meter as unknown.
            raise ConfigError(f"meter key store {self.path} is missing: restore it from the"
                              " backup of this gateway's home (meters cannot be served"
                              " without their keys)")

    def _load(self) -> None:
        d = read_json(self.path, "meter key store", secret=True)
        try:
            self.gateway_id = bytes.fromhex(d["gateway_id"])
            for mid, m in d["meters"].items():
                self.meters[mid] = MeterSecret(mid, bytes.fromhex(m["kid"]),
                                               bytes.fromhex(m["master_secret"]),
                                               bytes.fromhex(m["master_salt"]))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"meter key store {self.path} is malformed: {e}") from None

    def save(self) -> None:
        write_json(self.path, {
            "gateway_id": self.gateway_id.hex(),
            "meters": {m.meter_id: {"kid": m.kid.hex(), "master_secret": m.master_secret.hex(),
                                    "master_salt": m.master_salt.hex()}
                       for m in self.meters.values()}}, secret=True)

    def new_meter(self, meter_id: str, kid: bytes) -> MeterSecret:
        if meter_id in self.meters:
            raise ConfigError(f"meter {meter_id} is already in the key store")
        if any(m.kid == kid for m in self.meters.values()):
            raise ConfigError(f"key id {kid.hex()} is already in use")
        m = MeterSecret(meter_id, kid, secrets.token_bytes(16), secrets.token_bytes(8))
        self.meters[meter_id] = m
        return m


class MeterContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """The gateway's side of one meter's OSCORE context.

    Without an ID context (a peer that keeps its own sequence numbers, such
    as aiocoap-client), the replay window lives in memory only and starts
    uninitialised at every gateway start, so the first request after a
    restart is answered with an Echo challenge (RFC 8613 B.1.2, RFC 9175),
    and the gateway's own sequence numbers are reserved in the database in
    chunks (B.1.1).

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
            self.sender_sequence_number = seq_store.reserved_seq(secret.kid)
            self._seq_bound = self.sender_sequence_number
        else:
            self.recipient_replay_window.initialize_empty()
            self.echo_recovery = None
            self._seq_store = None
            self.sender_sequence_number = 0
        self._rejects = rejects
        self._ratelog = ratelog

    def post_seqnoincrease(self):
        if self._seq_store is None:
            return  # a B.2 context: its keys die with this process
        if self.sender_sequence_number > self._seq_bound:
            self._seq_bound = self.sender_sequence_number + SEQ_CHUNK
            self._seq_store.reserve_seq(self.recipient_id, self._seq_bound)

    def unprotect(self, protected_message, request_id=None):
        try:
            result = super().unprotect(protected_message, request_id)
        except oscore.ReplayErrorWithEcho:
            raise  # not an attack: the normal first exchange after a restart
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

    def __init__(self, secret: MeterSecret, gateway_id: bytes, seq_store, rejects: Counter,
                 ratelog: RateLog):
        self.secret = secret
        self.gateway_id = gateway_id
        self.rejects = rejects
        self.ratelog = ratelog
        self.plain = MeterContext(secret, gateway_id, seq_store, rejects, ratelog)
        self.current: MeterContext | None = None
        self.pending_r2: bytes | None = None

    def for_kid_context(self, kid_context: bytes) -> MeterContext:
        if self.current is not None and kid_context == self.current.id_context:
            return self.current
        if (self.pending_r2 is not None and len(kid_context) == MAX_KID_CONTEXT
                and kid_context[:B2_NONCE_BYTES] == self.pending_r2):
            return EstablishedCandidate(self, kid_context)
        return Request1Context(self, kid_context)


class Keyring:
    """What aiocoap's OscoreSiteWrapper asks for server credentials."""

    def __init__(self, keystore: KeyStore, seq_store, rejects: Counter):
        self.rejects = rejects
        self.ratelog = RateLog(log)
        self._by_kid = {m.kid: MeterKeys(m, keystore.gateway_id, seq_store, rejects,
                                         self.ratelog)
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
