"""The digits main job under a given reference-point policy, and the hypervolume of its search.

The main job passes no `ref` and takes `optimize`'s default policy; `run` overrides that
default for this process only, so two runs train the same supernet (same seed) and differ in
the search alone. `hv` reports each run's front size, best validation score, search time and
the HV of its 40 evaluations in (score max, FLOPs min, bits min), divided by the box of the
reference point, against (0, full FLOPs, full bits) and (0.90, full FLOPs, full bits).

    python experiments/search/main_job_policy.py run split_alpha /tmp/mj_split
    python experiments/search/main_job_policy.py run front_relative /tmp/mj_front
    python experiments/search/main_job_policy.py hv /tmp/mj_split /tmp/mj_front
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np  # noqa: E402

import effjax.search.optimizer as optimizer  # noqa: E402
from effjax.search import hypervolume  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(policy: str, workdir: str) -> None:
    code = optimizer.optimize.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = list(optimizer.optimize.__defaults__)
    defaults[list(names[-len(defaults):]).index("reference")] = policy
    optimizer.optimize.__defaults__ = tuple(defaults)
    from effjax import main
    sys.argv = ["effjax.main", f"--config={REPO}/configs/pipeline.py", f"--workdir={workdir}"]
    main.run()


def hv(workdir: str) -> str:
    evals = [json.loads(line) for line in open(f"{workdir}/search/evaluations.jsonl")]
    y = np.array([[e["values"]["score"], e["values"]["flops"], e["values"]["bits"]] for e in evals])
    full = y[0, 1:]  # evaluation 0 is the full float supernet (the job's first corner)
    box = float(np.prod(full))
    summary = json.load(open(f"{workdir}/summary.json"))
    cells = [f"HV vs score {s:g}: {hypervolume(y, [s, *full], ['max', 'min', 'min']) / (box * (1 - s)):.5f}"
             for s in (0.0, 0.9)]
    return (f"{workdir}: {len(y)} evaluations, front {summary['front_size']}, best val "
            f"{summary['best_val_score']:.4f}, search {summary['wall_seconds']['search']:.1f} s; " + "; ".join(cells))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3])
    else:
        for w in sys.argv[2:]:
            print(hv(w))
