"""Households consent to their meters, as the utility would try to get
around it. It proposes "second meters" (dummies of its own) for households
that live elsewhere, hoping four of them and one real target make k; and
it tries to activate households itself with everything it knows: their
ids, their meters, keys of its own, the household's real activation as it
passes through its MDMS, and a binding of its own making for the
gateways. None of it counts, opens or seals anything."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from helpers.holders import Gateway, Holders, gridveil, seal_pub
from test_authority import DAY0, feed_day

from authority.client import Refusal
from common import consent
from gateway.pes import PES

REAL = {f"m{i}": f"house-{i}" for i in range(1, 6)}  # five households, a meter each
TARGET = {"t": "target"}
DUMMIES = {f"x{i}": f"house-{i}" for i in range(2, 6)}  # "second meters" for four of them


@pytest.fixture
def env(tmp_path):
    holders = Holders(tmp_path)
    meters = {m: "street" for m in [*TARGET, *DUMMIES]} | {m: "block" for m in REAL}
    gw = Gateway(tmp_path, holders, meters=meters, enroll=False)
    holders.enroll(REAL | TARGET)  # the real households activate and consent
    holders.enroll(DUMMIES, consent=False)  # the guardian enrolls what the utility proposed
    pes = PES(gw.store, 900)
    ids = {m: i + 1 for i, m in enumerate(meters)}
    feed_day(_Named(pes, ids), ids.values())
    gw.seal()
    auth = holders.start()
    yield holders, gw, auth
    holders.stop()


class _Named:
    """feed_day's meters by number, as these tests' meter names."""

    def __init__(self, pes, ids):
        self.pes, self.names = pes, {f"m{i}": m for m, i in ids.items()}

    def ingest(self, meter, readings, *rest):
        return self.pes.ingest(self.names[meter], readings, *rest)


def test_meters_the_utility_proposed_for_other_households_do_not_count(env):
    holders, gw, auth = env
    rec, sig = gw.agg("street", DAY0 + 900)  # the target and four "second meters"
    assert rec.contributors == 5
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([(rec, sig)])
    assert e.value.code == "too_few" and "1 enrolled households" in str(e.value)
    assert str(e.value).startswith("guardian:")  # the utility's own holder counts five
    # The five real households release fine: consent is all it takes.
    assert auth.release_aggregate([gw.agg("block", DAY0 + 900)])[1] == 5
    # One household that really has a second meter consents to it, signed with
    # the key it activated with: that meter counts from then on.
    holders.to_consent["x2"] = "house-2"
    holders.consent_all()
    with pytest.raises(Refusal) as e:
        auth.release_aggregate([gw.agg("street", DAY0 + 1800)])
    assert "2 enrolled households" in str(e.value)


def test_an_activation_made_of_what_the_utility_knows_fails(env, tmp_path):
    holders, gw, auth = env
    guardian = holders.client("guardian")
    gridveil(holders.homes["guardian"], "holder", "enroll", "newcomer-meter", "--household",
             "newcomer")  # a household that has not activated yet; its letter is in the post
    utility_key = ec.generate_private_key(ec.SECP256R1())
    forged = consent.sign(utility_key, "newcomer", ["newcomer-meter"], seal_pub(),
                          "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GG")  # a guess at the code
    without = {k: v for k, v in forged.items() if k != "proof"}
    for attempt in (forged, without, {**forged, "proof": forged["signature"]}, "x", {}):
        with pytest.raises(Refusal) as e:
            guardian.activate(attempt)
        assert e.value.code == "bad_consent"
    # The household activates with the code from its letter, through the
    # utility's MDMS, which swaps in keys of its own on the way: the proof
    # and the signature cover the keys, so the swap is refused...
    out = gridveil(holders.homes["guardian"], "holder", "enroll", "later-meter", "--household",
                   "later").stdout
    code = out.split("activation code for household later: ")[1].split()[0]
    real = consent.sign(ec.generate_private_key(ec.SECP256R1()), "later", ["later-meter"],
                        seal_pub(), code)
    swapped = {**real, "sign_pub": forged["sign_pub"]}
    with pytest.raises(Refusal) as e:
        guardian.activate(swapped)
    assert e.value.code == "bad_consent"
    # ...and so is claiming more meters than the household signed for.
    with pytest.raises(Refusal) as e:
        guardian.activate({**real, "meters": ["later-meter", "x3"]})
    assert e.value.code == "bad_consent"
    binding = guardian.activate(real)  # the household's own, as it sent it
    assert binding["meters"] == ["later-meter"]
    with pytest.raises(Refusal):  # the code is spent: a replay is refused
        guardian.activate(real)
    # A later consent signed with a key of the utility's, for the household:
    with pytest.raises(Refusal) as e:
        guardian.consent(consent.sign(utility_key, "later", ["later-meter"], seal_pub()))
    assert e.value.code == "bad_consent"
    # The gateways seal a household's readings only to the key in a binding
    # the guardian signed: one the utility makes itself is refused.
    other = consent.spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    for own in ({**binding, "meters": ["later-meter", "m1"]},
                {**binding, "seal_pub": base64.b64encode(other).decode()}):
        (tmp_path / "own.json").write_text(json.dumps(own))
        r = gridveil(gw.home.path, "gateway", "customer-add", str(tmp_path / "own.json"),
                     check=False)
        assert r.returncode == 2 and "not a binding signed by the privacy guardian" in r.stderr
    (tmp_path / "real.json").write_text(json.dumps(binding))
    assert gridveil(gw.home.path, "gateway", "customer-add", str(tmp_path / "real.json"))
    # Every refusal is in the guardian's log, as a refused enrollment.
    refused = [e for e in guardian.log() if e["kind"] == "enrollment" and not e["granted"]]
    assert len(refused) >= 8 and all("bad_consent" in e["reason"] for e in refused)
