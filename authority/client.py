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

from common import decisions, paillier
from common.decisions import Decision
from common.errors import Refusal
from common.files import ConfigError
from common.http import HttpError, JsonClient

__all__ = ["Authority", "HolderClient", "Refusal", "token_hash"]

BATCH = 200  # aggregates per request: a few hundred KB of records
CENT = 1_000_000  # µct


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

    def aggregates(self, decision: Decision, items) -> list[dict]:
        return self._call("POST", "/v1/aggregates", {
            "decision": decision.to_json(),
            "aggregates": [{"parts": [_item(r, s) for r, s in parts]} for parts in items]
        })["results"]

    def bills(self, decision: Decision, neighbourhoods, start: int, end: int, bills) -> list[dict]:
        return self._call("POST", "/v1/bills", {
            "decision": decision.to_json(), "neighbourhoods": sorted(neighbourhoods),
            "start": start, "end": end,
            "bills": [{"meter_id": m, "tariff": t, "days": [_item(r, s) for r, s in days]}
                      for m, t, days in bills]})["results"]

    def propose(self, what: str, neighbourhoods, start: int, end: int, note: str,
                ref: str) -> int:
        return int(self._call("POST", "/v1/requests", {
            "what": what, "neighbourhoods": sorted(neighbourhoods), "start": start, "end": end,
            "note": note, "ref": ref})["id"])

    def decisions(self, after: int = 0) -> list[dict]:
        return self._call("GET", f"/v1/decisions?after={int(after)}")["decisions"]

    def activation(self, household: str) -> dict:
        from urllib.parse import quote

        return self._call("GET", f"/v1/activation?household={quote(household)}")

    def activate(self, consent: dict) -> dict:
        return self._call("POST", "/v1/activate", {"consent": consent})["binding"]

    def consent(self, consent: dict) -> dict:
        return self._call("POST", "/v1/consent", {"consent": consent})["binding"]

    def bindings(self) -> list[dict]:
        return self._call("GET", "/v1/bindings")["bindings"]

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


@dataclass(frozen=True)
class AggregateValue:
    wh: int
    contributors: int
    noisy: bool


class Authority:
    """All holders of one deployment: one ("single") or two ("utility",
    "guardian"). Every holder checks the guardian's decision and the policy
    on its own and logs its own decision; a refusal by any one of them is
    final. Decisions come from the guardian's holder (or the single one),
    signed there; this client only picks the one that covers a release."""

    def __init__(self, holders: dict[str, HolderClient]):
        if set(holders) not in ({"single"}, {"utility", "guardian"}):
            raise ConfigError("configure one single key holder, or the utility's and the"
                              f" guardian's; got {sorted(holders)}")
        self.holders = holders
        self.receipts: dict[str, list[Receipt]] = {role: [] for role in holders}
        self._pubs: dict[str, object] = {}
        self._pool = ThreadPoolExecutor(len(holders), thread_name_prefix="holder-call")
        self._decisions: dict[int, tuple[Decision, bool]] = {}  # id -> (decision, revoked)
        self.last_noisy = False

    @property
    def guardian(self) -> HolderClient:
        """The holder whose desk proposes and signs decisions."""
        return self.holders.get("guardian") or self.holders["single"]

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

    # --- the guardian's decisions ---------------------------------------------
    def propose(self, what: str, neighbourhoods, start: int, end: int, note: str,
                ref: str) -> int:
        return self.guardian.propose(what, neighbourhoods, start, end, note, ref)

    def refresh_decisions(self) -> list[Decision]:
        """Fetch the guardian's decisions (all of them: a revocation changes
        an old one); returns the ones not seen before."""
        new, after = [], 0
        while True:
            page = self.guardian.decisions(after)
            for d in page:
                revoked = bool(d.pop("revoked", False))
                dec = decisions.parse(d)
                if dec.id not in self._decisions:
                    new.append(dec)
                self._decisions[dec.id] = (dec, revoked)
                after = max(after, dec.id)
            if len(page) < 500:
                return new

    def decisions(self) -> list[tuple[Decision, bool]]:
        return [self._decisions[i] for i in sorted(self._decisions)]

    def _covering(self, covers) -> Decision | None:
        for d, revoked in reversed(self.decisions()):  # the newest first
            if not revoked and d.live() and covers(d):
                return d
        return None

    def covering(self, covers) -> Decision | None:
        """The newest live approval for which covers(decision) holds;
        fetches new decisions once if none is known."""
        found = self._covering(covers)
        if found is None and self.refresh_decisions():
            found = self._covering(covers)
        return found

    # --- releases ---------------------------------------------------------------
    def _ask_all(self, ask) -> dict[str, object]:
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
        return answers

    def _value(self, answers: dict[str, dict]) -> int:
        for role, a in answers.items():
            self.receipts[role].append(Receipt(**a["receipt"]))
        first = next(iter(answers.values()))
        if set(self.holders) == {"single"}:
            return int(first["number"])
        pub = self.public_key(first["key_id"])
        return paillier.combine_partials(pub, [int(a["number"]) for a in answers.values()])

    def release_aggregates(self, items, decision: Decision | None = None,
                           batch: int = BATCH) -> list[AggregateValue | Refusal]:
        """One answer per item (every gateway's signed part of one
        (neighbourhood, interval)): its value, or the refusal of the first
        holder that refused. Each goes under `decision`, or the newest live
        approval that covers it."""
        out: list = [None] * len(items)
        by_decision: dict[int, list[int]] = {}
        chosen: dict[int, Decision] = {}
        for i, parts in enumerate(items):
            rec = parts[0][0]
            d = decision or self.covering(
                lambda d, r=rec: d.covers_aggregate(r.neighbourhood, r.interval_end))
            if d is None:
                out[i] = Refusal("no_decision", "no decision of the privacy guardian covers"
                                                f" {rec.neighbourhood} at {rec.interval_end} yet")
                continue
            chosen[d.id] = d
            by_decision.setdefault(d.id, []).append(i)
        for did, idx in by_decision.items():
            for k in range(0, len(idx), batch):
                chunk = idx[k:k + batch]
                answers = self._ask_all(lambda h, c=chunk, d=chosen[did]: h.aggregates(
                    d, [items[i] for i in c]))
                for j, i in enumerate(chunk):
                    mine = {role: a[j] for role, a in answers.items()}
                    refused = next((a for a in mine.values() if "refused" in a), None)
                    if refused:
                        role = next(r for r, a in mine.items() if a is refused)
                        out[i] = Refusal(refused["refused"], f"{role}: {refused['message']}")
                        continue
                    # Noisy if any holder added noise (each decides by its own policy).
                    out[i] = AggregateValue(self._value(mine),
                                            int(next(iter(mine.values())).get("contributors", 0)),
                                            any(a.get("noisy") for a in mine.values()))
        return out

    def release_aggregate(self, parts, decision: Decision | None = None) -> tuple[int, int]:
        """(value in Wh, contributors) of one (neighbourhood, interval)."""
        (a,) = self.release_aggregates([parts], decision)
        if isinstance(a, Refusal):
            raise a
        self.last_noisy = a.noisy
        return a.wh, a.contributors

    def release_bills(self, neighbourhoods, start: int, end: int, bills,
                      decision: Decision | None = None) -> dict[str, int]:
        """Every bill of these neighbourhoods over [start, end): `bills` is
        [(meter, tariff id@version, signed day records)]. All are released
        or none (a Refusal). Amounts in µct, whole cents: the holders'
        dither rounded the bill to one of its two nearest cents."""
        nbhs = sorted(set(neighbourhoods))
        d = decision or self.covering(lambda d: d.covers_bills(nbhs, start, end))
        if d is None:
            raise Refusal("no_decision", "no decision of the privacy guardian covers the bills"
                                         f" of {', '.join(nbhs)} from {start} to {end} yet")
        answers = self._ask_all(lambda h: h.bills(d, nbhs, start, end, bills))
        out = {}
        for j, (meter, _, _) in enumerate(bills):
            out[meter] = self._value({role: a[j] for role, a in answers.items()}) // CENT * CENT
        return out

    def policies(self) -> dict[str, dict]:
        return {role: h.policy() for role, h in self.holders.items()}
