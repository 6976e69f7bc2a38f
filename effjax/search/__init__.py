"""Multi-objective Bayesian optimization over declared search spaces.

Optimizes any Python callable `fn(params) -> {objective: value}`; it knows nothing of
neural networks. Modules, one job each:

  space.py                 Float / Int / Ordinal / Categorical parameters, constraints, unit-cube encoding
  objectives.py            Objective(name, direction, fn=None, ref=None): modeled or computed objectives
  pareto.py                Pareto filtering
  reference.py             reference points inferred when objectives give none, and objective normalization
  hypervolume.py           exact hypervolume (HSO slicing; O(n log n) for 2 objectives)
  box_decomposition.py     exact disjoint-box decompositions of (non-)dominated regions
  gp.py                    exact Matern-5/2 GPs in float64 JAX, MAP hyperparameters, robust Cholesky
  acquisition.py           qLogNEHVI (Daulton et al. 2021; Ament et al. 2023)
  acquisition_optimizer.py multi-start L-BFGS-B (continuous), alternating continuous / lattice moves (mixed),
                           or discrete enumeration / local search
  optimizer.py             ask/tell Optimizer with resumable evaluations.jsonl, and `optimize`
  problems.py              BraninCurrin, ZDT1-3, DTLZ2, VehicleSafety, CompressionMixed with reference points and max hypervolumes
  nsga2.py                 NSGA-II and scrambled-Sobol baselines (for benchmarks)

All GP and acquisition arithmetic runs in float64 inside `jax.enable_x64(True)` scopes;
the global `jax_enable_x64` flag is never changed.

Example:
    space = Space([Float("lr", 1e-4, 1e-1, log=True), Ordinal("width", [0.25, 0.5, 1.0])])
    result = optimize(fn, space, [Objective("acc", "max"), Objective("flops", "min", fn=flops)], budget=30)
    result.pareto  # [Evaluation(id, params, values), ...]
"""

from effjax.search.hypervolume import hypervolume
from effjax.search.objectives import Objective
from effjax.search.optimizer import Evaluation, Optimizer, SearchResult, Trial, optimize
from effjax.search.pareto import non_dominated_mask, pareto_front
from effjax.search.space import Categorical, Float, Int, Ordinal, Space

__all__ = [
    "Categorical", "Evaluation", "Float", "Int", "Objective", "Optimizer", "Ordinal", "SearchResult", "Space",
    "Trial", "hypervolume", "non_dominated_mask", "optimize", "pareto_front",
]
