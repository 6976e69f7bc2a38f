"""Multi-task metrics for controllable subnets: delta_m, controllability, hypervolume.

- Multi-task gain (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021, Eq. 12):
    delta_m = 100/T * sum_t (-1)^{l_t} (M_t - M_single,t) / M_single,t,
  l_t = 1 when lower is better (depth RMSE), in percent.
- Controllability (ECMT, Aich et al., ICCV 2023): the Spearman rank correlation
  between a task's preference and its performance (sign-flipped for lower-is-better
  metrics) over a preference sweep at a fixed budget; averaged over the swept tasks.
- Hypervolume of (FLOPs, performance) points over a budget sweep: the search module's
  exact `hypervolume`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from effjax.compress.control import relative_gain
from effjax.data.specs import TaskSpec

__all__ = ["controllability", "delta_m", "hypervolume", "oriented", "relative_gain"]


def oriented(task: TaskSpec, value: float) -> float:
    """The metric with higher-is-better orientation."""
    return float(value) if task.higher_is_better else -float(value)


def delta_m(metrics: Mapping[str, float], single_task: Mapping[str, float], tasks: Sequence[TaskSpec]) -> float:
    """Multi-task gain in percent over single-task baselines (positive = better than single-task)."""
    missing = [t.name for t in tasks if t.name not in metrics or t.name not in single_task]
    if missing:
        raise ValueError(f"delta_m: metrics or single-task baselines missing for tasks {missing}")
    return 100.0 * float(np.mean([relative_gain(t, metrics[t.name], single_task[t.name]) for t in tasks]))


def controllability(preferences: Sequence[float], performances: Sequence[float]) -> float:
    """Spearman rank correlation between preference and (higher-is-better) performance.

    A performance that does not vary over the sweep has no rank order: 0 is returned.
    """
    p, y = np.asarray(preferences, np.float64), np.asarray(performances, np.float64)
    if p.shape != y.shape or p.ndim != 1 or len(p) < 2:
        raise ValueError(f"controllability: need two equal-length 1-D sequences of >= 2 values, got {p.shape}, {y.shape}")
    if np.ptp(y) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(stats.spearmanr(p, y).statistic)


def hypervolume(points, ref_point, directions: Sequence[str] = ("min", "max")) -> float:
    """The volume dominated by `points` and bounded by `ref_point` (`effjax.search.hypervolume`, any number of
    objectives); directions "min"/"max" per axis."""
    from effjax.search.hypervolume import hypervolume as search_hypervolume

    return float(search_hypervolume(np.asarray(points, np.float64), ref_point, list(directions)))
