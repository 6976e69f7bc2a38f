"""Train one supernet recipe and score it zero-shot at a fixed set of configurations.

One call trains `python -m effjax.main --config=<config>` with the given overrides into
`<workdir>/<name>` (resumes if present), then evaluates every configuration of `--configs`
(a `fixed_configs` json; default: the full and the min configuration of the run's menus) on the
validation and the test split with `SubnetEvaluator`, and writes one json: the configurations'
metrics and scores, the mean of the logged training scalars over the last `--tail` logged steps
(loss parts per task, gradient norms of the max config and of the sub-configs), and the wall time.

  python -m experiments.supernet_recipes.run --name=digits_bignas_seed0 \
      --config=configs/supernet.py:digits,seed=0,bignas --configs=experiments/supernet_recipes/configs_digits.json \
      --output=experiments/supernet_recipes/results/digits_bignas_seed0.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

from experiments.supernet_recipes.events import read_scalars

_NAME = flags.DEFINE_string("name", None, "run name (its workdir under --workdir)")
_CONFIG = flags.DEFINE_string("config", None, "config file and argument, as for effjax.main")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "a config override (repeat the flag), e.g. slim.cikd_weight=0")
_CONFIGS = flags.DEFINE_string("configs", "", "fixed_configs json; empty: full and min configurations")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/effjax/supernet_recipes", "parent of the runs' workdirs")
_OUTPUT = flags.DEFINE_string("output", None, "json file to write")
_TAIL = flags.DEFINE_integer("tail", 5, "logged training steps averaged for the loss scalars")
_SKIP_TRAIN = flags.DEFINE_bool("skip_train", False, "only evaluate the finished run in <workdir>/<name>")


def tail_means(scalars, tail: int) -> dict[str, float]:
    means = {}
    for tag, rows in scalars.items():
        if tag.startswith("train/"):
            rows = sorted(dict(rows).items())[-tail:]
            means[tag] = sum(v for _, v in rows) / len(rows)
    return means


def default_configs(config, tasks) -> list[dict]:
    from effjax.job import subnet_search as ss

    menu = sorted(float(w) for w in config.model.width_menu)
    full = ss.full_params(config, tasks)
    small = {"encoder_width": menu[0], "weight_bits": 32, **{f"decoder_width_{t.name}": menu[0] for t in tasks}}
    small.update({name: min(values) for name, values in ss.knob_menus(config).items()})
    return [{"name": "full", "params": full}, {"name": "min", "params": small}]


def evaluate_configs(workdir: str, configs_path: str) -> dict:
    from effjax.job import subnet_search as ss
    from effjax.train.setup import load_run

    run = load_run(workdir)
    tasks = run.setup.dataset.tasks
    weights = dict(run.config.search.score_weights) if "search" in run.config else {}
    evaluator = ss.SubnetEvaluator(run.setup, run.params, weights)
    if configs_path:
        with open(configs_path) as f:
            configs = json.load(f)["configs"]
    else:
        configs = default_configs(run.config, tasks)
    rows = []
    for c in configs:
        subnet, pvq = evaluator.candidate(c["params"])
        row = {"name": c["name"], "params": c["params"], "flops": evaluator.cost(subnet, pvq)["flops"]}
        for split in ("val", "test"):
            row[split] = evaluator.metrics(subnet, split, pvq)
        rows.append(row)
    return {"step": run.step, "configs": rows}


def main(_):
    workdir = os.path.join(_WORKDIR.value, _NAME.value)
    command = [sys.executable, "-m", "effjax.main", f"--config={_CONFIG.value}", f"--workdir={workdir}",
               "--config.log.progress_bar=False"] + [f"--config.{o}" for o in _OVERRIDES.value]
    start = time.time()
    if not _SKIP_TRAIN.value:
        subprocess.run(command, check=True)
    train_s = None if _SKIP_TRAIN.value else time.time() - start
    result = {"name": _NAME.value, "command": " ".join(command[1:]), "train_wall_s": train_s, "trained_here": not _SKIP_TRAIN.value,
              **evaluate_configs(workdir, _CONFIGS.value),
              "train_scalars": tail_means(read_scalars(os.path.join(workdir, "tensorboard")), _TAIL.value)}
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(result, f, indent=1)
    for row in result["configs"]:
        print(row["name"], {k: round(v, 4) for k, v in row["val"].items()})


if __name__ == "__main__":
    flags.mark_flags_as_required(["name", "config", "output"])
    app.run(main)
