# Emulated network faults for the Unix-port board, in the data's own time.
# settings.json "outage": {"dns_failures": n, "down_from": t0, "down_until": t1}:
# the first n name lookups fail, and from t0 to t1 the network is gone (as
# on an ESP32 whose Wi-Fi dropped): every lookup and send raises OSError.
import uplink

_lookups = [0]


def down(board):
    o = board.settings["outage"]
    return board.now is not None and o.get("down_from", 0) <= board.now < o.get("down_until", 0)


def resolve(board, host, port):
    _lookups[0] += 1
    if _lookups[0] <= board.settings["outage"].get("dns_failures", 0) or down(board):
        raise OSError(-3)  # EAI_AGAIN: temporary failure in name resolution
    return uplink.resolve(host, port)


class FlakySocket:
    def __init__(self, sock, board):
        self.sock = sock
        self.board = board

    def sendto(self, data, addr):
        if down(self.board):
            raise OSError(101)  # ENETUNREACH
        return self.sock.sendto(data, addr)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def recvfrom(self, n):
        return self.sock.recvfrom(n)
