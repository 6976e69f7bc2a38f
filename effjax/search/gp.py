"""Exact Gaussian-process surrogates, one per modeled objective, in JAX with float64.

Model (Rasmussen & Williams, 2006, "Gaussian Processes for Machine Learning"):
  f ~ GP(c, s^2 k_Matern52(x, x' | l_1..l_D)),  y = f + eps,  eps ~ N(0, sigma^2),
with the Matern-5/2 kernel (R&W Eq. 4.17), k(r) = (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r),
r^2 = sum_i (x_i - x'_i)^2 / l_i^2 (one lengthscale per input, "ARD"). Inputs live in the
unit cube (see `space.py`); outcomes are standardized to zero mean and unit variance.

Hyperparameters (log l, log s^2, log sigma^2, c) are fitted by maximum a posteriori:
the log marginal likelihood (R&W Eq. 2.30) plus log-priors, with
BoTorch's dimension-scaled lengthscale prior l ~ LogNormal(sqrt2 + 0.5 log D, sqrt3)
(Hvarfner et al., 2024, "Vanilla Bayesian optimization performs great in high
dimensions"), log s^2 ~ N(0, 1) and sigma^2 ~ LogNormal(-4, 1), optimized with L-BFGS-B
(log-normal densities of the values, see `_log_prior_and_grad`).
The fit runs in float64 numpy/LAPACK with the analytic gradient (R&W Eq. 5.9): at these
sizes that is ~10x cheaper than differentiating a Cholesky factor on XLA:CPU. The fitted
GP (`GPState`) lives in float64 JAX, where the acquisition differentiates through it.

Robustness: `numpy_cholesky` retries a failed factorization with a jitter growing by 100x
(relative to the mean diagonal).
To avoid recompiling the acquisition as data arrive, the training set is padded to a
power of two (at least `min_pad`): padded rows get unit prior variance, zero covariance
and zero targets, which leaves the posterior and the marginal likelihood exactly
unchanged. Conditioning on the fitted hyperparameters (Cholesky factor, its inverse and
the weights alpha) also runs in numpy: it needs no compilation, and the inverse factor
turns every triangular solve downstream into a matrix product.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

JITTERS = (0.0, 1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
LENGTHSCALE_BOUNDS = (0.025, 1e4)
OUTPUTSCALE_BOUNDS = (0.05, 20.0)
NOISE_BOUNDS = (1e-6, 1.0)
MEAN_BOUNDS = (-3.0, 3.0)


def padded_size(n: int, minimum: int = 32) -> int:
    """max(minimum, smallest power of two >= n): the shapes we compile for."""
    return max(minimum, 1 << max(0, (n - 1).bit_length()))


class GPParams(NamedTuple):
    """Hyperparameters of M independent GPs (leading axis M)."""

    log_lengthscale: jax.Array  # (M, D)
    log_outputscale: jax.Array  # (M,)
    log_noise: jax.Array  # (M,)
    mean: jax.Array  # (M,)


class GPState(NamedTuple):
    """A fitted GP, ready for predictions (leading axis M on every field but x, valid)."""

    params: GPParams
    x: jax.Array  # (N, D) padded training inputs
    valid: jax.Array  # (N,) which rows are real
    chol: jax.Array  # (M, N, N) Cholesky factor of K + sigma^2 I
    alpha: jax.Array  # (M, N) (K + sigma^2 I)^-1 (y - c)
    chol_inv: jax.Array  # (M, N, N) inverse of the Cholesky factor (lower triangular)


def matern52(x1: jax.Array, x2: jax.Array, log_lengthscale: jax.Array, log_outputscale: jax.Array) -> jax.Array:
    """Matern-5/2 covariance matrix between rows of x1 (n, D) and x2 (m, D)."""
    inv_l = jnp.exp(-log_lengthscale)
    a, b = x1 * inv_l, x2 * inv_l
    # |a - b|^2 through one matrix product: much cheaper than the (n, m, D) difference tensor.
    r2 = jnp.sum(a * a, axis=-1)[:, None] + jnp.sum(b * b, axis=-1)[None, :] - 2.0 * a @ b.T
    # The floor keeps the gradient of sqrt finite at r = 0 (duplicate points).
    r = jnp.sqrt(jnp.maximum(r2, 1e-30))
    s5r = math.sqrt(5.0) * r
    return jnp.exp(log_outputscale) * (1.0 + s5r + (5.0 / 3.0) * r2) * jnp.exp(-s5r)


def _log_prior_and_grad(log_ls, log_os, log_noise):
    """Log-priors of the hyperparameters, as functions of their logs, and their gradients.

    Lengthscales and noise variance have log-normal priors on their *values*, as in
    BoTorch/GPyTorch (whose MAP fit evaluates the prior density at the value while
    optimizing its log): log p(l) = -log l - (log l - mu)^2 / (2 var). The -log l term
    puts the mode at log l = mu - var (l ~ 0.5 for D = 6 and ~0.3 for D = 2), where a
    normal prior on log l alone would put it at mu (l ~ 10 for D = 6), a near-constant
    function of every input that stalls the search while few points are in.
    """
    ls_mu = math.sqrt(2.0) + 0.5 * math.log(len(log_ls))
    ls_var = 3.0
    value = (-0.5 * np.sum((log_ls - ls_mu) ** 2) / ls_var - np.sum(log_ls) - 0.5 * log_os ** 2
             - 0.5 * (log_noise + 4.0) ** 2 - log_noise)
    return value, -(log_ls - ls_mu) / ls_var - 1.0, -log_os, -(log_noise + 4.0) - 1.0


def numpy_cholesky(matrix: np.ndarray) -> np.ndarray:
    """Cholesky factor of a symmetric PSD matrix, adding the smallest jitter in JITTERS (times the mean diagonal)
    with which the factorization succeeds."""
    scale = float(np.mean(np.diagonal(matrix)))
    for jitter in JITTERS:
        try:
            return np.linalg.cholesky(matrix + jitter * scale * np.eye(len(matrix)))
        except np.linalg.LinAlgError:
            continue
    raise ValueError("GP: covariance matrix is not positive definite even with the largest jitter")


def neg_log_posterior_and_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """-(log marginal likelihood + log prior) / n of one GP and its gradient, analytically.

    theta = (log l_1..l_D, log s^2, log sigma^2, c). The gradient uses R&W Eq. 5.9,
    d(-log ML)/d theta = 1/2 tr((K^-1 - alpha alpha^T) dK/d theta), with the Matern-5/2
    derivative d k / d log l_i = 5/3 s^2 (1 + sqrt5 r) exp(-sqrt5 r) (x_i - x'_i)^2 / l_i^2.
    Plain numpy/LAPACK: at these sizes it is much faster than differentiating a Cholesky
    factor on XLA:CPU.
    """
    n, d = x.shape
    log_ls, log_os, log_noise, mean = theta[:d], theta[d], theta[d + 1], theta[d + 2]
    z = x * np.exp(-log_ls)
    sq = np.sum(z * z, axis=1)
    r2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    r = np.sqrt(r2)
    decay = np.exp(-math.sqrt(5.0) * r)
    outputscale, noise = math.exp(log_os), math.exp(log_noise)
    k_f = outputscale * (1.0 + math.sqrt(5.0) * r + (5.0 / 3.0) * r2) * decay
    chol = numpy_cholesky(k_f + noise * np.eye(n))
    resid = y - mean
    alpha = scipy.linalg.cho_solve((chol, True), resid)
    k_inv = scipy.linalg.cho_solve((chol, True), np.eye(n))
    value = 0.5 * resid @ alpha + np.sum(np.log(np.diagonal(chol))) + 0.5 * n * math.log(2 * math.pi)
    weights = k_inv - np.outer(alpha, alpha)
    a = weights * (5.0 / 3.0) * outputscale * (1.0 + math.sqrt(5.0) * r) * decay
    # 1/2 sum_jk a_jk (z_ji - z_ki)^2, expanded so that it costs matrix products only.
    grad_ls = (a.sum(axis=1) @ (z * z)) - np.einsum("ji,jk,ki->i", z, a, z)
    grad = np.concatenate([grad_ls, [0.5 * np.sum(weights * k_f), 0.5 * noise * np.trace(weights), -np.sum(alpha)]])
    prior, d_ls, d_os, d_noise = _log_prior_and_grad(log_ls, log_os, log_noise)
    grad[:d + 2] -= np.concatenate([d_ls, [d_os, d_noise]])
    return float((value - prior) / n), grad / n


def matern52_numpy(x1: np.ndarray, x2: np.ndarray, log_lengthscale: np.ndarray, log_outputscale: float) -> np.ndarray:
    """`matern52` in numpy (no compilation) for the non-differentiated parts of the model."""
    inv_l = np.exp(-log_lengthscale)
    a, b = x1 * inv_l, x2 * inv_l
    r2 = np.maximum(np.sum(a * a, axis=-1)[:, None] + np.sum(b * b, axis=-1)[None, :] - 2.0 * a @ b.T, 0.0)
    s5r = math.sqrt(5.0) * np.sqrt(r2)
    return math.exp(log_outputscale) * (1.0 + s5r + (5.0 / 3.0) * r2) * np.exp(-s5r)


def _condition(thetas: np.ndarray, x: np.ndarray, y_standard: np.ndarray, n_pad: int) -> GPState:
    """GPState of M GPs with hyperparameters thetas (M, D + 3) on n points, padded to n_pad rows."""
    n, d = x.shape
    m = len(thetas)
    chol = np.tile(np.eye(n_pad), (m, 1, 1))
    chol_inv = chol.copy()
    alpha = np.zeros((m, n_pad))
    for j, theta in enumerate(thetas):
        k = matern52_numpy(x, x, theta[:d], theta[d]) + math.exp(theta[d + 1]) * np.eye(n)
        factor = numpy_cholesky(k)
        chol[j, :n, :n] = factor
        chol_inv[j, :n, :n] = scipy.linalg.solve_triangular(factor, np.eye(n), lower=True)
        alpha[j, :n] = scipy.linalg.cho_solve((factor, True), y_standard[:, j] - theta[d + 2])
    x_pad = np.zeros((n_pad, d))
    x_pad[:n] = x
    params = GPParams(thetas[:, :d], thetas[:, d], thetas[:, d + 1], thetas[:, d + 2])
    with jax.enable_x64(True):
        return GPState(jax.tree_util.tree_map(jnp.asarray, params), jnp.asarray(x_pad), jnp.asarray(np.arange(n_pad) < n),
                       jnp.asarray(chol), jnp.asarray(alpha), jnp.asarray(chol_inv))


def _posterior_mean(state: GPState, m: int | jax.Array, x_new: jax.Array):
    """(hyperparameters of objective m, k(x_new, X) (n, N), latent posterior mean (n,) at x_new, standardized)."""
    p = jax.tree_util.tree_map(lambda a: a[m], state.params)
    k_new = jnp.where(state.valid[None, :], matern52(x_new, state.x, p.log_lengthscale, p.log_outputscale), 0.0)
    return p, k_new, p.mean + k_new @ state.alpha[m]


@jax.jit
def _posterior_all(state: GPState, x_new):
    """Latent posterior means (M, n) and covariances (M, n, n) at x_new (standardized units)."""
    def one(m):
        p, k_new, mean = _posterior_mean(state, m, x_new)
        v = jax.scipy.linalg.solve_triangular(state.chol[m], k_new.T, lower=True)
        return mean, matern52(x_new, x_new, p.log_lengthscale, p.log_outputscale) - v.T @ v
    return jax.vmap(one)(jnp.arange(state.alpha.shape[0]))


@jax.jit
def _mean_and_grad(state: GPState, m, x_new):
    """Posterior mean (n,) of objective m at x_new (n, D), standardized units, and its gradient (n, D)."""
    def total(x):
        mean = _posterior_mean(state, m, x)[2]
        return jnp.sum(mean), mean
    (_, mean), grad = jax.value_and_grad(total, has_aux=True)(x_new)
    return mean, grad


@dataclasses.dataclass(eq=False)
class FittedGP:
    """Independent exact GPs for M outcomes observed at the same inputs.

    `fit_gp(x, y)` takes x (n, D) in the unit cube and y (n, M) in original units. Exact
    duplicate rows of x are merged first (their outcomes averaged).
    """

    state: GPState
    y_mean: np.ndarray
    y_std: np.ndarray
    n_train: int
    neg_log_posterior: np.ndarray
    x_train: np.ndarray

    @property
    def n_outputs(self) -> int:
        return len(self.y_mean)

    def mean_and_grad(self, m: int, x_new) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (n,) of outcome m at x_new (n, D), in original units, and its gradient (n, D)."""
        with jax.enable_x64(True):
            mean, grad = _mean_and_grad(self.state, m, jnp.asarray(np.asarray(x_new, dtype=np.float64)))
        return np.asarray(mean) * self.y_std[m] + self.y_mean[m], np.asarray(grad) * self.y_std[m]

    def posterior(self, x_new) -> tuple[np.ndarray, np.ndarray]:
        """Latent posterior means (n, M) and variances (n, M) at x_new, in original units."""
        with jax.enable_x64(True):
            x_new = jnp.asarray(np.asarray(x_new, dtype=np.float64))
            mean, cov = _posterior_all(self.state, x_new)
            mean = np.asarray(mean).T * self.y_std + self.y_mean
            var = np.clip(np.asarray(jnp.diagonal(cov, axis1=1, axis2=2)).T, 0.0, None) * self.y_std ** 2
        return mean, var


def merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of x with the mean of their outcomes (order of first appearance)."""
    keys = np.round(x, 12)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(first), y.shape[1]))
    np.add.at(sums, inverse, y)
    counts = np.bincount(inverse, minlength=len(first))[:, None]
    order = np.argsort(first)
    return x[first][order], (sums / counts)[order]


def _fit_one(x: np.ndarray, y: np.ndarray, maxiter: int) -> tuple[np.ndarray, float]:
    """MAP hyperparameters of one GP by L-BFGS-B from the best of a few deterministic starts."""
    d = x.shape[1]
    lower = np.array([math.log(LENGTHSCALE_BOUNDS[0])] * d + [math.log(OUTPUTSCALE_BOUNDS[0]), math.log(NOISE_BOUNDS[0]), MEAN_BOUNDS[0]])
    upper = np.array([math.log(LENGTHSCALE_BOUNDS[1])] * d + [math.log(OUTPUTSCALE_BOUNDS[1]), math.log(NOISE_BOUNDS[1]), MEAN_BOUNDS[1]])

    def objective(theta):
        value, grad = neg_log_posterior_and_grad(theta, x, y)
        if not (math.isfinite(value) and np.all(np.isfinite(grad))):
            return 1e10, np.zeros_like(theta)
        return value, grad

    # Starts: a few lengthscales (unit-cube units), unit output scale, small noise, zero mean.
    starts = [np.clip(np.concatenate([np.full(d, math.log(s * math.sqrt(d))), [0.0, math.log(1e-3), 0.0]]), lower, upper)
              for s in (0.15, 0.4, 1.0)]
    theta0 = min(starts, key=lambda t: objective(t)[0])
    res = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=list(zip(lower, upper)),
                                  options={"maxiter": maxiter})
    if not (math.isfinite(res.fun) and res.fun < 1e10):
        raise ValueError("fit_gp: the marginal likelihood is not finite at any start; check the outcomes")
    return res.x, float(res.fun)


def fit_gp(x, y, maxiter: int = 200, min_pad: int = 32) -> FittedGP:
    """MAP-fits independent Matern-5/2 GPs to outcomes y (n, M) at inputs x (n, D) in [0, 1]^D;
    the fitted state is padded to max(min_pad, next power of two >= n) rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"fit_gp: need x (n, D) and y (n, M) with the same n >= 1, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("fit_gp: x and y must be finite (found NaN or inf)")
    x, y = merge_duplicates(x, y)
    n, d = x.shape
    m = y.shape[1]
    y_mean = y.mean(axis=0)
    y_std = y.std(axis=0)
    y_std = np.where(y_std > 1e-12 * np.maximum(1.0, np.abs(y_mean)), y_std, 1.0)
    y_standard = (y - y_mean) / y_std
    # Matrices here are small: one BLAS thread avoids thread hand-off costs that dominate on
    # a busy 2-core machine (measured 15x slower with 2 threads under load).
    with threadpool_limits(limits=1, user_api="blas"):
        thetas, losses = zip(*[_fit_one(x, y_standard[:, j], maxiter) for j in range(m)])
        state = _condition(np.stack(thetas), x, y_standard, padded_size(n, int(min_pad)))
    if not (np.all(np.isfinite(np.asarray(state.chol_inv))) and np.all(np.isfinite(np.asarray(state.alpha)))):
        raise ValueError("fit_gp: Cholesky factor is not finite even with the largest jitter")
    return FittedGP(state, y_mean, y_std, n, np.array(losses), x)
