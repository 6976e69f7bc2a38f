"""Hypervolume reference points and objective normalization when the user gives none.

Hypervolume-based acquisition (NEHVI) measures improvement inside the box between the
reference point and the front, so where the reference point lies decides which part of
the front the search spends its budget on. Objectives are handled as maximized
(multiplied by their sign). Per objective with no `ref`, with y the observed values
(rows: evaluations) and a margin m:

- "front": nadir of the observed Pareto front minus m times the front's range
  (BoTorch's `infer_reference_point`, Daulton et al., NeurIPS 2020, Section 5 of the
  qEHVI paper). It moves inwards or outwards as the front changes, and the ends of the
  front sit close to it, so their improvements count little.
- "front_relative": nadir of the observed Pareto front minus m times the larger of the
  front's range and the nadir's magnitude: a relative margin, like the "1.1 x nadir"
  reference points of many test problems (Tanabe & Ishibuchi, 2020) and Optuna's
  max(1.1 w, 0.9 w) of the worst value w. An objective whose front is narrow compared with
  its magnitude (mass, FLOPs) gets a reference far out and so weighs less in the
  hypervolume than the objectives that trade off strongly.
- "observed": the worst observed value minus m times the observed range (the policy of
  Optuna's GP sampler: the worst loss of every trial, pushed out by a margin). The
  reference point only moves outwards as data arrive, so the normalization is stable
  across rounds and the extremes of the front keep their weight.
- "alpha_relative", "alpha_front", "alpha_observed": the nadir is taken over the front
  after discarding its alpha-dominated points (alpha-dominance, Ikeda, Kita & Kobayashi,
  "Failure of Pareto-based MOEAs: does non-dominated really mean near to optimal?", CEC
  2001), then the margin is m times, respectively, the larger of the filtered front's range
  and the nadir's magnitude, the filtered front's range, or the observed range.
  Point a alpha-dominates b when a_i - b_i + alpha * sum_{j != i} (a_j - b_j) >= 0 for every
  objective i (> 0 for at least one), in objectives divided by the front's range: b is
  dropped when its advantage over a is at most alpha times what it gives up. With
  alpha = ALPHA = 0.2 this discards points that are barely better in one objective and much
  worse in the others, such as weakly Pareto-optimal points on the boundary of the design
  space that are optimal in one objective only because the others are far from converged;
  left in, they push the nadir, and with it the reference point, far beyond the real
  front. Alpha-dominance is Pareto dominance of the transformed points z = y W with
  W = (1 - alpha) I + alpha 1 1^T, so the filtered front is the Pareto front of z: a
  non-empty subset of the Pareto front (Pareto dominance implies alpha-dominance), which
  may drop the best point of an objective. On a front that is flat towards its ends, like
  DTLZ2's quarter circle, the end points gain much more than they give up against their
  neighbours and are kept (the neighbours may go), so the nadir does not move.
- "payoff_relative", "payoff_alpha": the nadir may also come from the model. A payoff table
  (Benayoun, de Montgolfier, Tergny & Laritchev, "Linear programming with multiple objective
  functions: STEP method (STEM)", Math. Programming 1, 1971) holds, for each objective, the
  point that is best in it; the worst entry per objective estimates the nadir (Isermann &
  Steuer, EJOR 33, 1988, show it can miss it either way, so it is only one part here). The
  table is built over the observations and the surrogate's posterior means at a fixed
  scrambled-Sobol sample of the space (`PAYOFF_SAMPLE` points) and at the maximizers of
  each objective's posterior mean (short L-BFGS-B runs over the continuous dimensions);
  near-ties for the best value (within `PAYOFF_TIE` of that objective's range over the
  pool) go to the point whose other objectives, scaled by their ranges, sum highest, so
  that one of several equal optima with a poor trade-off does not set the nadir. The nadir is the worse of that estimate and the
  observed front's (payoff_relative) or the alpha-filtered front's (payoff_alpha), and the
  margin is front_relative's. An objective whose best observed trade-offs all lie on one side
  (VehicleSafety: the first proposals dominate every design point with a large intrusion, so
  the front's intrusion nadir drops from 0.13 to 0.09 and the part of the front with the lowest
  acceleration and intrusions of 0.17-0.26 lies outside the box) keeps that part in the box as
  soon as the model predicts it.
- "payoff_lex": payoff_relative with each posterior mean maximized in the augmented form
  z_j + rho * sum_{k != j} z_k (rho = PAYOFF_AUGMENT, z in the GP's output scales), the usual
  guard of payoff tables against weakly Pareto-optimal rows (Miettinen, "Nonlinear
  Multiobjective Optimization", Kluwer, 1999): where objective j is flat at its optimum
  (DTLZ2's f1 = 0 on the face x0 = 1 for any value of the other variables) the row is the
  point of that face best in the others, not an arbitrary one far beyond the front.
- "split_front", "split_alpha": payoff_lex with three or more objectives; with two,
  front_relative ("split_front") or alpha_relative ("split_alpha"). With two objectives the
  observed front's nadir is set by its two ends, which the search samples itself, and the
  payoff rows add only the model's errors (DTLZ2: the row best in f2 predicted at f1 = 1.6-1.7
  after the design, true 1.0); with three or more, part of the front can lie beyond the observed
  nadir where only the model sees it (VehicleSafety, above). alpha_relative guards the two-objective
  case against weakly Pareto-optimal boundary points (DTLZ2's faces x0 in {0, 1}, where one
  objective is exactly 0 whatever the distance g from the front): left in the front, they set its
  nadir, and the reference point inferred from it draws the search to the same boundary
  (experiments/search/README.md, fifth round).
- "payoff_ucb": payoff_lex with every predicted value taken at its upper confidence bound,
  mean + PAYOFF_KAPPA standard deviations in the maximized direction: the model moves the
  nadir beyond the observed front only where it is confident that the front extends there
  (early on, when it is not, the reference stays with the observed front).

The default, "split_alpha" with m = 0.1, was chosen by the mean fraction of the maximum
hypervolume reached on BraninCurrin, DTLZ2 and VehicleSafety with no reference point given,
50 evaluations, seeds 0-4, in the fifth of the rounds recorded in experiments/search/README.md
(0.9371 against 0.9177 for "front_relative", the default of rounds 1-4, rerun there; "split_front"
0.9343): it keeps the payoff policies' VehicleSafety figure (about 244, where the front-based
policies stop near 232) without their loss on the two-objective DTLZ2. The figures, per round and
on the report seeds, are in experiments/search/README.md.

Normalization: u = (y - ref) / scale with scale = best observed - ref, so every
objective spans about [0, 1] on the observed data whatever its units (the acquisition's
log-space smoothing temperatures assume that). A degenerate range falls back to the
standard deviation, then to 1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from effjax.search.pareto import non_dominated_mask

POLICIES = ("front", "observed", "front_relative", "alpha_relative", "alpha_front", "alpha_observed",
            "payoff_relative", "payoff_alpha", "payoff_lex", "payoff_ucb", "split_front", "split_alpha")
MODEL_POLICIES = ("payoff_relative", "payoff_alpha", "payoff_lex", "payoff_ucb")  # need the surrogate (`predicted`)
# policies that pick one of the above by the number of objectives: (two objectives, three or more)
SPLIT_POLICIES = {"split_front": ("front_relative", "payoff_lex"), "split_alpha": ("alpha_relative", "payoff_lex")}
ALPHA = 0.2  # trade-off bound of the alpha-dominance filter of the "alpha_*" and "payoff_alpha" policies
PAYOFF_SAMPLE = 512  # scrambled-Sobol configurations at which the payoff policies query the surrogate
PAYOFF_TIE = 0.01  # near-tie tolerance of the payoff table, as a fraction of the objective's range
PAYOFF_STARTS = 3  # L-BFGS-B starts per modeled objective when maximizing its posterior mean for the payoff table
PAYOFF_MAXITER = 50  # iterations of each of those L-BFGS-B runs
PAYOFF_AUGMENT = 0.01  # weight of the other objectives when "payoff_lex" / "payoff_ucb" maximize one posterior mean
PAYOFF_KAPPA = 2.0  # "payoff_ucb": predictions are posterior means + PAYOFF_KAPPA standard deviations (maximized)
DEFAULT_POLICY = "split_alpha"
DEFAULT_MARGIN = 0.1


def check_policy(policy: str, margin: float) -> tuple[str, float]:
    if policy not in POLICIES:
        raise ValueError(f"reference: must be one of {list(POLICIES)}, got {policy!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not np.isfinite(margin) or margin < 0:
        raise ValueError(f"reference_margin: must be a finite number >= 0, got {margin!r}")
    return policy, float(margin)


def resolve_policy(policy: str, n_objectives: int) -> str:
    """The policy that `policy` applies with `n_objectives` objectives (itself unless it is a split policy)."""
    if policy in SPLIT_POLICIES:
        return SPLIT_POLICIES[policy][n_objectives >= 3]
    return policy


def _span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = hi - lo
    return np.where(span > 0, span, np.maximum(np.abs(lo), 1.0))


def alpha_nondominated_mask(y: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Mask of the points of y (n, M), maximized, that no point alpha-dominates.

    Objectives are divided by the Pareto front's range first (a degenerate range by the
    fallback of `_span`), so alpha is a trade-off rate between normalized objectives.
    """
    y = np.asarray(y, dtype=np.float64)
    front = y[non_dominated_mask(y)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    m = y.shape[1]
    w = (1.0 - alpha) * np.eye(m) + alpha * np.ones((m, m))
    return non_dominated_mask((y / _span(lo, hi)) @ w)


def payoff_nadir(values: np.ndarray, tie: float = PAYOFF_TIE) -> np.ndarray:
    """Nadir (M,) estimated by the payoff table of `values` (k, M), maximized.

    Row j of the table is the point best in objective j (near-ties within `tie` times the
    objective's range broken by the range-scaled sum of the other objectives); the estimate
    is each objective's worst entry over the rows.
    """
    values = np.asarray(values, dtype=np.float64)
    lo, hi = values.min(axis=0), values.max(axis=0)
    scaled = (values - lo) / _span(lo, hi)
    rows = []
    for j in range(values.shape[1]):
        near = np.flatnonzero(scaled[:, j] >= scaled[:, j].max() - tie)
        others = scaled[near].sum(axis=1) - scaled[near, j]
        rows.append(values[near[np.argmax(others)]])
    return np.min(rows, axis=0)


def infer_reference_point(y: np.ndarray, given: Sequence[float | None], policy: str = DEFAULT_POLICY,
                          margin: float = DEFAULT_MARGIN, predicted: np.ndarray | None = None) -> np.ndarray:
    """Reference point (M,) for maximized observations y (n, M); `given[i]` (already signed) wins when not None.

    `predicted` (k, M), maximized: the surrogate's means at sample configurations, used (with y)
    by the payoff policies only; without it they fall back to the observations alone.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1, len(given))
    policy = resolve_policy(policy, len(given))
    if policy == "observed":
        pool = y
    elif policy.startswith("alpha_") or policy == "payoff_alpha":
        pool = y[alpha_nondominated_mask(y)]
    else:
        pool = y[non_dominated_mask(y)]
    worst, best = pool.min(axis=0), pool.max(axis=0)
    span = _span(worst, best)
    if policy in MODEL_POLICIES:
        table = y if predicted is None else np.concatenate(
            [y, np.asarray(predicted, dtype=np.float64).reshape(-1, y.shape[1])])
        worst = np.minimum(worst, payoff_nadir(table))
        span = _span(worst, best)
    if policy in ("front_relative", "alpha_relative") + MODEL_POLICIES:
        span = np.maximum(span, np.abs(worst))
    elif policy == "alpha_observed":
        span = _span(y.min(axis=0), y.max(axis=0))
    inferred = worst - margin * span
    return np.array([inferred[i] if g is None else float(g) for i, g in enumerate(given)])


def normalization_scale(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-objective scale (M,): best observed - ref, or a fallback when that is ~0 or negative."""
    y = np.asarray(y, dtype=np.float64)
    scale = y.max(axis=0) - ref
    std = y.std(axis=0)
    fallback = np.where(std > 0, std, 1.0)
    return np.where(scale > 1e-12 * np.maximum(1.0, np.abs(ref)), scale, fallback)


def describe(policy: str = DEFAULT_POLICY, margin: float = DEFAULT_MARGIN) -> str:
    """One sentence stating a reference-point policy, for reports."""
    policy, margin = check_policy(policy, margin)
    m = f"{margin:.0%}"
    if policy in SPLIT_POLICIES:
        two, more = (_what(p).format(m=m) for p in SPLIT_POLICIES[policy])
        what = f", with three or more objectives, {more}; with two objectives, {two};"
    else:
        what = f" {_what(policy).format(m=m)},"
    return f"Objectives without a reference point use{what} re-inferred every round (policy {policy!r})."


def _what(policy: str) -> str:
    alpha_front = f"the nadir of the observed Pareto front without its alpha-dominated points (alpha {ALPHA:g})"
    worse = "the worse of the observed Pareto front's nadir and a payoff-table nadir over the observations and the model's"
    lex = "each objective optimized with a small weight on the others"
    relative = "minus {m} of the larger of the range and the nadir's magnitude"
    return {"front": "the nadir of the observed Pareto front minus {m} of the front's range",
            "front_relative": "the nadir of the observed Pareto front minus {m} of the larger of the front's "
                              "range and the nadir's magnitude",
            "observed": "the worst observed value minus {m} of the observed range",
            "alpha_relative": f"{alpha_front} minus {{m}} of the larger of that front's range and the nadir's magnitude",
            "alpha_front": f"{alpha_front} minus {{m}} of that front's range",
            "alpha_observed": f"{alpha_front} minus {{m}} of the observed range",
            "payoff_relative": f"{worse} predictions, {relative}",
            "payoff_lex": f"{worse} predictions ({lex}), {relative}",
            "payoff_ucb": f"{worse} optimistic predictions (mean + {PAYOFF_KAPPA:g} standard deviations; {lex}), {relative}",
            "payoff_alpha": f"the worse of {alpha_front} and a payoff-table nadir over the observations and the model's "
                            f"predictions, {relative}"}[policy]
