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
a cell of the (M-1)-dimensional decomposition that survives from one slab to the next
is extended rather than cut, which leaves O(n) cells for 3 objectives (each new point
replaces a few staircase cells) instead of O(n^2); beyond, exact but growing faster.

Everything uses the maximization convention (see `pareto.py`). Cells of the
non-dominated region are unbounded above: their upper bounds are +inf.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from effjax.search.pareto import non_dominated_mask


def _clean_front(u: np.ndarray) -> np.ndarray:
    """Points strictly above the origin, non-dominated, without duplicates."""
    u = u[np.all(u > 0, axis=1)]
    if len(u) <= 1:
        return u
    return u[non_dominated_mask(u, deduplicate=True)]


def _staircase(front: Sequence[Sequence[float]], dominated: bool) -> list[tuple[float, float, float, float]]:
    """2-objective cells (lower_x, lower_y, upper_x, upper_y) of a front sorted by x descending (so y ascending)."""
    xs = [np.inf] + [x for x, _ in front] + [0.0]
    if dominated:
        return [(xs[i + 1], 0.0, xs[i], front[i - 1][1]) for i in range(1, len(front) + 1)]
    ys = [0.0] + [y for _, y in front]
    return [(xs[i + 1], ys[i], xs[i], np.inf) for i in range(len(front) + 1)]


def _cells_3d(u: np.ndarray, dominated: bool) -> tuple[np.ndarray, np.ndarray]:
    """The slab sweep of `_cells` specialized to 3 objectives in plain Python: the
    2-objective staircase is small, and at these sizes numpy's per-call overhead would
    cost more than the arithmetic (this runs once per MC sample at every proposal)."""
    points = sorted(map(tuple, u.tolist()), key=lambda p: -p[2])
    front: list[tuple[float, float]] = []
    active = {cell: np.inf for cell in _staircase(front, dominated)}
    boxes: list[tuple[tuple[float, float, float, float], float, float]] = []
    for x, y, z in points:
        if any(fx >= x and fy >= y for fx, fy in front):
            continue
        front = sorted([(fx, fy) for fx, fy in front if not (x >= fx and y >= fy)] + [(x, y)], key=lambda p: -p[0])
        updated = {cell: active.get(cell, z) for cell in _staircase(front, dominated)}
        for cell, top in active.items():
            if cell not in updated and top > z:
                boxes.append((cell, z, top))
        active = updated
    boxes.extend((cell, 0.0, top) for cell, top in active.items() if top > 0.0)
    if not boxes:
        return np.zeros((0, 3)), np.zeros((0, 3))
    lower = np.array([(c[0], c[1], bottom) for c, bottom, _ in boxes])
    upper = np.array([(c[2], c[3], top) for c, _, top in boxes])
    return lower, upper


def _cells(u: np.ndarray, dominated: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cells of the (non-)dominated region of a clean front `u` (n, M), reference at 0."""
    n, m = u.shape
    if n == 0:
        return (np.zeros((0, m)), np.zeros((0, m))) if dominated else (np.zeros((1, m)), np.full((1, m), np.inf))
    if m == 1:
        top = u[:, 0].max()
        return (np.zeros((1, 1)), np.array([[top]])) if dominated else (np.array([[top]]), np.array([[np.inf]]))
    if m == 2:
        boxes = np.array(_staircase(u[np.argsort(-u[:, 0], kind="stable")].tolist(), dominated))
        return boxes[:, :2], boxes[:, 2:]
    if m == 3:
        return _cells_3d(u, dominated)
    p = u[np.argsort(-u[:, -1], kind="stable")]
    lowers, uppers = [], []
    # Active (M-1)-dimensional cells of the current slab, keyed by their exact bounds, with
    # the level of the last objective where each began. A cell that survives a change of
    # the (M-1)-front keeps growing downwards instead of being cut, so each emitted box is
    # a maximal run of one (M-1)-cell: O(n) boxes for 3 objectives instead of O(n^2).
    active: dict[bytes, tuple[np.ndarray, np.ndarray, float]] = {}

    def change_front(front: np.ndarray, level: float) -> None:
        nonlocal active
        lo, hi = _cells(front, dominated)
        updated = {}
        for a, b in zip(lo, hi):
            key = a.tobytes() + b.tobytes()
            updated[key] = (a, b, active[key][2] if key in active else level)
        for key, (a, b, top) in active.items():
            if key not in updated and top > level:
                lowers.append(np.append(a, level))
                uppers.append(np.append(b, top))
        active = updated

    front = np.zeros((0, m - 1))
    change_front(front, np.inf)
    for j in range(n):
        projected = p[j, :-1]
        if np.any(np.all(front >= projected, axis=1)):
            continue  # the (M-1)-front is unchanged, so this slab merges with the previous one
        front = np.concatenate([front[~np.all(projected >= front, axis=1)], projected[None]], axis=0)
        change_front(front, p[j, -1])
    for a, b, top in active.values():  # everything still open reaches down to the reference
        if top > 0.0:
            lowers.append(np.append(a, 0.0))
            uppers.append(np.append(b, top))
    if not lowers:
        return np.zeros((0, m)), np.zeros((0, m))
    return np.stack(lowers), np.stack(uppers)


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
