# MicroPython script: parse each telegram file given on the command line
# with the firmware's P1 reader and print the verdict, for comparison with
# the dsmr-parser package on the host.
import sys

import p1

for path in sys.argv[1:]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        r = p1.parse(data)
        print("OK", path, r.get("1.8.1"), r.get("1.8.2"), r.get("2.8.1"), r.get("2.8.2"))
    except ValueError as e:
        print("BAD", path, e)
