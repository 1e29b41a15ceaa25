# Entry point of a production build: firmware/main.py, except that nothing
# leaves the board at a REPL prompt. An exception while starting (bad
# settings, a missing file) is printed and the board resets after a pause,
# where a development build would stop at the REPL for someone to look.
# kbd_intr again: boot.py may be missing after a partial deploy.
import micropython

micropython.kbd_intr(-1)

try:
    import board
    import meter

    try:
        ok = meter.run(board.Board())
    except Exception as e:  # noqa: BLE001 -- as in firmware/main.py
        board.crashed(e)
    board.finish(ok)
except BaseException as e:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt: all end in a reset
    print("[halt] %s: %s; restarting in 5 s" % (type(e).__name__, e))
import time  # noqa: E402

import machine  # noqa: E402

time.sleep(5)  # a board with bad settings must not restart in a hot loop
machine.reset()
