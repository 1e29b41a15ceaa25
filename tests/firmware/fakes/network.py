# Stand-in for `network` on the Unix port: a Wi-Fi station that connects
# after a scripted number of attempts.
STA_IF = 0


class WLAN:
    attempts_needed = 3

    def __init__(self, iface=STA_IF):
        self.attempts = 0
        self.on = False

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def connect(self, ssid, password):
        self.attempts += 1

    rssi = -67

    def status(self, what=None):
        if what == "rssi":
            return WLAN.rssi
        return 1010 if self.isconnected() else 1001

    def isconnected(self):
        return self.attempts >= WLAN.attempts_needed
