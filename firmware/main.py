# Entry point on every board: the board module (boards/<name>/board.py)
# supplies settings, secrets, sensor, clock and storage.
import sys

import board
import meter

try:
    ok = meter.run(board.Board())
except Exception as e:  # noqa: BLE001 -- a bug or a fault nobody foresaw
    # Everything worth keeping is on flash already (the queue is written when
    # an interval closes), so start over at once rather than sit until the
    # watchdog fires.
    board.crashed(e)
board.finish(ok)
sys.exit(0 if ok else 3)
