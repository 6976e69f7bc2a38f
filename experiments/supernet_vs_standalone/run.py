"""Driver of the supernet-vs-standalone study: main jobs per seed, then the standalone grid per budget.

  python -m experiments.supernet_vs_standalone.run --dataset=digits --seeds=0,1,2 --budgets=a,b
  python -m experiments.supernet_vs_standalone.run --dataset=digits --seeds=0,1,2 --budgets=a --schedule=2
  python -m experiments.supernet_vs_standalone.report   # tables into README.md

For each seed N: the main job (`configs/pipeline.py:<dataset>` with `config.seed = N`) in
`<root>/<dataset>_seed<N>` unless it already finished there; the K configurations are fixed from
seed 0's `pareto.json` (`tools.standalone_grid.select_points`) and every seed's supernet is evaluated
zero-shot at them; `tools.standalone_grid` trains each alone under each budget with seed N. The
grid's json is copied into `results/` beside this file. Runs one job at a time, in this process.

`--schedule=2` trains every main job for twice the config's steps (budget (a) alone then trains
as long) at the K configurations of the 1x study (`--configs_from`, default its seed 0's
pareto.json copied to experiments/pipeline/); its files are named `<dataset>_x2`.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "digits", "digits or shapes")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds; the first one fixes the K configurations")
flags.DEFINE_list("budgets", ["a", "b"], "standalone budgets (see tools.standalone_grid)")
flags.DEFINE_string("root", "workdirs/supernet_vs_standalone", "main job workdirs and standalone runs")
flags.DEFINE_string("results", os.path.join(HERE, "results"), "where the grids' json files are copied")
flags.DEFINE_bool("copy_only", False, "only copy seed 0's pareto.json into experiments/pipeline (no training)")
flags.DEFINE_integer("schedule", 1, "multiplier of the main job's training steps (the 2x-schedule target)")
flags.DEFINE_string("configs_from", "", "pareto.json fixing the K configurations (default: seed 0's of this study, "
                    "or with --schedule > 1 the 1x study's experiments/pipeline/<dataset>_seed0_pareto.json)")


def main_job(dataset: str, seed: int, workdir: str, schedule: int = 1) -> None:
    from effjax.config.load import load_config
    from effjax.job.run import run_main_job

    if os.path.isfile(os.path.join(workdir, "pareto.json")):
        return
    config = load_config(f"configs/pipeline.py:{dataset}")
    config.seed = seed
    config.train.num_steps *= schedule
    config.log.progress_bar = False
    start = time.perf_counter()
    run_main_job(config, workdir)
    print(f"main job {dataset} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)


def copy_pareto(workdir: str, dataset: str) -> str:
    """Seed 0's pareto.json into experiments/pipeline/, with the full supernet's record (`full_point`) added
    when the run predates it."""
    from effjax.job import json_safe
    from effjax.job.subnet_search import SubnetEvaluator, full_point
    from effjax.train.setup import load_run

    with open(os.path.join(workdir, "pareto.json")) as f:
        pareto = json.load(f)
    if "full" not in pareto:
        run = load_run(workdir)
        evaluator = SubnetEvaluator(run.setup, run.params, dict(run.config.search.get("score_weights", {}) or {}))
        pareto["full"] = full_point(evaluator, run.config)
    path = os.path.join(HERE, "..", "pipeline", f"{dataset}_seed0_pareto.json")
    json_safe.dump(pareto, path)
    return path


def main(argv):
    del argv
    from tools.standalone_grid import run_grid

    seeds = [int(s) for s in FLAGS.seeds]
    name = FLAGS.dataset if FLAGS.schedule == 1 else f"{FLAGS.dataset}_x{FLAGS.schedule}"
    workdir = lambda s: os.path.join(FLAGS.root, f"{name}_seed{s}")  # noqa: E731
    configs_from = FLAGS.configs_from or (
        os.path.join(workdir(seeds[0]), "pareto.json") if FLAGS.schedule == 1
        else os.path.join(HERE, "..", "pipeline", f"{FLAGS.dataset}_seed0_pareto.json"))
    if FLAGS.copy_only:
        print(copy_pareto(workdir(0), FLAGS.dataset))
        return
    os.makedirs(FLAGS.results, exist_ok=True)
    for seed in seeds:
        main_job(FLAGS.dataset, seed, workdir(seed), FLAGS.schedule)
    for budget in FLAGS.budgets:  # budget (a) for every seed first: it carries the main target
        for seed in seeds:
            result_name = f"grid_{name}_budget{budget}_seed{seed}.json"
            if os.path.isfile(os.path.join(FLAGS.results, result_name)):
                continue
            start = time.perf_counter()
            result = run_grid(workdir(seed), os.path.join(FLAGS.root, f"grid_{name}"), budget, seed,
                              configs_from=configs_from)
            shutil.copy(result["path"], os.path.join(FLAGS.results, result_name))
            print(f"grid {name} budget {budget} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    if seeds[0] == 0 and FLAGS.schedule == 1:
        copy_pareto(workdir(0), FLAGS.dataset)


if __name__ == "__main__":
    app.run(main)
