"""A UDP relay on loopback between meters and a gateway: the network the
utility controls. Each datagram passes a hook that may note it, change it
or drop it (return None) before it goes on."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Callable

Hook = Callable[[bytes], "bytes | None"]


class UdpRelay:
    def __init__(self, gateway_port: int, to_gateway: Hook | None = None,
                 to_meter: Hook | None = None):
        self.gateway = ("127.0.0.1", gateway_port)
        self.to_gateway = to_gateway or (lambda d: d)
        self.to_meter = to_meter or (lambda d: d)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.front, selectors.EVENT_READ, None)
        self.upstream: dict = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self.sel.select(0.2):
                data, addr = key.fileobj.recvfrom(65535)
                if key.data is None:  # meter -> gateway
                    up = self.upstream.get(addr)
                    if up is None:
                        up = self.upstream[addr] = socket.socket(socket.AF_INET,
                                                                 socket.SOCK_DGRAM)
                        self.sel.register(up, selectors.EVENT_READ, addr)
                    data = self.to_gateway(data)
                    if data is not None:
                        up.sendto(data, self.gateway)
                else:  # gateway -> the meter behind this relay socket
                    data = self.to_meter(data)
                    if data is not None:
                        self.front.sendto(data, key.data)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
