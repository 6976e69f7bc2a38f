"""Zero-shot control of a slimmable multi-task supernet: (FLOPs budget, task preference) -> SubnetConfig.

ECMT (Aich et al., ICCV 2023, Sec. 3.3), without retraining:
  1. decoder capacity follows preference: at decoder level lambda (a menu width),
     task t's decoder width is the smallest menu width >= lambda * p_t / max(p),
     so a more preferred task never gets a narrower decoder;
  2. the encoder width maximizes the preference-weighted validation performance
         score = sum_t p_t * (-1)^{l_t} (M_t - M_ref,t) / M_ref,t
     over the configs whose exact FLOPs fit the budget (M_ref: the max config's
     metrics; p uniform makes this delta_m against the max config); ties go to the
     cheaper config.
The decoder level lambda is, by default (`decoder_level="searched"`), chosen on
validation data jointly with the encoder. With `decoder_level="largest"` it is the
largest menu level at which some encoder width fits the budget, so decoders depend on
preference and budget only and only the encoder is chosen on validation data. Measured
on our supernets (experiments/controllable_mtl), "searched" gave the higher
controllability in all four cases, because "largest" spends budget on decoder width
even where validation data shows that a wider decoder does not help.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence

from effjax.data.specs import TaskSpec
from effjax.subnet import SubnetConfig


def relative_gain(task: TaskSpec, value: float, reference: float) -> float:
    """(-1)^{l_t} (M - M_ref) / |M_ref|: positive when `value` is better than `reference`."""
    if reference == 0:
        raise ValueError(f"reference metric of task {task.name!r} is 0: relative gain undefined")
    sign = 1.0 if task.higher_is_better else -1.0
    return sign * (float(value) - float(reference)) / abs(float(reference))


def normalize_preference(preference, tasks: Sequence[TaskSpec]) -> dict[str, float]:
    """A mapping task -> weight, or a sequence in task order; non-negative, summing to 1 after scaling."""
    names = [t.name for t in tasks]
    if isinstance(preference, Mapping):
        unknown = sorted(set(preference) - set(names))
        if unknown:
            raise ValueError(f"preference: unknown tasks {unknown}; tasks: {names}")
        values = [float(preference.get(n, 0.0)) for n in names]
    else:
        values = [float(v) for v in preference]
        if len(values) != len(names):
            raise ValueError(f"preference: need {len(names)} values (tasks {names}), got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"preference={values}: need finite values >= 0 with a positive sum")
    total = sum(values)
    return {n: v / total for n, v in zip(names, values)}


def preference_decoder_widths(preference: Mapping[str, float], tasks: Sequence[TaskSpec], menu: Sequence[float],
                              level: float) -> tuple[tuple[str, float], ...]:
    """Decoder width per task at decoder level `level`: monotone non-decreasing in the task's preference."""
    menu = sorted(menu)
    top = max(preference.values())
    widths = []
    for t in tasks:
        want = level * preference[t.name] / top
        widths.append((t.name, next((w for w in menu if w >= want - 1e-9), menu[-1])))
    return tuple(sorted(widths))


class TaskMetricTable:
    """Validation metric of each (encoder width, task, decoder width) of a supernet."""

    def __init__(self, tasks: Sequence[TaskSpec], menu: Sequence[float], values: Mapping[tuple[float, str, float], float]):
        self.tasks, self.menu = tuple(tasks), tuple(sorted(menu))
        missing = [(e, t.name, d) for e in self.menu for t in self.tasks for d in self.menu if (e, t.name, d) not in values]
        if missing:
            raise ValueError(f"TaskMetricTable: missing entries, e.g. {missing[:3]}")
        self.values = dict(values)

    @classmethod
    def measure(cls, evaluate: Callable[[SubnetConfig], Mapping[str, float]], tasks: Sequence[TaskSpec],
                menu: Sequence[float]) -> "TaskMetricTable":
        """Fills the table with len(menu)^2 calls of `evaluate` (all decoders at one width)."""
        values = {}
        for e in sorted(menu):
            for d in sorted(menu):
                metrics = evaluate(SubnetConfig(encoder_width=e, decoder_widths=tuple((t.name, d) for t in tasks)))
                values.update({(e, t.name, d): float(metrics[t.name]) for t in tasks})
        return cls(tasks, menu, values)

    def metrics(self, subnet: SubnetConfig) -> dict[str, float]:
        return {t.name: self.values[(subnet.encoder_width, t.name, subnet.decoder_width(t.name))] for t in self.tasks}


@dataclasses.dataclass(frozen=True)
class Selection:
    subnet: SubnetConfig
    flops: float  # exact FLOPs per example of the subnet
    score: float  # preference-weighted relative validation performance vs the max config
    metrics: dict  # validation metric per task


def select_subnet(budget_flops: float, preference, *, tasks: Sequence[TaskSpec], menu: Sequence[float],
                  flops_of: Callable[[SubnetConfig], float], table: TaskMetricTable,
                  reference: Optional[Mapping[str, float]] = None, decoder_level: str = "searched") -> Selection:
    """The subnet for a FLOPs budget and a task preference (see the module docstring)."""
    if decoder_level not in ("largest", "searched"):
        raise ValueError(f"decoder_level={decoder_level!r}: allowed 'largest', 'searched'")
    if not (isinstance(budget_flops, (int, float)) and math.isfinite(budget_flops) and budget_flops > 0):
        raise ValueError(f"budget_flops={budget_flops!r}: must be a finite number > 0")
    pref = normalize_preference(preference, tasks)
    menu = sorted(menu)
    if reference is None:
        reference = table.metrics(SubnetConfig(decoder_widths=tuple((t.name, 1.0) for t in tasks)))
    best, cheapest = None, math.inf
    for level in (menu[::-1] if decoder_level == "largest" else menu):
        if best is not None and decoder_level == "largest":
            break
        decoders = preference_decoder_widths(pref, tasks, menu, level)
        for encoder in menu:
            subnet = SubnetConfig(encoder_width=encoder, decoder_widths=decoders)
            flops = float(flops_of(subnet))
            cheapest = min(cheapest, flops)
            if flops > budget_flops:
                continue
            metrics = table.metrics(subnet)
            score = sum(pref[t.name] * relative_gain(t, metrics[t.name], reference[t.name]) for t in tasks)
            if best is None or (score, -flops) > (best.score, -best.flops):
                best = Selection(subnet, flops, score, metrics)
    if best is None:
        raise ValueError(f"budget_flops={budget_flops:.4g}: below the cheapest config for this preference "
                         f"({cheapest:.4g} FLOPs)")
    return best
