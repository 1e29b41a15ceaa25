"""Time-of-use tariffs: which band an interval falls in, and its price.

A tariff file (JSON):

    {"id": "tou-2", "utc_offset_min": 60,
     "bands": {"0": "off-peak", "1": "peak"},
     "rules": [{"days": [0, 1, 2, 3, 4], "from_hour": 7, "to_hour": 21, "band": 1}],
     "default_band": 0,
     "prices": {"0": 18000, "1": 32000}}

Days are Monday = 0 .. Sunday = 6 in the tariff's local time (UTC plus a
fixed offset); an interval belongs to the band of its first minute. Prices
are whole micro-cents per Wh (25 ct/kWh = 25,000). A tariff has a version
("version": 1, ...): a changed tariff is a new version.

The gateway needs only the bands and signs `id@version` into each bill day;
the prices that bills are computed with come only from the key holders'
registry of tariffs the privacy guardian approved (`check_bounds`), never
from whoever asks for a bill: prices of the requester's choosing could
encode each band's, or each hour's, energy into one bill (docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .files import ConfigError

MAX_BANDS = 8
# Bounds for a tariff the key holders bill with (docs/privacy.md says why).
APPROVED_MAX_BANDS = 4
MIN_BAND_HOURS = 2  # a band used on a day covers at least this many hours of it
MIN_PRICE, MAX_PRICE = 1_000, 200_000  # µct/Wh: 1 to 200 ct/kWh
MAX_PRICE_RATIO = 4  # dearest band / cheapest band


@dataclass(frozen=True)
class Rule:
    days: frozenset[int]
    from_hour: int
    to_hour: int  # exclusive
    band: int


@dataclass(frozen=True)
class Tariff:
    id: str
    bands: dict[int, str]
    prices: dict[int, int]
    rules: tuple[Rule, ...] = ()
    default_band: int = 0
    utc_offset_min: int = 0
    version: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def ref(self) -> str:
        """What a bill day names: id and version."""
        return f"{self.id}@{self.version}"

    def local_band(self, weekday: int, hour: int) -> int:
        for r in self.rules:
            if weekday in r.days and r.from_hour <= hour < r.to_hour:
                return r.band
        return self.default_band

    def band(self, interval_start: int) -> int:
        local = interval_start + self.utc_offset_min * 60
        days = local // 86400
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
        return self.local_band(weekday, (local % 86400) // 3600)

    def to_json(self) -> dict:
        return {"id": self.id, "version": self.version, "utc_offset_min": self.utc_offset_min,
                "bands": {str(k): v for k, v in self.bands.items()},
                "rules": [{"days": sorted(r.days), "from_hour": r.from_hour, "to_hour": r.to_hour,
                           "band": r.band} for r in self.rules],
                "default_band": self.default_band,
                "prices": {str(k): v for k, v in self.prices.items()}}


FLAT = Tariff("flat", {0: "flat"}, {0: 25_000})


def parse(d: dict) -> Tariff:
    try:
        bands = {int(k): str(v) for k, v in d["bands"].items()}
        prices = {int(k): int(v) for k, v in d.get("prices", {}).items()}
        rules = tuple(Rule(frozenset(int(x) for x in r["days"]), int(r["from_hour"]),
                           int(r["to_hour"]), int(r["band"])) for r in d.get("rules", []))
        t = Tariff(str(d["id"]), bands, prices, rules, int(d.get("default_band", 0)),
                   int(d.get("utc_offset_min", 0)), int(d.get("version", 1)))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"tariff is malformed: {e!r}") from None
    if not 0 < len(t.bands) <= MAX_BANDS or any(not 0 <= b < MAX_BANDS for b in t.bands):
        raise ConfigError(f"tariff {t.id}: 1..{MAX_BANDS} bands numbered 0..{MAX_BANDS - 1}")
    used = {t.default_band} | {r.band for r in t.rules}
    if used - set(t.bands):
        raise ConfigError(f"tariff {t.id}: rules use undefined bands {sorted(used - set(t.bands))}")
    for r in t.rules:
        if not (r.days <= set(range(7)) and 0 <= r.from_hour < r.to_hour <= 24):
            raise ConfigError(f"tariff {t.id}: a rule has bad days or hours")
    if t.prices and (set(t.prices) != set(t.bands) or any(p < 0 for p in t.prices.values())):
        raise ConfigError(f"tariff {t.id}: one non-negative price per band is required")
    if not -14 * 60 <= t.utc_offset_min <= 14 * 60:
        raise ConfigError(f"tariff {t.id}: utc_offset_min out of range")
    if t.version < 1 or "@" in t.id or not t.id:
        raise ConfigError(f"tariff {t.id!r}: needs an id without '@' and a version >= 1")
    return t


def check_bounds(t: Tariff) -> Tariff:
    """Refuse a tariff that could make a bill carry more than one number: at
    most 4 bands, every band used on a day for at least 2 hours of it,
    prices between 1 and 200 ct/kWh, the dearest at most 4 times the
    cheapest. Raises ConfigError saying which bound, and why."""
    if len(t.bands) > APPROVED_MAX_BANDS:
        raise ConfigError(f"tariff {t.ref}: {len(t.bands)} bands; at most {APPROVED_MAX_BANDS}"
                          " (each band is one more number a bill could carry)")
    for weekday in range(7):
        hours: dict[int, int] = {}
        for hour in range(24):
            b = t.local_band(weekday, hour)
            hours[b] = hours.get(b, 0) + 1
        short = {b: n for b, n in hours.items() if n < MIN_BAND_HOURS}
        if short:
            raise ConfigError(f"tariff {t.ref}: on weekday {weekday} band(s) {sorted(short)} cover"
                              f" less than {MIN_BAND_HOURS} hours; a short band would bill"
                              " single readings")
    if set(t.prices) != set(t.bands):
        raise ConfigError(f"tariff {t.ref}: one price per band is required")
    if any(not MIN_PRICE <= p <= MAX_PRICE for p in t.prices.values()):
        raise ConfigError(f"tariff {t.ref}: prices must be {MIN_PRICE}..{MAX_PRICE} micro-cents"
                          " per Wh (1 to 200 ct/kWh)")
    if max(t.prices.values()) > MAX_PRICE_RATIO * min(t.prices.values()):
        raise ConfigError(f"tariff {t.ref}: the dearest band costs more than {MAX_PRICE_RATIO}"
                          " times the cheapest; far-apart prices let one bill encode several"
                          " band totals")
    return t
