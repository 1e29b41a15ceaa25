# Entry point on every board: the board module (boards/<name>/board.py)
# supplies settings, secrets, sensor, clock and storage.
import sys

import board
import meter

ok = meter.run(board.Board())
board.finish(ok)
sys.exit(0 if ok else 3)
