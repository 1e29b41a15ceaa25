# Stand-in for the ESP32's `esp32` module on the Unix port: NVS as a
# dictionary that outlives a Board (as flash outlives a reset), and the OTA
# partitions as the Unix board emulates them (when boards/unix is on the path).
try:
    from partition import Partition  # noqa: F401
except ImportError:
    pass

store = {}


class NVS:
    def __init__(self, namespace):
        self.ns = store.setdefault(namespace, {})
        self.commits = 0

    def set_blob(self, key, value):
        self.ns[key] = bytes(value)

    def set_i32(self, key, value):
        self.ns[key] = value

    def get_i32(self, key):
        if key not in self.ns:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        return self.ns[key]

    def get_blob(self, key, buf):
        if key not in self.ns:
            raise OSError(-4354)
        v = self.ns[key]
        if len(buf) < len(v):
            raise OSError(-4364)  # ESP_ERR_NVS_INVALID_LENGTH
        buf[:len(v)] = v
        return len(v)

    def commit(self):
        self.commits += 1
