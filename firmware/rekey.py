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
import gc
import os

import oscore

NONCE_BYTES = 8


class Rekeying:
    def __init__(self, secret, salt, sender_id, recipient_id):
        self._params = (secret, salt, sender_id, recipient_id)
        self.ctx = self._derive(os.urandom(NONCE_BYTES))
        self.rekeys = 0

    def _derive(self, id_context):
        secret, salt, sid, rid = self._params
        return oscore.Context(secret, salt, sid, rid, id_context=id_context)

    def response_context(self, r2):
        """The context that protects Response #1, which carries R2."""
        return self._derive(r2 + self.ctx.id_context)

    def advance(self, r2):
        """Response #1 verified: switch to R2 || R3 for every later request."""
        self.ctx = None  # free the old context's cipher state before deriving
        gc.collect()
        self.ctx = self._derive(r2 + os.urandom(NONCE_BYTES))
        self.rekeys += 1

    def restart(self):
        """Start over with a new ID1 (the sequence numbers of this context
        are used up, which takes 2^40 requests)."""
        self.ctx = self._derive(os.urandom(NONCE_BYTES))


class FixedContext:
    """One context given from outside: for peers that do not speak B.2
    (the interop probe against a stock aiocoap server)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.rekeys = 0
