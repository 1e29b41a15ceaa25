"""What a key holder may release. Settings can be made stricter than the
defaults but never weaker than the safe floor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from common.errors import Refusal
from common.files import ConfigError, settings_from

SAFE_MIN_K = 3  # below this a released sum is close to a single household
SAFE_MIN_BILL_DAYS = 1
MAX_EPSILON_PER_DAY = Fraction(10)
DAY = 86400
# Measured on the UMass apartments (`make privacy-report`): the largest
# quarter hour of the week is 2,834 Wh, the 99.9th percentile 2,174 Wh. A
# bound of 2,500 Wh (10 kW for 15 minutes) clips one quarter hour in 6,720.
DEFAULT_SENSITIVITY_WH = 2500


__all__ = ["Policy", "Refusal"]


@dataclass
class Policy:
    k: int = 5  # minimum enrolled households in a released aggregate
    # A bill covers whole calendar months (UTC) by default; "days" allows
    # shorter periods of at least min_bill_days whole days (the demo: one).
    billing: str = "calendar-month"
    min_bill_days: int = 1
    # Paillier keys this holder imports and lets gateways use (test set-ups
    # set less, for speed; NIST SP 800-57: 2048 bits ~ 112-bit security)
    min_key_bits: int = 2048
    # The quarter hours aggregates are released on: each record must span
    # exactly one, on this grid, so that a day holds interval_s-many releases.
    interval_s: int = 900
    # Differential privacy for aggregates: the guardian's policy decides, a
    # requester cannot opt out. "off" only where exact sums are the point
    # (the demo and the tests say so).
    dp: str = "on"
    # w-event privacy with a window of one day: over ANY 24 hours of releases
    # a meter's readings are protected with this epsilon. Each release spends
    # epsilon_per_day / (releases per day), and a meter is in at most one
    # release per interval (released once), so the budget renews as the
    # window slides and never runs out.
    dp_epsilon_per_day: str = "1"
    dp_sensitivity_wh: int = DEFAULT_SENSITIVITY_WH  # most one meter adds to one interval

    @property
    def releases_per_day(self) -> int:
        return DAY // self.interval_s

    @property
    def epsilon(self) -> Fraction:
        """Epsilon per release."""
        return Fraction(self.dp_epsilon_per_day) / self.releases_per_day

    def validate(self) -> None:
        if type(self.k) is not int or self.k < SAFE_MIN_K:
            raise ConfigError(f"policy k must be an integer >= {SAFE_MIN_K}")
        if type(self.min_key_bits) is not int or self.min_key_bits < 512:
            raise ConfigError("policy min_key_bits must be an integer >= 512")
        if self.billing not in ("calendar-month", "days"):
            raise ConfigError("policy billing must be \"calendar-month\" or \"days\"")
        if type(self.min_bill_days) is not int or self.min_bill_days < SAFE_MIN_BILL_DAYS:
            raise ConfigError(f"policy min_bill_days must be an integer >= {SAFE_MIN_BILL_DAYS}")
        if type(self.interval_s) is not int or self.interval_s < 60 or DAY % self.interval_s:
            raise ConfigError("policy interval_s must be a whole number of seconds >= 60 that"
                              " divides a day")
        try:
            eps = Fraction(self.dp_epsilon_per_day)
        except (ValueError, ZeroDivisionError, TypeError):
            raise ConfigError("dp_epsilon_per_day must be a fraction like '1' or '1/2'") from None
        if not 0 < eps <= MAX_EPSILON_PER_DAY:
            raise ConfigError(f"dp_epsilon_per_day must be in (0, {MAX_EPSILON_PER_DAY}]")
        if self.dp not in ("on", "off"):
            raise ConfigError("policy dp must be \"on\" or \"off\"")
        if type(self.dp_sensitivity_wh) is not int or self.dp_sensitivity_wh < 1:
            raise ConfigError("dp_sensitivity_wh must be a positive integer")

    @classmethod
    def from_json(cls, d: dict) -> Policy:
        if isinstance(d, dict) and "dp_epsilon" in d:
            # A policy from before w-event privacy: epsilon per release and a
            # lifetime budget. It keeps its epsilon per release (capped at
            # the day's ceiling, which only adds noise); the lifetime budget
            # has no successor.
            old = d["dp_epsilon"]
            d = {k: v for k, v in d.items() if k not in ("dp_epsilon", "dp_budget_per_household")}
            try:
                per_day = Fraction(str(old)) * (DAY // int(d.get("interval_s", 900)))
            except (ValueError, ZeroDivisionError, TypeError):
                raise ConfigError(f"authority policy: dp_epsilon {old!r} is not a fraction") \
                    from None
            d.setdefault("dp_epsilon_per_day", str(min(per_day, MAX_EPSILON_PER_DAY)))
        return settings_from(cls, d, "authority policy")

    def to_json(self) -> dict:
        return asdict(self)
