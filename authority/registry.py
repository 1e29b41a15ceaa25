"""The guardian's registry of enrolled meters, with the households' consent
(common/consent.py): which meters count toward k, and for which household.

A meter the guardian enrolls (on the utility's proposal) waits until its
household consents, signing with a key made on its own device. A household
that has not activated gets a one-time activation code, which the guardian
hands it apart from the utility; the registry keeps only the HMAC key the
code stands for. Only consented meters count: meters the utility proposed
for households that do not have them count for nothing, and an activation
the utility attempts with what it knows (household and meter ids, its own
keys) does not prove the code. Every change is logged in the holder's hash
chain; the signed binding (household, meters, sealing key) it hands out is
what gateways seal that household's readings to.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from common import consent, customer
from common.consent import BadConsent
from common.files import ConfigError, check_name

from .ledger import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS households (
    household TEXT PRIMARY KEY,
    sign_pub BLOB,            -- its consent key, once activated
    seal_pub BLOB,            -- what gateways seal its readings to
    activated REAL
);
-- one-time codes, as the HMAC keys they stand for (common/consent.code_key)
CREATE TABLE IF NOT EXISTS activation_codes (
    household TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bindings (
    meter TEXT PRIMARY KEY,
    household TEXT NOT NULL,
    enrolled REAL NOT NULL,
    consented REAL           -- NULL until the household signed for it
);
CREATE INDEX IF NOT EXISTS bindings_by_household ON bindings (household);
"""


class Registry:
    def __init__(self, path: Path, ledger, key):
        self.db = connect(path, SCHEMA)
        self.ledger = ledger
        self._key = key  # the holder's Ed25519 key: it signs the bindings

    def close(self) -> None:
        self.db.close()

    def counted(self, meters) -> dict[str, str]:
        """meter -> household, for those of `meters` whose household consented."""
        out: dict[str, str] = {}
        meters = sorted(set(meters))
        for i in range(0, len(meters), 500):
            chunk = meters[i:i + 500]
            out.update(self.db.execute(
                "SELECT meter, household FROM bindings WHERE consented IS NOT NULL AND meter IN"
                f" ({','.join('?' * len(chunk))})", chunk))
        return out

    def enroll(self, meters: dict[str, str]) -> dict[str, str]:
        """Bind meters to households, pending their consent. Returns an
        activation code for each household that has neither activated nor a
        code yet (to hand it apart from the utility; never stored)."""
        for m, h in meters.items():
            check_name(m, "meter id")
            check_name(h, "household id")
            row = self.db.execute("SELECT household FROM bindings WHERE meter=?",
                                  (m,)).fetchone()
            if row and row[0] != h:
                raise ConfigError(f"meter {m} is enrolled for household {row[0]}, not {h}")
        codes = {}
        now = time.time()
        for m, h in meters.items():
            self.db.execute("INSERT OR IGNORE INTO bindings (meter, household, enrolled)"
                            " VALUES (?, ?, ?)", (m, h, now))
            active = self.db.execute("SELECT 1 FROM households WHERE household=? AND sign_pub"
                                     " IS NOT NULL", (h,)).fetchone()
            if not active and h not in codes and not self.db.execute(
                    "SELECT 1 FROM activation_codes WHERE household=?", (h,)).fetchone():
                codes[h] = customer.new_recovery_code()
                self.db.execute("INSERT INTO activation_codes VALUES (?, ?, ?)",
                                (h, consent.code_key(codes[h], h), now))
        self.ledger.record("guardian", "enrollment", "enroll", True,
                           f"{len(meters)} meter(s) enrolled, waiting for their households'"
                           f" consent: " + ", ".join(f"{m}={h}" for m, h in
                                                     sorted(meters.items()))[:400])
        return codes

    def new_code(self, household: str) -> str:
        """A fresh activation code for a household that lost its letter (the
        old one stops working)."""
        check_name(household, "household id")
        code = customer.new_recovery_code()
        self.db.execute("INSERT OR REPLACE INTO activation_codes VALUES (?, ?, ?)",
                        (household, consent.code_key(code, household), time.time()))
        return code

    def waiting(self, household: str) -> dict:
        """What the household's device shows before it signs: its meters
        (those the guardian enrolled for it), and which it consented to."""
        rows = self.db.execute("SELECT meter, consented FROM bindings WHERE household=?"
                               " ORDER BY meter", (household,)).fetchall()
        active = self.db.execute("SELECT 1 FROM households WHERE household=? AND sign_pub IS"
                                 " NOT NULL", (household,)).fetchone()
        return {"household": household, "activated": bool(active),
                "meters": [m for m, _ in rows], "to_confirm": [m for m, c in rows if c is None]}

    def activate(self, d) -> dict:
        """A household's first consent, with the proof of its activation
        code. Returns the guardian's signed binding."""
        def check(household):
            row = self.db.execute("SELECT key FROM activation_codes WHERE household=?",
                                  (household,)).fetchone()
            if row is None:
                raise BadConsent("no activation waits for this household (activated already,"
                                 " or not enrolled)")
            return consent.verify(d, key=row[0])

        h, meters, sign_pub, seal_pub = self._checked("activate", d, check)
        now = time.time()
        self.db.execute("INSERT OR REPLACE INTO households VALUES (?, ?, ?, ?)",
                        (h, sign_pub, seal_pub, now))
        self.db.execute("DELETE FROM activation_codes WHERE household=?", (h,))
        self._consented(h, meters, now, "activated")
        return self.binding(h)

    def consent(self, d) -> dict:
        """A later consent (a meter enrolled since), signed with the key the
        household activated with."""
        def check(household):
            row = self.db.execute("SELECT sign_pub FROM households WHERE household=? AND"
                                  " sign_pub IS NOT NULL", (household,)).fetchone()
            if row is None:
                raise BadConsent("this household has not activated")
            return consent.verify(d, sign_pub=row[0])

        h, meters, _, _ = self._checked("consent", d, check)
        self._consented(h, meters, time.time(), "consented")
        return self.binding(h)

    def _checked(self, what: str, d, check):
        """check(household) on a consent, and its meters against the
        household's; a refusal is logged and raised as the holder's."""
        from .policy import Refusal

        household = d.get("household") if isinstance(d, dict) else None
        try:
            if not isinstance(household, str):
                raise BadConsent("a consent names its household")
            h, meters, sign_pub, seal_pub = check(household)
            self._check_meters(h, meters)
        except BadConsent as e:
            self.ledger.record("mdms", "enrollment", f"{what}:{str(household)[:64]}", False,
                               f"bad_consent: {e}")
            raise Refusal("bad_consent", str(e)) from None
        return h, meters, sign_pub, seal_pub

    def _check_meters(self, household: str, meters: list[str]) -> None:
        mine = {m for (m,) in self.db.execute("SELECT meter FROM bindings WHERE household=?",
                                             (household,))}
        if not set(meters) <= mine:
            raise BadConsent(f"meters {sorted(set(meters) - mine)} are not enrolled for this"
                             " household")

    def _consented(self, household: str, meters: list[str], now: float, what: str) -> None:
        self.ledger.record("household", "enrollment", f"consent:{household}", True,
                           f"{household} {what} and consented to meter(s)"
                           f" {', '.join(meters)[:400]}")
        self.db.executemany("UPDATE bindings SET consented=? WHERE meter=? AND household=?",
                            [(now, m, household) for m in meters])

    def binding(self, household: str) -> dict:
        """The guardian's signed word to gateways: this household's consented
        meters, and the key its readings are sealed to."""
        row = self.db.execute("SELECT seal_pub FROM households WHERE household=?",
                              (household,)).fetchone()
        if row is None or row[0] is None:
            raise ConfigError(f"household {household} has not activated")
        meters = [m for (m,) in self.db.execute(
            "SELECT meter FROM bindings WHERE household=? AND consented IS NOT NULL ORDER BY"
            " meter", (household,))]
        sig = self._key.sign(consent.binding_statement(household, meters, row[0]))
        return {"kind": consent.BINDING_LABEL, "household": household, "meters": meters,
                "seal_pub": base64.b64encode(row[0]).decode(),
                "signature": base64.b64encode(sig).decode()}

    def bindings(self) -> list[dict]:
        return [self.binding(h) for (h,) in self.db.execute(
            "SELECT household FROM households WHERE seal_pub IS NOT NULL ORDER BY household")]
