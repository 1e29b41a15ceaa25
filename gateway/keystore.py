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

    The replay window lives in memory only and starts uninitialised at every
    gateway start, so the first request after a restart is answered with an
    Echo challenge (RFC 8613 B.1.2, RFC 9175). The gateway's own sender
    sequence numbers (used for those Echo responses) are reserved in the
    database in chunks (B.1.1), so a restart never reuses a nonce.
    """

    def __init__(self, secret: MeterSecret, gateway_id: bytes, seq_store, rejects: Counter,
                 ratelog: RateLog):
        self.meter_id = secret.meter_id
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.id_context = None
        self.sender_id = gateway_id
        self.recipient_id = secret.kid
        self.derive_keys(secret.master_salt, secret.master_secret)
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.echo_recovery = secrets.token_bytes(8)
        self._seq_store = seq_store
        self.sender_sequence_number = seq_store.reserved_seq(secret.kid)
        self._seq_bound = self.sender_sequence_number
        self._rejects = rejects
        self._ratelog = ratelog

    def post_seqnoincrease(self):
        if self.sender_sequence_number > self._seq_bound:
            self._seq_bound = self.sender_sequence_number + SEQ_CHUNK
            self._seq_store.reserve_seq(self.recipient_id, self._seq_bound)

    def unprotect(self, protected_message, request_id=None):
        try:
            return super().unprotect(protected_message, request_id)
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

    def __repr__(self):
        return f"<MeterContext {self.meter_id}>"


class Keyring:
    """What aiocoap's OscoreSiteWrapper asks for server credentials."""

    def __init__(self, keystore: KeyStore, seq_store, rejects: Counter):
        self.rejects = rejects
        self.ratelog = RateLog(log)
        self._by_kid = {m.kid: MeterContext(m, keystore.gateway_id, seq_store, rejects,
                                            self.ratelog)
                        for m in keystore.meters.values()}

    def knows(self, kid) -> bool:
        return kid in self._by_kid

    def __len__(self):
        return len(self._by_kid)

    def find_oscore(self, unprotected):
        kid = unprotected.get(oscore.COSE_KID)
        # Plain OSCORE only: an ID context or group mode (whose code paths
        # expect attributes these contexts do not have) finds no context.
        plain = not set(unprotected) - {oscore.COSE_KID, oscore.COSE_PIV}
        ctx = self._by_kid.get(kid) if plain else None
        if ctx is None:
            self.rejects[("", "unknown_kid")] += 1
            self.ratelog.warning("unknown_kid", "request with unknown OSCORE key id rejected")
            raise KeyError(kid)
        return ctx

    def find_all_used_contextless_oscore_kid(self):
        return set(self._by_kid)

    def get(self, key, default=None):  # EDHOC lookups: none configured
        return default
