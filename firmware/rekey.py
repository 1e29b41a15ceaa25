# A fresh OSCORE context in every boot, agreed with the gateway as in
# RFC 8613 Appendix B.2, so that no (key, nonce) pair can repeat even when
# the flash was wiped and the same master secret pushed again.
#
#   Request #1   ID Context ID1 = R1 (8 random bytes), kid context R1
#   Response #1  4.01, kid context R2, protected with ID Context R2 || ID1
#   Request #2   ID Context R2 || R3, kid context R2 || R3, and from then on
#
# R1 and R3 come from this meter's random source, R2 from the gateway's, so
# the keys of every context are new to both sides: the meter counts its
# sequence numbers from 0 in each one and writes nothing to flash for them,
# and the gateway needs no replay window from before (nothing old verifies
# under a key that did not exist). A gateway that restarted has forgotten
# the context; it answers the next request as a Request #1.
#
# The ratchet (a meter provisioned with "generation"): once a day of
# readings has been delivered under one master secret, the meter steps to
# the next, HKDF(secret, salt, "gridveil-ratchet-v1"), writes it to flash
# in place of the old one, and agrees a new context under it; the gateway
# follows when that Request #1 verifies, and overwrites its copy. Whoever
# later takes the flash or the gateway's disk (with its passphrase) holds
# only the newest secret, which opens nothing recorded before the step.
# The meter steps only after an agreement under the current secret, so it
# is never more than one step ahead of the gateway.
#
# R1 is drawn when the first request is built, not at boot: on an ESP32 the
# random source is truly random only once the radio is on (boards/esp32).
import gc
import os

import oscore
from hkdf import hkdf

NONCE_BYTES = 8
RATCHET_INFO = b"gridveil-ratchet-v1"


def next_secret(secret, salt):
    return hkdf(salt, secret, RATCHET_INFO, len(secret))


class Rekeying:
    def __init__(self, secret, salt, sender_id, recipient_id, generation=None, save=None,
                 step_after=96, random_ready=None):
        self._params = [secret, salt, sender_id, recipient_id]
        self._random_ready = random_ready  # the board: is os.urandom truly random yet?
        self.generation = generation  # None: a meter provisioned without the ratchet
        self._save = save  # save(secret, generation): the next secret onto flash
        self.step_after = step_after  # readings delivered under one secret, then step
        self.delivered = 0
        self._ctx = None
        self.agreed = False  # an agreement completed under the current secret
        self.rekeys = 0

    @property
    def ctx(self):
        """The current context; None while the board's random source is not
        truly random yet (nothing can be sent then: the radio is off)."""
        if self._ctx is None:
            if self._random_ready is not None and not self._random_ready():
                return None
            self._ctx = self._derive(os.urandom(NONCE_BYTES))
        return self._ctx

    def _derive(self, id_context):
        secret, salt, sid, rid = self._params
        return oscore.Context(secret, salt, sid, rid, id_context=id_context)

    def response_context(self, r2):
        """The context that protects Response #1, which carries R2."""
        return self._derive(r2 + self.ctx.id_context)

    def advance(self, r2):
        """Response #1 verified: switch to R2 || R3 for every later request."""
        self._ctx = None  # free the old context's cipher state before deriving
        gc.collect()
        self._ctx = self._derive(r2 + os.urandom(NONCE_BYTES))  # the radio is on: it answered
        self.agreed = True
        self.rekeys += 1

    def restart(self):
        """Start over with a new ID1 (the sequence numbers of this context
        are used up, which takes 2^40 requests)."""
        self._ctx = None

    def delivered_readings(self, n):
        """Readings acknowledged under the current context: after a day's
        worth, step the ratchet (the next request is a new Request #1)."""
        if self.generation is None or not self.agreed:
            return False
        self.delivered += n
        if self.delivered < self.step_after:
            return False
        secret, salt = self._params[0], self._params[1]
        new = next_secret(secret, salt)
        self._save(new, self.generation + 1)  # on flash before it is used
        self._params[0] = new
        self.generation += 1
        self.delivered = 0
        self.agreed = False
        self._ctx = None
        gc.collect()
        return True


class FixedContext:
    """One context given from outside: for peers that do not speak B.2
    (the interop probe against a stock aiocoap server)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.rekeys = 0
