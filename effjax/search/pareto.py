"""Pareto filtering: which points no other point dominates.

All functions here use the *maximization* convention: point a dominates b when
a >= b in every objective and a > b in at least one. Callers flip minimized
objectives (multiply by -1) first; `to_maximization` does that from directions.

Ties: points with equal objective vectors do not dominate each other (neither is
> the other anywhere), so every one of them is non-dominated and flagged. Two
configurations that tie (mirror-image decoder widths, say) are different models a
user may want to pick between, so result files flag all of them and count each.
`deduplicate=True` keeps only the first of a tie; it is for the geometry of the
front (hypervolume, box decompositions), where a repeated vector adds nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def check_directions(directions: Sequence[str] | None, n_objectives: int) -> list[str]:
    if directions is None:
        return ["min"] * n_objectives
    if isinstance(directions, str):
        directions = [directions] * n_objectives
    directions = list(directions)
    if len(directions) != n_objectives:
        raise ValueError(f"directions: need one per objective ({n_objectives}), got {len(directions)}")
    for d in directions:
        if d not in ("min", "max"):
            raise ValueError(f"directions: each must be 'min' or 'max', got {d!r}")
    return directions


def to_maximization(points, directions: Sequence[str] | None) -> np.ndarray:
    """Points as an (n, M) float64 array with minimized columns negated."""
    y = np.asarray(points, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"points: need a 2-D array (n_points, n_objectives), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("points: every value must be finite (found NaN or inf)")
    signs = np.array([1.0 if d == "max" else -1.0 for d in check_directions(directions, y.shape[1])])
    return y * signs


def non_dominated_mask(y: np.ndarray, deduplicate: bool = False) -> np.ndarray:
    """Boolean mask of the points of `y` (n, M) that no other point dominates (maximization).

    With `deduplicate=True` only the first of several identical points is kept.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=bool)
    if n > 1024:
        return _non_dominated_mask_large(y, deduplicate)
    # ge[i, j]: j is >= i everywhere; gt[i, j]: j is > i somewhere.
    ge = np.all(y[None, :, :] >= y[:, None, :], axis=-1)
    gt = np.any(y[None, :, :] > y[:, None, :], axis=-1)
    dominated = np.any(ge & gt, axis=1)
    mask = ~dominated
    if deduplicate:
        equal = np.all(y[None, :, :] == y[:, None, :], axis=-1)
        earlier_equal = np.any(np.tril(equal, k=-1), axis=1)
        mask &= ~earlier_equal
    return mask


def _non_dominated_mask_large(y: np.ndarray, deduplicate: bool) -> np.ndarray:
    """O(n * front size) filter for many points: repeatedly keep only the points that beat
    the best remaining point (by sum) somewhere."""
    order = np.argsort(-y.sum(axis=1), kind="stable")
    remaining = order
    front = []
    while len(remaining):
        best = remaining[0]
        front.append(best)
        remaining = remaining[np.any(y[remaining] > y[best], axis=1)]  # those that beat it somewhere
    mask = np.zeros(len(y), dtype=bool)
    mask[np.array(front)] = True
    if not deduplicate:  # points equal to a front point are non-dominated too
        front_points = y[mask]
        for i in np.flatnonzero(~mask):
            if np.any(np.all(front_points == y[i], axis=1)):
                mask[i] = True
    return mask


def pareto_front(points, directions: Sequence[str] | None = None) -> np.ndarray:
    """The non-dominated rows of `points` (in their original units), with duplicates removed."""
    y = to_maximization(points, directions)
    return np.asarray(points, dtype=np.float64)[non_dominated_mask(y, deduplicate=True)]
