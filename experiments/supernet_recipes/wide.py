"""Score a finished wide supernet (`configs/supernet.py:digits,wide=<f>`) zero-shot at the standalone study's K
configurations, and price its training step.

  python -m effjax.main --config=configs/supernet.py:digits,seed=0,wide=2 --workdir=/tmp/wide/digits_wide2_seed0
  python -m experiments.supernet_recipes.wide --workdir=/tmp/wide/digits_wide2_seed0 \
      --grid=experiments/supernet_vs_standalone/results/grid_digits_budgeta_seed0.json \
      --output=experiments/supernet_recipes/results/digits_wide2_seed0.json

Each record of `--grid` (a `tools.standalone_grid` result: the configuration, its alone and baseline-supernet
metrics) is served by the wide supernet at its widths / f (`effjax.subnet.overprovision.served_subnet`, which
refuses a configuration whose dims would differ) and scored on val and test by the search's `SubnetEvaluator`
(weights quantized by the export plan), as the grid scored the baseline supernet. The per-example FLOPs of each
served configuration are checked equal to the grid's. The training FLOPs per step are
`tools.standalone_grid.supernet_step_flops` of the wide run (static-configuration costs, without XLA's count of
the sandwich step), cached in `--flops_cache`.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "the finished wide supernet's workdir")
_GRID = flags.DEFINE_string("grid", None, "tools.standalone_grid result json of the same seed")
_OUTPUT = flags.DEFINE_string("output", None, "json file to write")
_FLOPS_CACHE = flags.DEFINE_string("flops_cache", "/tmp/wide/step_flops_cache.json", "StepCosts cache file")


def score_records(run, records) -> list[dict]:
    """The wide supernet's val / test metrics at every grid record's configuration."""
    from effjax.job.subnet_search import SubnetEvaluator, config_score_weights
    from effjax.subnet import SubnetConfig
    from effjax.subnet.overprovision import served_subnet

    evaluator = SubnetEvaluator(run.setup, run.params, config_score_weights(run.config))
    rows = []
    for r in records:
        served = served_subnet(run.config.model, SubnetConfig.from_dict(r["config"]), run.setup.dataset.tasks)
        flops = evaluator.cost(served)["flops"]
        if abs(flops - r["cost_flops_per_example"]) > 1e-6 * r["cost_flops_per_example"]:
            raise ValueError(f"point {r['point_id']}: {flops} FLOPs per example served, {r['cost_flops_per_example']} in the grid")
        rows.append({"point_id": r["point_id"], "roles": r["roles"], "config": r["config"],
                     "supernet_config": served.to_dict(), "cost_flops_per_example": flops,
                     "wide": {split: evaluator.metrics(served, split) for split in ("val", "test")}})
    return rows


def step_flops(run) -> dict:
    from tools.standalone_grid import StepCosts, supernet_step_flops

    costs = StepCosts(run.setup, run.config, _FLOPS_CACHE.value)
    flops = supernet_step_flops(costs, run.setup, run.config, with_xla=False)
    return {**flops, "total": flops["per_step"] * int(run.step)}


def main(_):
    from effjax.train.setup import load_run

    with open(_GRID.value) as f:
        grid = json.load(f)
    run = load_run(_WORKDIR.value)
    result = {"workdir": os.path.abspath(_WORKDIR.value), "grid": _GRID.value, "seed": int(run.config.seed),
              "width_overprovision": int(run.config.model.width_overprovision), "steps": int(run.step),
              "records": score_records(run, grid["records"]), "supernet_flops": step_flops(run)}
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(result, f, indent=1)
    for r in result["records"]:
        print(r["point_id"], {k: round(v, 4) for k, v in r["wide"]["val"].items()})
    print("FLOPs per step", result["supernet_flops"]["per_step"])


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "grid", "output"])
    app.run(main)
