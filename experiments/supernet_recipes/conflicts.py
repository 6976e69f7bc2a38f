"""How often the sub-configurations' gradient conflicts with the max configuration's, per run.

Reads the `train/grad_cosine/small_max` scalar (cosine between the summed sub-configuration gradient and the
max configuration's, before any projection; logged every `log.every_steps` steps) from each run's
TensorBoard events and writes, per run: the logged steps, the fraction with a negative cosine (where
NASViT's projection acts), the minimum and the mean.

  python -m experiments.supernet_recipes.conflicts --workdir=/work/recipes_runs \
      --runs=shapes_project_seed0,shapes_project_seed1,shapes_project_seed2 \
      --output=experiments/supernet_recipes/results/conflicts_shapes.json
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments.supernet_recipes.events import read_scalars

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/effjax/supernet_recipes", "parent of the runs' workdirs")
_RUNS = flags.DEFINE_list("runs", [], "run names (workdirs under --workdir)")
_OUTPUT = flags.DEFINE_string("output", None, "json file to write")
TAG = "train/grad_cosine/small_max"


def conflicts(logdir: str) -> dict:
    values = np.asarray([v for _, v in read_scalars(logdir).get(TAG, [])], np.float64)
    if not len(values):
        raise ValueError(f"{logdir}: no {TAG} scalar (a run from before the step logged it)")
    return {"logged_steps": int(len(values)), "negative_fraction": float((values < 0).mean()),
            "min": float(values.min()), "mean": float(values.mean())}


def main(_):
    out = {name: conflicts(os.path.join(_WORKDIR.value, name, "tensorboard")) for name in _RUNS.value}
    with open(_OUTPUT.value, "w") as f:
        json.dump(out, f, indent=1)
    for name, row in out.items():
        print(name, row)


if __name__ == "__main__":
    flags.mark_flags_as_required(["output"])
    app.run(main)
