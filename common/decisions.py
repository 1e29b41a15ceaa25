"""The privacy guardian's decisions, signed with its own key.

A key holder releases nothing on the MDMS's word: every release request
carries a decision that the guardian signed at its own holder (`gridveil
holder decide`, or a standing approval, `gridveil holder standing`), and
both holders check it before their policy. The MDMS relays decisions but
cannot make one: it holds no key that signs them.

A decision names what it covers, so it cannot be replayed for another
request: aggregates or bills, the neighbourhoods ("*" for any), and a span
of time: an aggregate whose interval ends in (start, end], or a bill whose
period lies within [start, end]. A standing approval is the same with no
request behind it, for routine releases the guardian allows ahead of time,
and it may expire (wall clock). A declined decision releases nothing; the
guardian's holder also refuses decisions it has revoked since.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, replace

from cryptography.exceptions import InvalidSignature

LABEL = "gridveil-decision-v1"
WHATS = ("aggregates", "bills")
ANY = "*"
MAX_NEIGHBOURHOODS = 1000
MAX_TEXT = 500


class BadDecision(ValueError):
    """Not a decision: malformed, or not signed by the guardian."""


@dataclass(frozen=True)
class Decision:
    id: int  # the guardian holder's own number
    what: str  # "aggregates" or "bills"
    neighbourhoods: tuple[str, ...]  # sorted; ("*",) for any
    start: int  # Unix seconds, UTC
    end: int
    approved: bool
    standing: bool  # ahead of any request, for routine releases
    expires: int  # Unix seconds, wall clock; 0: until revoked
    request: str  # what the MDMS called the request ("" for a standing approval)
    reason: str
    decided_at: int
    signature: str = ""  # base64 Ed25519 over statement()

    def statement(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        body["neighbourhoods"] = list(self.neighbourhoods)
        return (LABEL + "|" + json.dumps(body, sort_keys=True, separators=(",", ":"))).encode()

    def names(self, nbh: str) -> bool:
        return ANY in self.neighbourhoods or nbh in self.neighbourhoods

    def covers_aggregate(self, nbh: str, interval_end: int) -> bool:
        return self.what == "aggregates" and self.names(nbh) and \
            self.start < interval_end <= self.end

    def covers_bills(self, neighbourhoods, start: int, end: int) -> bool:
        return self.what == "bills" and all(self.names(n) for n in neighbourhoods) and \
            self.start <= start < end <= self.end

    def live(self, now: float | None = None) -> bool:
        return self.approved and (not self.expires or (now or time.time()) < self.expires)

    def in_words(self) -> str:
        day = show_time
        where = "any neighbourhood" if ANY in self.neighbourhoods else \
            "neighbourhood(s) " + ", ".join(self.neighbourhoods)
        what = "quarter-hour totals" if self.what == "aggregates" else "bills"
        verdict = "approved" if self.approved else "declined"
        kind = "standing approval" if self.standing else f"request {self.request or '-'}"
        until = "" if not self.expires else f", valid until {day(self.expires)} UTC"
        return (f"decision {self.id} ({kind}, {verdict}): {what} of {where}, from {day(self.start)}"
                f" to {day(self.end)} UTC{until}")

    def to_json(self) -> dict:
        return {**asdict(self), "neighbourhoods": list(self.neighbourhoods)}


def show_time(ts: int) -> str:
    """A decision's times as people read them (UTC)."""
    return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def parse_time(text: str) -> int:
    """A date (2026-01-31) or time (2026-01-31T06:00) as Unix seconds, UTC
    unless it names its zone; ValueError otherwise."""
    try:
        d = dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(f"{str(text)[:20]!r} is not a date (2026-01-31) or a time"
                         " (2026-01-31T06:00)") from None
    return int((d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).timestamp())


def _text(v, what: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        raise BadDecision(f"{what} must be text of at most {MAX_TEXT} characters")
    return v


def _int(v, what: str) -> int:
    if type(v) is not int or not 0 <= v < 2**53:
        raise BadDecision(f"{what} must be a whole number of seconds")
    return v


def parse(d) -> Decision:
    """A decision from its JSON form, checked for shape (not for signature)."""
    if not isinstance(d, dict):
        raise BadDecision("a decision is a JSON object")
    try:
        nbhs = d["neighbourhoods"]
        if not isinstance(nbhs, list) or not 1 <= len(nbhs) <= MAX_NEIGHBOURHOODS:
            raise BadDecision(f"neighbourhoods: a list of 1 to {MAX_NEIGHBOURHOODS} names")
        out = Decision(
            id=_int(d["id"], "id"), what=_text(d["what"], "what"),
            neighbourhoods=tuple(_text(n, "a neighbourhood") for n in nbhs),
            start=_int(d["start"], "start"), end=_int(d["end"], "end"),
            approved=d["approved"], standing=d["standing"], expires=_int(d["expires"], "expires"),
            request=_text(d["request"], "request"), reason=_text(d["reason"], "reason"),
            decided_at=_int(d["decided_at"], "decided_at"),
            signature=_text(d.get("signature", ""), "signature"))
    except KeyError as e:
        raise BadDecision(f"a decision needs {e}") from None
    if out.what not in WHATS or type(out.approved) is not bool or type(out.standing) is not bool:
        raise BadDecision("what must be aggregates or bills; approved and standing true or false")
    if out.end <= out.start:
        raise BadDecision("a decision's span must end after it starts")
    if set(d) - set(asdict(out)):
        raise BadDecision(f"unknown fields {sorted(set(d) - set(asdict(out)))}")
    return out


def sign(key, d: Decision) -> Decision:
    return replace(d, signature=base64.b64encode(key.sign(d.statement())).decode())


def verify(pub, d: Decision) -> bool:
    try:
        pub.verify(base64.b64decode(d.signature, validate=True), d.statement())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False
