"""One key holder: the whole key in single mode, or one of the two share
holders (the utility's, the privacy guardian's) in threshold mode. Each
runs as its own service with its own home (`gridveil holder ...`).

Every request passes the policy checks in order; the first that fails is a
Refusal with a clear message. Every request, granted or refused, is
appended to the holder's own hash-chained log. A holder that grants returns
the plaintext (single) or its partial decryption (threshold), with its
differential-privacy noise already in when the release asked for it.

An aggregate release names one (neighbourhood, interval) and carries one
signed part per gateway that has meters there; the holder verifies every
part against that gateway's own key, multiplies the ciphertexts and adds
up the contributors itself, and releases the combined sum once.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common import paillier, records, signing, tariff
from common.files import ConfigError, check_name, check_owner_only, read_json, write_atomic, write_json

from . import desk as desk_mod
from . import dp, keys, threshold
from .desk import Desk
from .keys import KeyDir
from .ledger import Ledger, Receipt, sign_head
from .policy import Policy, Refusal
from .registry import Registry

log = logging.getLogger("gridveil.holder")

DAY = 86400
ROLES = ("single", "utility", "guardian")
MAX_BILL_DAYS = 400
MAX_PARTS = 64  # gateways in one neighbourhood
MAX_BATCH = 2000  # aggregates in one request
MAX_GROUP = 5000  # bills in one group
CENT = 1_000_000  # µct: bills are released in whole cents


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

    def gateway_keys(self) -> dict:
        if not self.gateways.is_dir():
            return {}
        return {p.name[:-4]: signing.load_public(p) for p in sorted(self.gateways.glob("*.pub"))}


@dataclass
class BillRequest:
    meter_id: str
    start: int  # Unix seconds, UTC; must be midnight
    end: int  # exclusive
    tariff: str  # id@version in this holder's registry of approved tariffs
    days: list[tuple[records.BillDayRecord, bytes]]


@dataclass
class BillGroup:
    """Every bill of some neighbourhoods over one period, released together
    or not at all (docs/privacy.md, "No differencing")."""
    neighbourhoods: tuple[str, ...]
    start: int
    end: int
    bills: list[BillRequest]


@dataclass(frozen=True)
class Answer:
    kind: str  # "value" or "partial"
    number: int
    receipt: Receipt
    key_id: str
    contributors: int = 0
    noisy: bool = False


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


def trust_gateway(home: Path, gateway_id: str, pub_file: Path) -> None:
    check_name(gateway_id, "gateway id")
    pem = Path(pub_file).read_bytes() if Path(pub_file).exists() else None
    if pem is None:
        raise ConfigError(f"gateway public key not found: {pub_file}")
    signing.parse_public(pem, str(pub_file))
    write_atomic(HolderHome(home).gateways / f"{gateway_id}.pub", pem)


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


def _whole_months(start: int, end: int) -> bool:
    import datetime as dt

    a = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    b = dt.datetime.fromtimestamp(end, dt.timezone.utc)
    return a.day == 1 and b.day == 1 and (b.year, b.month) > (a.year, a.month)


class KeyHolder:
    def __init__(self, home: Path, passphrase: str | None = None):
        self.home = HolderHome(home)
        meta = read_json(self.home.meta, "key holder settings")
        self.role = meta.get("role")
        if self.role not in ROLES:
            raise ConfigError(f"{self.home.meta}: role must be one of {ROLES}")
        self.policy = Policy.from_json(read_json(self.home.policy, "authority policy"))
        self.gateways = self.home.gateway_keys()
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
        self.ledger = Ledger(self.home.ledger)
        ok, msg = self.ledger.verify()
        if not ok:  # never decide on a released-once set that the log does not back
            self.ledger.close()
            raise ConfigError(f"decision log in {self.home.ledger}: {msg}; refusing to serve")
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
        if self.desk is not None:
            self.desk.close()
            self.registry.close()
        self.ledger.close()

    def public_keys(self) -> dict[str, str]:
        return {kid: str(self.home.keys.public(kid).n) for kid in self.epochs}

    def _open(self, key_id: str, c: bytes, noise: int) -> tuple[str, int]:
        pub = self.home.keys.public(key_id)
        try:
            enc = paillier.from_bytes(pub, c)
        except ValueError as e:
            raise Refusal("bad_ciphertext", f"ciphertext is not valid for key {key_id}: {e}") \
                from None
        if key_id not in self._secrets:
            raise Refusal("wrong_key", f"no key epoch {key_id} at this holder")
        secret = self._secrets[key_id]
        if self.role == "single":
            return "value", secret.decrypt(enc) + noise
        return "partial", threshold.partial(secret, enc.ciphertext(be_secure=False), noise)

    # --- decisions -------------------------------------------------------
    def _decision(self, d):
        """The guardian's signed decision a request carries, checked (at the
        guardian's holder also against its revocations); a Refusal if none."""
        return desk_mod.check(d, self.guardian_pub, self.desk)

    def _refuse_all(self, requester: str, kind: str, subject: str, r: Refusal) -> None:
        self.ledger.record(requester, kind, subject, False, f"{r.code}: {r}")
        log.info("%s refused %s %s for %s: %s", self.role, kind, subject, requester, r)
        raise r

    def _verify(self, rec, signature: bytes) -> None:
        pub = self.gateways.get(rec.gateway_id)
        if pub is None:
            raise Refusal("unknown_gateway", f"gateway {rec.gateway_id!r} is not trusted here")
        if not records.verify(pub, rec, signature):
            raise Refusal("bad_signature", f"record is not validly signed by gateway"
                                           f" {rec.gateway_id}")

    # --- aggregates --------------------------------------------------------
    def release_aggregates(self, items: list[list[tuple[records.AggregateRecord, bytes]]],
                           decision, requester: str = "mdms") -> list[Answer | Refusal]:
        """Several (neighbourhood, interval) sums, each from every gateway's
        signed part, under one decision of the guardian; an answer or a
        refusal for each, all logged in one transaction. Noise is this
        holder's policy's to decide, never the requester's."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise Refusal("bad_request", f"1..{MAX_BATCH} aggregates per request")
        try:
            dec = self._decision(decision)
        except Refusal as r:
            self._refuse_all(requester, "aggregate", f"aggregates:{len(items)}", r)
        out: list[Answer | Refusal] = []
        with self.ledger.batch():
            for parts in items:
                try:
                    out.append(self._release_aggregate(parts, dec, requester))
                except Refusal as r:
                    out.append(r)
        return out

    def release_aggregate(self, parts, decision, requester: str = "mdms") -> Answer:
        (a,) = self.release_aggregates([parts], decision, requester)
        if isinstance(a, Refusal):
            raise a
        return a

    def _release_aggregate(self, parts, dec, requester: str) -> Answer:
        if not parts or len(parts) > MAX_PARTS:
            raise Refusal("bad_request", f"an aggregate has 1..{MAX_PARTS} parts")
        first = parts[0][0]
        subject = f"agg:{first.neighbourhood}:{first.interval_end}"
        meters = [m for r, _ in parts for m in r.meters]  # once per reading
        found = {"contributors": 0, "eps": None, "most": 1}

        def check():
            for rec, sig in parts:
                if (rec.neighbourhood, rec.interval_start, rec.interval_end, rec.key_id) != \
                        (first.neighbourhood, first.interval_start, first.interval_end,
                         first.key_id):
                    raise Refusal("mixed_parts", "all parts must name the same neighbourhood,"
                                                 " interval and key epoch")
                self._verify(rec, sig)
            if len({r.gateway_id for r, _ in parts}) != len(parts):
                raise Refusal("mixed_parts", "one part per gateway")
            if len(set(meters)) != sum(len(set(r.meters)) for r, _ in parts) or any(
                    r.contributors != len(set(r.meters)) for r, _ in parts):
                raise Refusal("mixed_parts", "each meter in one part only")
            if not dec.covers_aggregate(first.neighbourhood, first.interval_end):
                raise Refusal("out_of_scope", f"{dec.in_words()} does not cover"
                                              f" {first.neighbourhood} at {first.interval_end}")
            step = self.policy.interval_s
            if first.interval_end - first.interval_start != step or first.interval_end % step:
                # One release per interval of the grid is what the day's
                # budget is divided by; a shorter interval would spend more.
                raise Refusal("bad_interval", f"an aggregate spans one {step} s interval of the"
                                              " grid")
            if first.key_id not in self.epochs:
                raise Refusal("wrong_key", f"aggregate is under unknown key {first.key_id}")
            # k counts distinct households that the guardian enrolled and that
            # consented, not what the gateway says: meters the utility made up
            # or proposed for others count for nothing, and one household's
            # several meters count once.
            enrolled = self.households(meters)
            households = set(enrolled.values())
            found["contributors"] = len(households)
            if len(households) < self.policy.k:
                raise Refusal("too_few", f"aggregate has {len(households)} enrolled households"
                                         f" ({len(set(meters))} meters); at least {self.policy.k}"
                                         " are required")
            if self.ledger.was_released(subject):
                raise Refusal("already_released", f"{first.neighbourhood} interval ending"
                                                  f" {first.interval_end} was already released"
                                                  " once")
            # Whatever the neighbourhood is called: a meter's interval goes
            # into one released aggregate at most, so no two releases differ
            # by one household, and a meter is in at most one release per
            # interval of the grid (what the day's privacy budget rests on).
            again = next((m for m in sorted(set(meters))
                          if self.ledger.was_released(f"mi:{m}:{first.interval_end}")), None)
            if again:
                raise Refusal("already_released", f"meter {again}'s interval ending"
                                                  f" {first.interval_end} is already in a released"
                                                  " aggregate")
            pub = self.home.keys.public(first.key_id)
            try:
                combined = pub.encrypt(0, r_value=1)  # deterministic zero: holders agree
                for rec, _ in parts:
                    combined = combined + paillier.from_bytes(pub, rec.ciphertext)
            except ValueError as e:
                raise Refusal("bad_ciphertext", f"ciphertext is not valid for key"
                                                f" {first.key_id}: {e}") from None
            noise = 0
            if self.policy.dp == "on":
                self._check_clipped(first.key_id)
                # The gateway clips each reading to the sensitivity. A household
                # can have several readings in one sum (several meters, or
                # readings held back until they counted here): the noise is
                # scaled to the most any one household has, so that every
                # release costs each household the same epsilon, and the
                # day's budget holds whatever the network does.
                most = max(Counter(enrolled.get(m, "meter:" + m) for m in meters).values())
                found["eps"], found["most"] = self.policy.epsilon, most
                noise = dp.discrete_laplace(dp.scale_for(
                    self.policy.epsilon, self.policy.dp_sensitivity_wh * most))
            return self._open(first.key_id, paillier.to_bytes(pub, combined), noise)

        try:
            kind, number = check()
        except Refusal as r:
            self.ledger.record(requester, "aggregate", subject, False, f"{r.code}: {r}")
            log.info("%s refused aggregate %s for %s: %s", self.role, subject, requester, r)
            raise
        eps = found["eps"]
        noise = "" if eps is None else f" with DP noise (epsilon {eps} per household" + (
            f"; scaled for {found['most']} readings of one household" if found["most"] > 1
            else "") + ")"
        receipt = self.ledger.record(
            requester, "aggregate", subject, True, f"granted under decision {dec.id}{noise}",
            [subject] + [f"mi:{m}:{first.interval_end}" for m in sorted(set(meters))],
            (first.neighbourhood, first.interval_end, sorted(set(meters))))
        return Answer(kind, number, receipt, first.key_id, found["contributors"], eps is not None)

    # --- bills ------------------------------------------------------------------
    def bill_ciphertext(self, req: BillRequest) -> tuple[str, bytes]:
        """Check one bill against the policy and compute its one ciphertext:
        sum over days and bands of price x energy. Both holders compute the
        same bytes from the same signed records."""
        if req.start % DAY or req.end % DAY or req.end <= req.start:
            raise Refusal("period_too_short" if req.end - req.start < DAY else "not_whole_days",
                          "a bill must cover whole UTC days (midnight to midnight)")
        ndays = (req.end - req.start) // DAY
        if self.policy.billing == "calendar-month" and not _whole_months(req.start, req.end):
            raise Refusal("period_too_short" if ndays < 28 else "not_whole_months",
                          "a bill must cover whole calendar months (UTC), from the 1st")
        if ndays < self.policy.min_bill_days:
            raise Refusal("period_too_short",
                          f"a bill must cover at least {self.policy.min_bill_days} whole day(s)")
        approved = self.home.approved_tariffs()
        if req.tariff not in approved:
            raise Refusal("unknown_tariff", f"tariff {req.tariff} is not in this holder's"
                                            " registry of approved tariffs")
        prices = approved[req.tariff].prices
        if ndays > MAX_BILL_DAYS:
            raise Refusal("period_too_long", f"a bill covers at most {MAX_BILL_DAYS} days")
        self._check_days(req)
        key_ids = {r.key_id for r, _ in req.days}
        if len(key_ids) != 1:
            raise Refusal("mixed_keys", "a bill's days must all be under one key epoch")
        key_id = key_ids.pop()
        if key_id not in self.epochs:
            raise Refusal("wrong_key", f"bill records are under unknown key {key_id}")
        pub = self.home.keys.public(key_id)
        total = pub.encrypt(0, r_value=1)  # deterministic zero, so both holders agree
        for r, sig in req.days:
            if r.meter_id != req.meter_id:
                raise Refusal("mixed_meters", "all day records must belong to the bill's meter")
            self._verify(r, sig)
            # Every interval this day's readings were counted in must be in a
            # released aggregate that names this meter: a bill never counts a
            # reading that no aggregate counts, so bills minus aggregates is
            # never a reading, nor a too-small group's sum.
            missing = next((t for t in r.intervals
                            if not self.ledger.was_released(f"mi:{r.meter_id}:{t}")), None)
            if missing is not None or not r.intervals:
                raise Refusal("unreleased_demand", f"day {r.day} of {r.meter_id} has readings in"
                                                   f" interval {missing}, which no released"
                                                   " aggregate holds (yet)")
            if r.tariff != req.tariff:
                # A tariff changes only from the start of a billing period.
                raise Refusal("mixed_tariffs", f"day {r.day} was metered under {r.tariff}, not"
                                               f" {req.tariff}")
            for band, c in r.bands:
                if band not in prices:
                    raise Refusal("bad_tariff", f"{req.tariff} has no band {band}")
                try:
                    total = total + paillier.from_bytes(pub, c) * prices[band]
                except ValueError as e:
                    raise Refusal("bad_ciphertext", str(e)) from None
        return key_id, paillier.to_bytes(pub, total)

    @staticmethod
    def _check_days(req: BillRequest) -> None:
        """A bill holds every record of its meter in its period, and the
        period is over for the meter. The gateway chains each meter's days
        (each record names the meter's previous day with readings), so no
        day can be left out; days without a record are days the meter
        reported nothing, and count as nothing. The period's last day must
        have a record: a meter sends oldest first, so then everything it
        measured in the period is in. Without that (a meter whose readings
        are still held back, say), the bill waits, or goes out with the
        next period's: otherwise it could be a single reading."""
        first, end = req.start // DAY, req.end // DAY
        days = sorted(req.days, key=lambda x: x[0].day)
        got = [r.day for r, _ in days]
        if len(set(got)) != len(got) or any(not first <= d < end for d in got):
            raise Refusal("period_gaps", "a bill has one signed record per day, all inside its"
                                         " period")
        if any(r.prev_day is None for r, _ in days):  # records from before the chain
            if got != list(range(first, end)):
                raise Refusal("period_gaps", "a bill needs exactly one signed day record for"
                                             " every day of its period")
            return
        if not got or got[-1] != end - 1:
            raise Refusal("period_open", f"{req.meter_id} has no readings on the period's last"
                                         " day: they may still arrive, so its bill waits (or goes"
                                         " out with the next period's)")
        links = [(days[0][0].prev_day, first - 1)] + [
            (b.prev_day, a.day) for (a, _), (b, _) in zip(days, days[1:], strict=False)]
        if links[0][0] >= first or any(prev != want for prev, want in links[1:]):
            raise Refusal("period_gaps", f"a day of {req.meter_id}'s records is missing from its"
                                         " bill")

    def _check_group(self, g: BillGroup) -> None:
        """The bills of a period go out together for every household the
        neighbourhoods' released aggregates counted in it, or not at all:
        otherwise the period's aggregates minus the released bills would be
        the households whose bills were held back (one reading, even)."""
        if not g.neighbourhoods:
            raise Refusal("bad_request", "a group names its neighbourhoods")
        if any((b.start, b.end) != (g.start, g.end) for b in g.bills):
            raise Refusal("bad_request", "every bill of a group covers the group's period")
        meters = [b.meter_id for b in g.bills]
        if len(set(meters)) != len(meters):
            raise Refusal("bad_request", "one bill per meter")
        members = self.ledger.members(g.neighbourhoods, g.start, g.end)
        missing = sorted(members - set(meters))
        if missing:
            raise Refusal("incomplete_group", f"the released aggregates of {', '.join(g.neighbourhoods)}"
                                              f" count {len(missing)} more meter(s) in this period"
                                              f" ({', '.join(missing[:5])}); their bills must go"
                                              " out with these, or none")
        for m in sorted(set(meters) - members):
            # A meter counted in no released aggregate of these neighbourhoods:
            # its bill would be refused (unreleased_demand) or belongs elsewhere.
            raise Refusal("incomplete_group", f"meter {m} is in no released aggregate of"
                                              f" {', '.join(g.neighbourhoods)} in this period")
        for m in meters:
            elsewhere = self.ledger.neighbourhoods_of(m, g.start, g.end) - set(g.neighbourhoods)
            if elsewhere:
                raise Refusal("incomplete_group", f"meter {m} is also counted in"
                                                  f" {', '.join(sorted(elsewhere))} in this"
                                                  " period: ask for those neighbourhoods together")

    def release_bills(self, group: BillGroup, decision, requester: str = "mdms") -> list[Answer]:
        """A group of bills, all or none, each rounded to whole cents by a
        dither the requester cannot steer: the guardian's holder (or the
        single one) adds a uniform random 0..1 cent under encryption, so the
        released bill is the true one rounded up or down at random, with
        the fraction of a cent as the chance of up."""
        nbhs = tuple(sorted(set(group.neighbourhoods)))
        subject = f"bills:{','.join(nbhs)[:200]}:{group.start}-{group.end}"
        try:
            dec = self._decision(decision)
            if not dec.covers_bills(nbhs, group.start, group.end):
                raise Refusal("out_of_scope", f"{dec.in_words()} does not cover bills of"
                                              f" {', '.join(nbhs)} from {group.start} to"
                                              f" {group.end}")
            if not group.bills or len(group.bills) > MAX_GROUP:
                raise Refusal("bad_request", f"a group has 1..{MAX_GROUP} bills")
            computed, marks = [], []
            for b in group.bills:
                try:
                    computed.append(self.bill_ciphertext(b))  # validates the period first
                except Refusal as r:
                    raise Refusal(r.code, f"{b.meter_id}: {r}") from None
                days = [f"bill:{b.meter_id}:{d}" for d in range(b.start // DAY, b.end // DAY)]
                again = next((m for m in days if self.ledger.was_released(m)), None)
                if again:
                    raise Refusal("already_released", f"{again} (meter, day) was already billed"
                                                      " once")
                marks += days
            self._check_group(BillGroup(nbhs, group.start, group.end, group.bills))
            opened = []
            for kid, c in computed:
                dither = secrets.randbelow(CENT) if self.role != "utility" else 0
                opened.append((kid, *self._open(kid, c, dither)))
        except Refusal as r:
            self._refuse_all(requester, "bill", subject, r)
        receipt = self.ledger.record(requester, "bill", subject, True,
                                     f"granted under decision {dec.id}: {len(opened)} bills",
                                     marks)
        return [Answer(kind, number, receipt, kid) for kid, kind, number in opened]
