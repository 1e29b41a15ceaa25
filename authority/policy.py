"""What a key holder may release. Settings can be made stricter than the
defaults but never weaker than the safe floor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

from common.errors import Refusal
from common.files import ConfigError, settings_from

SAFE_MIN_K = 3  # below this a released sum is close to a single household
SAFE_MIN_BILL_DAYS = 1
MAX_EPSILON_PER_RELEASE = Fraction(5)


__all__ = ["Policy", "Refusal"]


@dataclass
class Policy:
    k: int = 5  # minimum contributors to a released aggregate
    # A bill covers whole calendar months (UTC) by default; "days" allows
    # shorter periods of at least min_bill_days whole days (the demo: one).
    billing: str = "calendar-month"
    min_bill_days: int = 1
    # Paillier keys this holder imports and lets gateways use (test set-ups
    # set less, for speed; NIST SP 800-57: 2048 bits ~ 112-bit security)
    min_key_bits: int = 2048
    # Differential privacy for aggregates: the guardian's policy decides, a
    # requester cannot opt out. "off" only where exact sums are the point
    # (the demo and the tests say so).
    dp: str = "on"
    dp_epsilon: str = "1/2"  # per release, as a fraction
    dp_sensitivity_wh: int = 4000  # most one household adds to one interval (16 kW x 15 min)
    # total epsilon each enrolled household may spend over its lifetime, over
    # every neighbourhood and day (sequential composition)
    dp_budget_per_household: str = "2000"

    @property
    def epsilon(self) -> Fraction:
        return Fraction(self.dp_epsilon)

    @property
    def budget(self) -> Fraction:
        return Fraction(self.dp_budget_per_household)

    def validate(self) -> None:
        if type(self.k) is not int or self.k < SAFE_MIN_K:
            raise ConfigError(f"policy k must be an integer >= {SAFE_MIN_K}")
        if type(self.min_key_bits) is not int or self.min_key_bits < 512:
            raise ConfigError("policy min_key_bits must be an integer >= 512")
        if self.billing not in ("calendar-month", "days"):
            raise ConfigError("policy billing must be \"calendar-month\" or \"days\"")
        if type(self.min_bill_days) is not int or self.min_bill_days < SAFE_MIN_BILL_DAYS:
            raise ConfigError(f"policy min_bill_days must be an integer >= {SAFE_MIN_BILL_DAYS}")
        try:
            eps, budget = self.epsilon, self.budget
        except (ValueError, ZeroDivisionError, TypeError):
            raise ConfigError("dp_epsilon and dp_budget_per_household must be fractions like"
                              " '1/2'") from None
        if not 0 < eps <= MAX_EPSILON_PER_RELEASE or budget < eps:
            raise ConfigError(f"dp_epsilon must be in (0, {MAX_EPSILON_PER_RELEASE}] and"
                              " dp_budget_per_household at least one release's epsilon")
        if self.dp not in ("on", "off"):
            raise ConfigError("policy dp must be \"on\" or \"off\"")
        if type(self.dp_sensitivity_wh) is not int or self.dp_sensitivity_wh < 1:
            raise ConfigError("dp_sensitivity_wh must be a positive integer")

    @classmethod
    def from_json(cls, d: dict) -> Policy:
        return settings_from(cls, d, "authority policy")

    def to_json(self) -> dict:
        return asdict(self)
