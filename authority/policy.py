"""What the key authority may release. Settings can be made stricter than
the defaults but never weaker than the safe floor."""

from __future__ import annotations

from dataclasses import dataclass

from common.files import ConfigError

SAFE_MIN_K = 3  # below this a released sum is close to a single household
SAFE_MIN_BILL_DAYS = 1


class Refusal(Exception):
    """A request the policy does not allow. `code` is stable for tests and logs."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Policy:
    k: int = 5  # minimum contributors to a released aggregate
    min_bill_days: int = 1  # bills cover whole days, at least this many

    def validate(self) -> None:
        if type(self.k) is not int or self.k < SAFE_MIN_K:
            raise ConfigError(f"policy k must be an integer >= {SAFE_MIN_K}")
        if type(self.min_bill_days) is not int or self.min_bill_days < SAFE_MIN_BILL_DAYS:
            raise ConfigError(f"policy min_bill_days must be an integer >= {SAFE_MIN_BILL_DAYS}")
