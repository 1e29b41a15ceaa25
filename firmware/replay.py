# Replay of recorded consumption, for the emulator and for bench tests.
# Two layouts, one row per sample, each row covering [time, time + sample_s):
#   UMass Smart* CSV:    2016-01-01 00:00:00,0.68415        (local time taken
#                        as UTC, average kW over the minute)
#   GridVeil sample v1:  1451606400,684150                  (Unix seconds,
#                        average mW); lines starting with # are comments.
# Power is read as integers without floats (the ESP32 only has single
# precision): kW is truncated to whole mW. Yields (start, energy in mJ).


def days_from_civil(y, m, d):
    # Howard Hinnant's algorithm: days since 1970-01-01, proleptic Gregorian.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_timestamp(text):
    """'YYYY-MM-DD HH:MM:SS' (taken as UTC) to Unix seconds."""
    if len(text) != 19 or text[4] != "-" or text[7] != "-" or text[13] != ":":
        raise ValueError("bad timestamp %r" % text)
    days = days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    return days * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


def kw_to_mw(text):
    """Decimal kW string to whole mW, truncating digits beyond the sixth."""
    text = text.strip()
    if text.startswith("-"):
        raise ValueError("negative power")
    whole, _, frac = text.partition(".")
    frac = (frac + "000000")[:6]
    return int(whole or "0") * 1000000 + int(frac)


def parse_line(line):
    t, _, p = line.partition(",")
    if "-" in t:
        return parse_timestamp(t), kw_to_mw(p)
    mw = int(p)
    if mw < 0:
        raise ValueError("negative power")
    return int(t), mw


def read(path, sample_s=60):
    with open(path) as f:
        for n, line in enumerate(f):
            line = line.strip()
            if not line or line[0] == "#":
                continue
            try:
                start, mw = parse_line(line)
            except ValueError:
                raise ValueError("%s line %d: cannot parse %r" % (path, n + 1, line))
            yield start, mw * sample_s
