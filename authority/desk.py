"""The privacy guardian's desk, at its own key holder: release requests the
MDMS proposes, and the decisions the guardian signs with the holder's own
key (`gridveil holder requests`, `decide`, `standing`, `revoke`).

The MDMS only proposes: what it sends is shown to the guardian as the
MDMS's words, beside the scope the holders will actually enforce. A
decision is made here, signed here, and logged in this holder's hash
chain; the MDMS fetches the signed decisions (GET /v1/decisions) and
attaches one to every release request. A revoked decision is refused by
this holder from then on (the utility's holder may not know, but a value
needs both).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import decisions
from common.decisions import ANY, BadDecision, Decision
from common.files import ConfigError, check_name

from .ledger import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    requester TEXT NOT NULL,
    what TEXT NOT NULL,
    scope TEXT NOT NULL,          -- JSON {neighbourhoods, start, end}
    note TEXT NOT NULL,           -- the requester's own description, shown as such
    ref TEXT NOT NULL,            -- the requester's name for it (the MDMS's request number)
    decision INTEGER              -- the decision made on it, once decided
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,           -- the signed decision, JSON
    revoked REAL                  -- when the guardian revoked it, or NULL
);
"""
MAX_PENDING = 1000  # proposals waiting; a flood of them is refused, not stored


class Desk:
    def __init__(self, path: Path, ledger, key):
        self.db = connect(path, SCHEMA)
        self.ledger = ledger
        self._key = key  # the holder's Ed25519 key: it signs log heads, epochs and decisions

    def close(self) -> None:
        self.db.close()

    # --- what the MDMS proposes -------------------------------------------
    def propose(self, requester: str, what: str, neighbourhoods, start: int, end: int,
                note: str, ref: str) -> int:
        scope = _scope(what, neighbourhoods, start, end)
        pending = self.db.execute("SELECT COUNT(*) FROM proposals WHERE decision IS NULL"
                                  ).fetchone()[0]
        if pending >= MAX_PENDING:
            raise ValueError(f"{MAX_PENDING} requests already wait for the guardian")
        cur = self.db.execute("INSERT INTO proposals (at, requester, what, scope, note, ref)"
                              " VALUES (?, ?, ?, ?, ?, ?)",
                              (time.time(), requester, what, json.dumps(scope), str(note)[:500],
                               str(ref)[:64]))
        return cur.lastrowid

    def proposals(self, pending_only: bool = True, limit: int = 200) -> list[dict]:
        cur = self.db.execute("SELECT * FROM proposals" + (" WHERE decision IS NULL"
                                                           if pending_only else "") +
                              " ORDER BY id DESC LIMIT ?", (limit,))
        cols = [c[0] for c in cur.description]
        out = []
        for row in cur.fetchall():
            p = dict(zip(cols, row, strict=True))
            p.update(json.loads(p.pop("scope")))
            out.append(p)
        return out

    # --- the guardian's decisions -------------------------------------------
    def _issue(self, what, neighbourhoods, start, end, approved, standing, expires, request,
               reason) -> Decision:
        scope = _scope(what, neighbourhoods, start, end)
        n = self.db.execute("INSERT INTO decisions (body) VALUES ('')").lastrowid  # its number
        d = decisions.sign(self._key, Decision(
            id=n, what=what, neighbourhoods=tuple(scope["neighbourhoods"]), start=scope["start"],
            end=scope["end"], approved=approved, standing=standing, expires=int(expires or 0),
            request=request, reason=" ".join(str(reason).split())[:500],
            decided_at=int(time.time())))
        # Logged in the hash chain first: a decision that is not in the log is not made.
        try:
            self.ledger.record("guardian", "decision", f"decision:{d.id}", approved,
                               d.in_words() + (f": {d.reason}" if d.reason else ""))
        except BaseException:
            self.db.execute("DELETE FROM decisions WHERE id=?", (n,))
            raise
        self.db.execute("UPDATE decisions SET body=? WHERE id=?", (json.dumps(d.to_json()), n))
        return d

    def decide(self, proposal_id: int, approved: bool, reason: str = "") -> Decision:
        row = self.db.execute("SELECT what, scope, ref, decision FROM proposals WHERE id=?",
                              (proposal_id,)).fetchone()
        if row is None:
            raise ConfigError(f"there is no request {proposal_id}")
        if row[3] is not None:
            raise ConfigError(f"request {proposal_id} was decided already (decision {row[3]})")
        if not approved and not reason.strip():
            raise ConfigError("say why you decline, so that the requester knows what to change")
        scope = json.loads(row[1])
        d = self._issue(row[0], scope["neighbourhoods"], scope["start"], scope["end"], approved,
                        False, 0, row[2], reason)
        self.db.execute("UPDATE proposals SET decision=? WHERE id=?", (d.id, proposal_id))
        return d

    def standing(self, what: str, neighbourhoods, start: int, end: int, expires: int = 0,
                 reason: str = "") -> Decision:
        """An approval ahead of any request, for releases the guardian
        allows routinely (every quarter-hour total under its policy, say)."""
        return self._issue(what, neighbourhoods, start, end, True, True, expires, "", reason)

    def revoke(self, decision_id: int) -> Decision:
        d = self.decision(decision_id)
        if d is None:
            raise ConfigError(f"there is no decision {decision_id}")
        self.ledger.record("guardian", "revoke", f"decision:{decision_id}", True,
                           "revoked: " + d.in_words())
        self.db.execute("UPDATE decisions SET revoked=? WHERE id=? AND revoked IS NULL",
                        (time.time(), decision_id))
        return d

    def decision(self, decision_id: int) -> Decision | None:
        row = self.db.execute("SELECT body FROM decisions WHERE id=? AND body != ''",
                              (decision_id,)).fetchone()
        return decisions.parse(json.loads(row[0])) if row else None

    def revoked(self, decision_id: int) -> bool:
        row = self.db.execute("SELECT revoked FROM decisions WHERE id=?",
                              (decision_id,)).fetchone()
        return row is not None and row[0] is not None

    def decisions(self, after: int = 0, limit: int = 500) -> list[dict]:
        """Signed decisions, oldest first, each with whether it was revoked."""
        return [{**json.loads(body), "revoked": revoked is not None}
                for body, revoked in self.db.execute(
                    "SELECT body, revoked FROM decisions WHERE id > ? AND body != ''"
                    " ORDER BY id LIMIT ?",
                    (after, limit))]


def _scope(what, neighbourhoods, start, end) -> dict:
    if what not in decisions.WHATS:
        raise ValueError(f"what must be one of {decisions.WHATS}")
    nbhs = sorted({str(n) for n in neighbourhoods})
    if not nbhs or len(nbhs) > decisions.MAX_NEIGHBOURHOODS:
        raise ValueError("name the neighbourhoods (or '*' for any)")
    for n in nbhs:
        if n != ANY:
            check_name(n, "neighbourhood")
    if ANY in nbhs:
        nbhs = [ANY]
    if type(start) is not int or type(end) is not int or not 0 <= start < end < 2**53:
        raise ValueError("start and end must be Unix seconds, start before end")
    return {"neighbourhoods": nbhs, "start": start, "end": end}


def check(d, pub, desk: Desk | None = None) -> Decision:
    """A decision from a request, verified against the guardian's key (and,
    at the guardian's own holder, against its revocations)."""
    from .policy import Refusal

    if d is None:
        raise Refusal("no_decision", "a release needs the privacy guardian's signed decision")
    try:
        dec = decisions.parse(d)
    except BadDecision as e:
        raise Refusal("bad_decision", f"malformed decision: {e}") from None
    if pub is None:
        raise Refusal("bad_decision", "this holder has no guardian key to check decisions with"
                                      " (`gridveil holder trust-guardian`)")
    if not decisions.verify(pub, dec):
        raise Refusal("bad_decision", "the decision is not signed by the privacy guardian")
    if not dec.approved:
        raise Refusal("declined", f"the privacy guardian declined this ({dec.reason})")
    if not dec.live():
        raise Refusal("expired", f"decision {dec.id} expired")
    if desk is not None:
        own = desk.decision(dec.id)
        if own is None or own.signature != dec.signature:
            raise Refusal("bad_decision", f"decision {dec.id} is not one this guardian made")
        if desk.revoked(dec.id):
            raise Refusal("revoked", f"the privacy guardian revoked decision {dec.id}")
    return dec
