"""VehicleSafety with a given ref or no ref: reference point per round, final front against the box corners.

    python experiments/search/vs_diagnose.py {ref,<policy>:<margin>} SEED
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

from effjax.search import Objective, hypervolume, optimize  # noqa: E402
from effjax.search.pareto import non_dominated_mask  # noqa: E402
from effjax.search.problems import get_problem  # noqa: E402
from effjax.search.reference import MODEL_POLICIES, infer_reference_point  # noqa: E402

p = get_problem("vehiclesafety")
mode, seed = sys.argv[1], int(sys.argv[2])
policy, _, margin = mode.partition(":")
objs = p.objectives if mode == "ref" else [Objective(o.name, o.direction) for o in p.objectives]
kw = {} if mode == "ref" else {"reference": policy, "reference_margin": float(margin)}
r = optimize(p, p.space, objs, budget=50, seed=seed, progress=False, **kw)
y = np.array([[e.values[n] for n in p.objective_names] for e in r.history])
x = np.array([[e.params[k] for k in sorted(e.params)] for e in r.history])
print(mode, seed, "HV", hypervolume(y, p.ref_point))
if mode != "ref" and policy not in MODEL_POLICIES:  # the payoff policies' points also need the model's predictions
    for t in (12, 15, 20, 25, 30, 40, 50):
        print("ref after", t, np.round(-infer_reference_point(-y[:t], [None] * 3, policy, float(margin)), 3))
front = non_dominated_mask(-y)
print("front", front.sum(), "nadir", np.round(y[front].max(0), 3), "ideal", np.round(y.min(0), 3))
corner = np.all((np.abs(x - 1) < 1e-6) | (np.abs(x - 3) < 1e-6), axis=1)
print("proposals at a corner", int(corner[12:].sum()), "of", len(y) - 12)
for i in np.where(front)[0]:
    print(i, np.round(x[i], 3).tolist(), np.round(y[i], 3).tolist())
