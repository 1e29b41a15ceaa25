"""The key authority's decisions. Every request passes the policy checks in
order; the first that fails becomes a Refusal with a clear message, and
every request, granted or refused, is appended to the log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from common import paillier, records
from common.files import ConfigError, read_json, write_json
from gateway import signing

from .ledger import Ledger
from .policy import Policy, Refusal

log = logging.getLogger("gridveil.authority")


class AuthorityHome:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.private_key = self.path / "paillier.key.json"
        self.public_key = self.path / "paillier.pub.json"
        self.gateway_pub = self.path / "gateway-signing.pub"
        self.policy = self.path / "policy.json"
        self.ledger = self.path / "authority.db"


@dataclass
class BillRequest:
    meter_id: str
    price_per_wh: int  # flat tariff in integer sub-cents (milli-cents) per Wh
    days: list[tuple[records.BillDayRecord, bytes]]


class Authority:
    def __init__(self, home: Path):
        self.home = AuthorityHome(home)
        self.priv = paillier.load_private(self.home.private_key)
        self.pub = self.priv.public_key
        self.key_id = paillier.key_id(self.pub)
        self.gateway_pub = signing.load_public(self.home.gateway_pub)
        d = read_json(self.home.policy, "authority policy") if self.home.policy.exists() else {}
        try:
            self.policy = Policy(**d)
        except TypeError as e:
            raise ConfigError(f"{self.home.policy}: {e}") from None
        self.policy.validate()
        self.ledger = Ledger(self.home.ledger)

    def close(self) -> None:
        self.ledger.close()

    @staticmethod
    def init(home: Path, bits: int, policy: Policy | None = None) -> str:
        h = AuthorityHome(home)
        if h.private_key.exists():
            raise ConfigError(f"an authority key already exists in {h.path}")
        pub, priv = paillier.generate(bits)
        paillier.save_private(h.private_key, priv)
        paillier.save_public(h.public_key, pub)
        p = policy or Policy()
        p.validate()
        write_json(h.policy, {"k": p.k, "min_bill_days": p.min_bill_days})
        return paillier.key_id(pub)

    def _decide(self, requester: str, kind: str, subjects: list[str], check) -> int:
        try:
            value = check()
        except Refusal as r:
            self.ledger.record(requester, kind, subjects, False, f"{r.code}: {r}")
            log.info("refused %s %s for %s: %s", kind, ",".join(subjects), requester, r)
            raise
        self.ledger.record(requester, kind, subjects, True, "granted")
        return value

    def _decrypt(self, c: bytes) -> int:
        try:
            return self.priv.decrypt(paillier.from_bytes(self.pub, c))
        except ValueError as e:
            raise Refusal("bad_ciphertext", f"ciphertext is not valid for this key: {e}") from None

    def release_aggregate(self, rec: records.AggregateRecord, signature: bytes,
                          requester: str = "mdms") -> int:
        subject = f"agg:{rec.neighbourhood}:{rec.interval_end}"

        def check():
            if not records.verify(self.gateway_pub, rec, signature):
                raise Refusal("bad_signature", "aggregate is not validly signed by the gateway")
            if rec.key_id != self.key_id:
                raise Refusal("wrong_key", f"aggregate is under key {rec.key_id}, not {self.key_id}")
            if rec.contributors < self.policy.k:
                raise Refusal("too_few", f"aggregate has {rec.contributors} contributors;"
                                         f" at least {self.policy.k} are required")
            if self.ledger.was_released(subject):
                raise Refusal("already_released",
                              f"{rec.neighbourhood} interval ending {rec.interval_end}"
                              " was already released once")
            return self._decrypt(rec.ciphertext)

        return self._decide(requester, "aggregate", [subject], check)

    def release_bill(self, req: BillRequest, requester: str = "mdms") -> int:
        """Decrypt price x energy over whole days of one meter. The bill is
        computed here on ciphertexts from the signed day records, so what is
        decrypted is exactly what the policy was checked against."""
        subjects = [f"bill:{req.meter_id}:{r.day}:{r.band}" for r, _ in req.days]
        subjects = subjects or [f"bill:{req.meter_id}:empty"]

        def check():
            if not req.days:
                raise Refusal("period_too_short", "a bill must cover at least one whole day")
            if type(req.price_per_wh) is not int or req.price_per_wh <= 0:
                raise Refusal("bad_tariff", "price must be a positive whole number of sub-cents")
            days = sorted({r.day for r, _ in req.days})
            if len(days) < self.policy.min_bill_days:
                raise Refusal("period_too_short", f"a bill must cover at least"
                                                  f" {self.policy.min_bill_days} whole day(s)")
            if days != list(range(days[0], days[0] + len(days))):
                raise Refusal("period_gaps", "a bill must cover consecutive whole days")
            total = None
            for r, sig in req.days:
                if r.meter_id != req.meter_id:
                    raise Refusal("mixed_meters", "all day records must belong to the bill's meter")
                if not records.verify(self.gateway_pub, r, sig):
                    raise Refusal("bad_signature", "day record is not validly signed by the gateway")
                if r.key_id != self.key_id:
                    raise Refusal("wrong_key", f"day record is under key {r.key_id}")
                try:
                    c = paillier.from_bytes(self.pub, r.ciphertext) * req.price_per_wh
                except ValueError as e:
                    raise Refusal("bad_ciphertext", str(e)) from None
                total = c if total is None else total + c
            for s in subjects:
                if self.ledger.was_released(s):
                    raise Refusal("already_released", f"{s} was already billed once")
            return self._decrypt(paillier.to_bytes(self.pub, total))

        return self._decide(requester, "bill", subjects, check)
