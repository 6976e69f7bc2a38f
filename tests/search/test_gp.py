"""Gaussian-process surrogate: posterior quality, duplicates, MAP fit, robust Cholesky."""

import numpy as np
import pytest

from effjax.search.gp import fit_gp, neg_log_posterior_and_grad, numpy_cholesky


def test_posterior_on_a_1d_function():
    x = np.linspace(0, 1, 12)[:, None]
    y = np.sin(6 * x) + 0.5 * x
    gp = fit_gp(x, y)
    x_test = np.linspace(0.02, 0.98, 25)[:, None]
    mean, var = gp.posterior(x_test)
    assert np.max(np.abs(mean - (np.sin(6 * x_test) + 0.5 * x_test))) < 0.05
    # Fits the data closely and is uncertain away from it.
    mean_train, var_train = gp.posterior(x)
    assert np.allclose(mean_train, y, atol=3e-2)
    _, var_far = gp.posterior(np.array([[3.0]]))
    assert var_far[0, 0] > 0.5 * np.var(y) > 100 * var_train.max()


def test_duplicates_and_near_duplicates_do_not_crash():
    rng = np.random.default_rng(0)
    x = rng.random((6, 2))
    x = np.concatenate([x, x, x + 1e-9, x[:1]])
    y = np.concatenate([np.sum(x, axis=1, keepdims=True)] * 2, axis=1)
    gp = fit_gp(x, y)
    assert gp.n_train == 12  # exact duplicates merged, near duplicates kept
    mean, var = gp.posterior(x)
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)


def test_constant_outcomes_fit():
    gp = fit_gp(np.random.default_rng(1).random((5, 3)), np.full((5, 1), 2.5))
    mean, _ = gp.posterior(np.array([[0.5, 0.5, 0.5]]))
    assert mean[0, 0] == pytest.approx(2.5, abs=1e-6)


def test_fit_improves_the_map_objective():
    rng = np.random.default_rng(2)
    x = rng.random((20, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1] ** 2
    ys = (y - y.mean()) / y.std()
    gp = fit_gp(x, y[:, None])
    start = np.array([np.log(0.4 * np.sqrt(3))] * 3 + [0.0, np.log(1e-3), 0.0])
    before, _ = neg_log_posterior_and_grad(start, x, ys)
    assert gp.neg_log_posterior[0] < before - 0.1


def test_analytic_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, y = rng.random((10, 2)), rng.normal(size=10)
    theta = np.array([-1.0, 0.3, 0.2, -3.0, 0.1])
    _, grad = neg_log_posterior_and_grad(theta, x, y)
    eps = 1e-6
    numeric = [(neg_log_posterior_and_grad(theta + e, x, y)[0] - neg_log_posterior_and_grad(theta - e, x, y)[0]) / (2 * eps)
               for e in np.eye(len(theta)) * eps]
    assert np.allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_numpy_cholesky_recovers_from_a_singular_matrix():
    v = np.ones((4, 1))
    singular = v @ v.T - 1e-12 * np.eye(4)  # rank one and slightly indefinite: plain Cholesky raises
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(singular)
    factor = numpy_cholesky(singular)
    assert np.all(np.isfinite(factor))
    assert np.allclose(factor @ factor.T, singular, atol=1e-2)


def test_numpy_cholesky_refuses_a_matrix_no_jitter_mends():
    with pytest.raises(ValueError, match="not positive definite"):
        numpy_cholesky(-np.eye(3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="finite"):
        fit_gp(np.zeros((3, 1)), np.array([[1.0], [np.nan], [2.0]]))
    with pytest.raises(ValueError, match="same n"):
        fit_gp(np.zeros((3, 1)), np.zeros((2, 1)))


def test_lengthscale_prior_mode_is_that_of_botorchs_lognormal():
    # LogNormal(mu, 3) density on the value l, with mu = sqrt2 + log(D) / 2: mode of the
    # objective in log l at mu - 3 (l ~ 0.50 for D = 6), not at mu (l ~ 10).
    from effjax.search.gp import _log_prior_and_grad
    grid = np.linspace(-4.0, 4.0, 8001)
    values = [_log_prior_and_grad(np.full(6, g), 0.0, -5.0)[0] for g in grid]
    mode = grid[int(np.argmax(values))]
    assert mode == pytest.approx(np.sqrt(2.0) + 0.5 * np.log(6.0) - 3.0, abs=1e-3)
    assert np.exp(mode) == pytest.approx(0.50, abs=0.01)
    # The noise prior's gradient vanishes at its mode, log sigma^2 = -4 - 1.
    assert _log_prior_and_grad(np.zeros(6), 0.0, -5.0)[3] == pytest.approx(0.0)
