"""Search on the pyramid: exact against brute force, JAX equals the reference, edge cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from effjax.quant.pvq import brute_force_search, correlation_objective, num_codewords, search, search_batch, search_reference
from effjax.quant.pvq.reference_search import curvature_interval


def _relative_gap(x, y, best):
    exact = correlation_objective(x, best)
    found = correlation_objective(x, y)
    return np.where(exact > 0, 1 - found / np.where(exact > 0, exact, 1), 0.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.data())
def test_search_is_exact_against_brute_force(L, K, data):
    """NumPy reference (no compile per (L, K)); the JAX path is checked equal to it below."""
    element = st.one_of(st.floats(-10, 10, allow_nan=False, width=64), st.integers(-3, 3).map(float))
    x = data.draw(hnp.arrays(np.float64, (8, L), elements=element))
    y = search_reference(x, K)
    assert np.all(np.abs(y).sum(-1) == K)
    assert np.all(_relative_gap(x, y, brute_force_search(x, K)) <= 1e-12)


@pytest.mark.parametrize(
    "L, K",
    [(8, 12), pytest.param(3, 20, marks=pytest.mark.slow), pytest.param(8, 8, marks=pytest.mark.slow), pytest.param(6, 10, marks=pytest.mark.slow)],
)
def test_gaussian_exact_and_jax_matches_reference(L, K):
    x = np.random.default_rng(L * 100 + K).standard_normal((200, L))
    x[:3] = np.round(x[:3])  # ties
    y = search_batch(x, K)
    reference = search_reference(x, K)
    assert np.mean(np.all(y == reference, axis=1)) > 0.95  # equal up to tie-breaking
    np.testing.assert_allclose(correlation_objective(x, y), correlation_objective(x, reference), rtol=1e-12)
    if num_codewords(L, K) <= 200_000:
        assert np.all(_relative_gap(x, y, brute_force_search(x, K)) <= 1e-12)


def test_greedy_alone_is_not_always_exact():
    x = np.random.default_rng(0).standard_normal((400, 5))
    gap = _relative_gap(x, search_reference(x, 12, refine=False), brute_force_search(x, 12))
    assert gap.max() > 1e-3  # why the refinement path exists


def test_zero_vector_and_zero_pulses():
    np.testing.assert_array_equal(search(np.zeros(8), 12), np.eye(1, 8, dtype=int)[0] * 12)
    np.testing.assert_array_equal(search_reference(np.zeros((1, 5)), 7), [[7, 0, 0, 0, 0]])
    np.testing.assert_array_equal(search(np.ones((2, 3)), 0), np.zeros((2, 3)))
    np.testing.assert_array_equal(search(-np.eye(1, 8)[0], 12), -np.eye(1, 8, dtype=int)[0] * 12)
    assert search(np.ones((2, 8)), 12).shape == (2, 8)


@pytest.mark.slow
def test_shapes_and_large_groups():
    x = np.random.default_rng(1).standard_normal((3, 5, 32))
    y = search(x, 32)
    assert y.shape == x.shape and np.all(np.abs(y).sum(-1) == 32)
    reference = search_reference(x.reshape(-1, 32), 32)
    np.testing.assert_allclose(correlation_objective(x.reshape(-1, 32), y.reshape(-1, 32)), correlation_objective(x.reshape(-1, 32), reference), rtol=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        search(np.array([1.0, np.nan]), 2)
    with pytest.raises(ValueError, match="pulses K"):
        search(np.ones(3), -1)
    with pytest.raises(ValueError, match="last axis"):
        search(np.ones((2, 0)), 1)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 8), st.integers(0, 2**32))
def test_optimal_curvature_lies_in_the_walked_interval(L, K, seed):
    """c* = F*/(2||y*||) of the brute-force optimum is inside [c_lo, c_hi] (the walk's range)."""
    x = np.random.default_rng(seed).standard_normal((16, L))
    for vector, best in zip(x, brute_force_search(x, K)):
        magnitudes, best = np.abs(vector), np.abs(best).astype(np.float64)
        greedy = np.abs(search_reference(vector[None], K, refine=False)[0]).astype(np.float64)
        lower, upper = curvature_interval(magnitudes, float(magnitudes @ greedy) ** 2 / float(greedy @ greedy), K)
        optimal_curvature = float(magnitudes @ best) / (2 * float(best @ best))
        assert lower <= optimal_curvature <= upper
