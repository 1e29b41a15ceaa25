"""A holder's decisions on bills: every bill of some neighbourhoods over
one period, released together or not at all (docs/privacy.md, "No
differencing"), each rounded to whole cents by a dither the requester
cannot steer.

A bill is one ciphertext the holder computes itself from the gateway's
signed day records: the sum over days and bands of price x energy, prices
from its own registry of approved tariffs. Both holders compute the same
bytes. A group asked again exactly as released before gets the same
answer (the same dither), so a failure on one side loses nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from common import paillier, records

from .aggregates import Decided, Slot
from .ledger import Answered
from .packing import Packer
from .policy import Refusal

DAY = 86400
MAX_BILL_DAYS = 400
MAX_GROUP = 5000  # bills in one group
CENT = 1_000_000  # µct: bills are released in whole cents


@dataclass
class BillRequest:
    meter_id: str
    start: int  # Unix seconds, UTC; must be midnight
    end: int  # exclusive
    tariff: str  # id@version in this holder's registry of approved tariffs
    days: list[tuple[records.BillDayRecord, bytes]]


@dataclass
class BillGroup:
    """Every bill of some neighbourhoods over one period."""
    neighbourhoods: tuple[str, ...]
    start: int
    end: int
    bills: list[BillRequest]


def _whole_months(start: int, end: int) -> bool:
    a = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    b = dt.datetime.fromtimestamp(end, dt.timezone.utc)
    return a.day == 1 and b.day == 1 and (b.year, b.month) > (a.year, a.month)


def ciphertext(holder, req: BillRequest) -> tuple[str, int]:
    """Check one bill against the policy and compute its one ciphertext:
    (key id, sum over days and bands of price x energy)."""
    policy = holder.policy
    if req.start % DAY or req.end % DAY or req.end <= req.start:
        raise Refusal("period_too_short" if req.end - req.start < DAY else "not_whole_days",
                      "a bill must cover whole UTC days (midnight to midnight)")
    ndays = (req.end - req.start) // DAY
    if policy.billing == "calendar-month" and not _whole_months(req.start, req.end):
        raise Refusal("period_too_short" if ndays < 28 else "not_whole_months",
                      "a bill must cover whole calendar months (UTC), from the 1st")
    if ndays < policy.min_bill_days:
        raise Refusal("period_too_short",
                      f"a bill must cover at least {policy.min_bill_days} whole day(s)")
    approved = holder.home.approved_tariffs()
    if req.tariff not in approved:
        raise Refusal("unknown_tariff", f"tariff {req.tariff} is not in this holder's registry"
                                        " of approved tariffs")
    prices = approved[req.tariff].prices
    if ndays > MAX_BILL_DAYS:
        raise Refusal("period_too_long", f"a bill covers at most {MAX_BILL_DAYS} days")
    check_days(req)
    key_ids = {r.key_id for r, _ in req.days}
    if len(key_ids) != 1:
        raise Refusal("mixed_keys", "a bill's days must all be under one key epoch")
    key_id = key_ids.pop()
    if key_id not in holder.epochs:
        raise Refusal("wrong_key", f"bill records are under unknown key {key_id}")
    pub = holder.home.keys.public(key_id)
    marks = holder.ledger.marks
    total = pub.encrypt(0, r_value=1)  # deterministic zero, so both holders agree
    for r, sig in req.days:
        if r.meter_id != req.meter_id:
            raise Refusal("mixed_meters", "all day records must belong to the bill's meter")
        holder._verify(r, sig)
        # Every interval this day's readings were counted in must be in a
        # released aggregate that names this meter: a bill never counts a
        # reading that no aggregate counts, so bills minus aggregates is
        # never a reading, nor a too-small group's sum.
        counted: dict[int, int] = {}
        missing = None
        for t in r.intervals:
            day, bit = marks.where(t)
            if day not in counted:
                counted[day] = marks.released_intervals(r.meter_id, day)
            if not counted[day] >> bit & 1:
                missing = t
                break
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
    return key_id, total.ciphertext(be_secure=False)


def check_days(req: BillRequest) -> None:
    """A bill holds every record of its meter in its period, and the period
    is over for the meter. The gateway chains each meter's days (each
    record names the meter's previous day with readings), so no day can be
    left out; days without a record are days the meter reported nothing,
    and count as nothing. The period's last day must have a record: a meter
    sends oldest first, so then everything it measured in the period is
    in. Without that (a meter whose readings are still held back, say), the
    bill waits, or goes out with the next period's: otherwise it could be a
    single reading."""
    first, end = req.start // DAY, req.end // DAY
    days = sorted(req.days, key=lambda x: x[0].day)
    got = [r.day for r, _ in days]
    if len(set(got)) != len(got) or any(not first <= d < end for d in got):
        raise Refusal("period_gaps", "a bill has one signed record per day, all inside its"
                                     " period")
    if any(r.prev_day is None for r, _ in days):  # records from before the chain
        if got != list(range(first, end)):
            raise Refusal("period_gaps", "a bill needs exactly one signed day record for every"
                                         " day of its period")
        return
    if not got or got[-1] != end - 1:
        raise Refusal("period_open", f"{req.meter_id} has no readings on the period's last day:"
                                     " they may still arrive, so its bill waits (or goes out"
                                     " with the next period's)")
    links = [(days[0][0].prev_day, first - 1)] + [
        (b.prev_day, a.day) for (a, _), (b, _) in zip(days, days[1:], strict=False)]
    if links[0][0] >= first or any(prev != want for prev, want in links[1:]):
        raise Refusal("period_gaps", f"a day of {req.meter_id}'s records is missing from its"
                                     " bill")


def check_group(holder, g: BillGroup) -> None:
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
    marks = holder.ledger.marks
    first, end = g.start // DAY, g.end // DAY
    members = marks.members(g.neighbourhoods, first, end)
    missing = sorted(members - set(meters))
    if missing:
        raise Refusal("incomplete_group", f"the released aggregates of {', '.join(g.neighbourhoods)}"
                                          f" count {len(missing)} more meter(s) in this period"
                                          f" ({', '.join(missing[:5])}); their bills must go out"
                                          " with these, or none")
    for m in sorted(set(meters) - members):
        # A meter counted in no released aggregate of these neighbourhoods:
        # its bill would be refused (unreleased_demand) or belongs elsewhere.
        raise Refusal("incomplete_group", f"meter {m} is in no released aggregate of"
                                          f" {', '.join(g.neighbourhoods)} in this period")
    for m in meters:
        elsewhere = marks.neighbourhoods_of(m, first, end) - set(g.neighbourhoods)
        if elsewhere:
            raise Refusal("incomplete_group", f"meter {m} is also counted in"
                                              f" {', '.join(sorted(elsewhere))} in this period:"
                                              " ask for those neighbourhoods together")


def decide(holder, group: BillGroup, dec, requester: str) -> Decided:
    """All of a group's bills, or a Refusal for all (logged either way)."""
    nbhs = tuple(sorted(set(group.neighbourhoods)))
    subject = f"bills:{','.join(nbhs)[:200]}:{group.start}-{group.end}"
    led = holder.ledger
    try:
        if not dec.covers_bills(nbhs, group.start, group.end):
            raise Refusal("out_of_scope", f"{dec.in_words()} does not cover bills of"
                                          f" {', '.join(nbhs)} from {group.start} to {group.end}")
        if not group.bills or len(group.bills) > MAX_GROUP:
            raise Refusal("bad_request", f"a group has 1..{MAX_GROUP} bills")
        computed = []
        for b in group.bills:
            try:
                computed.append(ciphertext(holder, b))  # validates the period first
            except Refusal as r:
                raise Refusal(r.code, f"{b.meter_id}: {r}") from None
        check_group(holder, BillGroup(nbhs, group.start, group.end, group.bills))
        first, end = group.start // DAY, group.end // DAY
        with led.batch():
            answers, fresh = _answers(holder, group, computed, first, end)
            if fresh:
                led.marks.mark_bills([(b.meter_id, first, end) for b in group.bills])
                led.keep_answers([(f"bill:{b.meter_id}:{first}", a)
                                  for b, a in zip(group.bills, answers, strict=True)])
            receipt = led.record(
                requester, "bill", subject, True,
                f"{'granted' if fresh else 'answered again'} under decision {dec.id}:"
                f" {len(answers)} bills" + ("" if fresh else " (granted before; the same amounts)"),
                {"bills": [[b.meter_id, first, end] for b in group.bills]} if fresh else {})
    except Refusal as r:
        holder.refuse(requester, "bill", subject, r)
    holder.checkpoint()
    packer = Packer(holder.home.keys)
    results = [Slot(*packer.add(kid, c, a.noise), kid, 0, False)
               for (kid, c), a in zip(computed, answers, strict=True)]
    return Decided(results, packer.packs, receipt)


def _answers(holder, group: BillGroup, computed, first: int, end: int
             ) -> tuple[list[Answered], bool]:
    """The dither of each bill: new ones (the guardian's holder, or a single
    one, adds a uniform 0..1 cent under encryption, so the released bill is
    the true one rounded up or down at random, with the fraction of a cent
    as the chance of up), or, for a group released exactly so before, the
    ones it had. Anything else already billed is refused."""
    marks, led = holder.ledger.marks, holder.ledger
    digests = [hashlib.sha256(f"{b.meter_id}|{first}|{end}|{c}".encode()).hexdigest()[:32]
               for b, (_, c) in zip(group.bills, computed, strict=True)]
    before = [led.answered(f"bill:{b.meter_id}:{first}") for b in group.bills]
    if all(a is not None and a.item == d and marks.billed(b.meter_id, first, end) == first
           for b, a, d in zip(group.bills, before, digests, strict=True)):
        return before, False
    for b in group.bills:
        day = marks.billed(b.meter_id, first, end)
        if day is not None:
            raise Refusal("already_released", f"bill:{b.meter_id}:{day} (meter, day) was already"
                                              " billed once")
    return [Answered(d, secrets.randbelow(CENT) if holder.role != "utility" else 0, 0, False)
            for d in digests], True
