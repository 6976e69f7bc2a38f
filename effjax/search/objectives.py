"""Objectives of a multi-objective search: a name, a direction, and optionally a formula.

An objective with `fn=None` is *modeled*: its value comes from evaluating the user's
function and a Gaussian process learns it. An objective with `fn` given is *computed*:
`fn(params)` is cheap and exact (FLOPs, bits), so the search evaluates it directly for
every candidate instead of modeling it. `ref` is the worst value still of interest and
serves as the hypervolume reference point (inferred from the data every round when None;
see `reference.py`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

DIRECTIONS = ("min", "max")


@dataclasses.dataclass(frozen=True)
class Objective:
    """`Objective(name, direction, fn=None, ref=None)`; direction is "min" or "max"."""

    name: str
    direction: str
    fn: Callable[[dict[str, Any]], float] | None = None
    ref: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Objective name must be a non-empty string, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Objective {self.name!r}: direction must be 'min' or 'max', got {self.direction!r}")
        if self.fn is not None and not callable(self.fn):
            raise ValueError(f"Objective {self.name!r}: fn must be a callable params -> float or None, got {self.fn!r}")
        if self.ref is not None and not math.isfinite(float(self.ref)):
            raise ValueError(f"Objective {self.name!r}: ref must be a finite number or None, got {self.ref!r}")

    @property
    def sign(self) -> float:
        """+1 for maximized objectives, -1 for minimized ones (multiply to maximize)."""
        return 1.0 if self.direction == "max" else -1.0

    @property
    def is_computed(self) -> bool:
        return self.fn is not None


def check_objectives(objectives) -> list[Objective]:
    objectives = list(objectives)
    if not objectives:
        raise ValueError("objectives: need at least one Objective, got an empty list")
    names = set()
    for o in objectives:
        if not isinstance(o, Objective):
            raise ValueError(f"objectives: every entry must be an Objective, got {o!r}")
        if o.name in names:
            raise ValueError(f"objectives: name {o.name!r} appears twice")
        names.add(o.name)
    if all(o.is_computed for o in objectives):
        raise ValueError("objectives: at least one objective must be modeled (fn=None); all of them are computed")
    return objectives
