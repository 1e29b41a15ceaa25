# The meter's secrets (OSCORE master secret and salt, Wi-Fi password) in the
# ESP32's NVS rather than in a file. `gridveil deploy` copies secrets.json;
# the first boot after it moves the contents into NVS and deletes the file.
# NVS is encrypted when the firmware is built with NVS encryption and flash
# encryption is on (docs/hardware.md, "Securing a meter"); without them
# this only keeps the secrets out of the filesystem that mpremote lists.
import json
import os

import fsutil

NAMESPACE = "gridveil"
FILE = "secrets.json"


def _nvs():
    try:
        import esp32

        return esp32.NVS(NAMESPACE)
    except (ImportError, OSError, AttributeError):
        return None  # a port or build without NVS: the file stays


def _put(nvs, secrets):
    raw = json.dumps(secrets).encode()
    nvs.set_blob("secrets", raw)
    nvs.set_i32("secrets_len", len(raw))
    nvs.commit()


def save(secrets, nvs=None):
    """The secrets as they are now (the ratchet's next master secret): one
    NVS commit, which is atomic; without NVS, the file."""
    nvs = nvs or _nvs()
    if nvs is not None:
        _put(nvs, secrets)
    else:
        fsutil.write_atomic(FILE, json.dumps(secrets).encode())


def load(hint, nvs=None):
    nvs = nvs or _nvs()
    if fsutil.exists(FILE):
        secrets = fsutil.load_json(FILE, hint)
        if nvs is not None:
            _put(nvs, secrets)
            os.remove(FILE)  # only after the commit: a power cut keeps one copy
        return secrets
    if nvs is not None:
        try:
            buf = bytearray(nvs.get_i32("secrets_len"))
            nvs.get_blob("secrets", buf)
            return json.loads(buf)
        except (OSError, ValueError):
            pass
    raise SystemExit("board: no secrets (neither %s nor NVS); %s" % (FILE, hint))
