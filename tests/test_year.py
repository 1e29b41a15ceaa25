"""A year under the default policy: k = 5, noise on (epsilon 1 per household
over any day, sensitivity 2,500 Wh), bills by calendar month. Five
households of one neighbourhood, the real UMass week repeated over 2026;
a gateway's signed records made here from the data (the same records a
gateway signs; the PES is tested elsewhere), released through both key
holders' APIs under the guardian's standing approvals.

Before, the lifetime budget ran out in week 7, and with it every aggregate
and (since a bill needs its intervals released) every bill. Now every one
of the year's 35,040 quarter hours is released with the guardian's noise,
and all twelve monthly bills of every household, each within its cent."""

from __future__ import annotations

import datetime as dt
import json
import statistics

from helpers.holders import Gateway, Holders, cents

from authority.client import Refusal
from authority.ledger import Ledger
from common import paillier, records
from gateway.fastenc import FastEncryptor
from host_tools import groundtruth

DAY = 86400
YEAR0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp())
DAYS = 365
PRICE = 25_000  # flat@1, µct/Wh
CLIP = 2_500  # the default sensitivity: what one reading may add to an aggregate


def year_of(week: dict[int, int], shift: int) -> list[int]:
    """A household's 35,040 quarter hours: its real week, over and over."""
    values = [week[e] for e in sorted(week)]
    return [values[(i + shift) % len(values)] for i in range(DAYS * 96)]


def test_a_year_releases_every_quarter_hour_and_every_monthly_bill(tmp_path, umass_files):
    holders = Holders(tmp_path, billing="calendar-month", dp="on")
    meters = [f"h{i}" for i in range(1, 6)]
    gw = Gateway(tmp_path, holders, meters=dict.fromkeys(meters, "town"))
    pub = paillier.load_public(holders.pub_file())
    kid = paillier.key_id(pub)
    data = {m: year_of(groundtruth.interval_energy(f), 97 * i)
            for i, (m, f) in enumerate(zip(meters, umass_files, strict=False))}

    fast = FastEncryptor(pub)  # the gateway's own encryption (gateway/fastenc.py)

    def enc(v: int) -> bytes:
        return paillier.to_bytes(pub, fast.encrypt(v))

    aggregates, truth = [], []
    for j in range(DAYS * 96):
        end = YEAR0 + 900 * (j + 1)
        total = sum(min(data[m][j], CLIP) for m in meters)  # the gateway clips each reading
        rec = records.AggregateRecord(gw.id, "town", end - 900, end, 5, enc(total), kid,
                                      tuple(meters))
        aggregates.append([(rec, records.sign(gw.key, rec))])
        truth.append(total)
    days = {m: [] for m in meters}
    for d in range(DAYS):
        day = YEAR0 // DAY + d
        ends = tuple(YEAR0 + d * DAY + 900 * (k + 1) for k in range(96))
        for m in meters:
            rec = records.BillDayRecord(gw.id, m, day, 96, 0,
                                        ((0, enc(sum(data[m][d * 96:(d + 1) * 96]))),), kid,
                                        "flat@1", ends, day - 1 if d else records.NO_DAY)
            days[m].append((rec, records.sign(gw.key, rec)))

    auth = holders.start()
    try:
        released = auth.release_aggregates(aggregates)
        refused = [a for a in released if isinstance(a, Refusal)]
        assert refused == [] and len(released) == DAYS * 96
        assert all(a.noisy for a in released)
        # The noise: both holders add discrete Laplace noise of scale
        # 2,500 Wh x 96 / 1 on their own; the sum of two has a standard
        # deviation of 2 x 240,000 Wh. The year's errors show that, and
        # centre on nothing (ground truth from the data, not the code).
        errors = [a.wh - t for a, t in zip(released, truth, strict=True)]
        sd = statistics.pstdev(errors)
        assert 0.9 * 480_000 < sd < 1.1 * 480_000, sd
        assert abs(statistics.fmean(errors)) < 5 * sd / len(errors) ** 0.5
        # Twelve monthly bills for every household, each within its cent.
        for month in range(1, 13):
            a = dt.datetime(2026, month, 1, tzinfo=dt.timezone.utc)
            b = dt.datetime(2026 + month // 12, month % 12 + 1, 1, tzinfo=dt.timezone.utc)
            start, end = int(a.timestamp()), int(b.timestamp())
            group = [(m, "flat@1", [x for x in days[m] if start // DAY <= x[0].day < end // DAY])
                     for m in meters]
            bills = auth.release_bills(["town"], start, end, group)
            first, last = (start - YEAR0) // 900, (end - YEAR0) // 900
            for m in meters:
                assert bills[m] in cents(PRICE * sum(data[m][first:last])), (month, m)
    finally:
        holders.stop()
    # Any day of releases spent each household epsilon 1, no more, every day.
    grants = [e for e in Ledger(holders.homes["guardian"] / "authority.db").entries()
              if e["kind"] == "aggregate"]
    assert sum(len(json.loads(e["marks"])["agg"]) for e in grants) == DAYS * 96
    assert all(e["granted"] and "epsilon 1/96 per household)" in e["reason"] for e in grants)
