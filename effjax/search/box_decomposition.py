"""Exact decompositions of the dominated and non-dominated regions into disjoint boxes.

Expected hypervolume improvement needs the region that a Pareto front does *not*
dominate, cut into axis-aligned boxes ("cells"); the hypervolume improvement of a new
point y is then sum_cells prod_m max(0, min(y_m, upper_m) - lower_m)
(Daulton et al., 2020, "Differentiable expected hypervolume improvement", Eq. 3;
Yang et al., 2019, for the cell view). We build the cells by slicing along the last
objective (the same recursion as the HSO hypervolume algorithm): between consecutive
values of the last objective, the region is a fixed (M-1)-dimensional region times an
interval, and consecutive slabs with the same (M-1)-dimensional front are merged. For
2 objectives this gives the n + 1 staircase cells (n cells for the dominated region);
for 3 objectives at most O(n^2) cells; beyond, exact but growing as O(n^(M-1)).

Everything uses the maximization convention (see `pareto.py`). Cells of the
non-dominated region are unbounded above: their upper bounds are +inf.
"""

from __future__ import annotations

import numpy as np

from effjax.search.pareto import non_dominated_mask


def _clean_front(u: np.ndarray) -> np.ndarray:
    """Points strictly above the origin, non-dominated, without duplicates."""
    u = u[np.all(u > 0, axis=1)]
    if len(u) <= 1:
        return u
    return u[non_dominated_mask(u, deduplicate=True)]


def _weakly_dominated_by(p: np.ndarray, front: np.ndarray) -> bool:
    return len(front) > 0 and bool(np.any(np.all(front >= p, axis=1)))


def _cells(u: np.ndarray, dominated: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cells of the (non-)dominated region of a clean front `u` (n, M), reference at 0."""
    n, m = u.shape
    if not dominated and n == 0:
        return np.zeros((1, m)), np.full((1, m), np.inf)
    if dominated and n == 0:
        return np.zeros((0, m)), np.zeros((0, m))
    if m == 1:
        top = u[:, 0].max()
        return (np.zeros((1, 1)), np.array([[top]])) if dominated else (np.array([[top]]), np.array([[np.inf]]))
    if m == 2:
        p = u[np.argsort(-u[:, 0], kind="stable")]  # x descending, so y ascending on a front
        xs = np.concatenate([[np.inf], p[:, 0], [0.0]])
        if dominated:
            lower = np.stack([xs[2:], np.zeros(n)], axis=1)
            upper = np.stack([xs[1:-1], p[:, 1]], axis=1)
        else:
            ys = np.concatenate([[0.0], p[:, 1]])
            lower = np.stack([xs[1:], ys], axis=1)
            upper = np.stack([xs[:-1], np.full(n + 1, np.inf)], axis=1)
        return lower, upper
    p = u[np.argsort(-u[:, -1], kind="stable")]
    z = np.concatenate([[np.inf], p[:, -1], [0.0]])
    lowers, uppers = [], []
    front = np.zeros((0, m - 1))
    group_top = z[0]

    def flush(bottom: float) -> None:
        if group_top > bottom and (len(front) > 0 or not dominated):
            lo, hi = _cells(front, dominated)
            k = len(lo)
            lowers.append(np.concatenate([lo, np.full((k, 1), bottom)], axis=1))
            uppers.append(np.concatenate([hi, np.full((k, 1), group_top)], axis=1))

    for j in range(n):
        projected = p[j, :-1]
        if _weakly_dominated_by(projected, front):
            continue  # the (M-1)-front is unchanged, so this slab merges with the previous one
        flush(z[j + 1])
        group_top = z[j + 1]
        keep = ~np.all(projected >= front, axis=1) if len(front) else np.zeros(0, dtype=bool)
        front = np.concatenate([front[keep], projected[None]], axis=0)
    flush(0.0)
    if not lowers:
        return np.zeros((0, m)), np.zeros((0, m))
    return np.concatenate(lowers), np.concatenate(uppers)


def _prepare(front, ref) -> tuple[np.ndarray, np.ndarray]:
    front = np.asarray(front, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if front.ndim != 2 or front.shape[1] != ref.shape[0]:
        raise ValueError(f"front: need shape (n, {ref.shape[0]}) to match ref_point, got {front.shape}")
    return _clean_front(front - ref), ref


def dominated_cells(front, ref_point) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint boxes (lower, upper), each (n_cells, M), whose union is the region that
    `front` dominates above `ref_point` (maximization)."""
    u, ref = _prepare(front, ref_point)
    lower, upper = _cells(u, dominated=True)
    return lower + ref, upper + ref


def nondominated_cells(front, ref_point) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint boxes (lower, upper), upper possibly +inf, whose union is the part of
    {y >= ref_point} that `front` does not dominate (maximization)."""
    u, ref = _prepare(front, ref_point)
    lower, upper = _cells(u, dominated=False)
    return lower + ref, upper + ref
