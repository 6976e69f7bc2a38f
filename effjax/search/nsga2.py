"""Baselines for benchmarks: NSGA-II and scrambled-Sobol search over a `Space`.

NSGA-II follows Deb, Pratap, Agarwal & Meyarivan, IEEE TEC 6(2), 2002: fast
non-dominated sorting (Section III-A), crowding distance (III-B), binary tournaments on
(rank, crowding), simulated binary crossover (SBX, eta = 15) and polynomial mutation
(eta = 20, rate 1/D), with (mu + lambda) elitist survival. It works on the unit-cube
encoding of the space, so discrete parameters are rounded on decoding; infeasible
children are replaced by random feasible points.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.stats

from effjax.search.objectives import Objective, check_objectives
from effjax.search.optimizer import Evaluation, SearchResult, pareto_subset
from effjax.search.pareto import non_dominated_mask
from effjax.search.space import Params, Space


def non_dominated_ranks(y: np.ndarray) -> np.ndarray:
    """Front index of every row of y (n, M), maximization; 0 is the Pareto front."""
    ranks = np.full(len(y), -1)
    rank = 0
    while np.any(ranks < 0):  # front k: the non-dominated points of those in no earlier front
        rest = np.flatnonzero(ranks < 0)
        ranks[rest[non_dominated_mask(y[rest])]] = rank
        rank += 1
    return ranks


def crowding_distance(y: np.ndarray) -> np.ndarray:
    n, m = y.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(y[:, j], kind="stable")
        span = y[order[-1], j] - y[order[0], j]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (y[order[2:], j] - y[order[:-2], j]) / span
    return distance


def _survivors(y: np.ndarray, k: int) -> np.ndarray:
    ranks = non_dominated_ranks(y)
    chosen: list[int] = []
    for r in range(ranks.max() + 1):
        front = np.flatnonzero(ranks == r)
        if len(chosen) + len(front) <= k:
            chosen.extend(front)
        else:
            crowd = crowding_distance(y[front])
            chosen.extend(front[np.argsort(-crowd, kind="stable")[: k - len(chosen)]])
            break
    return np.array(chosen)


def _sbx(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, eta: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    u = rng.random(a.shape)
    beta = np.where(u <= 0.5, (2 * u) ** (1 / (eta + 1)), (1 / (2 * (1 - u))) ** (1 / (eta + 1)))
    swap = rng.random(a.shape) < 0.5
    c1 = 0.5 * ((1 + beta) * a + (1 - beta) * b)
    c2 = 0.5 * ((1 - beta) * a + (1 + beta) * b)
    return np.clip(np.where(swap, c2, c1), 0, 1), np.clip(np.where(swap, c1, c2), 0, 1)


def _polynomial_mutation(x: np.ndarray, rng: np.random.Generator, eta: float = 20.0) -> np.ndarray:
    mutate = rng.random(x.shape) < 1.0 / x.shape[-1]
    u = rng.random(x.shape)
    delta = np.where(u < 0.5, (2 * u) ** (1 / (eta + 1)) - 1, 1 - (2 * (1 - u)) ** (1 / (eta + 1)))
    return np.clip(np.where(mutate, x + delta, x), 0, 1)


class _Recorder:
    def __init__(self, fn, space: Space, objectives: list[Objective], budget: int):
        self.fn, self.space, self.objectives, self.budget = fn, space, objectives, budget
        self.history: list[Evaluation] = []

    def evaluate(self, params: Params) -> np.ndarray:
        out = dict(self.fn(dict(params)))
        values = {o.name: float(o.fn(params)) if o.is_computed else float(out[o.name]) for o in self.objectives}
        self.history.append(Evaluation(len(self.history), params, values))
        return np.array([o.sign * values[o.name] for o in self.objectives])

    @property
    def done(self) -> bool:
        return len(self.history) >= self.budget

    def result(self) -> SearchResult:
        return SearchResult(self.history, pareto_subset(self.history, self.objectives), self.objectives)


def _feasible(space: Space, x: np.ndarray, rng: np.random.Generator) -> Params:
    params = space.decode(x)
    for _ in range(1000):
        if space.is_feasible(params):
            return params
        params = space.random_params(rng)
    raise ValueError("constraints: no feasible configuration found in 1000 random draws")


def sobol_search(fn: Callable[[dict], dict], space: Space, objectives: Sequence[Objective], budget: int,
                 seed: int = 0) -> SearchResult:
    """Evaluates the first `budget` feasible points of a scrambled Sobol sequence."""
    recorder = _Recorder(fn, space, check_objectives(objectives), budget)
    sobol = scipy.stats.qmc.Sobol(d=space.dim, scramble=True, rng=seed)
    rng = np.random.default_rng(seed)
    while not recorder.done:
        for x in sobol.random(64):
            if recorder.done:
                break
            recorder.evaluate(_feasible(space, x, rng))
    return recorder.result()


def nsga2_search(fn: Callable[[dict], dict], space: Space, objectives: Sequence[Objective], budget: int,
                 seed: int = 0, population: int = 10) -> SearchResult:
    """NSGA-II with a Sobol initial population, run until `budget` evaluations."""
    recorder = _Recorder(fn, space, check_objectives(objectives), budget)
    rng = np.random.default_rng(seed)
    sobol = scipy.stats.qmc.Sobol(d=space.dim, scramble=True, rng=seed)
    pop_x, pop_y = [], []
    for x in sobol.random(1 << max(0, (population - 1).bit_length()))[:population]:
        if recorder.done:
            break
        params = _feasible(space, x, rng)
        pop_x.append(space.encode(params))
        pop_y.append(recorder.evaluate(params))
    pop_x, pop_y = np.array(pop_x), np.array(pop_y)
    while not recorder.done:
        ranks = non_dominated_ranks(pop_y)
        crowd = np.zeros(len(pop_y))
        for r in np.unique(ranks):
            idx = np.flatnonzero(ranks == r)
            crowd[idx] = crowding_distance(pop_y[idx])

        def tournament() -> int:
            i, j = rng.integers(len(pop_x), size=2)
            if ranks[i] != ranks[j]:
                return i if ranks[i] < ranks[j] else j
            return i if crowd[i] >= crowd[j] else j

        children_x, children_y = [], []
        while len(children_x) < population and not recorder.done:
            a, b = pop_x[tournament()], pop_x[tournament()]
            c1, c2 = _sbx(a, b, rng) if rng.random() < 0.9 else (a.copy(), b.copy())
            for c in (c1, c2):
                if len(children_x) >= population or recorder.done:
                    break
                params = _feasible(space, _polynomial_mutation(c, rng), rng)
                children_x.append(space.encode(params))
                children_y.append(recorder.evaluate(params))
        if not children_x:
            break
        all_x = np.concatenate([pop_x, np.array(children_x)])
        all_y = np.concatenate([pop_y, np.array(children_y)])
        keep = _survivors(all_y, population)
        pop_x, pop_y = all_x[keep], all_y[keep]
    return recorder.result()
