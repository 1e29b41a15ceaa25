"""One key holder: the whole key authority in single mode, or one of the
two share holders (the utility's, the privacy guardian's) in threshold mode.

Every request passes the policy checks in order; the first that fails is a
Refusal with a clear message. Every request, granted or refused, is
appended to the holder's own hash-chained log. A holder that grants returns
the plaintext (single) or its partial decryption (threshold), with its
differential-privacy noise already in when the release asked for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common import paillier, records
from common.files import ConfigError, check_owner_only, read_json, write_json
from gateway import signing

from . import dp, threshold
from .keys import KeyDir
from .ledger import Ledger, Receipt
from .policy import Policy, Refusal

log = logging.getLogger("gridveil.authority")

DAY = 86400
ROLES = ("single", "utility", "guardian")
MAX_BILL_DAYS = 400


class HolderHome:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = self.path / "holder.json"
        self.keys = KeyDir(self.path / "keys")
        self.gateway_pub = self.path / "gateway-signing.pub"
        self.policy = self.path / "policy.json"
        self.ledger = self.path / "authority.db"


@dataclass
class BillRequest:
    meter_id: str
    start: int  # Unix seconds, UTC; must be midnight
    end: int  # exclusive
    prices: dict[int, int]  # band -> micro-cents per Wh
    days: list[tuple[records.BillDayRecord, bytes]]


@dataclass(frozen=True)
class Answer:
    kind: str  # "value" or "partial"
    number: int
    receipt: Receipt
    key_id: str


class KeyHolder:
    def __init__(self, home: Path, passphrase: str | None = None):
        self.home = HolderHome(home)
        meta = read_json(self.home.meta, "key holder settings")
        self.role = meta.get("role")
        if self.role not in ROLES:
            raise ConfigError(f"{self.home.meta}: role must be one of {ROLES}")
        self.policy = Policy.from_json(read_json(self.home.policy, "authority policy"))
        self.gateway_pub = signing.load_public(self.home.gateway_pub)
        self.epochs = self.home.keys.epochs()
        if not self.epochs:
            raise ConfigError(f"no keys in {self.home.keys.path}")
        for kid in self.epochs:  # fail at start, not at the first release
            f = self.home.keys.key_file(kid) if self.role == "single" else \
                self.home.keys.share_file(kid)
            if not f.exists():
                raise ConfigError(f"key file missing for epoch {kid}: {f}")
            check_owner_only(f, "key file")
        self._passphrase = passphrase
        self._secrets: dict[str, object] = {}
        self.ledger = Ledger(self.home.ledger)

    def close(self) -> None:
        self.ledger.close()

    # --- setup -----------------------------------------------------------
    @staticmethod
    def create(home: Path, role: str, policy: Policy) -> HolderHome:
        h = HolderHome(home)
        if h.meta.exists():
            raise ConfigError(f"a key holder already exists in {h.path}")
        policy.validate()
        h.path.mkdir(parents=True, exist_ok=True)
        write_json(h.meta, {"role": role})
        write_json(h.policy, policy.to_json())
        return h

    # --- keys ------------------------------------------------------------
    def _secret(self, key_id: str):
        if key_id not in self.epochs:
            raise Refusal("wrong_key", f"no key epoch {key_id} at this holder")
        if key_id not in self._secrets:
            keys = self.home.keys
            self._secrets[key_id] = keys.private(key_id, self._passphrase) if self.role == "single" \
                else keys.share(key_id, self._passphrase)
        return self._secrets[key_id]

    def _open(self, key_id: str, c: bytes, noise: int) -> tuple[str, int]:
        pub = self.home.keys.public(key_id)
        try:
            enc = paillier.from_bytes(pub, c)
        except ValueError as e:
            raise Refusal("bad_ciphertext", f"ciphertext is not valid for key {key_id}: {e}") \
                from None
        secret = self._secret(key_id)
        if self.role == "single":
            return "value", secret.decrypt(enc) + noise
        return "partial", threshold.partial(secret, enc.ciphertext(be_secure=False), noise)

    # --- decisions -------------------------------------------------------
    def _decide(self, requester, kind, subject, marks, check, key_id, dp_spend=None) -> Answer:
        try:
            answer_kind, number = check()
        except Refusal as r:
            self.ledger.record(requester, kind, subject, False, f"{r.code}: {r}")
            log.info("%s refused %s %s for %s: %s", self.role, kind, subject, requester, r)
            raise
        receipt = self.ledger.record(requester, kind, subject, True,
                                     "granted" + (" with DP noise" if dp_spend else ""),
                                     marks, dp_spend)
        return Answer(answer_kind, number, receipt, key_id)

    def release_aggregate(self, rec: records.AggregateRecord, signature: bytes,
                          requester: str = "mdms", with_dp: bool = False) -> Answer:
        subject = f"agg:{rec.neighbourhood}:{rec.interval_end}"
        day = (rec.interval_end - 1) // DAY
        eps = self.policy.epsilon
        dp_spend = (rec.neighbourhood, day, eps) if with_dp else None

        def check():
            if not records.verify(self.gateway_pub, rec, signature):
                raise Refusal("bad_signature", "aggregate is not validly signed by the gateway")
            if rec.key_id not in self.epochs:
                raise Refusal("wrong_key", f"aggregate is under unknown key {rec.key_id}")
            if rec.contributors < self.policy.k:
                raise Refusal("too_few", f"aggregate has {rec.contributors} contributors;"
                                         f" at least {self.policy.k} are required")
            if self.ledger.was_released(subject):
                raise Refusal("already_released", f"{rec.neighbourhood} interval ending"
                                                  f" {rec.interval_end} was already released once")
            noise = 0
            if with_dp:
                spent = self.ledger.dp_spent(rec.neighbourhood, day)
                if spent + eps > self.policy.budget:
                    raise Refusal("budget_spent", f"privacy budget of {rec.neighbourhood} for"
                                                  f" day {day} is spent ({spent} of"
                                                  f" {self.policy.budget})")
                noise = dp.discrete_laplace(dp.scale_for(eps, self.policy.dp_sensitivity_wh))
            return self._open(rec.key_id, rec.ciphertext, noise)

        return self._decide(requester, "aggregate", subject, [subject], check, rec.key_id,
                            dp_spend)

    def bill_ciphertext(self, req: BillRequest) -> tuple[str, bytes]:
        """Check a bill request against the policy and compute its one
        ciphertext: sum over days and bands of price x energy. Both holders
        compute the same bytes from the same signed records."""
        if req.start % DAY or req.end % DAY or req.end <= req.start:
            raise Refusal("period_too_short" if req.end - req.start < DAY else "not_whole_days",
                          "a bill must cover whole UTC days (midnight to midnight)")
        ndays = (req.end - req.start) // DAY
        if ndays < self.policy.min_bill_days:
            raise Refusal("period_too_short",
                          f"a bill must cover at least {self.policy.min_bill_days} whole day(s)")
        if any(type(p) is not int or p < 0 for p in req.prices.values()):
            raise Refusal("bad_tariff", "prices must be non-negative whole micro-cents per Wh")
        if ndays > MAX_BILL_DAYS:
            raise Refusal("period_too_long", f"a bill covers at most {MAX_BILL_DAYS} days")
        wanted = set(range(req.start // DAY, req.end // DAY))
        got = [r.day for r, _ in req.days]
        if sorted(got) != sorted(wanted):
            raise Refusal("period_gaps", "a bill needs exactly one signed day record for every"
                                         " day of its period")
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
            if not records.verify(self.gateway_pub, r, sig):
                raise Refusal("bad_signature", "day record is not validly signed by the gateway")
            for band, c in r.bands:
                if band not in req.prices:
                    raise Refusal("bad_tariff", f"no price for band {band}")
                try:
                    total = total + paillier.from_bytes(pub, c) * req.prices[band]
                except ValueError as e:
                    raise Refusal("bad_ciphertext", str(e)) from None
        return key_id, paillier.to_bytes(pub, total)

    def release_bill(self, req: BillRequest, requester: str = "mdms") -> Answer:
        subject = f"bill:{req.meter_id}:{req.start}-{req.end}"
        marks: list[str] = []
        key_id = req.days[0][0].key_id if req.days else "-"

        def check():
            kid, c = self.bill_ciphertext(req)  # validates the period first
            marks.extend(f"bill:{req.meter_id}:{d}" for d in range(req.start // DAY,
                                                                    req.end // DAY))
            for m in marks:
                if self.ledger.was_released(m):
                    raise Refusal("already_released", f"{m} (meter, day) was already billed once")
            return self._open(kid, c, 0)

        return self._decide(requester, "bill", subject, marks, check, key_id)
