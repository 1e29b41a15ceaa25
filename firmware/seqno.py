# OSCORE sender sequence numbers that survive a reboot (RFC 8613 B.1.1).
# Before a number is used, a bound above it is written to flash; after a
# reboot counting resumes at that bound. Numbers between the last one used
# and the bound are skipped, never reused, so a nonce is never repeated.
import fsutil


class SequenceStoreError(Exception):
    pass


class SequenceStore:
    def __init__(self, path, chunk=64):
        self.path = path
        self.chunk = chunk
        reserved = 0
        if fsutil.exists(path):
            try:
                with open(path) as f:
                    reserved = int(f.read().strip())
            except (OSError, ValueError):
                # Guessing here could reuse a nonce; refuse instead.
                raise SequenceStoreError(
                    "sequence number file %s is unreadable; re-provision this meter" % path)
        self._next = reserved
        self._bound = reserved  # nothing reserved yet in this boot

    def next(self):
        if self._next >= self._bound:
            self._bound = self._next + self.chunk
            fsutil.write_atomic(self.path, b"%d\n" % self._bound)
        n = self._next
        self._next += 1
        return n

    @property
    def reserved(self):
        return self._bound
