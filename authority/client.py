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

from common import decisions, paillier, slots
from common.decisions import Decision
from common.errors import Refusal
from common.files import ConfigError
from common.http import HttpError, JsonClient

__all__ = ["Authority", "HolderClient", "Refusal", "token_hash"]

BATCH = 2000  # aggregates per request: a few MB of records
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

    def aggregates(self, decision: Decision, items) -> dict:
        """{"results", "packs", "receipt"} (authority/api.py)."""
        return self._call("POST", "/v1/aggregates", {
            "decision": decision.to_json(),
            "aggregates": [{"parts": [_item(r, s) for r, s in parts]} for parts in items]})

    def bills(self, decision: Decision, neighbourhoods, start: int, end: int, bills) -> dict:
        return self._call("POST", "/v1/bills", {
            "decision": decision.to_json(), "neighbourhoods": sorted(neighbourhoods),
            "start": start, "end": end,
            "bills": [{"meter_id": m, "tariff": t, "days": [_item(r, s) for r, s in days]}
                      for m, t, days in bills]})

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

    def log(self, after: int = 0, limit: int = 5000, before: int = 0,
            kind: str = "") -> list[dict]:
        """Entries after n=`after`, oldest first; or before n=`before`, newest first."""
        from urllib.parse import quote

        return self._call("GET", f"/v1/log?after={int(after)}&before={int(before)}"
                                 f"&limit={int(limit)}&kind={quote(kind)}")["entries"]

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

    def _opened(self, answers: dict[str, dict]) -> list[list[int]] | None:
        """The values in each pack, from every holder's answer to one
        request; None if the holders did not pack the same values (one
        refused what another granted)."""
        for role, a in answers.items():
            self.receipts[role].append(Receipt(**a["receipt"]))
        shapes = {repr(([(r.get("pack"), r.get("slot")) for r in a["results"]],
                        [(p["key_id"], p["slots"]) for p in a["packs"]]))
                  for a in answers.values()}
        if len(shapes) != 1:
            return None
        first = next(iter(answers.values()))
        out = []
        for i, p in enumerate(first["packs"]):
            numbers = [int(a["packs"][i]["number"]) for a in answers.values()]
            m = numbers[0] if set(self.holders) == {"single"} else \
                paillier.combine_raw(self.public_key(p["key_id"]), numbers)
            out.append(slots.unpack(m, p["slots"]))
        return out

    def _release(self, ask, n: int) -> list[tuple[int, dict] | Refusal]:
        """Ask every holder for n values at once: for each, (value, every
        holder's word on it) or the first refusal of it. Values one holder
        refused and another granted are left out and the rest asked for
        again, which the holders answer with what they granted
        (authority/aggregates.py): none is lost."""
        answers = self._ask_all(lambda h: ask(h, list(range(n))))
        out: list = [None] * n
        for role, a in answers.items():
            for i, r in enumerate(a["results"]):
                if "refused" in r and out[i] is None:
                    out[i] = Refusal(r["refused"], f"{role}: {r['message']}")
        index = list(range(n))
        opened = self._opened(answers)
        if opened is None:
            index = [i for i in range(n) if out[i] is None]
            if not index:
                return out
            answers = self._ask_all(lambda h: ask(h, index))
            opened = self._opened(answers)
            if opened is None:
                raise ConfigError("the key holders answered the same request differently twice")
        for j, i in enumerate(index):
            mine = {role: a["results"][j] for role, a in answers.items()}
            refused = next(((role, r) for role, r in mine.items() if "refused" in r), None)
            if refused:
                out[i] = out[i] or Refusal(refused[1]["refused"],
                                           f"{refused[0]}: {refused[1]['message']}")
                continue
            r = next(iter(mine.values()))
            out[i] = (opened[r["pack"]][r["slot"]], mine)
        return out

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
                got = self._release(lambda h, sub, c=chunk, d=chosen[did]: h.aggregates(
                    d, [items[c[j]] for j in sub]), len(chunk))
                for i, v in zip(chunk, got, strict=True):
                    if isinstance(v, Refusal):
                        out[i] = v
                        continue
                    wh, mine = v
                    # The guardian counts consented households; noisy if any
                    # holder added noise (each decides by its own policy).
                    counted = mine.get("guardian") or next(iter(mine.values()))
                    out[i] = AggregateValue(wh, int(counted.get("contributors", 0)),
                                            any(r.get("noisy") for r in mine.values()))
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
        got = self._release(lambda h, sub: h.bills(d, nbhs, start, end, bills), len(bills))
        refused = next((v for v in got if isinstance(v, Refusal)), None)
        if refused:
            raise refused
        return {meter: v[0] // CENT * CENT for (meter, _, _), v in zip(bills, got, strict=True)}

    def policies(self) -> dict[str, dict]:
        return {role: h.policy() for role, h in self.holders.items()}
