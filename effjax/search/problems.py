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

- CompressionMixed (2 Int, 1 Categorical, 2 Float; M=2): our own, shaped like a
  compression search (depth, width, block type, pruning keep ratio, learning rate); see
  the class. Its maximum hypervolume is brute-forced (`CompressionMixed.brute_force_max_hv`).

Reference points and maximum hypervolumes of the standard problems are those used by
BoTorch's test functions.
"""

from __future__ import annotations

import math

import numpy as np

from effjax.search.objectives import Objective
from effjax.search.space import Categorical, Float, Int, Space


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
    bounds = np.array([[0.0, 1.0], [0.0, 1.0]])
    ref_point = np.array([18.0, 6.0])
    max_hv = 59.36011874867746

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
            f = (1.0 + g) * np.prod(np.cos(angles[:, : m - 1 - i]), axis=1)
            if i > 0:
                f = f * np.sin(angles[:, m - 1 - i])
            out.append(f)
        return np.stack(out, axis=1)


class VehicleSafety(Problem):
    name = "VehicleSafety"
    n_objectives = 3
    bounds = np.array([[1.0, 3.0]] * 5)
    ref_point = np.array([1864.72022, 11.81993945, 0.2903999384])
    max_hv = 246.81607081187002

    def evaluate(self, x):
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        x1, x2, x3, x4, x5 = x.T
        mass = 1640.2823 + 2.3573285 * x1 + 2.3220035 * x2 + 4.5688768 * x3 + 7.7213633 * x4 + 4.4559504 * x5
        acceleration = (6.5856 + 1.15 * x1 - 1.0427 * x2 + 0.9738 * x3 + 0.8364 * x4 - 0.3695 * x1 * x4
                        + 0.0861 * x1 * x5 + 0.3628 * x2 * x4 - 0.1106 * x1 ** 2 - 0.3437 * x3 ** 2 + 0.1764 * x4 ** 2)
        intrusion = (-0.0551 + 0.0181 * x1 + 0.1024 * x2 + 0.0421 * x3 - 0.0073 * x1 * x2 + 0.024 * x2 * x3
                     - 0.0118 * x2 * x4 - 0.0204 * x3 * x4 - 0.008 * x3 * x5 - 0.0241 * x2 ** 2 + 0.0109 * x4 ** 2)
        return np.stack([mass, acceleration, intrusion], axis=1)


class CompressionMixed(Problem):
    """A synthetic compression search with integer, categorical and continuous knobs.

    Knobs: depth (Int 2-12), width (Int 1-8, in units of channels), block (Categorical
    conv / mbconv / attention), keep (Float 0.2-1, pruning keep ratio), lr (Float 1e-4 to
    1e-1, log). Objectives, both minimized:

      error = 0.05 + 0.9 exp(-c / 10) + 0.3 (1 - keep)^2 (1 + 2 / width) + 0.15 (log10 lr - l*)^2,
      cost  = k_b keep depth width^2 / 100 + 0.02,

    with capacity c = depth width sqrt(keep) e_b, block efficiencies e_conv = 1,
    e_mbconv = 1.4 width / (width + 2) (weak when narrow), e_attention = 3 depth / (depth + 8)
    (strong when deep), block costs k_conv = 1, k_mbconv = 0.6, k_attention = 1.2 + 0.1 depth,
    and a best learning rate l* = -2 - 0.1 (depth - 2) + {0.4, 0, -0.7}_b that depends on the
    discrete knobs. Every block type is on the Pareto front (conv and mbconv at low cost,
    attention at low error), so the categorical knob matters and is not ordered.

    Maximum hypervolume: lr enters only the error, through a square that vanishes at l*
    (inside the lr range for every depth and block), so the front is the union over the 264
    discrete configurations of the keep curves at lr = 10^l*; `brute_force_max_hv` scores each
    on a grid of keep values (4001 points: 1.05 million candidates). The figure below is that
    grid's hypervolume (a lower bound; 1001 points give 4.6e-5 less).
    """

    name = "CompressionMixed"
    n_objectives = 2
    blocks = ("conv", "mbconv", "attention")
    depths = (2, 12)
    widths = (1, 8)
    keeps = (0.2, 1.0)
    log10_lrs = (-4.0, -1.0)
    bounds = np.array([depths, widths, (0, len(blocks) - 1), keeps, log10_lrs], float)
    ref_point = np.array([1.0, 2.0])
    max_hv = 1.7366346002064368

    @property
    def space(self) -> Space:
        return Space([Int("depth", *self.depths), Int("width", *self.widths), Categorical("block", self.blocks),
                      Float("keep", *self.keeps), Float("lr", 10 ** self.log10_lrs[0], 10 ** self.log10_lrs[1], log=True)])

    @property
    def objective_names(self) -> list[str]:
        return ["error", "cost"]

    def params_to_x(self, params: dict) -> np.ndarray:
        return np.array([params["depth"], params["width"], self.blocks.index(params["block"]), params["keep"],
                         math.log10(params["lr"])], dtype=np.float64)

    @staticmethod
    def best_log10_lr(depth, block):
        return -2.0 - 0.1 * (depth - 2) + np.choose(block, [0.4, 0.0, -0.7])

    def evaluate(self, x):
        """Objectives of raw inputs (n, 5): depth, width, block index, keep, log10(lr)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        depth, width, keep, log_lr = x[:, 0], x[:, 1], x[:, 3], x[:, 4]
        block = x[:, 2].astype(int)
        efficiency = np.choose(block, [np.ones_like(depth), 1.4 * width / (width + 2.0), 3.0 * depth / (depth + 8.0)])
        capacity = depth * width * np.sqrt(keep) * efficiency
        error = (0.05 + 0.9 * np.exp(-capacity / 10.0) + 0.3 * (1.0 - keep) ** 2 * (1.0 + 2.0 / width)
                 + 0.15 * (log_lr - self.best_log10_lr(depth, block)) ** 2)
        block_cost = np.choose(block, [np.ones_like(depth), np.full_like(depth, 0.6), 1.2 + 0.1 * depth])
        cost = block_cost * keep * depth * width ** 2 / 100.0 + 0.02
        return np.stack([error, cost], axis=1)

    def brute_force_max_hv(self, n_keep: int = 4001) -> float:
        """Hypervolume of every discrete configuration at its best lr on a grid of n_keep keep values."""
        from effjax.search.hypervolume import hypervolume

        return hypervolume(self.brute_force_front(n_keep)[1], self.ref_point)

    def brute_force_front(self, n_keep: int = 4001) -> tuple[np.ndarray, np.ndarray]:
        """Raw inputs (n, 5) and objectives (n, 2) of the non-dominated grid points (see `brute_force_max_hv`)."""
        grid = np.array(np.meshgrid(np.arange(self.depths[0], self.depths[1] + 1),
                                    np.arange(self.widths[0], self.widths[1] + 1),
                                    np.arange(len(self.blocks)), indexing="ij")).reshape(3, -1).T.astype(np.float64)
        keep = np.linspace(*self.keeps, n_keep)
        n = len(grid)
        x = np.empty((n, n_keep, 5))
        x[..., :3] = grid[:, None, :]
        x[..., 3] = keep[None, :]
        x[..., 4] = self.best_log10_lr(grid[:, 0], grid[:, 2].astype(int))[:, None]
        x = x.reshape(-1, 5)
        y = self.evaluate(x)
        order = np.lexsort((y[:, 1], y[:, 0]))  # by error, then cost
        best_cost = np.minimum.accumulate(y[order, 1])
        front = order[np.r_[True, y[order[1:], 1] < best_cost[:-1]]]
        return x[front], y[front]


def get_problem(name: str) -> Problem:
    """Problems by name: braincurrin, zdt1..3, dtlz2 (d=6, M=2), dtlz2_m3 (d=6, M=3), vehiclesafety,
    compression_mixed."""
    table = {"compression_mixed": CompressionMixed,
        "branincurrin": BraninCurrin, "zdt1": lambda: ZDT(1), "zdt2": lambda: ZDT(2), "zdt3": lambda: ZDT(3),
        "dtlz2": lambda: DTLZ2(6, 2), "dtlz2_m3": lambda: DTLZ2(6, 3), "vehiclesafety": VehicleSafety,
    }
    key = name.lower()
    if key not in table:
        raise ValueError(f"problem: unknown name {name!r}; known: {sorted(table)}")
    return table[key]()
