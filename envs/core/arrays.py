"""Small NumPy index helpers shared by the simulator's phases."""

from __future__ import annotations

import numpy as np

EPS = 1e-9  # time and volume tolerance of the simulator's comparisons


def nz(mask: np.ndarray) -> np.ndarray:
    """Indices of the True entries of a 1-D mask (``np.flatnonzero`` without its Python-level ravel)."""
    return mask.nonzero()[0]


def first_occurrence(a: np.ndarray) -> np.ndarray:
    """Bool mask of the first occurrence of each value in 1-D ``a`` (a dict for short arrays, a sort for long)."""
    if len(a) <= 64:
        values = a.tolist()
        if len(set(values)) == len(values):  # no repeats (the usual case)
            return np.ones(len(a), bool)
        seen: set[int] = set()
        out = np.zeros(len(a), bool)
        for i, v in enumerate(values):
            if v not in seen:
                seen.add(v)
                out[i] = True
        return out
    if (a[1:] > a[:-1]).all():  # strictly increasing (e.g. from nonzero()): no repeats
        return np.ones(len(a), bool)
    out = np.zeros(len(a), bool)
    out[np.unique(a, return_index=True)[1]] = True
    return out


def occurrence_rank(a: np.ndarray) -> np.ndarray:
    """(len(a),) int64: how many earlier entries of 1-D ``a`` hold the same value (0 at a first occurrence)."""
    n = len(a)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(a, kind="stable")
    sa = a[order]
    start = np.r_[True, sa[1:] != sa[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    out = np.empty(n, np.int64)
    out[order] = np.arange(n) - group_start
    return out
