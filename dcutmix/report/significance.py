"""Welch's t-test and the confidence interval of a difference of means, in pure Python.

The report compares each configuration with a baseline over seeds. Seeds are few (often 3-5) and
the two sides need not share a variance, so the test is Welch's and the interval uses the
Welch-Satterthwaite degrees of freedom. Student's t distribution is computed here from the
regularised incomplete beta function, so the report needs no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

_CF_ITERATIONS = 500
_CF_EPSILON = 1e-15
_TINY = 1e-300


@dataclass(frozen=True)
class Difference:
    """Mean of a sample minus the baseline's mean, its 95% interval and Welch's two-sided p."""

    delta: float
    low: float
    high: float
    p_value: float
    df: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0: a difference at the 5% level."""
        return self.low > 0 or self.high < 0


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _CF_ITERATIONS + 1):
        # Each step folds in an even term (m) and then an odd term (-(a+m)...).
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            fraction *= step
        if abs(step - 1.0) < _CF_EPSILON:
            break
    return fraction


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for 0 <= x <= 1 and a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast only below the mean of Beta(a, b); above it use the symmetry.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_beta(df / (df + t * t), df / 2.0, 0.5)


def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie strictly between 0 and 1; got {probability}")
    if probability == 0.5:
        return 0.0
    tail = 2.0 * min(probability, 1.0 - probability)
    # I_x(df/2, 1/2) grows with x = df / (df + t^2), so bisect on x for the two-sided tail.
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if regularized_beta(middle, df / 2.0, 0.5) < tail:
            low = middle
        else:
            high = middle
    x = (low + high) / 2.0
    t = math.sqrt(df * (1.0 - x) / x)
    return t if probability > 0.5 else -t


def welch(sample: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> Difference:
    """Mean of ``sample`` minus mean of ``baseline``: interval at ``level`` and Welch's p-value.

    Both sides need at least two values. Two constant samples give a zero-width interval, with
    p = 1 when their means agree and p = 0 when they differ.
    """
    if len(sample) < 2 or len(baseline) < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    delta = statistics.fmean(sample) - statistics.fmean(baseline)
    share_a = statistics.variance(sample) / len(sample)
    share_b = statistics.variance(baseline) / len(baseline)
    squared_error = share_a + share_b
    if squared_error == 0.0:
        return Difference(delta, delta, delta, 1.0 if delta == 0 else 0.0, math.inf)
    df = squared_error**2 / (share_a**2 / (len(sample) - 1) + share_b**2 / (len(baseline) - 1))
    error = math.sqrt(squared_error)
    half_width = t_quantile(0.5 + level / 2.0, df) * error
    p_value = t_two_sided_p(delta / error, df)
    return Difference(delta, delta - half_width, delta + half_width, p_value, df)


def baseline_differences(
    groups: Sequence[tuple[Hashable, str, Sequence[float]]], baseline: str
) -> list[Difference | None]:
    """For each ``(other settings, mode, values)`` group, its difference from the baseline group.

    The baseline group is the one whose mode is ``baseline`` and whose other settings are equal.
    A group gets None when it is a baseline itself, when no baseline (or more than one) matches,
    or when either side has fewer than two values.
    """
    baselines: dict[Hashable, list[Sequence[float]]] = {}
    for key, mode, values in groups:
        if mode == baseline:
            baselines.setdefault(key, []).append(values)
    differences: list[Difference | None] = []
    for key, mode, values in groups:
        matches = baselines.get(key, [])
        if mode == baseline or len(matches) != 1 or len(values) < 2 or len(matches[0]) < 2:
            differences.append(None)
        else:
            differences.append(welch(values, matches[0]))
    return differences
