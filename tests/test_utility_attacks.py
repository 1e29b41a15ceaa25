"""The utility as attacker, with only its own powers: it runs the MDMS and
proposes tariffs. Each attack goes through the parties' real interfaces
(the holders' HTTP API, their command line) and must be refused, with
nothing released. (Issue: privacy that holds against the utility.)"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from helpers.holders import REPO, Gateway, Holders, gridveil
from test_authority import DAY0, FLAT, SIX, feed_day

from authority.client import Refusal, _item
from authority.holder import DAY
from gateway.pes import PES


def decoding_tariff(**changes) -> dict:
    base = json.loads((REPO / "data" / "tariffs" / "tou-3band.json").read_text())
    return {**base, **changes}


@pytest.mark.parametrize("name, tariff, why", [
    ("powers of 2^24 as prices", decoding_tariff(id="decode", prices={
        "0": 1, "1": 2**24, "2": 2**48}), "prices must be"),
    ("a price of 2^400", decoding_tariff(id="huge", prices={
        "0": 15500, "1": 24750, "2": 2**400}), "prices must be"),
    ("far-apart prices", decoding_tariff(id="apart", prices={
        "0": 1000, "1": 24750, "2": 200000}), "dearest band"),
    ("eight one-hour bands", {"id": "hourly", "bands": {str(b): f"h{b}" for b in range(8)},
                              "rules": [{"days": list(range(7)), "from_hour": 8 + b,
                                         "to_hour": 9 + b, "band": b} for b in range(1, 8)],
                              "default_band": 0,
                              "prices": {str(b): 20000 + b for b in range(8)}}, "at most 4"),
    ("a one-hour band", decoding_tariff(id="onehour", rules=[
        {"days": list(range(7)), "from_hour": 3, "to_hour": 4, "band": 2}]), "less than 2 hours"),
])
def test_holders_refuse_tariffs_that_would_encode_readings(tmp_path, name, tariff, why):
    holders = Holders(tmp_path)
    f = tmp_path / "t.json"
    f.write_text(json.dumps(tariff))
    for role in holders.roles:
        r = gridveil(holders.homes[role], "holder", "tariff-approve", str(f), check=False)
        assert r.returncode == 2 and why in r.stderr, (name, r.stderr)
        assert not list((holders.homes[role] / "tariffs").glob(f"{tariff['id']}@*"))


def test_requester_cannot_bring_its_own_prices_or_tariff(tmp_path):
    holders = Holders(tmp_path)
    gw = Gateway(tmp_path, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 3))
    gw.seal()
    days = gw.bill_days("m1")
    auth = holders.start()
    try:
        # The MDMS's own prices in the request: refused as malformed, before any policy.
        for role in holders.roles:
            body = json.dumps({"meter_id": "m1", "start": DAY0, "end": DAY0 + DAY,
                               "tariff": FLAT, "prices": {"0": 2**24},
                               "days": [_item(r, s) for r, s in days]}).encode()
            req = urllib.request.Request(holders.urls[role] + "/v1/bill", data=body,
                                         headers={"Authorization": f"Bearer {holders.token}"})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == 400 and b"approved tariffs" in e.value.read()
        # A tariff of its own naming: not in the guardian's registry.
        with pytest.raises(Refusal) as e:
            auth.release_bill("m1", DAY0, DAY0 + DAY, "decode@1", days)
        assert e.value.code == "unknown_tariff"
        for role in holders.roles:
            assert holders.log(role) == [(0, "unknown_tariff")]
        # The honest request still works: prices from the registry.
        assert auth.release_bill("m1", DAY0, DAY0 + DAY, FLAT, days) == 96 * 101 * 25_000
    finally:
        holders.stop()


def test_default_policy_bills_only_whole_calendar_months(tmp_path):
    """A one-day bill is a day's consumption of one household: by default
    the holders bill whole calendar months only (the demo sets days)."""
    holders = Holders(tmp_path, billing="calendar-month")
    gw = Gateway(tmp_path, holders, meters={"m1": "big"})
    jan1 = DAY0  # 2026-01-01 00:00 UTC
    pes = PES(gw.store, 900)
    for d in range(32):  # all of January and February 1st
        rs = [(d * 96 + j, jan1 + d * DAY + 900 * (j + 1)) for j in range(96)]
        from gateway.pes import Reading

        pes.ingest("m1", [Reading(seq, end, 10, 0) for seq, end in rs], None, None)
    gw.seal()
    days = gw.bill_days("m1")
    auth = holders.start()
    try:
        for start, n, code in ((jan1, 1, "period_too_short"), (jan1, 7, "period_too_short"),
                               (jan1 + DAY, 31, "not_whole_months")):
            with pytest.raises(Refusal) as e:
                auth.release_bill("m1", start, start + n * DAY, FLAT,
                                  [x for x in days if start // DAY <= x[0].day < start // DAY + n])
            assert e.value.code == code, (start, n)
        january = [x for x in days if x[0].day < jan1 // DAY + 31]
        assert auth.release_bill("m1", jan1, jan1 + 31 * DAY, FLAT, january) == \
            31 * 96 * 10 * 25_000
    finally:
        holders.stop()
