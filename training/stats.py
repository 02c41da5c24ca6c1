"""Small statistics for evaluation reports: t-intervals over seeds and paired comparisons.

Every interval here is a two-sided 95 % Student-t interval: episodes on different seeds are
independent draws of the day, so the mean over ``n`` seeds has the interval
``mean ± t(0.975, n-1) · sd / sqrt(n)`` (``sd`` with ``n-1`` degrees of freedom). A **paired**
comparison of two policies uses the per-seed differences ``a_i - b_i`` (same seed = same demand,
fleet and traffic draws), which removes the day-to-day variation both policies share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def t_halfwidth(values: np.ndarray | list[float], level: float = 0.95) -> float:
    """Half-width of the two-sided t-interval of the mean of ``values`` (NaNs dropped); NaN if fewer than 2."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return float("nan")
    sd = float(x.std(ddof=1))
    return float(stats.t.ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n))


def mean_ci(values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the t-interval) over the finite values; (NaN, NaN) when there are none."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), t_halfwidth(x, level)


@dataclass(frozen=True)
class PairedResult:
    """``a - b`` over paired observations: mean difference, its t-interval, and a paired t-test."""

    n: int
    mean: float
    half: float  # half-width of the interval (NaN when n < 2)
    lo: float
    hi: float
    p_value: float  # two-sided paired t-test (NaN when n < 2 or all differences are equal)

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero (a difference at the 5 % level)."""
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi) and (self.lo > 0.0 or self.hi < 0.0))

    @property
    def verdict(self) -> str:
        if not self.excludes_zero:
            return "no significant difference"
        return "higher" if self.mean > 0 else "lower"


def paired_diff(a: np.ndarray | list[float], b: np.ndarray | list[float], level: float = 0.95) -> PairedResult:
    """Compare ``a`` with ``b`` observation by observation (same seeds, same order).

    Pairs where either value is not finite are dropped. With all differences equal (e.g. two
    identical policies) the interval has zero width: it excludes zero exactly when the difference
    is not zero.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison: the two samples differ in length ({a.size} vs {b.size})")
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    n = int(d.size)
    if n == 0:
        nan = float("nan")
        return PairedResult(0, nan, nan, nan, nan, nan)
    mean = float(d.mean())
    half = t_halfwidth(d, level)
    p = float("nan")
    if n >= 2 and float(d.std(ddof=1)) > 0.0:
        p = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
    return PairedResult(n, mean, half, mean - half, mean + half, p)
