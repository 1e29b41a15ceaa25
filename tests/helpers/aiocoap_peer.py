"""A plain aiocoap OSCORE server, independent of the GridVeil gateway: stock
FilesystemSecurityContext and OscoreSiteWrapper, one resource that echoes
back the CBOR it received (or, asked with {"busy": s}, answers 5.03 with
Max-Age s). Used to check the firmware's client against
aiocoap's OSCORE implementation.

usage: python aiocoap_peer.py <context dir> <port>
"""

import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper


class Echoing(resource.Resource):
    async def render_post(self, request):
        body = cbor2.loads(request.payload)
        if isinstance(body, dict) and "busy" in body:  # back-pressure, as a busy gateway
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, max_age=body["busy"],
                                   payload=b"busy")
        answer = {"got": body, "oscore": True}
        echoes = request.opt.get_option(aiocoap.numbers.OptionNumber.ECHO)
        if echoes:  # what came with the Echo: the request's own options, and one Echo
            answer["echo"] = [int(request.opt.content_format or 0), len(echoes)]
        return aiocoap.Message(code=aiocoap.CHANGED, content_format=60,
                               payload=cbor2.dumps(answer))


async def main(ctxdir, port):
    creds = CredentialsMap()
    creds[":client"] = FilesystemSecurityContext(ctxdir)
    site = resource.Site()
    site.add_resource(["readings"], Echoing())
    await aiocoap.Context.create_server_context(OscoreSiteWrapper(site, creds),
                                                bind=("127.0.0.1", port), transports=["udp6"])
    print("READY", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
