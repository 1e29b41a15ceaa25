# What the ESP32's bootloader does with its OTA data, for the Unix port:
# pick the partition to boot, give a new image one try, and roll back to
# the previous one if the new image was reset before it confirmed itself
# (ESP-IDF's app rollback). A partition that holds an image (a bundle of a
# build's files, host_tools/build.py) is unpacked into app/ and put first
# on the module path. bootloader.py runs this, then main.
import os
import sys

import fsutil
import partition


def _unpack(name, into):
    _clear(into)
    with open(name, "rb") as f:
        if f.read(4) != b"GVI1":
            raise OSError(2)
        while True:
            n = int.from_bytes(f.read(2), "big")
            if n == 0 or n == 0xFFFF:
                return
            path = into + "/" + f.read(n).decode()
            left = int.from_bytes(f.read(4), "big")
            if "/" in path[len(into) + 1:]:
                _mkdir(path[:path.rfind("/")])
            with open(path, "wb") as out:
                while left:
                    chunk = f.read(min(left, 512))
                    if not chunk:
                        raise OSError(5)  # EIO: the bundle ends inside a file
                    out.write(chunk)
                    left -= len(chunk)


def _mkdir(d):
    try:
        os.mkdir(d)
    except OSError:
        pass


def _clear(d):
    _mkdir(d)
    for entry in os.ilistdir(d):
        p = d + "/" + entry[0]
        if entry[1] == 0x4000:
            _clear(p)
            os.rmdir(p)
        else:
            os.remove(p)


def boot():
    d = partition.otadata()
    was = dict(d)
    if d.get("state") == "new":
        d["state"] = "pending"  # its one try: it must confirm before the next reset
    elif d.get("state") == "pending":
        print("[bootloader] %s was reset before it confirmed itself: booting %s again"
              % (d["boot"], d["prev"]))
        d = {"boot": d["prev"], "state": "valid", "aborted": d["boot"]}
    d["running"] = d["boot"]
    if d != was:  # written only when the boot state changes
        partition.save(d)
    image = d["boot"] + ".bin"
    if fsutil.exists(image):
        _unpack(image, "app")
        sys.path[0:0] = ["app/lib", "app"]

