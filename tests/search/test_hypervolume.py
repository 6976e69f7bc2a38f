"""Hypervolume, Pareto filtering and box decompositions against known values and Monte Carlo."""

import numpy as np
import pytest

from effjax.search import hypervolume, non_dominated_mask, pareto_front
from effjax.search.box_decomposition import dominated_cells, nondominated_cells
from effjax.search.hypervolume import hypervolume_positive


def monte_carlo_hv(points, ref, n=100_000, seed=0):
    """Minimization HV by uniform sampling of the box [min(points), ref]."""
    rng = np.random.default_rng(seed)
    lo = points.min(axis=0)
    samples = lo + rng.random((n, points.shape[1])) * (ref - lo)
    dominated = np.zeros(n, dtype=bool)
    for p in points:
        dominated |= np.all(samples >= p, axis=1)
    return dominated.mean() * np.prod(ref - lo)


def sphere_front(n, m, seed):
    rng = np.random.default_rng(seed)
    y = np.abs(rng.normal(size=(n, m)))
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_known_values_2d_and_3d():
    assert hypervolume([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0]) == pytest.approx(3.0)
    assert hypervolume([[1.0, 1.0, 1.0]], [2.0, 3.0, 4.0]) == pytest.approx(6.0)
    # Two boxes 2x2x2 and 1x3x1 (in gains) overlap in 1x2x1: 8 + 3 - 2.
    assert hypervolume([[0, 0, 0], [1, -1, 1]], [2, 2, 2]) == pytest.approx(9.0)
    # Dominated and duplicate points change nothing; points beyond the reference add nothing.
    assert hypervolume([[1, 2], [2, 1], [2, 2], [1, 2], [5, 0]], [3, 3]) == pytest.approx(3.0)
    assert hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0


def test_directions_max_equals_negated_min():
    rng = np.random.default_rng(1)
    y = rng.random((20, 3))
    ref = np.array([-0.1, 1.2, -0.2])
    dirs = ["max", "min", "max"]
    flipped = y * np.array([-1, 1, -1])
    assert hypervolume(y, ref, dirs) == pytest.approx(hypervolume(flipped, ref * np.array([-1, 1, -1])))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_exact_matches_monte_carlo(m):
    points = sphere_front(12, m, seed=m)
    ref = np.full(m, 1.1)
    exact = hypervolume(points, ref)
    mc = monte_carlo_hv(points, ref)
    assert exact == pytest.approx(mc, rel=0.02)


def test_dtlz2_analytic_front_hypervolume():
    # Dense points on the quarter circle approach 1.21 - pi/4 from below.
    t = np.linspace(0, np.pi / 2, 4001)
    front = np.stack([np.cos(t), np.sin(t)], axis=1)
    hv = hypervolume(front, [1.1, 1.1])
    assert 1.21 - np.pi / 4 - 1e-3 < hv <= 1.21 - np.pi / 4


def test_pareto_filtering():
    y = np.array([[1, 5], [2, 4], [3, 3], [2, 2], [3, 3], [0, 6], [1, 4]], dtype=float)
    mask = non_dominated_mask(y)  # maximization
    assert mask.tolist() == [True, True, True, False, True, True, False]
    assert non_dominated_mask(y, deduplicate=True).sum() == 4
    front = pareto_front(y, ["min", "min"])
    assert sorted(map(tuple, front)) == [(0.0, 6.0), (1.0, 4.0), (2.0, 2.0)]


def test_pareto_large_path_matches_pairwise():
    rng = np.random.default_rng(3)
    y = np.round(rng.random((1500, 3)), 2)
    big = non_dominated_mask(y)
    ge = np.all(y[None] >= y[:, None], -1) & np.any(y[None] > y[:, None], -1)
    assert np.array_equal(big, ~ge.any(1))


@pytest.mark.parametrize("m,n", [(2, 1), (2, 15), (3, 1), (3, 12), (4, 6)])
def test_box_decompositions_cover_regions_exactly(m, n):
    front = sphere_front(n, m, seed=10 * m + n)
    ref = np.zeros(m)
    lo, hi = dominated_cells(front, ref)
    assert np.prod(hi - lo, axis=1).sum() == pytest.approx(hypervolume_positive(front), rel=1e-12)
    nlo, nhi = nondominated_cells(front, ref)
    top = 1.5
    clipped = np.clip(np.minimum(nhi, top) - nlo, 0, None)
    assert np.prod(clipped, axis=1).sum() + hypervolume_positive(front) == pytest.approx(top ** m, rel=1e-12)
    # Disjoint and covering: every point of the box lies in exactly one cell of the two sets.
    samples = np.random.default_rng(0).random((4000, m)) * top
    inside_dom = np.all((samples[:, None] >= lo) & (samples[:, None] <= hi), axis=-1).sum(1)
    inside_non = np.all((samples[:, None] >= nlo) & (samples[:, None] <= nhi), axis=-1).sum(1)
    assert np.all(inside_dom + inside_non == 1)
    dominated = np.any(np.all(samples[:, None] <= front[None], axis=-1), axis=1)
    assert np.array_equal(inside_dom == 1, dominated)


def test_two_objective_cell_counts():
    front = sphere_front(7, 2, seed=0)
    assert len(dominated_cells(front, [0, 0])[0]) == 7
    assert len(nondominated_cells(front, [0, 0])[0]) == 8
    lo, hi = nondominated_cells(np.zeros((0, 2)), [0, 0])
    assert np.all(np.isinf(hi)) and len(lo) == 1


def test_three_objective_cells_grow_linearly_and_tie_safely():
    # 2n + 1 non-dominated boxes for n points in general position (the local lower bounds
    # of a 3-objective front), not the O(n^2) of cutting every slab.
    front = sphere_front(40, 3, seed=3)
    assert len(nondominated_cells(front, np.zeros(3))[0]) == 2 * 40 + 1
    # Ties in every coordinate: still an exact, disjoint cover.
    tied = np.round(sphere_front(25, 3, seed=4), 1) + 0.05
    lo, hi = dominated_cells(tied, np.zeros(3))
    assert np.prod(hi - lo, axis=1).sum() == pytest.approx(hypervolume_positive(tied), rel=1e-12)
    nlo, nhi = nondominated_cells(tied, np.zeros(3))
    clipped = np.clip(np.minimum(nhi, 1.5) - nlo, 0, None)
    assert np.prod(clipped, axis=1).sum() + hypervolume_positive(tied) == pytest.approx(1.5 ** 3, rel=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="direction"):
        hypervolume([[1, 2]], [3, 3], ["min", "up"])
    with pytest.raises(ValueError, match="ref_point"):
        hypervolume([[1, 2]], [3, 3, 3])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[np.nan, 2]], [3, 3])
