"""The fixed set of configurations every supernet recipe is scored at, taken from one finished main job.

The set is the full configuration, the min configuration (the smallest value of every menu) and the
main job's best point per FLOPs budget (`report.budget_picks`, what `report.md` lists and the job
exports). It is written once, from the seed-0 baseline run, before any other recipe is evaluated:

  python -m experiments.supernet_recipes.fixed_configs --workdir=<main job workdir> \
      --output=experiments/supernet_recipes/configs_digits.json
"""

from __future__ import annotations

import json

from absl import app, flags

from effjax.job import report as report_lib
from effjax.job import subnet_search as ss
from effjax.train.setup import read_run_config

FLAGS = flags.DEFINE_string("workdir", None, "finished main job (pareto.json, config.json)"), \
    flags.DEFINE_string("output", None, "json file to write")


def min_params(config, tasks) -> dict:
    """Search parameters of the smallest configuration of every menu the main job searched."""
    menu = sorted(float(w) for w in config.model.width_menu)
    params = {"encoder_width": menu[0], **{f"decoder_width_{t}": menu[0] for t in tasks}}
    params.update({name: min(values) for name, values in ss.knob_menus(config).items()})
    params["weight_bits"] = int(min(config.search.bits))
    return params


def fixed_configs(workdir: str) -> list[dict]:
    config = read_run_config(workdir)
    with open(f"{workdir}/pareto.json") as f:
        points = json.load(f)["points"]
    tasks = [name[len("decoder_width_"):] for name in points[0]["params"] if name.startswith("decoder_width_")]
    full = next(p for p in points if p["id"] == 0)
    rows = [{"name": "full", "params": full["params"]}, {"name": "min", "params": min_params(config, tasks)}]
    for p in report_lib.budget_picks(points):
        rows.append({"name": f"pick_id{p['id']}", "params": p["params"]})
    return rows


def main(_):
    rows = fixed_configs(FLAGS[0].value)
    with open(FLAGS[1].value, "w") as f:
        json.dump({"source": FLAGS[0].value, "configs": rows}, f, indent=1)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "output"])
    app.run(main)
