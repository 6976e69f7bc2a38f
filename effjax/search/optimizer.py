"""Ask/tell multi-objective Bayesian optimization, and the `optimize` loop on top of it.

Each `ask` (after a scrambled-Sobol initial design) fits one GP per modeled objective
(`gp.py`), builds qLogNEHVI (`acquisition.py`) over every evaluated and pending
configuration, and maximizes it (`acquisition_optimizer.py`). A batch of q proposals is
built sequentially greedily (Daulton et al., NeurIPS 2021, Section 5): each chosen point
joins the baseline as a pending point, whose unknown outcome NEHVI integrates over, before
the next one is chosen. The random state of every proposal is derived from the seed and
the number of evaluations so far, so a resumed search proposes what the original would
have proposed.

The hypervolume reference point is each objective's `ref` when given; otherwise it is
re-inferred every round from the observations (`reference.py`: by default, with two
objectives, the nadir of the observed front without its alpha-dominated points minus 10% of
the larger of that front's range and the nadir's magnitude; with three or more, the worse of
the observed front's nadir and a payoff-table nadir that also uses the model's predictions,
minus the same relative margin).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import scipy.stats
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from effjax.search import storage
from effjax.search.acquisition import QLogNEHVI
from effjax.search.acquisition_optimizer import (CandidatePool, lbfgs_masked, maximize_continuous, maximize_discrete,
                                                  maximize_mixed)
from effjax.search.gp import fit_gp, padded_size
from effjax.search.hypervolume import hypervolume
from effjax.search.objectives import Objective, check_objectives
from effjax.search.pareto import non_dominated_mask
from effjax.search.reference import (DEFAULT_MARGIN, DEFAULT_POLICY, MODEL_POLICIES, PAYOFF_AUGMENT, PAYOFF_KAPPA,
                                     PAYOFF_MAXITER, PAYOFF_SAMPLE, PAYOFF_STARTS, check_policy, infer_reference_point,
                                     normalization_scale, resolve_policy)
from effjax.search.space import Params, Space

MAX_ENUMERATE = 4096
MAX_PRESIZED = 128  # larger budgets start small and grow the arrays by powers of two


@dataclasses.dataclass(frozen=True)
class Trial:
    """A proposed configuration awaiting its objective values."""

    id: int
    params: dict


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """An evaluated configuration: `values` maps every objective name to a float."""

    id: int
    params: dict
    values: dict


@dataclasses.dataclass
class SearchResult:
    """`history`: every evaluation in the order told; `pareto`: its non-dominated subset."""

    history: list[Evaluation]
    pareto: list[Evaluation]
    objectives: list[Objective]
    proposal_seconds: list[float] = dataclasses.field(default_factory=list)

    def hypervolume(self, ref_point: Sequence[float] | None = None) -> float:
        """Hypervolume of the history (ref_point defaults to each objective's `ref`)."""
        if ref_point is None:
            if any(o.ref is None for o in self.objectives):
                raise ValueError("hypervolume: pass ref_point, or give every Objective a ref")
            ref_point = [o.ref for o in self.objectives]
        points = [[e.values[o.name] for o in self.objectives] for e in self.history]
        return hypervolume(np.array(points).reshape(-1, len(self.objectives)), ref_point,
                           [o.direction for o in self.objectives])


def pareto_subset(evaluations: Sequence[Evaluation], objectives: Sequence[Objective]) -> list[Evaluation]:
    if not evaluations:
        return []
    signs = np.array([o.sign for o in objectives])
    y = np.array([[e.values[o.name] for o in objectives] for e in evaluations]) * signs
    mask = non_dominated_mask(y)
    return [e for e, keep in zip(evaluations, mask) if keep]


class Optimizer:
    """Ask/tell multi-objective BO over `space`.

    Args:
      space: the search space (with its constraints).
      objectives: `Objective`s; those with `fn` are computed, the others modeled.
      seed: makes every proposal deterministic given the evaluations told so far.
      workdir: if given, evaluations are appended to `workdir/evaluations.jsonl` as they are
        told, and earlier ones found there are loaded (resume).
      n_initial: size of the scrambled-Sobol initial design (default 2 * (parameters + 1)).
      n_samples, n_raw, n_restarts: quasi-MC samples of the acquisition, raw points and
        L-BFGS-B starts of its optimization.
      initial_params: configurations to evaluate first, ahead of the Sobol points (e.g. the
        known best-accuracy corner of a space, the full supernet); they count towards n_initial.
      expected_evaluations: how many evaluations the search will make (`optimize` passes its
        budget). Up to MAX_PRESIZED, the model's arrays are sized for that many points from
        the first proposal on, so the compiled acquisition keeps one shape for the whole run
        instead of being recompiled each time the data cross a power of two.
      reference, reference_margin: how the hypervolume reference point of objectives without
        `ref` is inferred, re-inferred every round (one of `reference.POLICIES`;
        see `reference.py`, which also records how the default was chosen).
    """

    def __init__(self, space: Space, objectives: Sequence[Objective], seed: int = 0, workdir: str | None = None,
                 n_initial: int | None = None, n_samples: int = 128, n_raw: int = 512, n_restarts: int = 10,
                 expected_evaluations: int | None = None, initial_params: Sequence[Params] = (),
                 reference: str = DEFAULT_POLICY, reference_margin: float = DEFAULT_MARGIN):
        if not isinstance(space, Space):
            raise ValueError(f"space: expected a Space, got {type(space).__name__}")
        self.space = space
        self.objectives = check_objectives(objectives)
        self.modeled = [o for o in self.objectives if not o.is_computed]
        self.computed = [o for o in self.objectives if o.is_computed]
        self.seed = int(seed)
        self.n_initial = max(1, int(n_initial)) if n_initial is not None else 2 * (len(space.params) + 1)
        self.n_samples, self.n_raw, self.n_restarts = n_samples, n_raw, n_restarts
        self.reference, self.reference_margin = check_policy(reference, reference_margin)
        self._policy = resolve_policy(self.reference, len(self.objectives))  # what a split policy applies here
        self.initial_params = [space.validate(dict(p)) for p in initial_params]
        infeasible = [p for p in self.initial_params if not space.is_feasible(p)]
        if infeasible:
            raise ValueError(f"initial_params: {infeasible[0]} violates the space's constraints")
        if expected_evaluations is not None and (int(expected_evaluations) != expected_evaluations or expected_evaluations < 1):
            raise ValueError(f"expected_evaluations: must be an integer >= 1 or None, got {expected_evaluations!r}")
        presize = expected_evaluations is not None and expected_evaluations <= MAX_PRESIZED
        self._min_pad = padded_size(int(expected_evaluations)) if presize else padded_size(1)
        self.workdir = workdir
        self._history: list[Evaluation] = []
        self._pending: dict[int, Trial] = {}
        self._next_id = 0
        self._computed_cache: dict[tuple, np.ndarray] = {}
        self._design: list[Params] | None = None
        self._payoff_sample: tuple[np.ndarray, np.ndarray] | None = None
        self._pool: CandidatePool | None = None
        self.proposal_seconds: list[float] = []
        if workdir is not None:
            storage.check_search_file(workdir, {"space": self.space.describe(), "objectives": [
                [o.name, o.direction, o.is_computed] for o in self.objectives]})
            for record in storage.read_evaluations(workdir):
                self._record(record.get("id"), record["params"], record["values"], persist=False)

    # ----- public API -----------------------------------------------------------------

    @property
    def history(self) -> list[Evaluation]:
        return list(self._history)

    @property
    def pareto(self) -> list[Evaluation]:
        return pareto_subset(self._history, self.objectives)

    @property
    def pending(self) -> list[Trial]:
        return list(self._pending.values())

    def result(self) -> SearchResult:
        return SearchResult(self.history, self.pareto, list(self.objectives), list(self.proposal_seconds))

    def ask(self, n: int = 1) -> list[Trial]:
        """Proposes up to `n` new feasible configurations (fewer only if a discrete space runs out)."""
        if int(n) != n or n < 1:
            raise ValueError(f"ask: n must be an integer >= 1, got {n!r}")
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            trials = self._ask(int(n))
        self.proposal_seconds.append(time.perf_counter() - start)
        return trials

    def _ask(self, n: int) -> list[Trial]:
        trials: list[Trial] = []
        rng = np.random.default_rng([self.seed, len(self._history) + len(self._pending)])
        fitted = None
        for _ in range(n):
            params = self._next_design_point()
            if params is None:
                if fitted is None:
                    fitted = self._fit()
                params = self._propose(fitted, rng)
            if params is None:
                break
            trial = Trial(self._next_id, params)
            self._next_id += 1
            self._pending[trial.id] = trial
            trials.append(trial)
        return trials

    def tell(self, trial: Trial | int, values: dict[str, Any]) -> Evaluation:
        """Records the objective values of an asked trial (or of its id)."""
        trial_id = trial.id if isinstance(trial, Trial) else trial
        if trial_id not in self._pending:
            raise ValueError(f"tell: trial id {trial_id!r} is not pending (ask for it first; each trial is told once)")
        params = self._pending.pop(trial_id).params
        return self._record(trial_id, params, values, persist=True)

    # ----- bookkeeping -----------------------------------------------------------------

    def _record(self, trial_id, params: dict, values: dict, persist: bool) -> Evaluation:
        params = self.space.validate(params)
        if not isinstance(values, dict):
            raise ValueError(f"objective values must be a dict of {[o.name for o in self.modeled]}, got {type(values).__name__}")
        clean = {}
        computed = self._computed_values(params)
        for o in self.objectives:
            if o.is_computed:
                clean[o.name] = float(computed[self.computed.index(o)])
                continue
            if o.name not in values:
                raise ValueError(f"fn returned no value for objective {o.name!r}; it must return a dict with keys "
                                 f"{[m.name for m in self.modeled]}, got keys {sorted(values)}")
            try:
                v = float(values[o.name])
            except (TypeError, ValueError):
                raise ValueError(f"objective {o.name!r}: value {values[o.name]!r} is not a number") from None
            if not math.isfinite(v):
                raise ValueError(f"objective {o.name!r}: value is {v} for params {params}; values must be finite floats")
            clean[o.name] = v
        if trial_id is None:
            trial_id = self._next_id
        evaluation = Evaluation(int(trial_id), params, clean)
        if persist and self.workdir is not None:
            storage.append_evaluation(self.workdir, {"id": evaluation.id, "params": params, "values": clean})
        self._history.append(evaluation)
        self._next_id = max(self._next_id, evaluation.id + 1)
        return evaluation

    def _computed_values(self, params: Params) -> np.ndarray:
        if not self.computed:
            return np.zeros(0)
        key = self.space.key(params)
        if key not in self._computed_cache:
            values = []
            for o in self.computed:
                v = float(o.fn(params))
                if not math.isfinite(v):
                    raise ValueError(f"computed objective {o.name!r}: fn returned {v} for params {params}; must be finite")
                values.append(v)
            self._computed_cache[key] = np.array(values)
        return self._computed_cache[key]

    def _seen_keys(self) -> set:
        return {self.space.key(e.params) for e in self._history} | {self.space.key(t.params) for t in self._pending.values()}

    def _next_design_point(self) -> Params | None:
        if len(self._history) + len(self._pending) >= self.n_initial and self._history:
            return None
        if self._design is None:
            self._design = self._initial_design()
        seen = self._seen_keys()
        return next((dict(p) for p in self._design if self.space.key(p) not in seen), None)

    def _initial_design(self) -> list[Params]:
        """`initial_params`, then scrambled Sobol points, rounded, feasible and distinct."""
        sobol = scipy.stats.qmc.Sobol(d=self.space.dim, scramble=True, rng=self.seed)
        design, keys = [], set()
        for p in self.initial_params:
            if self.space.key(p) not in keys:
                design.append(p)
                keys.add(self.space.key(p))
        for _ in range(8):
            for x in sobol.random(1 << max(6, (4 * self.n_initial - 1).bit_length())):
                p = self.space.decode(x)
                k = self.space.key(p)
                if k not in keys and self.space.is_feasible(p):
                    design.append(p)
                    keys.add(k)
                if len(design) >= self.n_initial + 32:  # spare points for asks made before any tell
                    return design
        if not design:
            raise ValueError("constraints: no feasible configuration found among 2048+ quasi-random draws of the space")
        return design

    # ----- Bayesian optimization -------------------------------------------------------

    def _fit(self) -> dict:
        """GP fit and the objective normalization shared by the proposals of one ask."""
        evals = self._history
        x = self.space.encode_many([e.params for e in evals])
        y_modeled = np.array([[e.values[o.name] for o in self.modeled] for e in evals])
        gp = fit_gp(x, y_modeled, min_pad=self._min_pad)
        ordered = self.modeled + self.computed
        signs = np.array([o.sign for o in ordered])
        y = np.array([[e.values[o.name] for o in ordered] for e in evals]) * signs
        given = [o.sign * o.ref if o.ref is not None else None for o in ordered]
        predicted = None
        if self._policy in MODEL_POLICIES and None in given:
            predicted = self._payoff_predictions(gp, signs, *self._payoff_settings())
        ref = infer_reference_point(y, given, self._policy, self.reference_margin, predicted)
        scale = normalization_scale(y, ref)
        mm = len(self.modeled)
        sign_m, ref_m, scale_m = signs[:mm], ref[:mm], scale[:mm]
        return {"gp": gp, "ref": ref, "scale": scale,
                "offset": (sign_m * gp.y_mean - ref_m) / scale_m, "slope": sign_m * gp.y_std / scale_m}

    def _payoff_settings(self) -> tuple[float, float]:
        """(augment, kappa) of the payoff table under this optimizer's reference policy."""
        lex = self._policy in ("payoff_lex", "payoff_ucb")
        return PAYOFF_AUGMENT if lex else 0.0, PAYOFF_KAPPA if self._policy == "payoff_ucb" else 0.0

    def _payoff_predictions(self, gp, signs: np.ndarray, augment: float = 0.0, kappa: float = 0.0) -> np.ndarray:
        """Maximized objective values (k, M) for the payoff table of `reference.payoff_nadir`.

        At a fixed Sobol sample of the space, then at the ends of short L-BFGS-B runs that
        maximize each modeled objective's (signed) posterior mean over the continuous
        dimensions, started from that objective's best PAYOFF_STARTS sample points (the extreme
        of an objective often sits on the boundary, where a random sample rarely comes close).
        With `augment` > 0 the runs maximize z_j + augment * sum_{k != j} z_k, z the signed
        means over the GP's output scales (the augmented, near-lexicographic form), so an
        optimum of z_j that is flat in the design, like DTLZ2's f1 = 0 on the whole face
        x0 = 1, is not taken at a point that is poor in the others.
        Modeled objectives are posterior means plus `kappa` posterior standard deviations in the
        maximized direction (an upper confidence bound: the model pushes the nadir out only as
        far as it is confident), computed ones exact.
        """
        if self._payoff_sample is None:
            sobol = scipy.stats.qmc.Sobol(d=self.space.dim, scramble=True, rng=self.seed + 7919)
            params = [self.space.decode(x) for x in sobol.random(PAYOFF_SAMPLE)]
            params = [p for p in params if self.space.is_feasible(p)]
            self._payoff_sample = (self.space.encode_many(params), self._computed_many(params))
        x, computed = self._payoff_sample
        if len(x) == 0:
            return np.zeros((0, len(signs)))
        mean, var = gp.posterior(x)
        mm = len(self.modeled)

        def optimistic(mean, var):
            return mean + kappa * signs[:mm] * np.sqrt(var) if kappa else mean

        rows = [np.concatenate([optimistic(mean, var), computed], axis=1)]
        if self.space.continuous.any():
            for j in range(mm):
                # weights on the modeled means: y_std[j] * (z_j + augment * sum_{k != j} z_k), z_k = sign_k mean_k / y_std[k]
                w = augment * signs[:mm] * gp.y_std[j] / gp.y_std
                w[j] = signs[j]
                starts = x[np.argsort(-(mean @ w), kind="stable")[:PAYOFF_STARTS]]

                def weighted_mean(points, w=w):
                    value, grad = 0.0, 0.0
                    for k in np.flatnonzero(w):
                        v, g = gp.mean_and_grad(int(k), points)
                        value, grad = value + w[k] * float(np.sum(v)), grad + w[k] * g
                    return value, grad

                ends = lbfgs_masked(weighted_mean, starts, self.space.continuous, PAYOFF_MAXITER)
                params = [p for p in map(self.space.decode, ends) if self.space.is_feasible(p)]
                if params:
                    rows.append(np.concatenate([optimistic(*gp.posterior(self.space.encode_many(params))),
                                                self._computed_many(params)], axis=1))
        return np.concatenate(rows) * signs

    def _computed_many(self, params_list: Sequence[Params]) -> np.ndarray:
        return np.array([self._computed_values(p) for p in params_list]).reshape(len(params_list), len(self.computed))

    def _computed_u(self, fitted: dict, params_list: Sequence[Params]) -> np.ndarray:
        """Normalized values u (n, Mc) of the computed objectives."""
        mm = len(self.modeled)
        signs = np.array([o.sign for o in self.computed])
        return (signs * self._computed_many(params_list) - fitted["ref"][mm:]) / fitted["scale"][mm:]

    def _propose(self, fitted: dict, rng: np.random.Generator) -> Params | None:
        gp = fitted["gp"]
        pending = [t.params for t in self._pending.values()]
        x_baseline = np.concatenate([gp.x_train, self.space.encode_many(pending)]) if pending else gp.x_train
        baseline_params = [self.space.decode(x) for x in gp.x_train] + pending
        acq = QLogNEHVI(gp, x_baseline, self._computed_u(fitted, baseline_params), fitted["offset"], fitted["slope"],
                        q=1, n_samples=self.n_samples, seed=int(rng.integers(2**31)))
        computed = (lambda ps: self._computed_u(fitted, ps)) if self.computed else None  # noqa: E731
        exclude = self._seen_keys()
        pareto_params = [e.params for e in self.pareto]
        if self.space.is_discrete:
            if self._pool is None and self.space.cardinality <= MAX_ENUMERATE:
                self._pool = CandidatePool(self.space)
            params, _ = maximize_discrete(acq, self.space, rng, computed, exclude, pareto_params, self._pool)
        elif any(p.is_discrete for p in self.space.params):
            params, _ = maximize_mixed(acq, self.space, rng, computed, exclude, pareto_params,
                                       n_raw=self.n_raw, n_restarts=self.n_restarts)
        else:
            incumbents = self.space.encode_many(pareto_params)
            params, _ = maximize_continuous(acq, self.space, rng, computed, exclude, incumbents,
                                            n_raw=self.n_raw, n_restarts=self.n_restarts)
        return params


def optimize(fn: Callable[[dict], dict], space: Space, objectives: Sequence[Objective], budget: int, seed: int = 0,
             workdir: str | None = None, batch_size: int = 1, progress: bool = True, n_initial: int | None = None,
             initial_params: Sequence[Params] = (), reference: str = DEFAULT_POLICY,
             reference_margin: float = DEFAULT_MARGIN) -> SearchResult:
    """Evaluates `fn(params) -> {objective: value}` `budget` times (in total, counting
    evaluations resumed from `workdir`) and returns the history and its Pareto set.

    Proposals come `batch_size` at a time (qLogNEHVI, sequential greedy), after a
    scrambled-Sobol initial design of `n_initial` points (default: min(2 (d + 1), budget // 3),
    at least 2), which starts with `initial_params` when given. Computed objectives (`Objective(..., fn=...)`) need not be returned by `fn`.
    `reference` / `reference_margin`: the reference-point policy for objectives without `ref` (see `Optimizer`).
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable params -> dict of objective values, got {fn!r}")
    for name, value in (("budget", budget), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    budget, batch_size = int(budget), int(batch_size)
    if n_initial is None and isinstance(space, Space):
        n_initial = min(2 * (len(space.params) + 1), max(2, budget // 3))
    opt = Optimizer(space, objectives, seed=seed, workdir=workdir, n_initial=n_initial, expected_evaluations=budget,
                    initial_params=initial_params, reference=reference, reference_margin=reference_margin)
    with tqdm(total=budget, initial=min(len(opt.history), budget), disable=not progress, desc="search",
              unit="eval") as bar:
        while len(opt.history) < budget:
            trials = opt.ask(min(batch_size, budget - len(opt.history)))
            if not trials:
                break  # a discrete space with every feasible configuration evaluated
            for trial in trials:
                values = fn(dict(trial.params))
                opt.tell(trial, values)
                bar.update(1)
    return opt.result()
