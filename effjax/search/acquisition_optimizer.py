"""Maximizing the acquisition over a search space.

Continuous or mixed spaces follow BoTorch's `optimize_acqf` recipe (Balandat et al.,
NeurIPS 2020, "BoTorch", Section 5): score a few hundred quasi-random raw points plus
Gaussian perturbations of the incumbent Pareto points, start L-BFGS-B from the best
few (all starts optimized jointly: the summed objective has a block-separable gradient),
then round discrete dimensions and re-score. Mixed spaces (discrete and continuous
parameters together) never score a relaxed discrete value: every candidate sits on the
lattice of the discrete parameters, and the search alternates L-BFGS-B over the
continuous dimensions (discrete ones held by equal bounds) with best-improvement moves to
lattice neighbours (continuous ones held), as in BoTorch's
`optimize_acqf_mixed_alternating` (which follows the alternating local search of
Daulton et al., NeurIPS 2022, "Bayesian optimization over discrete and mixed spaces via
probabilistic reparameterization", Appendix). Discrete spaces are scored on an
enumerated candidate set when small; otherwise on a large random sample plus the
neighbours of incumbents, followed by a few rounds of best-improvement neighbour moves.
Infeasible and already-seen configurations are never returned.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.optimize
import scipy.stats

from effjax.search.space import Params, Space

ComputedFn = Callable[[Sequence[Params]], np.ndarray]  # params list -> (N, Mc) normalized values
# `computed` may be None when no objective is computed: candidates are then not decoded for it.


class CandidatePool:
    """The feasible configurations of a small discrete space, encoded once and reused."""

    def __init__(self, space: Space):
        self.params = [p for p in space.iter_all() if space.is_feasible(p)]
        self.keys = [space.key(p) for p in self.params]
        self.x = space.encode_many(self.params)


def _score(acq, params: list[Params], x: np.ndarray, computed: ComputedFn | None) -> np.ndarray:
    """Acquisition values (N,) of the single-point batches x (N, D), the encodings of `params` (N >= 1)."""
    return acq(x[:, None, :], None if computed is None else computed(params)[:, None, :])


def _pick(values: np.ndarray, params: list[Params], keys: list[tuple], exclude: set) -> tuple[Params | None, float]:
    for i in np.argsort(-values, kind="stable"):
        if keys[i] not in exclude:
            return params[i], float(values[i])
    return None, -np.inf


def maximize_continuous(acq, space: Space, rng: np.random.Generator, computed: ComputedFn | None, exclude: set,
                        incumbents: np.ndarray, n_raw: int = 512, n_restarts: int = 10, maxiter: int = 100,
                        ) -> tuple[Params | None, float]:
    """Best feasible, unseen configuration by multi-start L-BFGS-B on the relaxed cube."""
    sobol = scipy.stats.qmc.Sobol(d=space.dim, scramble=True, rng=rng)
    raw = [sobol.random(n_raw)]
    if len(incumbents):
        centres = incumbents[rng.integers(len(incumbents), size=n_raw // 4)]
        raw.append(np.clip(centres + 0.05 * rng.standard_normal(centres.shape), 0.0, 1.0))
    raw = np.concatenate(raw)
    params = [space.decode(x) for x in raw]
    keep = [i for i, p in enumerate(params) if space.is_feasible(p)]
    params = [params[i] for i in keep]
    if not params:
        return None, -np.inf
    values = _score(acq, params, space.encode_many(params), computed)
    keys = [space.key(p) for p in params]
    order = [i for i in np.argsort(-values, kind="stable") if keys[i] not in exclude]
    if not order:  # every feasible raw point was seen before
        return None, -np.inf
    best_params, best_value = params[order[0]], float(values[order[0]])
    starts = raw[np.array(keep)[order[:n_restarts]]]
    relaxed = np.ones(space.dim, dtype=bool)  # every dimension moves, discrete ones are rounded on decoding
    moved = lbfgs_masked(_summed_acquisition(acq, space, computed), starts, relaxed, maxiter)
    polished = [p for p in map(space.decode, moved) if space.is_feasible(p)]
    if polished:
        pol_values = _score(acq, polished, space.encode_many(polished), computed)
        p, v = _pick(pol_values, polished, [space.key(p) for p in polished], exclude)
        if v > best_value:
            best_params, best_value = p, v
    return best_params, best_value


def lbfgs_masked(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], starts: np.ndarray,
                 continuous: np.ndarray, maxiter: int) -> np.ndarray:
    """L-BFGS-B from every row of `starts` (n, D) jointly, maximizing `value_and_grad(x) -> (summed value,
    gradient (n, D))` over the dimensions where `continuous` is True; the others stay put (equal bounds)."""
    shape = starts.shape

    def objective(flat):
        value, grad = value_and_grad(flat.reshape(shape))
        return -value, -(grad * continuous).ravel()

    bounds = [(0.0, 1.0) if c else (float(v), float(v)) for row in starts for v, c in zip(row, continuous)]
    res = scipy.optimize.minimize(objective, starts.ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
                                  options={"maxiter": maxiter})
    return res.x.reshape(shape)


def _summed_acquisition(acq, space: Space, computed: ComputedFn | None):
    """x (n, D) -> (sum of the acquisition values of the n single-point batches, gradient (n, D))."""
    def value_and_grad(x):
        cu = None if computed is None else computed([space.decode(row) for row in x])[:, None, :]
        v, g = acq.value_and_grad(x[:, None, :], cu)
        return float(np.sum(v)), g[:, 0, :]
    return value_and_grad


def maximize_mixed(acq, space: Space, rng: np.random.Generator, computed: ComputedFn | None, exclude: set,
                   incumbents: list[Params], n_raw: int = 512, n_restarts: int = 10, rounds: int = 3,
                   maxiter: int = 100) -> tuple[Params | None, float]:
    """Best feasible, unseen configuration of a mixed space by alternating continuous and lattice moves."""
    scores: dict[tuple, float] = {}
    by_key: dict[tuple, Params] = {}

    def score(candidates: list[Params]) -> np.ndarray:
        """Acquisition values of feasible candidates (-inf for infeasible ones), cached by key."""
        out = np.full(len(candidates), -np.inf)
        fresh, fresh_rows = [], []
        for i, p in enumerate(candidates):
            k = space.key(p)
            if k in scores:
                out[i] = scores[k]
            elif space.is_feasible(p):
                fresh.append(p)
                fresh_rows.append(i)
        if fresh:
            values = _score(acq, fresh, space.encode_many(fresh), computed)
            for i, p, v in zip(fresh_rows, fresh, values):
                scores[space.key(p)], by_key[space.key(p)] = float(v), p
                out[i] = v
        return out

    sobol = scipy.stats.qmc.Sobol(d=space.dim, scramble=True, rng=rng)
    raw = [space.decode(x) for x in sobol.random(n_raw)]
    for p in [incumbents[i] for i in rng.integers(len(incumbents), size=n_raw // 4)] if incumbents else []:
        x = space.encode(p)
        x = np.where(space.continuous, np.clip(x + 0.05 * rng.standard_normal(x.shape), 0.0, 1.0), x)
        q = space.decode(x)
        moves = space.neighbours(q)
        raw.append(moves[rng.integers(len(moves))] if moves and rng.random() < 0.5 else q)
    values = score(raw)
    order = [i for i in np.argsort(-values, kind="stable") if np.isfinite(values[i]) and space.key(raw[i]) not in exclude]
    starts, start_values = [], []
    for i in order:
        if space.key(raw[i]) not in {space.key(s) for s in starts}:
            starts.append(raw[i])
            start_values.append(values[i])
        if len(starts) == n_restarts:
            break
    for _ in range(rounds if starts else 0):
        polished = [space.decode(x) for x in lbfgs_masked(_summed_acquisition(acq, space, computed),
                                                          space.encode_many(starts), space.continuous, maxiter)]
        new_values = score(polished)
        for j, (p, v) in enumerate(zip(polished, new_values)):
            if v > start_values[j]:
                starts[j], start_values[j] = p, float(v)
        moves = [space.neighbours(p) for p in starts]
        move_values = score([q for m in moves for q in m])  # one batched call for every start's moves
        moved, offset = False, 0
        for j, m in enumerate(moves):
            if m:
                best = int(np.argmax(move_values[offset:offset + len(m)]))
                if move_values[offset + best] > start_values[j]:
                    starts[j], start_values[j] = m[best], float(move_values[offset + best])
                    moved = True
            offset += len(m)
        if not moved:
            break
    keys = list(scores)
    return _pick(np.array([scores[k] for k in keys]), [by_key[k] for k in keys], keys, exclude)


def maximize_discrete(acq, space: Space, rng: np.random.Generator, computed: ComputedFn | None, exclude: set,
                      incumbents: list[Params], pool: CandidatePool | None, n_random: int = 2048,
                      local_rounds: int = 4, n_local: int = 5) -> tuple[Params | None, float]:
    """Best feasible, unseen configuration of a discrete space (enumerated or sampled + local moves)."""
    if pool is not None:
        idx = [i for i, k in enumerate(pool.keys) if k not in exclude]
        if not idx:
            return None, -np.inf
        params = [pool.params[i] for i in idx]
        values = _score(acq, params, pool.x[idx], computed)
        return _pick(values, params, [pool.keys[i] for i in idx], exclude)

    seen: dict[tuple, float] = {}
    by_key: dict[tuple, Params] = {}

    def score_new(candidates: list[Params]) -> None:
        fresh = {}  # key -> params, in the candidates' order
        for p in candidates:
            k = space.key(p)
            if k not in seen and k not in exclude and k not in fresh and space.is_feasible(p):
                fresh[k] = p
        if fresh:
            values = _score(acq, list(fresh.values()), space.encode_many(list(fresh.values())), computed)
            for (k, p), v in zip(fresh.items(), values):
                seen[k], by_key[k] = float(v), p

    initial = [space.random_params(rng) for _ in range(n_random)]
    for p in incumbents:
        initial.extend(space.neighbours(p))
    score_new(initial)
    for _ in range(local_rounds):
        if not seen:
            break
        best_before = max(seen.values())
        top = sorted(seen, key=seen.get, reverse=True)[:n_local]
        score_new([q for k in top for q in space.neighbours(by_key[k])])
        if max(seen.values()) <= best_before:
            break
    if not seen:
        return None, -np.inf
    best = max(seen, key=seen.get)
    return by_key[best], seen[best]
