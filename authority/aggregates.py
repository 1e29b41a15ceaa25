"""A holder's decisions on neighbourhood sums, a request at a time.

An aggregate names one (neighbourhood, interval) and carries one signed
part per gateway that has meters there; the holder verifies every part
against that gateway's own key, multiplies the ciphertexts and counts the
households itself. Each value passes the policy's checks in order; the
first that fails is its refusal. The granted ones are marked released,
logged (one entry for the request) and committed before anything is
decrypted; they are then opened packed, many to a decryption
(packing.py).

A value asked again, exactly as granted before (a request retried after a
holder or the network failed), is answered again with the noise it had:
nothing is marked twice, no budget is spent twice, and the requester gets
the value the other holder's answer combines with.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from common import paillier

from . import dp
from .ledger import Answered, Receipt
from .packing import Pack, Packer
from .policy import Refusal


@dataclass
class Slot:
    """Where a granted value is in the opened packs."""
    pack: int
    slot: int
    key_id: str
    contributors: int
    noisy: bool


@dataclass
class Decided:
    results: list  # Slot or Refusal, one per item
    packs: list[Pack]
    receipt: Receipt


@dataclass
class _Candidate:
    subject: str
    nbh: str
    end: int
    key_id: str
    meters: list[str]
    ciphertext: int
    digest: str
    contributors: int
    scale: float | None  # the noise's scale, when the policy adds noise
    note: str


def _digest(parts) -> str:
    h = hashlib.sha256()
    for rec, _ in sorted(parts, key=lambda p: p[0].gateway_id):
        h.update(rec.signed_bytes())
    return h.hexdigest()[:32]


def _check(holder, parts, dec, known: dict[str, str]) -> _Candidate:
    """Everything about one item that does not depend on what was released."""
    from .holder import MAX_PARTS

    if not parts or len(parts) > MAX_PARTS:
        raise Refusal("bad_request", f"an aggregate has 1..{MAX_PARTS} parts")
    first = parts[0][0]
    meters = [m for r, _ in parts for m in r.meters]  # once per reading
    for rec, sig in parts:
        if (rec.neighbourhood, rec.interval_start, rec.interval_end, rec.key_id) != \
                (first.neighbourhood, first.interval_start, first.interval_end, first.key_id):
            raise Refusal("mixed_parts", "all parts must name the same neighbourhood, interval"
                                         " and key epoch")
        holder._verify(rec, sig)
    if len({r.gateway_id for r, _ in parts}) != len(parts):
        raise Refusal("mixed_parts", "one part per gateway")
    if len(set(meters)) != sum(len(set(r.meters)) for r, _ in parts) or any(
            r.contributors != len(set(r.meters)) for r, _ in parts):
        raise Refusal("mixed_parts", "each meter in one part only")
    if not dec.covers_aggregate(first.neighbourhood, first.interval_end):
        raise Refusal("out_of_scope", f"{dec.in_words()} does not cover {first.neighbourhood}"
                                      f" at {first.interval_end}")
    step = holder.policy.interval_s
    if first.interval_end - first.interval_start != step or first.interval_end % step:
        # One release per interval of the grid is what the day's budget is
        # divided by; a shorter interval would spend more.
        raise Refusal("bad_interval", f"an aggregate spans one {step} s interval of the grid")
    if first.key_id not in holder.epochs:
        raise Refusal("wrong_key", f"aggregate is under unknown key {first.key_id}")
    # k counts distinct households that the guardian enrolled and that
    # consented, not what the gateway says: meters the utility made up or
    # proposed for others count for nothing, and one household's several
    # meters count once.
    enrolled = {m: known[m] for m in meters if m in known}
    households = set(enrolled.values())
    if len(households) < holder.policy.k:
        raise Refusal("too_few", f"aggregate has {len(households)} enrolled households"
                                 f" ({len(set(meters))} meters); at least {holder.policy.k} are"
                                 " required")
    pub = holder.home.keys.public(first.key_id)
    n2 = pub.nsquare
    combined = 1  # (1+n)^0 r^n with r = 1: a deterministic zero, the same at both holders
    for rec, _ in parts:
        try:
            combined = combined * paillier.from_bytes(pub, rec.ciphertext).ciphertext(
                be_secure=False) % n2
        except ValueError as e:
            raise Refusal("bad_ciphertext", f"ciphertext is not valid for key {first.key_id}:"
                                            f" {e}") from None
    scale, note = None, ""
    if holder.policy.dp == "on":
        holder._check_clipped(first.key_id)
        # The gateway clips each reading to the sensitivity. A household can
        # have several readings in one sum (several meters, or readings held
        # back until they counted here): the noise is scaled to the most any
        # one household has, so that every release costs each household the
        # same epsilon, and the day's budget holds whatever the network does.
        most = max(Counter(enrolled.get(m, "meter:" + m) for m in meters).values())
        scale = dp.scale_for(holder.policy.epsilon, holder.policy.dp_sensitivity_wh * most)
        note = f" with DP noise (epsilon {holder.policy.epsilon} per household" + (
            f"; scaled for {most} readings of one household" if most > 1 else "") + ")"
    return _Candidate(f"agg:{first.neighbourhood}:{first.interval_end}", first.neighbourhood,
                      first.interval_end, first.key_id, sorted(set(meters)), combined,
                      _digest(parts), len(households), scale, note)


def decide(holder, items, dec, requester: str) -> Decided:
    """Check, mark, log and commit a request's values; what to open."""
    checked: list = []
    # The households of every meter the request names, in one look-up.
    known = holder.households({m for parts in items for r, _ in parts for m in r.meters})
    for parts in items:
        try:
            checked.append(_check(holder, parts, dec, known))
        except Refusal as r:
            checked.append(r)
    cands = [c for c in checked if isinstance(c, _Candidate)]
    led = holder.ledger
    results: list = []
    granted, again, refused, answers = [], [], [], []
    with led.batch():
        batch = led.marks.batch([(c.nbh, c.end, c.meters) for c in cands])
        for c in checked:
            if isinstance(c, Refusal):
                results.append(c)
                continue
            if batch.released(c.nbh, c.end):
                before = led.answered(c.subject)
                if before is None or before.item != c.digest:
                    results.append(Refusal("already_released", f"{c.nbh} interval ending {c.end}"
                                                               " was already released once"))
                else:  # the same value asked again: the same answer
                    results.append((c, before))
                    again.append([c.nbh, c.end])
                continue
            # Whatever the neighbourhood is called: a meter's interval goes into
            # one released aggregate at most, so no two releases differ by one
            # household, and a meter is in at most one release per interval
            # of the grid (what the day's privacy budget rests on).
            meter = batch.counted(c.meters, c.end)
            if meter:
                results.append(Refusal("already_released", f"meter {meter}'s interval ending"
                                                            f" {c.end} is already in a released"
                                                            " aggregate"))
                continue
            noise = dp.discrete_laplace(c.scale) if c.scale is not None else 0
            a = Answered(c.digest, noise, c.contributors, c.scale is not None)
            granted.append([c.nbh, c.end, batch.mark(c.nbh, c.end, c.meters)])
            answers.append((c.subject, a))
            results.append((c, a))
        for c, r in zip(checked, results, strict=True):
            if isinstance(r, Refusal):
                refused.append([c.subject if isinstance(c, _Candidate) else "", r.code])
        batch.flush()
        led.keep_answers(answers)
        receipt = led.record(requester, "aggregate", _subject(checked),
                             bool(granted or again),
                             _reason(results, dec, cands, len(granted), len(again)),
                             {"agg": granted, "again": again, "refused": refused})
    holder.checkpoint()
    return Decided(*_packs(holder, results), receipt)


def _packs(holder, results) -> tuple[list, list[Pack]]:
    packer, out = Packer(holder.home.keys), []
    for r in results:
        if isinstance(r, Refusal):
            out.append(r)
            continue
        c, a = r
        out.append(Slot(*packer.add(c.key_id, c.ciphertext, a.noise), c.key_id, a.contributors,
                        a.noisy))
    return out, packer.packs


def _subject(checked) -> str:
    subjects = [c.subject for c in checked if isinstance(c, _Candidate)]
    if len(checked) == 1:
        return subjects[0] if subjects else "aggregate"
    return f"{len(checked)} aggregates" + (f": {subjects[0]} .. {subjects[-1]}"
                                           if subjects else "")


def _reason(results, dec, cands, fresh: int, again: int) -> str:
    """In words: a single value's decision, or a request's tally."""
    codes = Counter(r.code for r in results if isinstance(r, Refusal))
    note = next((c.note for c in cands), "")
    if len(results) == 1:
        r = results[0]
        if isinstance(r, Refusal):
            return f"{r.code}: {r}"
        return (f"granted under decision {dec.id}{note}" if fresh else
                f"answered again under decision {dec.id} (granted before; the same value)")
    words = f"granted {fresh} under decision {dec.id}{note}" if fresh else "granted none new"
    if again:
        words += f"; answered {again} again (granted before; the same values)"
    if codes:
        words += "; refused " + ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    return words
