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
for Bayesian optimization", Section 4.2 and Appendix on qLogEHVI): the [.]_+ is replaced
by a fat-tailed softplus (temperature tau = 1e-6) and the min over the members of a batch
subset by a log-sum-exp smooth min (temperature 1e-3), and the acquisition is the log of
the sample mean, so it and its gradient stay finite and informative far from any
improvement. The clamp to a cell's upper bound is a plain min, which is exact and lets
infinite upper bounds pass unchanged. Each per-sample sum over cells is accumulated in
linear space, of volumes divided by tau^M, and its log is taken once: the softplus over
tau lies within [1/(|t| + 1), |t| + 1] for t = z / tau, so for normalized u these scaled
volumes stay far inside the float64 range (for M up to ~30), and each factor costs a
square root and a division instead of a log per factor and an exp per cell, which is
what dominates the run time on CPU. Padded cells carry a weight of 0.

The cells sit in blocks of CELL_BLOCK within a fixed capacity; a loop with a traced trip
count visits the blocks that hold real cells (`log_hvi_blocked`), so the compiled
acquisition does not change as the front, and with it the number of cells, grows.

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
from effjax.search.gp import FittedGP, GPState, matern52, matern52_numpy, padded_size

TAU_RELU = 1e-6
TAU_MIN = 1e-3
UNBOUNDED = 1e6  # stands in for +inf cell upper bounds (normalized units): exp(-UNBOUNDED / TAU_MIN) == 0
EIGEN_FLOOR = 1e-10
CHUNK = 128  # candidates per compiled call when scoring many
CELL_BLOCK = 16  # cells per step of the loop over cells
MIN_CELL_CAPACITY = 256  # cell arrays are padded to this (or the next power of two above)


def _logsumexp(x: jax.Array, axis: int) -> jax.Array:
    """log-sum-exp along axis; -inf entries allowed, but not all of them."""
    peak = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return jnp.squeeze(peak, axis) + jnp.log(jnp.sum(jnp.exp(x - peak), axis=axis))


def smooth_min(x: jax.Array, axis: int, tau: float = TAU_MIN) -> jax.Array:
    return -tau * _logsumexp(-x / tau, axis=axis)


def scaled_fatplus(z: jax.Array, tau: float = TAU_RELU) -> jax.Array:
    """The fat-tailed softplus divided by its temperature, g(z / tau) with
    g(t) = t/2 + sqrt(1 + t^2/4): a smooth [t]_+ with a 1/|t| tail (log g(t) = asinh(t/2)).
    With a = |t|/2 + sqrt(1 + t^2/4), g is a for t >= 0 and 1/a below: no cancellation, no log."""
    half = 0.5 * z / tau
    a = jnp.abs(half) + jnp.sqrt(1.0 + half * half)
    return jnp.where(half >= 0, a, 1.0 / a)


def _subsets(q: int) -> list[tuple[int, ...]]:
    return [s for k in range(1, q + 1) for s in itertools.combinations(range(q), k)]


def _volume_sums(u: jax.Array, lower: jax.Array, upper: jax.Array, weight: jax.Array) -> jax.Array:
    """(2, S, N): sums over cells (S, B, M) and over the odd (row 0) or even (row 1) subsets J
    of the batches u (S, N, q, M) of prod_m g((min(min_J u_m, upper_m) - lower_m) / tau), i.e.
    of smoothed box volumes / tau^M; weight (S, B) is 1 for real cells and 0 for padding."""
    sums = [jnp.zeros(u.shape[:2], dtype=u.dtype), jnp.zeros(u.shape[:2], dtype=u.dtype)]
    for subset in _subsets(u.shape[2]):
        vertex = u[:, :, subset[0], :] if len(subset) == 1 else smooth_min(u[:, :, list(subset), :], axis=2)
        corner = jnp.minimum(vertex[:, :, None, :], upper[:, None])
        factors = scaled_fatplus(corner - lower[:, None])  # (S, N, B, M)
        volume = factors[..., 0]
        for m in range(1, factors.shape[-1]):
            volume = volume * factors[..., m]
        sums[(len(subset) + 1) % 2] = sums[(len(subset) + 1) % 2] + jnp.sum(volume * weight[:, None], axis=-1)
    return jnp.stack(sums)


def _log_hvi(sums: jax.Array, n_objectives: int) -> jax.Array:
    """log of (odd - even) * tau^M, the smoothed HVI, floored at 1e-12 of the odd sum where
    rounding would make the difference vanish."""
    odd, even = sums[0], sums[1]
    return n_objectives * math.log(TAU_RELU) + jnp.log(jnp.maximum(odd - even, 1e-12 * odd))


def log_hvi_per_sample(u: jax.Array, lower: jax.Array, upper: jax.Array, log_mask: jax.Array) -> jax.Array:
    """Smoothed log hypervolume improvement (S,) of q points u (S, q, M) over cells (S, B, M);
    log_mask (S, B) is 0 for real cells and -inf for padding (every sample needs one real cell)."""
    return _log_hvi(_volume_sums(u[:, None], lower, upper, jnp.exp(log_mask)), u.shape[-1])[:, 0]


def _sum_blocks(u: jax.Array, cells) -> jax.Array:
    lower, upper, weight, n_blocks = cells
    return jax.lax.fori_loop(0, n_blocks, lambda k, acc: acc + _volume_sums(u, lower[k], upper[k], weight[k]),
                             jnp.zeros((2,) + u.shape[:2], dtype=u.dtype))


@jax.custom_vjp
def log_hvi_blocked(u: jax.Array, cells) -> jax.Array:
    """`log_hvi_per_sample` for N candidate batches u (S, N, q, M) at once -> (S, N), over cells
    stored in K blocks of CELL_BLOCK: lower, upper (K, S, CELL_BLOCK, M), weight (K, S,
    CELL_BLOCK) 1 or 0, and n_blocks, how many blocks hold real cells (a traced int32 scalar).

    A loop with a traced trip count visits only the first n_blocks blocks, so one compiled
    function serves every number of cells up to the capacity (the count grows with the
    front during a run and would otherwise recompile the acquisition at every padding
    bucket it crosses). Such a loop has no automatic reverse mode, hence a custom VJP: a
    second loop over the same blocks that recomputes each block's pullback in place.
    """
    return _log_hvi(_sum_blocks(u, cells), u.shape[-1])


def _log_hvi_blocked_fwd(u, cells):
    sums = _sum_blocks(u, cells)
    return _log_hvi(sums, u.shape[-1]), (u, cells, sums)


def _log_hvi_blocked_bwd(residuals, cotangent):
    u, cells, sums = residuals
    lower, upper, weight, n_blocks = cells
    ct_sums = jax.vjp(lambda s: _log_hvi(s, u.shape[-1]), sums)[1](cotangent)[0]

    def visit(k, grad):
        _, pullback = jax.vjp(lambda v: _volume_sums(v, lower[k], upper[k], weight[k]), u)
        return grad + pullback(ct_sums)[0]

    grad = jax.lax.fori_loop(0, n_blocks, visit, jnp.zeros_like(u))
    no_grad = (jnp.zeros_like(lower), jnp.zeros_like(upper), jnp.zeros_like(weight),
               np.zeros(np.shape(n_blocks), dtype=jax.dtypes.float0))
    return grad, no_grad


log_hvi_blocked.defvjp(_log_hvi_blocked_fwd, _log_hvi_blocked_bwd)


def _masked_kernel(state: GPState, m, xa, xb, valid_a, valid_b):
    k = matern52(xa, xb, state.params.log_lengthscale[m], state.params.log_outputscale[m])
    return jnp.where(valid_a[:, None] & valid_b[None, :], k, 0.0)


def _baseline_posterior(state: GPState, x_base: np.ndarray, valid_base: np.ndarray, z_base: np.ndarray):
    """Per modeled objective: V = L^-1 k(X, B), pseudo-inverse root W, baseline draws (S, M, Nb).
    In numpy (small matrices, computed once per acquisition: compiling it would cost more)."""
    x, valid = np.asarray(state.x), np.asarray(state.valid)
    log_ls, log_os = np.asarray(state.params.log_lengthscale), np.asarray(state.params.log_outputscale)
    means, chol_inv, alpha = np.asarray(state.params.mean), np.asarray(state.chol_inv), np.asarray(state.alpha)
    vs, pinv_roots, draws = [], [], []
    for m in range(len(alpha)):
        k_xb = np.where(valid[:, None] & valid_base[None, :], matern52_numpy(x, x_base, log_ls[m], log_os[m]), 0.0)
        v = chol_inv[m] @ k_xb
        mean = means[m] + k_xb.T @ alpha[m]
        prior = np.where(valid_base[:, None] & valid_base[None, :], matern52_numpy(x_base, x_base, log_ls[m], log_os[m]), 0.0)
        cov = prior - v.T @ v
        lam, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
        keep = lam > EIGEN_FLOOR * max(float(np.max(lam)), 1e-300) + 1e-14
        sqrt_lam = np.sqrt(np.where(keep, lam, 1.0))
        root = np.where(keep, vecs * sqrt_lam, 0.0)
        vs.append(v)
        pinv_roots.append(np.where(keep, vecs / sqrt_lam, 0.0))
        draws.append(mean[None, :] + z_base[:, m, :] @ root.T)
    return np.stack(vs), np.stack(pinv_roots), np.stack(draws, axis=1)


def _candidate_draws(state: GPState, x_base, valid_base, v_base, pinv_root, x_c, z_base, z_cand):
    """Joint posterior draws (S, N, q, M) at N candidate batches x_c (N, q, D), conditioned
    on the baseline draws. All N * q points share one product with L^-1 per objective."""
    n, q, d = x_c.shape
    flat = x_c.reshape(n * q, d)
    valid_c = jnp.ones(n * q, dtype=bool)

    def one(m):
        log_ls, log_os = state.params.log_lengthscale[m], state.params.log_outputscale[m]
        k_cx = _masked_kernel(state, m, flat, state.x, valid_c, state.valid)
        v_c = state.chol_inv[m] @ k_cx.T  # L^-1 k(X, c): (Ntrain, N q)
        mean = (state.params.mean[m] + k_cx @ state.alpha[m]).reshape(n, q)
        cov_cb = _masked_kernel(state, m, flat, x_base, valid_c, valid_base) - v_c.T @ v_base[m]
        a = (cov_cb @ pinv_root[m]).reshape(n, q, -1)
        if q == 1:  # the conditional variance only: k(c, c) is the output scale
            var = jnp.exp(log_os) - jnp.sum(v_c * v_c, axis=0) - jnp.sum(a[:, 0, :] * a[:, 0, :], axis=-1)
            root_c = jnp.sqrt(jnp.maximum(var, 0.0) + 1e-12)[:, None, None]
        else:
            v3 = v_c.reshape(-1, n, q)
            prior_cc = jax.vmap(lambda x: matern52(x, x, log_ls, log_os))(x_c)
            cond = prior_cc - jnp.einsum("kiq,kir->iqr", v3, v3) - jnp.einsum("iqb,irb->iqr", a, a)
            jitter = 1e-8 * jnp.exp(log_os) * jnp.eye(q)
            root_c = jnp.linalg.cholesky(0.5 * (cond + jnp.swapaxes(cond, 1, 2)) + jitter)
        return (mean[None] + jnp.einsum("sb,iqb->siq", z_base[:, m, :], a)
                + jnp.einsum("sr,iqr->siq", z_cand[:, m, :], root_c))
    return jnp.moveaxis(jax.vmap(one)(jnp.arange(state.alpha.shape[0])), 0, -1)


@jax.jit
def _log_acquisition_batch(x_c, computed_u, state, base, cells, noise, affine):
    """log NEHVI (N,) of N batches x_c (N, q, D) with computed-objective values (N, q, Mc)."""
    x_base, valid_base, v_base, pinv_root = base
    z_base, z_cand = noise
    offset, slope = affine
    f = _candidate_draws(state, x_base, valid_base, v_base, pinv_root, x_c, z_base, z_cand)  # (S, N, q, Mm)
    u_modeled = offset + slope * f
    u_computed = jnp.broadcast_to(computed_u[None], (f.shape[0],) + computed_u.shape)
    u = jnp.concatenate([u_modeled, u_computed], axis=-1)
    log_hvi = log_hvi_blocked(u, cells)
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
        nb_pad = padded_size(nb, minimum=len(gp.state.x))  # the GP's capacity: one compiled shape for both
        x_pad = np.zeros((nb_pad, d))
        x_pad[:nb] = x_baseline
        valid = np.arange(nb_pad) < nb
        mm = self.n_modeled
        # z_base multiplies eigen-directions of the baseline covariance in ascending order,
        # where the padding only adds zero eigenvalues in front. The base samples fill the
        # last nb_draw of them, so they do not depend on the padded capacity: sizing the
        # arrays for the budget leaves the draws as they were.
        nb_draw = padded_size(nb)
        z = normal_base_samples(n_samples, mm * (nb_draw + q), seed)
        z_base = np.zeros((n_samples, mm, nb_pad))
        z_base[:, :, nb_pad - nb_draw:] = z[:, : mm * nb_draw].reshape(n_samples, mm, nb_draw)
        z_cand = z[:, mm * nb_draw:].reshape(n_samples, mm, q)
        self.state = gp.state
        v_base, pinv_root, draws = _baseline_posterior(gp.state, x_pad, valid, z_base)
        draws = draws[:, :, :nb]  # (S, Mm, nb)
        u_base = offset[None, None, :] + slope[None, None, :] * np.swapaxes(draws, 1, 2)  # (S, nb, Mm)
        u_base = np.concatenate([u_base, np.broadcast_to(computed_baseline[None], (n_samples,) + computed_baseline.shape)], axis=-1)
        self.baseline_draws = u_base
        with jax.enable_x64(True):
            self.cells = tuple(jnp.asarray(a) for a in self._cells(u_base))
            self.base = tuple(jnp.asarray(a) for a in (x_pad, valid, v_base, pinv_root))
            self.noise = (jnp.asarray(z_base), jnp.asarray(z_cand))
            self.affine = (jnp.asarray(offset, dtype=jnp.float64), jnp.asarray(slope, dtype=jnp.float64))

    @staticmethod
    def _cells(u_base: np.ndarray):
        """Cells of every sample's baseline front as blocks (see `log_hvi_blocked`)."""
        n_samples, _, m = u_base.shape
        per_sample = [nondominated_cells(u_base[s], np.zeros(m)) for s in range(n_samples)]
        count = max(len(lo) for lo, _ in per_sample)
        capacity = padded_size(count, minimum=MIN_CELL_CAPACITY)
        lower = np.zeros((n_samples, capacity, m))
        upper = np.zeros((n_samples, capacity, m))
        weight = np.zeros((n_samples, capacity))
        for s, (lo, hi) in enumerate(per_sample):
            lower[s, : len(lo)] = lo
            upper[s, : len(lo)] = np.minimum(hi, UNBOUNDED)
            weight[s, : len(lo)] = 1.0
        n_blocks = capacity // CELL_BLOCK

        def blocks(a):  # (S, capacity, ...) -> (K, S, CELL_BLOCK, ...)
            return np.swapaxes(a.reshape((n_samples, n_blocks, CELL_BLOCK) + a.shape[2:]), 0, 1)
        return blocks(lower), blocks(upper), blocks(weight), np.int32(-(-count // CELL_BLOCK))

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
