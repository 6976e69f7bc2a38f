"""DTLZ2 (d=6, M=2) seed 14, round by round: why the no-ref search collapses.

Runs the same search as `reference_policies.py run` (qLogNEHVI, 50 evaluations, no `ref`)
with an instrumented Optimizer and prints, per model-based round: the inferred reference
point and normalization scale (original, minimized units), the GP's lengthscales on x0 (the
position on the front) and on x1..x5 (the distance g from the front), the proposal's x0 and g,
its true and predicted objectives, its log acquisition value, and the log acquisition value of
the best point of the true front inside the inferred box (x1..x5 = 1/2, x0 chosen on a grid)
for comparison. Then the final HV against the standard reference point.

    python experiments/search/dtlz2_seed14_rounds.py front_relative:0.1 [SEED] \
        > experiments/search/dtlz2_seed14_rounds_front_relative.txt
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

from effjax.search import Objective, hypervolume  # noqa: E402
from effjax.search.acquisition import QLogNEHVI  # noqa: E402
from effjax.search.optimizer import Optimizer  # noqa: E402
from effjax.search.pareto import non_dominated_mask  # noqa: E402
from effjax.search.problems import get_problem  # noqa: E402

PROBLEM = get_problem("dtlz2")


def g_of(x):
    return float(np.sum((np.asarray(x)[1:] - 0.5) ** 2))


class Instrumented(Optimizer):
    """Optimizer that records what each model-based round saw and chose."""

    log: list

    def _fit(self):
        fitted = super()._fit()
        self.log.append({"fitted": fitted})
        return fitted

    def _propose(self, fitted, rng):
        params = super()._propose(fitted, rng)
        gp = fitted["gp"]
        acq = QLogNEHVI(gp, gp.x_train, np.zeros((len(gp.x_train), 0)), fitted["offset"], fitted["slope"],
                        q=1, n_samples=self.n_samples, seed=0)
        x = PROBLEM.params_to_x(params)
        grid = np.full((41, 6), 0.5)
        grid[:, 0] = np.linspace(0.0, 1.0, 41)
        front_acq = acq(grid[:, None, :])
        mean, var = gp.posterior(x[None])
        self.log[-1].update(x=x, acq=float(acq(x[None, None, :])[0]), mean=mean[0], sd=np.sqrt(var[0]),
                            front_acq=float(front_acq.max()), front_x0=float(grid[np.argmax(front_acq), 0]))
        return params


def run(mode: str, seed: int) -> None:
    policy, _, margin = mode.partition(":")
    objs = PROBLEM.objectives if mode == "ref" else [Objective(o.name, o.direction) for o in PROBLEM.objectives]
    kw = {} if mode == "ref" else {"reference": policy, "reference_margin": float(margin or 0.1)}
    n_initial = min(2 * (len(PROBLEM.space.params) + 1), 50 // 3)
    opt = Instrumented(PROBLEM.space, objs, seed=seed, n_initial=n_initial, expected_evaluations=50, **kw)
    opt.log = []
    while len(opt.history) < 50:
        (trial,) = opt.ask(1)
        opt.tell(trial, PROBLEM(dict(trial.params)))
    y = np.array([[e.values[n] for n in PROBLEM.objective_names] for e in opt.history])
    x = np.array([PROBLEM.params_to_x(e.params) for e in opt.history])
    print(f"{mode} seed {seed}: final HV {hypervolume(y, PROBLEM.ref_point):.4f} (standard ref (1.1, 1.1), max 0.4246)")
    print("design (first", n_initial, "points): x0, g, f1, f2")
    for i in range(n_initial):
        print(f"  {i:2d} x0={x[i, 0]:.3f} g={g_of(x[i]):.3f} f=({y[i, 0]:.3f}, {y[i, 1]:.3f})")
    print("round: n | ref (min units) | scale | lengthscale x0, x1..x5 (f1; f2) | proposal x0, g | "
          "f true | f predicted (sd) | log acq | best log acq on the true front (x0) | HV std box so far")
    for r, entry in enumerate(opt.log):
        n = n_initial + r
        f = entry["fitted"]
        ls = np.exp(np.asarray(f["gp"].state.params.log_lengthscale))
        i = n
        print(f"{n:2d} | ({-f['ref'][0]:.3f}, {-f['ref'][1]:.3f}) | ({f['scale'][0]:.3f}, {f['scale'][1]:.3f}) | "
              f"{ls[0, 0]:.2f} {np.round(ls[0, 1:], 2).tolist()}; {ls[1, 0]:.2f} {np.round(ls[1, 1:], 2).tolist()} | "
              f"{x[i, 0]:.3f}, {g_of(x[i]):.3f} | ({y[i, 0]:.3f}, {y[i, 1]:.3f}) | "
              f"({entry['mean'][0]:.3f} ± {entry['sd'][0]:.3f}, {entry['mean'][1]:.3f} ± {entry['sd'][1]:.3f}) | "
              f"{entry['acq']:.2f} | {entry['front_acq']:.2f} ({entry['front_x0']:.3f}) | "
              f"{hypervolume(y[:n + 1], PROBLEM.ref_point):.4f}")
    model = x[n_initial:]
    edge = np.isclose(model[:, 0], 0.0) | np.isclose(model[:, 0], 1.0)
    g = np.array([g_of(r) for r in model])
    print(f"model-based proposals with x0 in {{0, 1}} (one objective exactly 0): {int(edge.sum())} of {len(model)}; "
          f"median g there {np.median(g[edge]) if edge.any() else float('nan'):.3f}, elsewhere "
          f"{np.median(g[~edge]) if (~edge).any() else float('nan'):.3f}")
    front = non_dominated_mask(-y)
    print("final observed front (f1, f2, g):", [(round(a, 3), round(b, 3), round(g_of(xx), 3))
                                               for (a, b), xx in zip(y[front], x[front])])


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 14)
