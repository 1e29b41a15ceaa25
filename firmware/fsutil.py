# Small file helpers shared by the persistent stores. MicroPython has no
# fsync; flush() hands the data to the filesystem, and rename() is atomic on
# both LittleFS (ESP32) and POSIX (Unix port), so a file is always either the
# old or the new version, never a mix.
import os


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    os.rename(tmp, path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def load_json(name, hint):
    """A settings file from flash; a clear message instead of a traceback."""
    import json

    try:
        with open(name) as f:
            return json.load(f)
    except OSError:
        raise SystemExit("board: %s is missing; %s" % (name, hint))
    except ValueError:
        raise SystemExit("board: %s is not valid JSON" % name)
