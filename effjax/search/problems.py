"""Standard multi-objective test problems with reference points and maximum hypervolumes.

All objectives are minimized. Each problem is a callable `params -> {name: value}` over
a `Space` of Float parameters, with a vectorized `evaluate(x)` on raw inputs (n, d),
its `objectives` (carrying the reference point as `ref`), `ref_point` and `max_hv`.

- BraninCurrin (d=2, M=2): Belakaria et al., NeurIPS 2019, "Max-value entropy search
  for multi-objective BO", Appendix; Branin rescaled to [0,1]^2 and Currin's exponential.
- ZDT1, ZDT2, ZDT3 (M=2): Zitzler, Deb & Thiele, Evol. Comput. 8(2), 2000, Eqs. 7-9.
- DTLZ2 (M=2 or 3): Deb, Thiele, Laumanns & Zitzler, 2002, "Scalable test problems for
  evolutionary multi-objective optimization", Section 6.2: f_i from cos/sin of the first
  M-1 inputs, scaled by 1 + g, g = sum_(i >= M) (x_i - 1/2)^2; the front is the unit sphere.
- VehicleSafety (d=5, M=3): Liao et al., 2008, "Multiobjective optimization for crash
  safety design of vehicles using stepwise regression model", the response surfaces as
  collected in Tanabe & Ishibuchi, 2020 (problem RE3-5-4).

Reference points and maximum hypervolumes are those used by BoTorch's test functions.
"""

from __future__ import annotations

import math

import numpy as np

from effjax.search.objectives import Objective
from effjax.search.space import Float, Space


class Problem:
    name: str = ""
    bounds: np.ndarray
    ref_point: np.ndarray
    max_hv: float
    n_objectives: int

    @property
    def dim(self) -> int:
        return len(self.bounds)

    @property
    def space(self) -> Space:
        return Space([Float(f"x{i}", float(lo), float(hi)) for i, (lo, hi) in enumerate(self.bounds)])

    @property
    def objective_names(self) -> list[str]:
        return [f"f{i}" for i in range(self.n_objectives)]

    @property
    def objectives(self) -> list[Objective]:
        return [Objective(n, "min", ref=float(r)) for n, r in zip(self.objective_names, self.ref_point)]

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params_to_x(self, params: dict) -> np.ndarray:
        return np.array([params[f"x{i}"] for i in range(self.dim)], dtype=np.float64)

    def __call__(self, params: dict) -> dict[str, float]:
        y = self.evaluate(self.params_to_x(params)[None])[0]
        return {n: float(v) for n, v in zip(self.objective_names, y)}

    def __repr__(self) -> str:
        return self.name


class BraninCurrin(Problem):
    name = "BraninCurrin"
    n_objectives = 2

    def __init__(self):
        self.bounds = np.array([[0.0, 1.0], [0.0, 1.0]])
        self.ref_point = np.array([18.0, 6.0])
        self.max_hv = 59.36011874867746

    def evaluate(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        u, v = 15.0 * x[:, 0] - 5.0, 15.0 * x[:, 1]
        branin = ((v - 5.1 / (4 * math.pi ** 2) * u ** 2 + 5.0 / math.pi * u - 6.0) ** 2
                  + 10.0 * (1.0 - 1.0 / (8.0 * math.pi)) * np.cos(u) + 10.0)
        a, b = x[:, 0], x[:, 1]
        safe_b = np.where(b > 0, b, 1.0)
        factor = np.where(b > 0, 1.0 - np.exp(-1.0 / (2.0 * safe_b)), 1.0)
        currin = factor * (2300 * a ** 3 + 1900 * a ** 2 + 2092 * a + 60) / (100 * a ** 3 + 500 * a ** 2 + 4 * a + 20)
        return np.stack([branin, currin], axis=1)


class ZDT(Problem):
    """ZDT1, ZDT2 or ZDT3 (variant 1, 2, 3) in d >= 2 dimensions."""

    n_objectives = 2
    _max_hv = {1: 120.0 + 2.0 / 3.0, 2: 120.0 + 1.0 / 3.0, 3: 128.77811613069076}

    def __init__(self, variant: int = 1, dim: int = 6):
        if variant not in (1, 2, 3):
            raise ValueError(f"ZDT: variant must be 1, 2 or 3, got {variant!r}")
        if dim < 2:
            raise ValueError(f"ZDT: dim must be >= 2, got {dim!r}")
        self.variant = variant
        self.name = f"ZDT{variant}"
        self.bounds = np.array([[0.0, 1.0]] * dim)
        self.ref_point = np.array([11.0, 11.0])
        self.max_hv = self._max_hv[variant]

    def evaluate(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        f0 = x[:, 0]
        g = 1.0 + 9.0 * x[:, 1:].mean(axis=1)
        ratio = f0 / g
        if self.variant == 1:
            h = 1.0 - np.sqrt(ratio)
        elif self.variant == 2:
            h = 1.0 - ratio ** 2
        else:
            h = 1.0 - np.sqrt(ratio) - ratio * np.sin(10.0 * math.pi * f0)
        return np.stack([f0, g * h], axis=1)


class DTLZ2(Problem):
    """DTLZ2 with M objectives in d >= M dimensions; front: the positive unit sphere."""

    def __init__(self, dim: int = 6, n_objectives: int = 2):
        if n_objectives < 2 or dim < n_objectives:
            raise ValueError(f"DTLZ2: need 2 <= n_objectives <= dim, got dim={dim}, n_objectives={n_objectives}")
        self.n_objectives = n_objectives
        self.name = f"DTLZ2(d={dim},M={n_objectives})"
        self.bounds = np.array([[0.0, 1.0]] * dim)
        self.ref_point = np.full(n_objectives, 1.1)
        # Box volume minus the volume of the unit-sphere orthant: pi^(M/2) / Gamma(M/2 + 1) / 2^M.
        ball = math.pi ** (n_objectives / 2) / math.gamma(n_objectives / 2 + 1) / 2 ** n_objectives
        self.max_hv = 1.1 ** n_objectives - ball

    def evaluate(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        m = self.n_objectives
        g = np.sum((x[:, m - 1:] - 0.5) ** 2, axis=1)
        angles = x[:, : m - 1] * (math.pi / 2)
        out = []
        for i in range(m):
            f = 1.0 + g
            f = f * np.prod(np.cos(angles[:, : m - 1 - i]), axis=1)
            if i > 0:
                f = f * np.sin(angles[:, m - 1 - i])
            out.append(f)
        return np.stack(out, axis=1)


class VehicleSafety(Problem):
    name = "VehicleSafety"
    n_objectives = 3

    def __init__(self):
        self.bounds = np.array([[1.0, 3.0]] * 5)
        self.ref_point = np.array([1864.72022, 11.81993945, 0.2903999384])
        self.max_hv = 246.81607081187002

    def evaluate(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        x1, x2, x3, x4, x5 = x.T
        mass = 1640.2823 + 2.3573285 * x1 + 2.3220035 * x2 + 4.5688768 * x3 + 7.7213633 * x4 + 4.4559504 * x5
        acceleration = (6.5856 + 1.15 * x1 - 1.0427 * x2 + 0.9738 * x3 + 0.8364 * x4 - 0.3695 * x1 * x4
                        + 0.0861 * x1 * x5 + 0.3628 * x2 * x4 - 0.1106 * x1 ** 2 - 0.3437 * x3 ** 2 + 0.1764 * x4 ** 2)
        intrusion = (-0.0551 + 0.0181 * x1 + 0.1024 * x2 + 0.0421 * x3 - 0.0073 * x1 * x2 + 0.024 * x2 * x3
                     - 0.0118 * x2 * x4 - 0.0204 * x3 * x4 - 0.008 * x3 * x5 - 0.0241 * x2 ** 2 + 0.0109 * x4 ** 2)
        return np.stack([mass, acceleration, intrusion], axis=1)


def get_problem(name: str) -> Problem:
    """Problems by name: braincurrin, zdt1..3, dtlz2 (d=6, M=2), dtlz2_m3 (d=6, M=3), vehiclesafety."""
    table = {
        "branincurrin": BraninCurrin, "zdt1": lambda: ZDT(1), "zdt2": lambda: ZDT(2), "zdt3": lambda: ZDT(3),
        "dtlz2": lambda: DTLZ2(6, 2), "dtlz2_m3": lambda: DTLZ2(6, 3), "vehiclesafety": VehicleSafety,
    }
    key = name.lower()
    if key not in table:
        raise ValueError(f"problem: unknown name {name!r}; known: {sorted(table)}")
    return table[key]()
