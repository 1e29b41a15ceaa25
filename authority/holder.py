"""One key holder: the whole key in single mode, or one of the two share
holders (the utility's, the privacy guardian's) in threshold mode. Each
runs as its own service with its own home (`gridveil holder ...`).

Every value asked for passes the policy checks in order; the first that
fails is a Refusal with a clear message. Every request, granted or
refused, is appended to the holder's own hash-chained log. A holder that
grants returns the plaintext (single) or its partial decryption
(threshold), with its differential-privacy noise already in when its
policy adds noise; many values to one decryption (packing.py). What is
decided: aggregates.py (neighbourhood sums) and bills.py (groups of bills).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import paillier, records, signing, tariff
from common.files import ConfigError, check_name, check_owner_only, read_json, write_atomic, write_json

from . import aggregates, bills, keys, threshold
from . import desk as desk_mod
from .desk import Desk
from .keys import KeyDir
from .ledger import RESTORED, Ledger, sign_head
from .packing import Opener
from .policy import Policy, Refusal
from .registry import Registry

log = logging.getLogger("gridveil.holder")

DAY = 86400
ROLES = ("single", "utility", "guardian")
MAX_PARTS = 64  # gateways in one neighbourhood
MAX_BATCH = 4000  # aggregates in one request


class HolderHome:
    """Files of one key holder, all in its own directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = self.path / "holder.json"
        self.keys = KeyDir(self.path / "keys")
        self.gateways = self.path / "gateways"  # <gateway id>.pub: trusted signing keys
        self.policy = self.path / "policy.json"
        self.ledger = self.path / "authority.db"
        self.tokens = self.path / "api-tokens.json"
        self.tariffs = self.path / "tariffs"  # <id>@<version>.json: approved, with prices
        self.enrolled = self.path / "enrolled.json"  # meter id -> household (customer) id
        self.transport = self.path / "transport-key.json"
        self.signing_key = self.path / "signing-key.json"  # signs the log's heads
        self.signing_pub = self.path / "signing.pub"
        # The guardian's signing key, at the utility's holder: decisions are checked with it
        self.guardian_pub = self.path / "guardian.pub"
        # key id -> the clipping bound this holder signed into the epoch
        self.signed_epochs = self.path / "signed-epochs.json"
        self._cache: dict[str, tuple[tuple, object]] = {}

    def _cached(self, path: Path, load):
        """`load()`, read again only when `path` changed: an enrollment or an
        approval made while the holder serves takes effect at once, and a
        busy holder does not re-read its registries for every request."""
        try:
            st = path.stat()  # a rewrite (write_atomic renames) changes the inode too
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            return load()
        hit = self._cache.get(str(path))
        if hit is None or hit[0] != stamp:
            hit = self._cache[str(path)] = (stamp, load())
        return hit[1]

    def signed_clips(self) -> dict[str, int]:
        return self._cached(self.signed_epochs, lambda: read_json(
            self.signed_epochs, "signed epochs") if self.signed_epochs.exists() else {})

    def enrollment(self) -> dict[str, str]:
        return self._cached(self.enrolled, lambda: read_json(self.enrolled, "enrolled meters")
                            if self.enrolled.exists() else {})

    def approved_tariffs(self) -> dict:
        def load():
            if not self.tariffs.is_dir():
                return {}
            out = {}
            for p in sorted(self.tariffs.glob("*.json")):
                t = tariff.check_bounds(tariff.parse(read_json(p, "approved tariff")))
                out[t.ref] = t
            return out
        return self._cached(self.tariffs, load)

    def gateway_keys(self) -> dict[str, list]:
        """Gateway id -> its signing keys (`<id>.pub`, and `<id>@<key id>.pub`
        beside it while it rotates): a gateway trusted (or removed) while
        the holder serves counts from its next request."""
        def load():
            out: dict[str, list] = {}
            if self.gateways.is_dir():
                for p in sorted(self.gateways.glob("*.pub")):
                    out.setdefault(p.name[:-4].split("@")[0], []).append(signing.load_public(p))
            return out
        return self._cached(self.gateways, load)

    def api_tokens(self) -> dict[str, str]:
        """SHA-256 of a bearer token -> the requester it names; `holder
        allow` and `holder deny` take effect while the holder serves."""
        return self._cached(self.tokens, lambda: read_json(self.tokens, "API tokens",
                                                           secret=True)
                            if self.tokens.exists() else {})


def create(home: Path, role: str, policy: Policy, passphrase: str | None) -> bytes:
    """A new holder home; returns the raw X25519 key the dealer seals the
    share (or the single key) to."""
    h = HolderHome(home)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {ROLES}")
    if h.meta.exists():
        raise ConfigError(f"a key holder already exists in {h.path}")
    policy.validate()
    if passphrase is None:
        raise ConfigError(f"a key holder's secrets are encrypted at rest: give its passphrase in"
                          f" ${keys.PASSPHRASE_ENV} or with --passphrase-file")
    h.path.mkdir(parents=True, exist_ok=True)
    h.path.chmod(0o700)
    pub = keys.new_transport_key(h.transport, passphrase)
    write_atomic(h.signing_pub, signing.public_pem(keys.new_signing_key(h.signing_key,
                                                                        passphrase)))
    write_json(h.policy, policy.to_json())
    write_json(h.meta, {"role": role})
    return pub


def import_key(home: Path, box_file: Path, pub_file: Path, passphrase: str | None) -> str:
    """Open what the dealer sealed to this holder and keep it encrypted
    under the holder's own passphrase."""
    h = HolderHome(home)
    meta = read_json(h.meta, "key holder settings")
    pub = paillier.load_public(pub_file)
    kid = paillier.key_id(pub)
    bits = Policy.from_json(read_json(h.policy, "authority policy")).min_key_bits
    if pub.n.bit_length() < bits:
        raise ConfigError(f"key {kid} has {pub.n.bit_length()} bits; this holder's policy"
                          f" refuses keys under {bits} bits")
    box = read_json(box_file, "sealed key")
    secret = keys.open_box(keys.load_transport_key(h.transport, passphrase), box, str(box_file))
    if secret.get("key_id") != kid:
        raise ConfigError(f"{box_file} holds a key for epoch {secret.get('key_id')}, not {kid}")
    h.keys.save_public(pub)
    try:
        if meta.get("role") == "single":
            from phe import PaillierPrivateKey

            p, q = int(secret["p"]), int(secret["q"])
            if p * q != pub.n:
                raise ConfigError(f"{box_file} does not match the public key {kid}")
            h.keys.save_private(PaillierPrivateKey(pub, p, q), passphrase)
        else:
            share = threshold.Share(kid, int(secret["index"]), int(secret["n"]), int(secret["d"]))
            if share.n != pub.n:
                raise ConfigError(f"{box_file} does not match the public key {kid}")
            h.keys.save_share(share, passphrase)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{box_file} is malformed: {e}") from None
    return kid


def enroll(home: Path, meters: dict[str, str]) -> dict[str, str]:
    """Enroll meters, each bound to one household; a meter stays bound to
    the household it was first enrolled for. At the guardian's holder (and a
    single one) a meter counts toward k only once its household consents
    (registry.py): returns the activation codes of households new to it, to
    hand them apart from the utility. The utility's holder keeps its own
    list, which decides nothing alone."""
    h = HolderHome(home)
    role = read_json(h.meta, "key holder settings").get("role")
    if role != "utility":
        ledger = Ledger(h.ledger)
        registry = Registry(h.ledger, ledger, None)
        try:
            return registry.enroll(meters)
        finally:
            registry.close()
            ledger.close()
    current = h.enrollment()
    for m, c in meters.items():
        check_name(m, "meter id")
        check_name(c, "household id")
        if current.get(m, c) != c:
            raise ConfigError(f"meter {m} is enrolled for household {current[m]}, not {c}")
    current.update(meters)
    write_json(h.enrolled, current)
    return {}


def approve_tariff(home: Path, tariff_file: Path) -> str:
    """Add a tariff to this holder's registry, if it keeps within the bounds
    (common/tariff.check_bounds). An approved id@version never changes."""
    t = tariff.check_bounds(tariff.parse(read_json(tariff_file, "tariff")))
    h = HolderHome(home)
    read_json(h.meta, "key holder settings")  # a holder's home, not any folder
    path = h.tariffs / f"{t.ref}.json"
    if path.exists() and tariff.parse(read_json(path, "approved tariff")) != t:
        raise ConfigError(f"tariff {t.ref} is already approved with other contents; a changed"
                          " tariff needs a new version")
    write_json(path, t.to_json())
    return t.ref


def trust_gateway(home: Path, gateway_id: str, pub_file: Path, add: bool = False) -> None:
    """Trust this key for the gateway's records: instead of its others, or
    with `add` beside them (a key rotation's overlap)."""
    check_name(gateway_id, "gateway id")
    pem = Path(pub_file).read_bytes() if Path(pub_file).exists() else None
    if pem is None:
        raise ConfigError(f"gateway public key not found: {pub_file}")
    pub = signing.parse_public(pem, str(pub_file))
    folder = HolderHome(home).gateways
    if add:
        write_atomic(folder / f"{gateway_id}@{signing.fingerprint(pub)}.pub", pem)
        return
    write_atomic(folder / f"{gateway_id}.pub", pem)
    for old in folder.glob(f"{gateway_id}@*.pub"):
        old.unlink()


def trust_guardian(home: Path, pub_file: Path) -> None:
    """The guardian's signing key, at the utility's holder: it releases only
    what a decision signed with it allows."""
    h = HolderHome(home)
    meta = read_json(h.meta, "key holder settings")
    if meta.get("role") != "utility":
        raise ConfigError("only the utility's holder takes the guardian's key: the guardian's"
                          " own holder (and a single holder) checks decisions with its own")
    pem = Path(pub_file).read_bytes() if Path(pub_file).exists() else None
    if pem is None:
        raise ConfigError(f"the guardian's public key not found: {pub_file}")
    signing.parse_public(pem, str(pub_file))
    write_atomic(h.guardian_pub, pem)


class KeyHolder:
    def __init__(self, home: Path, passphrase: str | None = None):
        self.home = HolderHome(home)
        meta = read_json(self.home.meta, "key holder settings")
        self.role = meta.get("role")
        if self.role not in ROLES:
            raise ConfigError(f"{self.home.meta}: role must be one of {ROLES}")
        self.policy = Policy.from_json(read_json(self.home.policy, "authority policy"))
        self.epochs = self.home.keys.epochs()
        if not self.epochs:
            raise ConfigError(f"no keys in {self.home.keys.path}; import this holder's key with"
                              " `gridveil holder import-key`")
        self._secrets: dict[str, object] = {}
        for kid in self.epochs:  # fail at start (wrong passphrase, clear file), not at a release
            f = self.home.keys.key_file(kid) if self.role == "single" else \
                self.home.keys.share_file(kid)
            if not f.exists():
                raise ConfigError(f"key file missing for epoch {kid}: {f}")
            check_owner_only(f, "key file")
            self._secrets[kid] = self.home.keys.private(kid, passphrase) \
                if self.role == "single" else self.home.keys.share(kid, passphrase)
        self._signer = keys.load_signing_key(self.home.signing_key, passphrase)
        self.ledger = Ledger(self.home.ledger, self.policy.interval_s)
        if self.ledger.interval_s != self.policy.interval_s:
            self.ledger.close()
            raise ConfigError(f"the policy's interval_s is {self.policy.interval_s}, but this"
                              f" holder released values on a {self.ledger.interval_s} s grid;"
                              " the grid cannot change")
        # Never decide on a released-once set that the log does not back. A
        # short log is checked whole; a long one from its newest signed
        # checkpoint here, and whole in the background (verify_in_background).
        ok, msg = self.ledger.verify_from_checkpoint(self._signer.public_key(), self.role)
        if not ok:
            self.ledger.close()
            raise ConfigError(f"decision log in {self.home.ledger}: {msg}; refusing to serve")
        self._verified = (msg, time.time())
        self._whole = not msg.startswith("chain intact from checkpoint")
        self.broken = ""  # set when the background verification fails
        self.opener = Opener(self.role, self._secrets)
        # Releases need the guardian's signed decision. The guardian's holder
        # (and a single one) makes them at its desk and checks them with its
        # own key; the utility's checks them with the guardian's key.
        if self.role == "utility":
            self.desk = self.registry = None
            self.guardian_pub = signing.load_public(self.home.guardian_pub) \
                if self.home.guardian_pub.exists() else None
            if self.guardian_pub is None:
                log.warning("no guardian key (`gridveil holder trust-guardian`): every release"
                            " will be refused")
        else:
            self.desk = Desk(self.home.ledger, self.ledger, self._signer)
            self.guardian_pub = self._signer.public_key()
            # Meters count toward k with their households' consent (registry.py).
            self.registry = Registry(self.home.ledger, self.ledger, self._signer)

    def sign_epoch(self, key_id: str) -> dict:
        """The guardian's signature that lets gateways encrypt under a key it
        holds a share of (gateways refuse any epoch without one)."""
        import base64

        if key_id not in self._secrets:
            raise ConfigError(f"this holder holds no share of key {key_id}")
        pub = self.home.keys.public(key_id)
        if pub.n.bit_length() < self.policy.min_key_bits:
            raise ConfigError(f"key {key_id} is under this holder's {self.policy.min_key_bits}"
                              " bits")
        # With noise on, gateways must clip each meter's share of an interval
        # to the sensitivity the noise is made for; with it off, sums stay
        # exact (bills = aggregates).
        clip = self.policy.dp_sensitivity_wh if self.policy.dp == "on" else 0
        signed = dict(self.home.signed_clips())
        if signed.get(key_id, clip) != clip:
            raise ConfigError(f"key {key_id} was signed with clip_wh={signed[key_id]}; gateways"
                              " already use that. A policy change needs a new key epoch")
        write_json(self.home.signed_epochs, {**signed, key_id: clip})
        return {"key_id": key_id, "bits": pub.n.bit_length(), "role": self.role, "clip_wh": clip,
                "signature": base64.b64encode(self._signer.sign(
                    paillier.epoch_statement(pub, clip))).decode()}

    def _check_clipped(self, key_id: str) -> None:
        """Noise made for a sensitivity protects only if the gateways clip each
        meter's share of an interval to it. The signer of the epochs knows
        what it signed; the other holder's noise is extra and needs no check."""
        if self.role == "utility":
            return
        clip = self.home.signed_clips().get(key_id)
        if not clip or clip > self.policy.dp_sensitivity_wh:
            raise Refusal("unclipped_epoch", f"gateways do not clip readings to"
                                             f" {self.policy.dp_sensitivity_wh} Wh under key"
                                             f" {key_id} (signed with clip_wh={clip}); noise"
                                             " needs a key epoch signed while DP is on")

    def head(self) -> dict:
        """The log's head, signed with this holder's key, for auditors to keep."""
        return sign_head(self._signer.sign, self.role, self.ledger.head())

    def households(self, meters) -> dict[str, str]:
        """meter -> household of the meters that count toward k: at the
        guardian's holder, those whose households consented; at the
        utility's, its own registry (which decides nothing alone)."""
        if self.registry is not None:
            return self.registry.counted(meters)
        enrolled = self.home.enrollment()
        return {m: enrolled[m] for m in meters if m in enrolled}

    def close(self) -> None:
        self.opener.close()
        if self.desk is not None:
            self.desk.close()
            self.registry.close()
        self.ledger.close()

    def public_keys(self) -> dict[str, str]:
        return {kid: str(self.home.keys.public(kid).n) for kid in self.epochs}

    # --- decisions -------------------------------------------------------
    def _decision(self, d):
        """The guardian's signed decision a request carries, checked (at the
        guardian's holder also against its revocations); a Refusal if none,
        or if this holder's own log failed its verification."""
        if self.broken:
            raise Refusal("log_broken", f"this holder's log failed its verification"
                                        f" ({self.broken}); it releases nothing until its"
                                        " operator restores it")
        if self.restored():
            raise Refusal("restored", "this holder was restored from a backup and may have"
                                      " forgotten releases; it releases nothing until its"
                                      " operator reconciles it (`gridveil holder reconcile`)")
        return desk_mod.check(d, self.guardian_pub, self.desk)

    def restored(self) -> bool:
        """Put back to a backup and not reconciled yet (authority/backup.py)."""
        return self.ledger.meta(RESTORED) is not None

    def refuse(self, requester: str, kind: str, subject: str, r: Refusal) -> None:
        """Log a refusal of a whole request, and raise it."""
        self.ledger.record(requester, kind, subject, False, f"{r.code}: {r}")
        log.info("%s refused %s %s for %s: %s", self.role, kind, subject, requester, r)
        raise r

    def _verify(self, rec, signature: bytes) -> None:
        pubs = self.home.gateway_keys().get(rec.gateway_id)
        if not pubs:
            raise Refusal("unknown_gateway", f"gateway {rec.gateway_id!r} is not trusted here")
        if not any(records.verify(pub, rec, signature) for pub in pubs):
            raise Refusal("bad_signature", f"record is not validly signed by gateway"
                                           f" {rec.gateway_id}")

    def checkpoint(self) -> None:
        self.ledger.checkpoint(self._signer.sign, self.role)

    # --- releases ------------------------------------------------------------------
    def decide_aggregates(self, items, decision, requester: str = "mdms") -> aggregates.Decided:
        """Several (neighbourhood, interval) sums, each from every gateway's
        signed part, under one decision of the guardian: a slot in the
        packs to open, or a refusal, for each; all logged in one entry and
        committed before anything is opened. Noise is this holder's
        policy's to decide, never the requester's."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise Refusal("bad_request", f"1..{MAX_BATCH} aggregates per request")
        try:
            dec = self._decision(decision)
        except Refusal as r:
            self.refuse(requester, "aggregate", f"{len(items)} aggregates", r)
        return aggregates.decide(self, items, dec, requester)

    def decide_bills(self, group: bills.BillGroup, decision,
                     requester: str = "mdms") -> aggregates.Decided:
        """A group of bills, all or none (a Refusal, logged)."""
        nbhs = ",".join(sorted(set(group.neighbourhoods)))[:200]
        try:
            dec = self._decision(decision)
        except Refusal as r:
            self.refuse(requester, "bill", f"bills:{nbhs}:{group.start}-{group.end}", r)
        return bills.decide(self, group, dec, requester)

    def open(self, decided: aggregates.Decided) -> aggregates.Decided:
        """Decrypt (partially, in threshold mode) what was decided, on
        every core; called outside the decisions' one thread."""
        self.opener.open(decided.packs)
        return decided

    # --- the log's verification ----------------------------------------------------
    def verification(self) -> tuple[bool, str]:
        """The newest verification of the log, in words."""
        if self.broken:
            return False, self.broken
        msg, at = self._verified
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
        return True, f"{msg} (verified {when})"

    def verify_in_background(self, every_s: float = 86400) -> threading.Thread:
        """The whole log against the whole state, off the serving threads:
        at once if start-up checked only from a checkpoint, then daily. A
        failure stops every release. The check runs in a process of its
        own at a lower CPU priority: its cost grows with the log, and it
        must slow neither this holder's decisions (no shared GIL) nor the
        other services on the host."""
        def run():
            if self._whole:
                log.info("%s holder: decision log verified at start-up: %s", self.role,
                         self._verified[0])
                time.sleep(every_s)
            while True:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(1, mp_context=ctx) as ex:
                    ok, msg = ex.submit(_verify_log, str(self.home.ledger),
                                        self.policy.interval_s).result()
                if not ok:
                    self.broken = msg
                    log.error("%s holder: the decision log failed its verification: %s;"
                              " releasing nothing", self.role, msg)
                    return
                self._verified = (msg, time.time())
                log.info("%s holder: decision log verified: %s", self.role, msg)
                time.sleep(every_s)
        t = threading.Thread(target=run, name="verify-log", daemon=True)
        t.start()
        return t


def _verify_log(path: str, interval_s: int) -> tuple[bool, str]:
    """The full check of a holder's log, in a process of its own (above)."""
    try:
        os.nice(10)
    except OSError:
        pass
    ledger = Ledger(Path(path), interval_s)
    try:
        return ledger.verify()
    finally:
        ledger.close()
