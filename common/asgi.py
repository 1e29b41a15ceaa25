"""Serving a party's HTTP API (key holder, MDMS) with uvicorn: optional TLS,
proxy headers believed only from the addresses the operator lists (none by
default), a READY line once the socket is bound, and request bodies read
with a hard size limit while they stream in."""

from __future__ import annotations

import logging
import socket

from . import tls

log = logging.getLogger("gridveil.http")


class BodyTooLarge(Exception):
    pass


async def read_body(request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (also
    for chunked uploads that announce no length)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def serve(app, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None,
          ready=None, log_level: str = "warning", forwarded_allow_ips: str = "") -> None:
    """Run `app` until SIGINT/SIGTERM. `ready(url)` is called once the
    socket listens (port 0 picks a free port). X-Forwarded-For is believed
    only from the proxies in `forwarded_allow_ips` (comma-separated): from
    anyone else it would let a client choose its own address, and so dodge
    the per-address login limits."""
    import uvicorn

    tls.check_server_files(tls_cert, tls_key)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    scheme = "https" if tls_cert else "http"
    # log_config=None: uvicorn logs through our logging set-up, to stderr
    # (its default would write access lines to stdout, the READY pipe).
    config = uvicorn.Config(app, log_config=None, log_level=log_level,
                            access_log=log_level == "info",
                            proxy_headers=bool(forwarded_allow_ips),
                            forwarded_allow_ips=forwarded_allow_ips or None,
                            server_header=False, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{bound}"
    log.info("listening on %s", url)
    if ready:
        ready(url)
    server.run(sockets=[sock])
