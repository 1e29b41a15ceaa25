"""The PES in its own process (gateway/pesprocess.py): it stores what the
event loop sends and answers after the commit; killed, it is started again
by the next group, and while it cannot start (its database gone) groups
are refused with a StoreError, quickly and with one log line, not one
start and one line per group."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest
from test_pes import DAY0, decrypt_demand, pes  # noqa: F401 -- the fixture

from gateway import pesprocess
from gateway.pes import Batch, Reading
from gateway.pesprocess import PesProcess
from gateway.store import StoreError


def batch(meter: str, seq: int, wh: int) -> Batch:
    return Batch(meter, [Reading(seq, DAY0 + 900 * (seq + 1), wh, wh)])


def test_killed_or_unable_to_start_it_refuses_and_loses_nothing(pes, monkeypatch,  # noqa: F811
                                                                caplog):
    pes, priv = pes
    db = pes.store.path
    proc = PesProcess(db, 900, 448)
    proc.start()
    monkeypatch.setattr(pesprocess, "RESTART_EVERY_S", 0.5)

    async def scenario():
        (r,) = await proc.ingest_group([batch("m1", 0, 7)])
        assert r.accepted == 1
        first = proc.proc.pid
        os.kill(first, signal.SIGKILL)
        proc.proc.join()
        args = proc.args
        proc.args = (str(db.parent / "gone" / db.name), *args[1:])  # a database it cannot open
        outcomes = []
        for _ in range(5):
            try:
                await proc.ingest_group([batch("m1", 1, 11)])
                outcomes.append("stored")
            except StoreError as e:
                outcomes.append(str(e))
        assert outcomes[0].startswith("the PES process cannot start")
        assert outcomes[1:] == ["the PES process is not running"] * 4  # no start tried
        proc.args = args
        await asyncio.sleep(0.6)
        (r,) = await proc.ingest_group([batch("m1", 1, 11)])
        assert r.accepted == 1 and proc.proc.pid != first
        return outcomes

    with caplog.at_level(logging.INFO, logger="gridveil.pes"):
        asyncio.run(scenario())
    proc.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "gridveil.pes"]
    assert sum("cannot start" in m for m in lines) == 1, lines
    assert sum("starting the PES process again" in m for m in lines) == 1, lines
    assert pes.store.last_seq("m1") == 1  # both readings, once each
    assert decrypt_demand(pes, priv, DAY0 + 900) == 7
    assert decrypt_demand(pes, priv, DAY0 + 1800) == 11


def test_a_gateway_without_a_key_says_so_at_start(tmp_path):
    with pytest.raises(StoreError, match="no Paillier public key"):
        PesProcess(tmp_path / "empty.db", 900, 448).start()
