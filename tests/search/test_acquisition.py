"""qLogNEHVI: finite informative gradients, agreement with Monte-Carlo HVI, padding, blocked cells, x64 hygiene."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from effjax.search import acquisition
from effjax.search.acquisition import CELL_BLOCK, QLogNEHVI, _candidate_draws, log_hvi_blocked, log_hvi_per_sample
from effjax.search.gp import _posterior_all, fit_gp
from effjax.search.hypervolume import hypervolume_positive
from effjax.search.problems import BraninCurrin

REF = np.array([18.0, 6.0])
SCALE = np.array([18.0, 6.0])


def build(q=1, n=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    y = BraninCurrin().evaluate(x)
    gp = fit_gp(x, y)
    sign = -1.0  # both objectives minimized: u = (ref - y) / scale
    offset = (sign * gp.y_mean + REF) / SCALE
    slope = sign * gp.y_std / SCALE
    acq = QLogNEHVI(gp, x, np.zeros((n, 0)), offset, slope, q=q, seed=1)
    return acq, gp, x, offset, slope


def monte_carlo_nehvi(gp, x_base, x_cand, offset, slope, n_draws=600, seed=0):
    """NEHVI of a batch x_cand (q, 2) from joint posterior draws and exact hypervolumes."""
    rng = np.random.default_rng(seed)
    x_all = np.concatenate([x_base, x_cand])
    with jax.enable_x64(True):
        mean, cov = _posterior_all(gp.state, jnp.asarray(x_all))
    mean, cov = np.asarray(mean), np.asarray(cov)
    draws = []
    for m in range(len(mean)):
        c = cov[m] + 1e-10 * np.eye(len(x_all))
        draws.append(rng.multivariate_normal(mean[m], c, size=n_draws, method="eigh"))
    u = offset + slope * np.stack(draws, axis=-1)  # (draws, n + q, M)
    nb = len(x_base)
    gains = [hypervolume_positive(d) - hypervolume_positive(d[:nb]) for d in u]
    return float(np.mean(gains))


def test_gradient_is_finite_and_nonzero():
    acq, *_ = build()
    rng = np.random.default_rng(5)
    cands = rng.random((64, 1, 2))
    values = acq(cands)
    assert np.all(np.isfinite(values))
    best = cands[np.argsort(values)[-10:]]
    worst = cands[np.argsort(values)[:10]]
    for batch in (best, worst):
        v, g = acq.value_and_grad(batch)
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
        assert np.all(np.linalg.norm(g.reshape(len(batch), -1), axis=1) > 0)
    # Ascending the gradient from a promising point increases the acquisition.
    v0, g0 = acq.value_and_grad(best[-1:])
    step = np.clip(best[-1:] + 1e-3 * g0 / np.linalg.norm(g0), 0, 1)
    assert acq(step)[0] >= v0[0]


def exact_hvi_on_acquisition_draws(acq, offset, slope, batch):
    """Mean exact HVI of `batch` (q, 2) over the acquisition's own joint draws."""
    with jax.enable_x64(True):
        f = np.asarray(_candidate_draws(acq.state, *acq.base, jnp.asarray(batch[None]), *acq.noise))[:, 0]
    u_c = offset + slope * f  # (S, q, M)
    u_b = acq.baseline_draws
    return np.mean([hypervolume_positive(np.concatenate([u_b[s], u_c[s]])) - hypervolume_positive(u_b[s])
                    for s in range(len(u_b))])


def test_ranks_candidates_like_monte_carlo_hvi():
    acq, gp, x, offset, slope = build(n=5, seed=4)
    cands = np.random.default_rng(7).random((24, 1, 2))
    log_acq = acq(cands)
    # Independent check of the sampling: plain Monte Carlo from the joint posterior.
    mc = np.array([monte_carlo_nehvi(gp, x, c, offset, slope, n_draws=300) for c in cands])
    top = mc > 1e-4
    assert top.sum() >= 5
    assert scipy.stats.spearmanr(log_acq[top], mc[top]).statistic > 0.8
    # Exact check of the log-space cell arithmetic on the same draws.
    exact = np.array([exact_hvi_on_acquisition_draws(acq, offset, slope, c) for c in cands])
    big = exact > 1e-3 * exact.max()
    assert np.allclose(np.exp(log_acq[big]), exact[big], rtol=1e-3)
    assert np.all(np.exp(log_acq[~big]) < 2e-3 * exact.max())


def test_batch_of_two_matches_exact_inclusion_exclusion():
    acq2, gp, x, offset, slope = build(q=2)
    batches = np.random.default_rng(11).random((6, 2, 2))
    values = np.exp(acq2(batches))
    exact = np.array([exact_hvi_on_acquisition_draws(acq2, offset, slope, b) for b in batches])
    big = exact > 1e-3 * exact.max()
    assert big.sum() >= 2
    assert np.allclose(values[big], exact[big], rtol=2e-2)
    v, g = acq2.value_and_grad(batches)
    assert np.all(np.isfinite(g)) and g.shape == batches.shape


def test_padded_cells_and_infinite_bounds():
    u = jnp.asarray([[[0.5, 0.5]]])
    lower = jnp.asarray([[[0.0, 0.0], [0.0, 0.0]]])
    upper = jnp.asarray([[[1e6, 1e6], [0.0, 0.0]]])
    with jax.enable_x64(True):
        real_only = log_hvi_per_sample(u, lower[:, :1], upper[:, :1], jnp.zeros((1, 1)))
        padded = log_hvi_per_sample(u, lower, upper, jnp.asarray([[0.0, -jnp.inf]]))
    assert float(real_only[0]) == pytest.approx(np.log(0.25), abs=1e-5)
    assert float(padded[0]) == pytest.approx(float(real_only[0]), abs=1e-12)


def test_result_independent_of_the_global_x64_flag():
    assert not jax.config.jax_enable_x64
    acq, *_ = build()
    cands = np.random.default_rng(3).random((8, 1, 2))
    off = acq(cands)
    assert not jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        on = build()[0](cands)
    finally:
        jax.config.update("jax_enable_x64", False)
    assert np.array_equal(off, on)


@pytest.mark.parametrize("q", [1, 2])
def test_blocked_cells_match_the_direct_sum_and_its_gradient(q):
    rng = np.random.default_rng(q)
    n_samples, n_cand, m = 4, 3, 3
    directions = rng.random((n_samples, 12, m)) + 0.05
    u_base = 0.7 * directions / np.linalg.norm(directions, axis=-1, keepdims=True)  # 12 mutually non-dominated points: 25 cells
    lower, upper, weight, n_blocks = QLogNEHVI._cells(u_base)
    assert 2 <= n_blocks < lower.shape[0] and lower.shape[2] == CELL_BLOCK
    flat = lambda a: np.swapaxes(a, 0, 1).reshape((n_samples, -1) + a.shape[3:])  # noqa: E731
    u = rng.random((n_samples, n_cand, q, m)) * 0.9
    with jax.enable_x64(True):
        cells = tuple(jnp.asarray(a) for a in (lower, upper, weight, n_blocks))
        log_mask = jnp.log(jnp.asarray(flat(weight)))

        def direct(v):
            return jnp.stack([log_hvi_per_sample(v[:, i], flat(lower), flat(upper), log_mask) for i in range(n_cand)], axis=1)

        u = jnp.asarray(u)
        blocked_value, blocked_grad = jax.value_and_grad(lambda v: jnp.sum(jnp.tanh(log_hvi_blocked(v, cells))))(u)
        direct_value, direct_grad = jax.value_and_grad(lambda v: jnp.sum(jnp.tanh(direct(v))))(u)
        assert np.allclose(log_hvi_blocked(u, cells), direct(u), rtol=1e-12, atol=1e-12)
    assert float(blocked_value) == pytest.approx(float(direct_value), rel=1e-12)
    assert np.all(np.isfinite(blocked_grad)) and np.abs(blocked_grad).max() > 0
    assert np.allclose(blocked_grad, direct_grad, rtol=1e-9, atol=1e-12)


def test_one_compiled_acquisition_while_points_and_cells_grow():
    """With the points pre-sized (min_pad) and cells in a fixed capacity, acquisitions built
    on 8 and 40 observations share every array shape, hence one compiled function."""
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.random((n, 2))
        y = np.stack([x[:, 0], x[:, 1], 1.5 - x[:, 0] - x[:, 1]], axis=1) + 0.01 * rng.standard_normal((n, 3))
        gp = fit_gp(x, y, min_pad=64)
        assert gp.state.x.shape[0] == 64
        return QLogNEHVI(gp, x, np.zeros((n, 0)), gp.y_mean / 2.0, gp.y_std / 2.0, seed=1)

    small, large = make(8), make(40)
    shapes = lambda a: [np.shape(leaf) for leaf in jax.tree_util.tree_leaves((a.state, a.base, a.cells, a.noise))]  # noqa: E731
    assert shapes(small) == shapes(large)
    assert int(large.cells[3]) > int(small.cells[3])  # more cells, same compiled shapes
    cands = rng.random((10, 1, 2))
    small.value_and_grad(cands)
    before = acquisition._log_acquisition_value_and_grad._cache_size()
    values, grad = large.value_and_grad(cands)
    assert acquisition._log_acquisition_value_and_grad._cache_size() == before
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grad))


def test_draws_do_not_depend_on_the_padded_capacity():
    rng = np.random.default_rng(3)
    x = rng.random((12, 2))
    y = BraninCurrin().evaluate(x)
    cands = rng.random((16, 1, 2))
    values = []
    for min_pad in (32, 64):
        gp = fit_gp(x, y, min_pad=min_pad)
        acq = QLogNEHVI(gp, x, np.zeros((12, 0)), (REF - gp.y_mean) / SCALE, -gp.y_std / SCALE, seed=1)
        assert acq.base[0].shape[0] == min_pad
        values.append(acq(cands))
    assert np.allclose(values[0], values[1], rtol=1e-9, atol=1e-9)
