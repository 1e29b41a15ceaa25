# The emulator's start, before main (host_tools/fleet.py BOOT): what the
# ESP32's bootloader does with its OTA data (otaboot.py). A meter that was
# never updated has no otadata file and loads nothing more.
import sys

import fsutil

if fsutil.exists("otadata.json"):
    import otaboot

    otaboot.boot()
    # Its work is done: give its heap back (the board imports partition
    # again if an update comes), and let the booted image load its own
    # fsutil rather than keep the build's.
    del otaboot, sys.modules["otaboot"], sys.modules["partition"], sys.modules["fsutil"]
