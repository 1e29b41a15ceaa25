"""Time-of-use tariffs: which band an interval falls in, and its price.

A tariff file (JSON):

    {"id": "tou-2", "utc_offset_min": 60,
     "bands": {"0": "off-peak", "1": "peak"},
     "rules": [{"days": [0, 1, 2, 3, 4], "from_hour": 7, "to_hour": 21, "band": 1}],
     "default_band": 0,
     "prices": {"0": 18000, "1": 32000}}

Days are Monday = 0 .. Sunday = 6 in the tariff's local time (UTC plus a
fixed offset); an interval belongs to the band of its first minute. Prices
are whole micro-cents per Wh (25 ct/kWh = 25,000). The gateway needs only
the bands; prices matter to billing and the key authority.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .files import ConfigError

MAX_BANDS = 8


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
    extra: dict = field(default_factory=dict, compare=False)

    def band(self, interval_start: int) -> int:
        local = interval_start + self.utc_offset_min * 60
        days = local // 86400
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
        hour = (local % 86400) // 3600
        for r in self.rules:
            if weekday in r.days and r.from_hour <= hour < r.to_hour:
                return r.band
        return self.default_band

    def to_json(self) -> dict:
        return {"id": self.id, "utc_offset_min": self.utc_offset_min,
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
                   int(d.get("utc_offset_min", 0)))
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
    return t
