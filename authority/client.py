"""The key authority as the MDMS sees it: one holder in single mode, two in
threshold mode, each either in this process or behind its HTTP API
(authority/api.py). Values come back only when every holder agreed."""

from __future__ import annotations

from pathlib import Path

from common import records

from . import threshold
from .holder import Answer, BillRequest, KeyHolder
from .keys import KeyDir
from .policy import Refusal
from .setup import holder_dirs


class Authority:
    def __init__(self, holders: dict, keys: KeyDir, requester: str = "mdms"):
        self.holders = holders  # role -> KeyHolder or api.HttpHolder
        self.keys = keys
        self.requester = requester
        self.receipts: dict[str, list] = {role: [] for role in holders}

    @classmethod
    def local(cls, home: Path, passphrases: dict[str, str | None] | None = None,
              requester: str = "mdms") -> Authority:
        passphrases = passphrases or {}
        dirs = holder_dirs(home)
        holders = {role: KeyHolder(d, passphrases.get(role)) for role, d in dirs.items()}
        return cls(holders, next(iter(holders.values())).home.keys, requester)

    @property
    def mode(self) -> str:
        return "single" if set(self.holders) == {"single"} else "threshold"

    def close(self) -> None:
        for h in self.holders.values():
            h.close()

    def _combine(self, answers: dict[str, Answer]) -> int:
        for role, a in answers.items():
            self.receipts[role].append(a.receipt)
        if self.mode == "single":
            return answers["single"].number
        key_id = next(iter(answers.values())).key_id
        return threshold.combine(self.keys.public(key_id), [a.number for a in answers.values()])

    def _ask_all(self, ask) -> int:
        # Every holder checks on its own and logs its own decision; a refusal
        # by any one of them is final (the others' partials are useless alone).
        answers, refusal = {}, None
        for role, h in self.holders.items():
            try:
                answers[role] = ask(h)
            except Refusal as r:
                refusal = refusal or Refusal(r.code, f"{role}: {r}")
        if refusal:
            raise refusal
        return self._combine(answers)

    def release_aggregate(self, rec: records.AggregateRecord, signature: bytes,
                          with_dp: bool = False) -> int:
        return self._ask_all(lambda h: h.release_aggregate(rec, signature, self.requester, with_dp))

    def release_bill(self, req: BillRequest) -> int:
        return self._ask_all(lambda h: h.release_bill(req, self.requester))

