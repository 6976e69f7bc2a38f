"""DTLZ2 seed 14 with a given ref, or no ref under a policy: final HV, inferred ref, proposals.

    python experiments/search/dtlz2_seed14.py {ref,front,front_relative} > experiments/search/dtlz2_seed14_<mode>.txt
"""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

from effjax.search import Objective, hypervolume, optimize  # noqa: E402
from effjax.search.problems import get_problem  # noqa: E402
from effjax.search.reference import infer_reference_point  # noqa: E402

p = get_problem("dtlz2")
mode = sys.argv[1]
objs = p.objectives if mode == "ref" else [Objective(o.name, o.direction) for o in p.objectives]
r = optimize(p, p.space, objs, budget=50, seed=14, progress=False, reference=mode if mode != "ref" else "front_relative")
y = np.array([[e.values[n] for n in p.objective_names] for e in r.history])
print(mode, hypervolume(y, p.ref_point), "ref", -infer_reference_point(-y, [None, None], "front_relative", 0.1))
print(np.round(y[12:], 3).tolist())
