"""Exact hypervolume of a point set with respect to a reference point.

The hypervolume (Zitzler & Thiele, 1998) is the Lebesgue measure of the region that the
points dominate and that dominates the reference point. We compute it by slicing
(the "HSO" scheme of While et al., 2006, IEEE TEC 10(1)): sort by the last objective,
and sum slab thickness times the (M-1)-dimensional hypervolume of the points above the
slab. The 2-objective base case is the O(n log n) staircase sweep, so 2 objectives cost
O(n log n) and 3 objectives O(n^2 log n); more objectives are exact but exponential.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from effjax.search.pareto import check_directions, non_dominated_mask, to_maximization


def _hv_2d(u: np.ndarray) -> float:
    """Area dominated by positive points `u` (n, 2) above the origin (maximization)."""
    order = np.argsort(-u[:, 0], kind="stable")
    x, y = u[order, 0], u[order, 1]
    best_y = np.maximum.accumulate(y)
    previous = np.concatenate([[0.0], best_y[:-1]])
    return float(np.sum(x * np.maximum(best_y - previous, 0.0)))


def hypervolume_positive(u: np.ndarray) -> float:
    """Hypervolume of points `u` (n, M), maximization, reference at the origin; rows with a
    non-positive coordinate contribute nothing."""
    u = np.asarray(u, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"points: need a 2-D array, got shape {u.shape}")
    u = u[np.all(u > 0, axis=1)]
    if len(u) == 0:
        return 0.0
    if u.shape[1] == 1:
        return float(u[:, 0].max())
    return _sliced(u[non_dominated_mask(u, deduplicate=True)])


def _sliced(u: np.ndarray) -> float:
    """HSO slicing on positive points; dominated points are harmless, just slower."""
    m = u.shape[1]
    if m == 2:
        return _hv_2d(u)
    u = u[np.argsort(-u[:, -1], kind="stable")]
    z = np.concatenate([u[:, -1], [0.0]])
    total = 0.0
    for k in range(1, len(u) + 1):
        thickness = z[k - 1] - z[k]
        if thickness > 0:
            prefix = u[:k, :-1]
            if m > 3 and k > 2:
                prefix = prefix[non_dominated_mask(prefix, deduplicate=True)]
            total += thickness * _sliced(prefix)
    return total


def hypervolume(points, ref_point, directions: Sequence[str] | str | None = None) -> float:
    """Hypervolume dominated by `points` (n, M) and bounded by `ref_point` (M,).

    `directions` gives "min" or "max" per objective (default: all "min"). Points that do
    not strictly improve on the reference point in every objective add nothing.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1 and pts.size == 0:
        return 0.0
    if pts.ndim != 2:
        raise ValueError(f"points: need a 2-D array (n_points, n_objectives), got shape {pts.shape}")
    ref = np.asarray(ref_point, dtype=np.float64).reshape(-1)
    if ref.shape[0] != pts.shape[1]:
        raise ValueError(f"ref_point: need {pts.shape[1]} values (one per objective), got {ref.shape[0]}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("ref_point: every value must be finite")
    directions = check_directions(directions, pts.shape[1])
    u = to_maximization(pts, directions) - to_maximization(ref[None], directions)  # no points: 0 below
    return hypervolume_positive(u)
