"""qLogNEHVI: the log of the noisy expected hypervolume improvement of a batch of q points.

Noisy EHVI (Daulton, Balandat & Bakshy, NeurIPS 2021, "Parallel Bayesian optimization of
multiple noisy objectives with expected hypervolume improvement", Eq. 4-5):

  NEHVI(X_c) = E_f [ HVI(f(X_c) | ParetoFront(f(X_b))) ],

the expectation over joint posterior draws f at the baseline points X_b (every evaluated
configuration plus the pending ones) and the candidates X_c. It is estimated with S = 128
fixed quasi-random normal base samples (sample average approximation, Section 4.3), so
the estimate is a deterministic, differentiable function of X_c. For each draw s we
decompose the region that the sampled baseline front does not dominate into disjoint
cells (`box_decomposition.py`); the improvement of q points is then, by
inclusion-exclusion over the non-empty subsets J of the batch (Daulton et al., 2020,
Eq. 3),

  HVI_s = sum_J (-1)^(|J|+1) sum_cells prod_m [ min(min_{j in J} u_jm, upper_m) - lower_m ]_+ .

Log form (Ament et al., NeurIPS 2023, "Unexpected improvements to expected improvement
for Bayesian optimization", Section 4.2 and Appendix on qLogEHVI): everything is
computed in log space, the [.]_+ is replaced by a fat-tailed softplus (temperature
1e-6) and the min by a log-sum-exp smooth min (temperature 1e-3), so the acquisition and
its gradient stay finite and informative far from any improvement. The min over the
members of a batch subset is smooth (temperature 1e-3); the clamp to a cell's upper bound
is a plain min, which is exact, lets infinite upper bounds pass unchanged, and costs far
less than a log-sum-exp (we found transcendental functions dominate the run time on CPU).
Padded cells are masked out with a log-mask of -inf.

Joint sampling ("cached root", Daulton et al. 2021, Section 4.2): the baseline
posterior covariance Sigma_bb = U diag(lam) U^T is factored once; baseline draws are
mu_b + U lam^(1/2) z_b, and the candidates' draws, conditioned on them, are
mu_c + Sigma_cb U lam^(-1/2) z_b + chol(Sigma_cc - A A^T) z_c, with A = Sigma_cb U lam^(-1/2),
dropping eigen-directions with negligible variance (a pseudo-inverse).

Objectives are mapped to a normalized maximization space, u = sign (y - ref) / scale,
so that the reference point is the origin and the temperatures are scale-free.
Computed objectives (known functions of the configuration) enter as exact values.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from effjax.search.box_decomposition import nondominated_cells
from effjax.search.gp import FittedGP, GPState, matern52, padded_size

TAU_RELU = 1e-6
TAU_MIN = 1e-3
UNBOUNDED = 1e6  # stands in for +inf cell upper bounds (normalized units): exp(-UNBOUNDED / TAU_MIN) == 0
EIGEN_FLOOR = 1e-10
CHUNK = 128


def _log_add_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """log(exp(a) + exp(b)) for finite a, b, with exp/log only: float64 log1p is ~5x slower
    on XLA:CPU, and the precision it would add is below 1e-16 in absolute terms."""
    return jnp.maximum(a, b) + jnp.log(1.0 + jnp.exp(-jnp.abs(a - b)))


def log_fatplus(z: jax.Array, tau: float = TAU_RELU) -> jax.Array:
    """log of tau * g(z / tau) with g(t) = t/2 + sqrt(1 + t^2/4), a smooth [t]_+ with a fat
    1/|t| tail; log g(t) = asinh(t/2) exactly, so this needs no branches (which are slow on
    XLA:CPU), is stable for any t, and its gradient ~ 1/|z| never vanishes."""
    half = 0.5 * z / tau
    magnitude = jnp.abs(half)
    return math.log(tau) + jnp.sign(half) * jnp.log(magnitude + jnp.sqrt(1.0 + magnitude * magnitude))


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """log-sum-exp along axis; -inf entries allowed, but not all of them."""
    peak = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return jnp.squeeze(peak, axis) + jnp.log(jnp.sum(jnp.exp(x - peak), axis=axis))


def smooth_min(x: jax.Array, axis: int, tau: float = TAU_MIN) -> jax.Array:
    return -tau * _logsumexp(-x / tau, axis=axis)


def smooth_minimum(a: jax.Array, b: jax.Array, tau: float = TAU_MIN) -> jax.Array:
    """Elementwise smooth min(a, b) = -tau log(exp(-a/tau) + exp(-b/tau))."""
    return -tau * _log_add_exp(-a / tau, -b / tau)


def _log_diff_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """log(exp(a) - exp(b)) for a > b; a tiny floor where rounding makes b >= a."""
    gap = jnp.minimum(b - a, -1e-12)
    return a + jnp.log(-jnp.expm1(gap))


def _subsets(q: int) -> list[tuple[int, ...]]:
    return [s for k in range(1, q + 1) for s in itertools.combinations(range(q), k)]


def log_hvi_per_sample(u: jax.Array, lower: jax.Array, upper: jax.Array, log_mask: jax.Array) -> jax.Array:
    """Smoothed log hypervolume improvement of q points u (S, q, M) over cells (S, B, M);
    log_mask (S, B) is 0 for real cells and -inf for padding."""
    q = u.shape[1]
    odd, even = [], []
    for subset in _subsets(q):
        members = u[:, list(subset), :]
        vertex = members[:, 0, :] if len(subset) == 1 else smooth_min(members, axis=1)
        corner = jnp.minimum(vertex[:, None, :], upper)
        log_volume = jnp.sum(log_fatplus(corner - lower), axis=-1)
        (odd if len(subset) % 2 else even).append(log_volume + log_mask)
    positive = _logsumexp(jnp.concatenate(odd, axis=1), axis=1)
    if not even:
        return positive
    return _log_diff_exp(positive, _logsumexp(jnp.concatenate(even, axis=1), axis=1))


def _masked_kernel(state: GPState, m, xa, xb, valid_a, valid_b):
    k = matern52(xa, xb, state.params.log_lengthscale[m], state.params.log_outputscale[m])
    return jnp.where(valid_a[:, None] & valid_b[None, :], k, 0.0)


@jax.jit
def _baseline_posterior(state: GPState, x_base, valid_base, z_base):
    """Per modeled objective: V = L^-1 k(X, B), pseudo-inverse root W, baseline draws (S, M, Nb)."""
    def one(m):
        k_xb = _masked_kernel(state, m, state.x, x_base, state.valid, valid_base)
        v = jax.scipy.linalg.solve_triangular(state.chol[m], k_xb, lower=True)
        mean = state.params.mean[m] + k_xb.T @ state.alpha[m]
        cov = _masked_kernel(state, m, x_base, x_base, valid_base, valid_base) - v.T @ v
        lam, vecs = jnp.linalg.eigh(0.5 * (cov + cov.T))
        keep = lam > EIGEN_FLOOR * jnp.maximum(jnp.max(lam), 1e-300) + 1e-14
        sqrt_lam = jnp.sqrt(jnp.where(keep, lam, 1.0))
        root = jnp.where(keep, vecs * sqrt_lam, 0.0)
        pinv_root = jnp.where(keep, vecs / sqrt_lam, 0.0)
        draws = mean[None, :] + z_base[:, m, :] @ root.T
        return v, pinv_root, draws
    v, pinv_root, draws = jax.vmap(one)(jnp.arange(state.alpha.shape[0]))
    return v, pinv_root, jnp.swapaxes(draws, 0, 1)


def _candidate_draws(state: GPState, x_base, valid_base, v_base, pinv_root, x_c, z_base, z_cand):
    """Joint posterior draws (S, N, q, M) at N candidate batches x_c (N, q, D), conditioned
    on the baseline draws. All N * q points share one triangular solve per objective."""
    n, q, d = x_c.shape
    flat = x_c.reshape(n * q, d)
    valid_c = jnp.ones(n * q, dtype=bool)

    def one(m):
        log_ls, log_os = state.params.log_lengthscale[m], state.params.log_outputscale[m]
        k_cx = _masked_kernel(state, m, flat, state.x, valid_c, state.valid)
        v_c = jax.scipy.linalg.solve_triangular(state.chol[m], k_cx.T, lower=True)  # (Ntrain, N q)
        mean = (state.params.mean[m] + k_cx @ state.alpha[m]).reshape(n, q)
        cov_cb = _masked_kernel(state, m, flat, x_base, valid_c, valid_base) - v_c.T @ v_base[m]
        a = (cov_cb @ pinv_root[m]).reshape(n, q, -1)
        v3 = v_c.reshape(-1, n, q)
        prior_cc = jax.vmap(lambda x: matern52(x, x, log_ls, log_os))(x_c)
        cond = prior_cc - jnp.einsum("kiq,kir->iqr", v3, v3) - jnp.einsum("iqb,irb->iqr", a, a)
        if q == 1:
            root_c = jnp.sqrt(jnp.maximum(cond, 0.0) + 1e-12)
        else:
            jitter = 1e-8 * jnp.exp(log_os) * jnp.eye(q)
            root_c = jnp.linalg.cholesky(0.5 * (cond + jnp.swapaxes(cond, 1, 2)) + jitter)
        return (mean[None] + jnp.einsum("sb,iqb->siq", z_base[:, m, :], a)
                + jnp.einsum("sr,iqr->siq", z_cand[:, m, :], root_c))
    return jnp.moveaxis(jax.vmap(one)(jnp.arange(state.alpha.shape[0])), 0, -1)


@jax.jit
def _log_acquisition_batch(x_c, computed_u, state, base, cells, noise, affine):
    """log NEHVI (N,) of N batches x_c (N, q, D) with computed-objective values (N, q, Mc)."""
    x_base, valid_base, v_base, pinv_root = base
    lower, upper, log_mask = cells
    z_base, z_cand = noise
    offset, slope = affine
    f = _candidate_draws(state, x_base, valid_base, v_base, pinv_root, x_c, z_base, z_cand)  # (S, N, q, Mm)
    u_modeled = offset + slope * f
    u_computed = jnp.broadcast_to(computed_u[None], (f.shape[0],) + computed_u.shape)
    u = jnp.concatenate([u_modeled, u_computed], axis=-1)
    log_hvi = jax.vmap(log_hvi_per_sample, in_axes=(1, None, None, None), out_axes=1)(u, lower, upper, log_mask)
    return _logsumexp(log_hvi, axis=0) - math.log(log_hvi.shape[0])


@jax.jit
def _log_acquisition_value_and_grad(x_c, computed_u, state, base, cells, noise, affine):
    def total(x):
        values = _log_acquisition_batch(x, computed_u, state, base, cells, noise, affine)
        return jnp.sum(values), values
    (_, values), grad = jax.value_and_grad(total, has_aux=True)(x_c)
    return values, grad


def normal_base_samples(n_samples: int, dim: int, seed: int) -> np.ndarray:
    """Scrambled-Sobol quasi-random standard normal draws (n_samples, dim)."""
    sobol = scipy.stats.qmc.Sobol(d=dim, scramble=True, rng=seed)
    uniform = sobol.random(n_samples)
    return scipy.stats.norm.ppf(np.clip(uniform, 1e-10, 1 - 1e-10))


class QLogNEHVI:
    """log qNEHVI for a fitted GP and a baseline set, in the normalized maximization space.

    Args:
      gp: GPs of the modeled objectives (outputs in original units).
      x_baseline: (nb, D) encoded baseline configurations (evaluated and pending).
      computed_baseline: (nb, Mc) normalized values u of the computed objectives there.
      offset, slope: per modeled objective, u = offset + slope * f for standardized draws f.
      q: batch size that the acquisition scores jointly.
    """

    def __init__(self, gp: FittedGP, x_baseline: np.ndarray, computed_baseline: np.ndarray,
                 offset: np.ndarray, slope: np.ndarray, q: int = 1, n_samples: int = 128, seed: int = 0):
        x_baseline = np.asarray(x_baseline, dtype=np.float64)
        nb, d = x_baseline.shape
        self.q = q
        self.n_modeled = gp.n_outputs
        self.n_computed = computed_baseline.shape[1]
        nb_pad = padded_size(nb)
        x_pad = np.zeros((nb_pad, d))
        x_pad[:nb] = x_baseline
        valid = np.arange(nb_pad) < nb
        mm = self.n_modeled
        z = normal_base_samples(n_samples, mm * (nb_pad + q), seed)
        z_base = z[:, : mm * nb_pad].reshape(n_samples, mm, nb_pad)
        z_cand = z[:, mm * nb_pad:].reshape(n_samples, mm, q)
        with jax.enable_x64(True):
            self.state = gp.state
            v_base, pinv_root, draws = _baseline_posterior(gp.state, jnp.asarray(x_pad), jnp.asarray(valid), jnp.asarray(z_base))
            draws = np.asarray(draws)[:, :, :nb]  # (S, Mm, nb)
        u_base = offset[None, None, :] + slope[None, None, :] * np.swapaxes(draws, 1, 2)  # (S, nb, Mm)
        u_base = np.concatenate([u_base, np.broadcast_to(computed_baseline[None], (n_samples,) + computed_baseline.shape)], axis=-1)
        self.baseline_draws = u_base
        with jax.enable_x64(True):
            self.cells = tuple(jnp.asarray(a) for a in self._cells(u_base))
            self.base = (jnp.asarray(x_pad), jnp.asarray(valid), v_base, pinv_root)
            self.noise = (jnp.asarray(z_base), jnp.asarray(z_cand))
            self.affine = (jnp.asarray(offset, dtype=jnp.float64), jnp.asarray(slope, dtype=jnp.float64))

    @staticmethod
    def _cells(u_base: np.ndarray):
        n_samples, _, m = u_base.shape
        per_sample = [nondominated_cells(u_base[s], np.zeros(m)) for s in range(n_samples)]
        b_pad = padded_size(max(len(lo) for lo, _ in per_sample))
        lower = np.zeros((n_samples, b_pad, m))
        upper = np.zeros((n_samples, b_pad, m))
        log_mask = np.full((n_samples, b_pad), -np.inf)
        for s, (lo, hi) in enumerate(per_sample):
            lower[s, : len(lo)] = lo
            upper[s, : len(lo)] = np.minimum(hi, UNBOUNDED)
            log_mask[s, : len(lo)] = 0.0
        return lower, upper, log_mask

    def _args(self, x, computed_u):
        x = np.asarray(x, dtype=np.float64)
        if computed_u is None:
            computed_u = np.zeros(x.shape[:2] + (self.n_computed,))
        return x, np.asarray(computed_u, dtype=np.float64)

    def __call__(self, x, computed_u=None) -> np.ndarray:
        """log NEHVI of N batches x (N, q, D); computed_u (N, q, Mc) normalized computed values."""
        x, computed_u = self._args(x, computed_u)
        n = len(x)
        out = np.empty(n)
        with jax.enable_x64(True):
            for start in range(0, n, CHUNK):
                xs, cs = x[start:start + CHUNK], computed_u[start:start + CHUNK]
                k = len(xs)
                if k < CHUNK:  # pad to the compiled chunk size
                    xs = np.concatenate([xs, np.repeat(xs[-1:], CHUNK - k, axis=0)])
                    cs = np.concatenate([cs, np.repeat(cs[-1:], CHUNK - k, axis=0)])
                values = _log_acquisition_batch(xs, cs, self.state, self.base, self.cells, self.noise, self.affine)
                out[start:start + k] = np.asarray(values)[:k]
        if np.any(np.isnan(out)):
            raise FloatingPointError("qLogNEHVI: NaN acquisition value (please report: the GP or cells are degenerate)")
        return out

    def value_and_grad(self, x, computed_u=None) -> tuple[np.ndarray, np.ndarray]:
        """log NEHVI (N,) and its gradient (N, q, D) with respect to x (computed values held fixed)."""
        x, computed_u = self._args(x, computed_u)
        with jax.enable_x64(True):
            values, grad = _log_acquisition_value_and_grad(x, computed_u, self.state, self.base, self.cells, self.noise, self.affine)
        return np.asarray(values), np.asarray(grad)
