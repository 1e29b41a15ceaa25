# The meter's key ratchet (firmware/rekey.py), in the MicroPython Unix port:
# the step is the gateway's (gateway/keystore.next_secret, with Python's
# `cryptography`; tests/test_keystore.py checks the same two values), it goes
# onto flash before it is used, only after an agreement under the step
# before, and no nonce is drawn before the board says its randomness is real.
from binascii import unhexlify as h

import rekey

SECRET = h("0102030405060708090a0b0c0d0e0f10")  # RFC 8613 C.1's master secret and salt
SALT = h("9e7ca92223786340")
STEP1 = h("5b7af2baee2db1952ce59b9981d517c1")  # next_secret(SECRET), then again
STEP2 = h("1a653461186604dcc54e63c7cc78d53c")


def eq(a, b):
    if a != b:
        raise AssertionError("%r != %r" % (a, b))


def test_the_step_is_the_gateways():
    eq(rekey.next_secret(SECRET, SALT), STEP1)
    eq(rekey.next_secret(STEP1, SALT), STEP2)


def test_a_day_of_readings_after_an_agreement_steps_onto_flash_first():
    saved = []
    k = rekey.Rekeying(SECRET, SALT, b"\x01", b"", generation=0,
                       save=lambda s, g: saved.append((s, g)), step_after=96)
    first = k.ctx.id_context
    eq(k.delivered_readings(200), False)  # no agreement under this secret yet: no step
    k.advance(b"R2R2R2R2")  # Response #1 verified
    eq(k.delivered_readings(95), False)
    eq(k.delivered_readings(1), True)
    eq(saved, [(STEP1, 1)])
    eq(k.generation, 1)
    ctx = k.ctx  # a new Request #1 under the new secret
    eq(len(ctx.id_context), 8)
    eq(ctx.id_context != first, True)
    eq(ctx.sender_key, rekey.oscore.Context(STEP1, SALT, b"\x01", b"",
                                            id_context=ctx.id_context).sender_key)
    eq(k.delivered_readings(500), False)  # not again before the next agreement
    k.advance(b"R2R2R2R2")
    eq(k.delivered_readings(96), True)
    eq(saved[-1], (STEP2, 2))


def test_a_meter_without_the_ratchet_keeps_its_secret():
    k = rekey.Rekeying(SECRET, SALT, b"\x01", b"")
    k.advance(b"R2R2R2R2")
    eq(k.delivered_readings(10000), False)
    eq(k.generation, None)


def test_no_nonce_before_the_randomness_is_real():
    ready = []
    k = rekey.Rekeying(SECRET, SALT, b"\x01", b"", random_ready=lambda: bool(ready))
    eq(k.ctx, None)
    ready.append(1)
    eq(len(k.ctx.id_context), 8)
