"""The guardian decides at the guardian: the utility, with every power it
has (the MDMS and its token, its own key holder and that holder's signing
key, the network between them), tries to release without the guardian's
signed decision, with a declined one, with one it forged, with one made
for another request, and with one the guardian revoked. Both holders
refuse each, and nothing the MDMS can send makes a decision."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request

import pytest
from helpers.holders import Gateway, Holders, gridveil
from test_authority import DAY0, SIX, T1, feed_day

from authority import keys
from authority.client import Refusal, _item
from common import decisions, records
from common.decisions import Decision
from gateway.pes import PES


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("decisions")
    holders = Holders(base, standing=False)  # the guardian approves nothing ahead of time
    gw = Gateway(base, holders, meters=SIX)
    feed_day(PES(gw.store, 900), range(1, 6))
    gw.seal()
    auth = holders.start()
    yield holders, gw, auth
    holders.stop()


def _raw(holders, role: str, decision) -> tuple[int, dict]:
    """A release request straight to one holder's API, as the MDMS can send it."""
    gw_part = _raw.part
    body = {"aggregates": [{"parts": [_item(*gw_part)]}]}
    if decision is not None:
        body["decision"] = decision
    req = urllib.request.Request(holders.urls[role] + "/v1/aggregates",
                                 data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {holders.token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _refused_everywhere(holders, decision, code: str) -> None:
    for role in holders.roles:
        status, body = _raw(holders, role, decision)
        assert status == 403 and body["refused"] == code, (role, status, body)


def test_no_decision_a_declined_one_or_a_forged_one_releases_nothing(env):
    holders, gw, auth = env
    _raw.part = gw.agg("big", T1)
    # 1. No decision at all.
    _refused_everywhere(holders, None, "no_decision")
    with pytest.raises(Refusal) as e:  # the client does not even ask without one
        auth.release_aggregate([gw.agg("big", T1)])
    assert e.value.code == "no_decision"
    # 2. The guardian declines the MDMS's request, at its own desk.
    pid = auth.propose("aggregates", ["big"], DAY0, DAY0 + 86400, "please", "mdms:7")
    holders.desk("decide", str(pid), "--decline", "--reason", "not this week")
    (declined,) = auth.refresh_decisions()
    assert not declined.approved and declined.request == "mdms:7"
    _refused_everywhere(holders, declined.to_json(), "declined")
    # 3. The same decision with "approved" flipped, or with its scope widened:
    #    the guardian's signature no longer holds.
    for changed in (dataclasses.replace(declined, approved=True),
                    dataclasses.replace(declined, approved=True, neighbourhoods=("*",))):
        _refused_everywhere(holders, changed.to_json(), "bad_decision")
    # 4. An approval the utility signs itself: with its own holder's signing
    #    key (it knows that holder's passphrase), and with a key of its own.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    own = keys.load_signing_key(holders.homes["utility"] / "signing-key.json",
                                holders.env["utility"]["GRIDVEIL_HOLDER_PASSPHRASE"])
    forged = Decision(id=1, what="aggregates", neighbourhoods=("*",), start=0, end=2**40,
                      approved=True, standing=True, expires=0, request="", reason="",
                      decided_at=int(time.time()))
    for key in (own, Ed25519PrivateKey.generate()):
        _refused_everywhere(holders, decisions.sign(key, forged).to_json(), "bad_decision")
    # 5. Garbage where a decision goes: refused as such, never a 500.
    for junk in ("yes", {"approved": True}, {**declined.to_json(), "extra": 1}, [1]):
        _refused_everywhere(holders, junk, "bad_decision")
    # Nothing was released, and no decision in any log came from the MDMS.
    for role in holders.roles:
        entries = holders.client(role).log()
        assert not any(e["granted"] for e in entries if e["kind"] == "aggregate")
        assert all(e["requester"] == "guardian" for e in entries if e["kind"] == "decision")
    # The MDMS's token can propose, never decide: there is no call for it.
    req = urllib.request.Request(holders.urls["guardian"] + "/v1/decision",
                                 data=json.dumps({"subject": "request:7", "approved": True,
                                                  "reason": "ok"}).encode(),
                                 headers={"Authorization": f"Bearer {holders.token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 404


def test_a_decision_releases_what_it_covers_only_until_it_is_revoked(env):
    holders, gw, auth = env
    pid = auth.propose("aggregates", ["big"], T1 - 900, T1 + 900, "two quarter hours",
                       "mdms:8")
    r = holders.desk("decide", str(pid), "--approve")
    assert "approved" in r.stdout
    approved = next(d for d in auth.refresh_decisions() if d.request == "mdms:8")
    # What it covers: released.
    assert auth.release_aggregate([gw.agg("big", T1)], approved)[0] == \
        sum(100 + i for i in range(1, 6))
    # Replayed for another request: another interval, another neighbourhood.
    rec, _ = gw.agg("big", T1 + 900)
    elsewhere = dataclasses.replace(rec, neighbourhood="elsewhere")
    for part in (gw.agg("big", T1 + 1800), (elsewhere, records.sign(gw.key, elsewhere))):
        with pytest.raises(Refusal) as e:
            auth.release_aggregate([part], approved)
        assert e.value.code == "out_of_scope"
    # A bill needs a decision about bills.
    with pytest.raises(Refusal) as e:
        auth.release_bills(["big"], DAY0, DAY0 + 86400, [], approved)
    assert e.value.code == "out_of_scope"
    # The guardian revokes it: its own holder refuses from then on, so nothing
    # is released even though the utility's holder would grant.
    holders.desk("revoke", str(approved.id))
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([gw.agg("big", T1 + 900)], approved)
    assert e.value.code == "revoked"
    assert holders.log("guardian")[-1] == (0, "revoked")
    r = gridveil(holders.homes["guardian"], "holder", "decisions",
                 env=holders.env["guardian"])
    assert "[REVOKED]" in r.stdout and "declined" in r.stdout
