# MicroPython script: POST a few CBOR payloads with the firmware's OSCORE
# uplink and print what came back, for the interop tests.
# usage: micropython uplink_probe.py <port> <secret> <salt> <sender> <recipient> <count> <first seq>
#        [<busy s>: then one more request that the peer answers 5.03 with that Max-Age]
import sys
from binascii import unhexlify

import cbor
import coap
import oscore
from rekey import FixedContext
from uplink import Uplink, udp_socket

port, secret, salt, sender, recipient, count, first = sys.argv[1:8]
ctx = oscore.Context(unhexlify(secret), unhexlify(salt), unhexlify(sender),
                     unhexlify(recipient), seqno=oscore.Counter(int(first)))
# A stock aiocoap server holds one fixed context: no B.2 here.
link = Uplink(udp_socket(), "127.0.0.1", int(port), FixedContext(ctx), ack_timeout_ms=1000,
              max_retransmit=3)
for i in range(int(count)):
    code, _, body = link.request(coap.POST, "readings", cbor.dumps({"n": i}))
    print("RESULT", code, cbor.loads(body))
if len(sys.argv) > 8:
    code, _, body = link.request(coap.POST, "readings", cbor.dumps({"busy": int(sys.argv[8])}))
    print("BUSY", code, link.max_age)
