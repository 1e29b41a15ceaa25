"""A no-op OSCORE server holding every meter's context: aiocoap's own
ceiling for `gridveil bench`. Same transport, same OSCORE code and key
lookup by kid as the gateway, and a resource that does nothing but answer
2.04: what is left of the gateway's cost once storage and Paillier are
taken away. It reads the provisioned meters' secrets.json (the bench's own
copies) and runs in its own process, as the gateway does.

usage: python -m host_tools.noop_server <meters folder> <port>
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap import oscore
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from gateway.config import GatewayConfig
from gateway.guard import Guard

from .oscore_peer import ClientContext


class _ServerContext(ClientContext):
    """The gateway's side: ids swapped, replay window open."""

    def __init__(self, secrets: dict):
        super().__init__(bytes.fromhex(secrets["master_secret"]),
                         bytes.fromhex(secrets["master_salt"]),
                         bytes.fromhex(secrets["recipient_id"]),
                         bytes.fromhex(secrets["sender_id"]), seq=0)


class _Contexts:
    def __init__(self, meters: Path):
        self._by_kid = {}
        for f in sorted(meters.glob("*/secrets.json")):
            ctx = _ServerContext(json.loads(f.read_text()))
            self._by_kid[ctx.recipient_id] = ctx

    def find_oscore(self, unprotected):
        return self._by_kid[unprotected.get(oscore.COSE_KID)]

    def find_all_used_contextless_oscore_kid(self):
        return set(self._by_kid)

    def get(self, key, default=None):
        return default


class NoOp(resource.Resource):
    async def render_post(self, request):
        return aiocoap.Message(code=aiocoap.CHANGED, content_format=60,
                               payload=cbor2.dumps({0: 1, 1: []}))


async def main(meters: Path, port: int) -> None:
    site = resource.Site()
    site.add_resource(("readings",), NoOp())
    ctx = await aiocoap.Context.create_server_context(OscoreSiteWrapper(site, _Contexts(meters)),
                                                      bind=("127.0.0.1", port),
                                                      transports=["udp6"])
    # The gateway's receive buffer, so that a burst is not lost here either.
    Guard.size_receive_buffer(ctx, GatewayConfig().receive_buffer_bytes)
    print("READY", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    try:
        asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
