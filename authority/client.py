"""The key authority as the MDMS reaches it: each holder behind its HTTP
API (authority/api.py), never in the MDMS's process. A value comes back
only when every holder granted; the MDMS combines the partials with the
public key alone, a key it checks against the key id the records name.

This module is all the MDMS imports from authority/: it holds no key, no
share and no ledger.
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from common import paillier
from common.errors import Refusal
from common.files import ConfigError
from common.http import HttpError, JsonClient

__all__ = ["Authority", "HolderClient", "Refusal", "token_hash"]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _item(rec, sig: bytes) -> dict:
    return {"record": base64.b64encode(rec.signed_bytes()).decode(),
            "signature": base64.b64encode(sig).decode()}


@dataclass(frozen=True)
class Receipt:
    n: int
    hash: str


class HolderClient:
    def __init__(self, role: str, url: str, token: str, ca_file=None, timeout: float = 120):
        self.role = role
        self.http = JsonClient(url, ca_file, {"Authorization": f"Bearer {token}"}, timeout)

    def _call(self, method: str, path: str, obj=None):
        try:
            return self.http.post(path, obj) if method == "POST" else self.http.get(path)
        except HttpError as e:
            if e.status == 403 and "refused" in e.body:
                raise Refusal(e.body["refused"], f"{self.role}: {e.body.get('message', '')}") \
                    from None
            raise ConfigError(f"{self.role} key holder: {e}") from None

    def keys(self) -> dict[str, int]:
        return {k: int(n) for k, n in self._call("GET", "/v1/keys")["keys"].items()}

    def aggregate(self, parts) -> dict:
        return self._call("POST", "/v1/aggregate", {"parts": [_item(r, s) for r, s in parts]})

    def bill(self, meter_id: str, start: int, end: int, tariff: str, days) -> dict:
        return self._call("POST", "/v1/bill", {
            "meter_id": meter_id, "start": start, "end": end, "tariff": tariff,
            "days": [_item(r, s) for r, s in days]})

    def note_decision(self, subject: str, approved: bool, reason: str) -> dict:
        return self._call("POST", "/v1/decision", {"subject": subject, "approved": approved,
                                                   "reason": reason})

    def policy(self) -> dict:
        return self._call("GET", "/v1/policy")["policy"]

    def log(self, after: int = 0, limit: int = 5000) -> list[dict]:
        return self._call("GET", f"/v1/log?after={int(after)}&limit={int(limit)}")["entries"]

    def verify(self) -> dict:
        return self._call("GET", "/v1/verify")

    def head(self) -> dict:
        """The holder's signed log head; keep it, and check it later with
        `gridveil holder verify --head`."""
        return self._call("GET", "/v1/head")


class Authority:
    """All holders of one deployment: one ("single") or two ("utility",
    "guardian"). Every holder checks the policy on its own and logs its own
    decision; a refusal by any one of them is final."""

    def __init__(self, holders: dict[str, HolderClient]):
        if set(holders) not in ({"single"}, {"utility", "guardian"}):
            raise ConfigError("configure one single key holder, or the utility's and the"
                              f" guardian's; got {sorted(holders)}")
        self.holders = holders
        self.receipts: dict[str, list[Receipt]] = {role: [] for role in holders}
        self._pubs: dict[str, object] = {}
        self._pool = ThreadPoolExecutor(len(holders), thread_name_prefix="holder-call")
        self._noisy = self.last_noisy = False

    def public_key(self, key_id: str):
        if key_id not in self._pubs:
            for h in self.holders.values():
                n = h.keys().get(key_id)
                if n is not None:
                    self._pubs[key_id] = paillier.public_from_n(n, key_id)
                    break
            else:
                raise ConfigError(f"no key holder knows key epoch {key_id}")
        return self._pubs[key_id]

    def _ask_all(self, ask) -> tuple[int, dict]:
        # The holders are separate services: ask them at once, so their
        # exponentiations run side by side.
        futures = {role: self._pool.submit(ask, h) for role, h in self.holders.items()}
        answers, refusal = {}, None
        for role, f in futures.items():
            try:
                answers[role] = f.result()
            except Refusal as r:
                refusal = refusal or r
        if refusal:
            raise refusal
        for role, a in answers.items():
            self.receipts[role].append(Receipt(**a["receipt"]))
        # Noisy if any holder added noise (each decides by its own policy).
        self._noisy = any(a.get("noisy") for a in answers.values())
        first = next(iter(answers.values()))
        if set(self.holders) == {"single"}:
            return int(first["number"]), first
        pub = self.public_key(first["key_id"])
        return paillier.combine_partials(pub, [int(a["number"]) for a in answers.values()]), first

    def release_aggregate(self, parts) -> tuple[int, int]:
        """(value in Wh, contributors) of one (neighbourhood, interval) from
        every gateway's signed part."""
        value, first = self._ask_all(lambda h: h.aggregate(parts))
        self.last_noisy = self._noisy
        return value, int(first.get("contributors", 0))

    def release_bill(self, meter_id: str, start: int, end: int, tariff: str, days) -> int:
        """One bill over [start, end) at the approved tariff `id@version`
        that the gateway signed into every day record."""
        return self._ask_all(lambda h: h.bill(meter_id, start, end, tariff, days))[0]

    def note_decision(self, subject: str, approved: bool, reason: str) -> None:
        """Every holder logs the guardian's decision; an approval that a
        holder cannot log is not acted on (the caller stops at the error)."""
        for h in self.holders.values():
            h.note_decision(subject, approved, reason)

    def policies(self) -> dict[str, dict]:
        return {role: h.policy() for role, h in self.holders.items()}
