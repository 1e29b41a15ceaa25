# Stand-in for the ESP32's `machine` module on the Unix port: only the
# hardware that cannot exist here (pins, ADC, UART, watchdog).
class Pin:
    IN = 1
    PULL_UP = 2
    IRQ_FALLING = 2

    def __init__(self, n, mode=None, pull=None):
        self.n = n
        self.handler = None

    def irq(self, handler=None, trigger=None):
        self.handler = handler


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.pin = pin

    def read_u16(self):
        return 32768


class UART:
    INV_RX = 1

    def __init__(self, uid, **kw):
        self.uid = uid
        self.kw = kw

    def read(self):
        return None


class RTC:
    set_to = []

    def datetime(self, tm=None):
        if tm is not None:
            RTC.set_to.append(tm)


class WDT:
    fed = 0

    def __init__(self, timeout=0):
        self.timeout = timeout

    def feed(self):
        WDT.fed += 1


resets = []


def reset():
    resets.append(1)


PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
cause = WDT_RESET  # what the next Board() reads; tests set it


def reset_cause():
    return cause
