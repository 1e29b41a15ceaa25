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

    def read_uv(self):
        return 1650000  # mid-rail: no current


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
    print("[fake machine] reset")


PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
cause = WDT_RESET  # what the next Board() reads; tests set it


def reset_cause():
    return cause


class Counter:
    """machine.Counter on the ESP32's PCNT: counts edges in hardware, and
    its glitch filter drops pulses shorter than filter_ns (capped, like the
    hardware, at 1023 cycles of the 80 MHz APB clock)."""
    RISING, FALLING = 1, 2
    MAX_FILTER_NS = 1023 * 1000 // 80

    def __init__(self, unit, src=None, edge=RISING, filter_ns=0):
        self.unit = unit
        self.src = src
        self.edge = edge
        self.filter_ns = min(filter_ns, Counter.MAX_FILTER_NS)
        self.count = 0

    def pulse(self, width_ns):
        """An edge followed by width_ns of the new level."""
        if width_ns >= self.filter_ns:
            self.count += 1

    def value(self, v=None):
        old = self.count
        if v is not None:
            self.count = v
        return old
