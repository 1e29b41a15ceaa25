"""A key holder's backup, restore and reconciliation.

A holder put back to a backup has forgotten what it released since. Asked
again, it would release those values a second time, with fresh noise that
averages out, and the budget they spent would be free again. So a restored
holder refuses every release until it is reconciled (`reconcile`) from:

- copies of its own log kept elsewhere (`export_log`, which its auditor
  runs with its kept heads): the entries after the backup go back exactly
  as they were, each linked to the one before and the last one a head
  signed with this holder's key, so nobody can leave one out or make one
  up; and what they released is marked again;
- the other holder's export: what that holder released is marked
  released here too, in one new log entry. That can only make this holder
  refuse more, so it needs no trust in the other holder. It cannot show
  that this holder is complete (a holder the utility runs could leave
  entries out), which is what the auditor's kept heads are for.

It serves again only once its log reaches every head the auditor kept
that is given to `reconcile`. What it cannot get back, it says: desk
decisions and consents recorded after the backup are in the re-added
entries but must be made again at the desk (docs/deploy.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from common import backup as archive
from common import signing
from common.files import ConfigError, read_json

from .holder import HolderHome
from .ledger import RESTORED, Ledger, Receipt, check_head, head_of


def _role(h: HolderHome) -> str:
    return read_json(h.meta, "key holder settings").get("role", "")


def backup(home: Path, out: Path) -> dict:
    h = HolderHome(home)
    if not h.ledger.exists():
        raise ConfigError(f"no decision log in {h.path}: nothing to back up")

    def head(snapshot) -> dict:
        r = head_of(snapshot)
        return {"head": {"n": r.n, "hash": r.hash}}

    return archive.write_archive(h.path, h.ledger, out, {"party": "holder", "role": _role(h)},
                                 read_snapshot=head)


def read_manifest(path: Path) -> dict:
    return archive.read_manifest(path, "holder")


def restore(path: Path, home: Path, replace: bool = False) -> dict:
    """Put the archive back; the holder then refuses releases until reconciled."""
    manifest = archive.unpack(path, home, "holder", replace)
    ledger = Ledger(HolderHome(home).ledger)
    try:
        ledger.set_meta(RESTORED, json.dumps({"made_at": manifest["made_at"],
                                              "head": manifest["head"]["n"]}))
    finally:
        ledger.close()
    return manifest


def export_log(holder, after: int = 0) -> dict:
    """This holder's entries after n=`after`, the meter sets they name and
    its signed head: what an auditor keeps, and what a restored holder (this
    one, or the other) reconciles from."""
    entries = holder.ledger.entries(after)
    digests = [d for e in entries if e["granted"] and e["marks"].startswith("{")
               for _, _, d in json.loads(e["marks"]).get("agg", [])]
    return {"party": "holder-log", "role": holder.role, "after": after, "entries": entries,
            "meter_sets": holder.ledger.meter_sets(digests), "head": holder.head()}


def _own(ledger: Ledger, pub, role: str, export: dict) -> int:
    try:
        head = check_head(pub, export["head"])
    except ValueError:
        raise ConfigError("an export of this holder's log whose head this holder did not"
                          " sign") from None
    entries = sorted(export["entries"], key=lambda e: e["n"])
    if entries and (entries[-1]["n"], entries[-1]["hash"]) != (head.n, head.hash):
        raise ConfigError(f"the export's entries end at {entries[-1]['n']}, not at its signed"
                          f" head {head.n}")
    try:
        return ledger.continue_chain(entries, export.get("meter_sets", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the export of this holder's log does not continue it: {e}") from None


def _peer(ledger: Ledger, export: dict) -> int:
    """Mark released here whatever the other holder's export released."""
    sets = {d: json.loads(t) for d, t in export.get("meter_sets", {}).items()}
    agg, bills = [], []
    for e in export["entries"]:
        if not e["granted"] or not str(e["marks"]).startswith("{"):
            continue
        m = json.loads(e["marks"])
        for nbh, end, digest in m.get("agg", []):
            if digest not in sets:
                raise ConfigError(f"the other holder's export lacks meter set {digest}")
            agg.append((nbh, int(end), sets[digest]))
        bills += [(meter, int(f), int(t)) for meter, f, t in m.get("bills", [])]
    with ledger.batch():
        b = ledger.marks.batch(agg)
        new = [(n, e, ms) for n, e, ms in agg if not b.released(n, e)]
        marked = [[n, e, b.mark(n, e, ms)] for n, e, ms in new]
        b.flush()
        fresh = sorted({x for x in bills if ledger.marks.billed(x[0], x[1], x[2]) != x[1]})
        ledger.marks.mark_bills(fresh)
        if marked or fresh:
            ledger.record("reconcile", "reconcile", f"{export['role']} log to"
                          f" n={export['head'].get('n')}", True,
                          "marked released as the other holder's log shows",
                          {"agg": marked, "bills": [list(x) for x in fresh]})
    return len(marked) + len(fresh)


def _check_reached(ledger: Ledger, pub, kept: dict, head: Receipt) -> None:
    try:
        r = check_head(pub, kept)
    except ValueError:
        raise ConfigError("a kept head this holder did not sign") from None
    row = ledger.entry_hash_at(r.n)
    if row is None:
        raise ConfigError(f"the auditor kept head n={r.n}, but this log ends at n={head.n}:"
                          f" give the auditor's export of the entries after {head.n}; until"
                          " then this holder releases nothing")
    if row != r.hash:
        raise ConfigError(f"entry {r.n} here is not the one whose head the auditor kept: this"
                          " log is not the holder's own")


def reconcile(home: Path, exports: list[dict], kept_heads: list[dict]) -> str:
    """Bring a restored holder up to date; returns what was done. Refuses
    (ConfigError) while a kept head is beyond the log."""
    h = HolderHome(home)
    role = _role(h)
    pub = signing.load_public(h.signing_pub)
    if not exports and not kept_heads:
        raise ConfigError("give the auditor's kept heads and exports of this holder's log"
                          " (--log, --kept-head), and the other holder's export if you have it")
    for x in exports:
        if not isinstance(x, dict) or x.get("party") != "holder-log":
            raise ConfigError("not an export of a holder's log (`gridveil holder export-log`)")
    ledger = Ledger(h.ledger)
    try:
        # One transaction: all of it, or (a kept head not reached) nothing.
        # The holder's own entries first: what follows them must not fork its log.
        with ledger.batch():
            added = sum(_own(ledger, pub, role, x) for x in exports if x.get("role") == role)
            head = ledger.head()
            for kept in kept_heads:
                _check_reached(ledger, pub, kept, head)
            marked = sum(_peer(ledger, x) for x in exports if x.get("role") != role)
            head = ledger.head()
            was = ledger.meta(RESTORED)
            ledger.set_meta(RESTORED, None)
    finally:
        ledger.close()
    return (f"{added} entries of this holder's own log put back, {marked} values and bills"
            f" marked released from the other holder's log; the log reaches n={head.n} and"
            f" every kept head" + (" (it serves again)" if was else ""))
