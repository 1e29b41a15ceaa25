# Production builds only (`gridveil build --production`): from the first
# line Python runs, Ctrl-C on the serial console no longer interrupts the
# program, so nobody at the USB port can break into the REPL (or the raw
# REPL that mpremote uses). See docs/hardware.md, "Securing a meter".
import micropython

micropython.kbd_intr(-1)
