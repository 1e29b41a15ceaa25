"""Exact sampling of discrete Laplace noise for differential privacy.

The discrete Laplace distribution with scale t has P(x) proportional to
exp(-|x| / t) on the integers. Adding it with t = sensitivity / epsilon to a
sum in which one household changes the result by at most `sensitivity`
gives epsilon-differential privacy (delta = 0).

Sampling is exact, with rational arithmetic and the OS's randomness, after
Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
Privacy" (2020), Algorithms 1 and 2: no floating point, so no leaks from
rounding.
"""

from __future__ import annotations

import secrets
from fractions import Fraction


def _bernoulli(p: Fraction) -> bool:
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction) -> bool:
    """True with probability exp(-gamma), gamma >= 0."""
    while gamma > 1:
        if not _bernoulli_exp(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Fraction) -> int:
    """One sample with P(x) ~ exp(-|x| / scale), scale > 0 rational."""
    scale = Fraction(scale)
    if scale <= 0:
        raise ValueError("scale must be positive")
    s, t = scale.denominator, scale.numerator  # exp(-|x| s / t)
    while True:
        u = secrets.randbelow(t)
        if not _bernoulli_exp(Fraction(u, t)):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1)):
            v += 1
        x = (u + t * v) // s
        negative = secrets.randbelow(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def scale_for(epsilon: Fraction, sensitivity: int) -> Fraction:
    return Fraction(sensitivity) / Fraction(epsilon)
