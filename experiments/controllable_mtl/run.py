"""Trains the supernets and baselines of the controllable-MTL study and measures everything.

  nice -n 5 python -m experiments.controllable_mtl.run --dataset=digits
  nice -n 5 python -m experiments.controllable_mtl.run --dataset=shapes
  python -m experiments.controllable_mtl.report   # tables (stdout) and plots (PNG next to the README)

Per dataset (configs/slim_vit.py): the sandwich supernet with CIKD, the same without
CIKD, each menu width trained alone (mt_vit at the same integer widths) and one
single-task baseline per task. Every run's metrics are cached as JSON under
--workdir, so an interrupted study resumes. Then, for the supernets: per-task
metrics of every (encoder width, decoder width) on val and test (`TaskMetricTable`),
the controller's picks over a budget sweep and a preference sweep (selected on val,
reported on test) with the decoder level of `select_subnet` at its default
("searched") and "largest", and `results_<dataset>[_<variant>].json` next to this file.
`--supernet=labels` measures the supernet trained on labels only (no KD, no CIKD).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import jax
import numpy as np

from configs.slim_vit import get_config
from effjax.compress.control import TaskMetricTable, select_subnet
from effjax.compress.cost_elastic import elastic_cost
from effjax.subnet import SubnetConfig
from effjax.train import mtl_metrics, trainer
from effjax.train import step as step_lib
from effjax.train.setup import load_run

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_BUDGETS = 8
PREFERENCE_SWEEP = tuple(np.round(np.linspace(0.0, 1.0, 6), 2))


def train_run(variant: str, workdir: str, extra: str = "") -> dict:
    """Train one config (cached): returns {"val": ..., "test": ..., "seconds": ...}."""
    out = os.path.join(workdir, variant.replace(",", "_").replace("=", "-"))
    cache = os.path.join(out, "result.json")
    if os.path.exists(cache):
        return json.load(open(cache))
    try:
        os.makedirs(out)  # claims the run: another process of this study may be training it
    except FileExistsError:
        while not os.path.exists(cache):
            time.sleep(10)
        return json.load(open(cache))
    config = get_config(variant + extra)
    start = time.time()
    result = trainer.train_and_evaluate(config, out, devices=jax.devices()[:1])
    val = trainer.evaluate(trainer.build(config, jax.devices()[:1]), result.state.params, "val")
    record = {"val": val, "test": result.metrics["test"], "seconds": time.time() - start,
              "final_loss": result.train_losses[max(result.train_losses)]}
    json.dump(record, open(cache, "w"), indent=1)
    return record


def supernet_tables(variant: str, workdir: str, extra: str = "", encoders=None) -> dict:
    """Per-task val/test metrics of every (encoder width, decoder width) of a trained supernet (cached);
    `encoders` restricts the encoder widths evaluated."""
    out = os.path.join(workdir, variant.replace(",", "_").replace("=", "-"))
    cache = os.path.join(out, "tables.json")
    if os.path.exists(cache):
        return json.load(open(cache))
    config = get_config(variant + extra)
    run = load_run(out, config)
    setup, params = run.setup, run.params
    tables = {"val": {}, "test": {}}
    menu = sorted(config.model.width_menu)
    for e in encoders or menu:
        for d in menu:
            subnet = SubnetConfig(encoder_width=e, decoder_widths=tuple((t.name, d) for t in setup.dataset.tasks))
            eval_step = jax.jit(step_lib.make_eval_step(setup.model, setup.dataset.tasks, subnet),
                                in_shardings=(setup.state_shardings.params, setup.batch_sharding))
            for split in ("val", "test"):
                metrics = trainer.evaluate(setup, params, split, eval_step)
                for t, v in metrics.items():
                    tables[split][f"{e}|{t}|{d}"] = v
    json.dump(tables, open(cache, "w"), indent=1)
    return tables


def as_table(tables: dict, split: str, tasks, menu) -> TaskMetricTable:
    return TaskMetricTable(tasks, menu, {(float(k.split("|")[0]), k.split("|")[1], float(k.split("|")[2])): v
                                         for k, v in tables[split].items()})


def control_study(config, tasks, image_shape, val: TaskMetricTable, test: TaskMetricTable, single: dict,
                  decoder_level: str = "searched") -> dict:
    menu = sorted(config.model.width_menu)
    flops_of = lambda s: elastic_cost(config.model, image_shape, tasks, s).flops  # noqa: E731
    lo = flops_of(SubnetConfig(menu[0], tuple((t.name, menu[0]) for t in tasks)))
    hi = flops_of(SubnetConfig())
    budgets = [float(b) for b in np.linspace(lo, hi, NUM_BUDGETS)]

    def pick(budget, preference):
        sel = select_subnet(budget, preference, tasks=tasks, menu=menu, flops_of=flops_of, table=val,
                            decoder_level=decoder_level)
        test_metrics = test.metrics(sel.subnet)
        return {"budget": budget, "preference": list(map(float, preference)), "subnet": sel.subnet.to_dict(),
                "flops": sel.flops, "within_budget": bool(sel.flops <= budget), "val_score": sel.score,
                "val": sel.metrics, "test": test_metrics, "test_delta_m": mtl_metrics.delta_m(test_metrics, single, tasks)}

    uniform = [1.0] * len(tasks)
    budget_sweep = [pick(b, uniform) for b in budgets]
    points = [(r["flops"], r["test_delta_m"]) for r in budget_sweep]
    reference = (hi * 1.05, min(p[1] for p in points) - 1.0)

    def preference_study(budget):
        sweep, rho = {}, {}
        for i, task in enumerate(tasks):
            rows = []
            for p in PREFERENCE_SWEEP:
                pref = [(1.0 - p) / (len(tasks) - 1)] * len(tasks)
                pref[i] = p
                rows.append(pick(budget, pref))
            sweep[task.name] = rows
            rho[task.name] = mtl_metrics.controllability(
                [r["preference"][i] for r in rows], [mtl_metrics.oriented(task, r["test"][task.name]) for r in rows])
        return sweep, rho

    studies = [preference_study(b) for b in budgets]
    fixed_budget = budgets[NUM_BUDGETS // 2 - 1]
    preference_sweep, controllability = studies[NUM_BUDGETS // 2 - 1]
    by_budget = [float(np.mean(list(rho.values()))) for _, rho in studies]
    return {"budgets": budgets, "budget_sweep": budget_sweep, "hypervolume": mtl_metrics.hypervolume(points, reference),
            "hypervolume_reference": reference, "fixed_budget": fixed_budget, "preference_sweep": preference_sweep,
            "controllability": controllability,
            "mean_controllability": float(np.mean(list(controllability.values()))),
            "mean_controllability_by_budget": by_budget}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("digits", "shapes"), required=True)
    parser.add_argument("--workdir", default="/tmp/effjax/controllable_mtl")
    parser.add_argument("--extra", default="", help="extra config variants, e.g. ',tiny' for a smoke run")
    parser.add_argument("--supernet", default="", help="config variant of the supernet, e.g. 'labels' (default: the "
                        "KD + CIKD sandwich); a variant skips the no-CIKD run")
    parser.add_argument("--output", default=None, help="results JSON (default: results_<dataset>[_<supernet>].json here)")
    parser.add_argument("--only", default="", help="train only these baseline runs and exit, e.g. 'alone=1.0,single=depth' "
                        "(a second process shares the work: a run directory is the claim, other processes wait for its result)")
    args = parser.parse_args()
    logging.getLogger("effjax").setLevel(logging.WARNING)
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    workdir = os.path.join(args.workdir, args.dataset)
    ds, extra = args.dataset, args.extra
    config = get_config(ds + extra)
    menu = sorted(config.model.width_menu)
    setup = trainer.build(config, jax.devices()[:1])
    tasks, image_shape = setup.dataset.tasks, setup.dataset.image_shape

    if args.only:
        for variant in args.only.split(","):
            train_run(f"{ds},{variant}", workdir, extra)
        return
    supernet = f"{ds},{args.supernet}" if args.supernet else ds
    runs = {"supernet": train_run(supernet, workdir, extra)}
    for w in menu:
        runs[f"alone_{w}"] = train_run(f"{ds},alone={w}", workdir, extra)
    for t in tasks:
        runs[f"single_{t.name}"] = train_run(f"{ds},single={t.name}", workdir, extra)
    single = {t.name: runs[f"single_{t.name}"]["test"][t.name] for t in tasks}
    tables = {"supernet": supernet_tables(supernet, workdir, extra)}
    if not args.supernet:
        runs["supernet_nocikd"] = train_run(f"{ds},nocikd", workdir, extra)
        tables["supernet_nocikd"] = supernet_tables(f"{ds},nocikd", workdir, extra, encoders=menu[:1])

    results = {"dataset": ds, "supernet_variant": args.supernet, "tasks": [t.name for t in tasks], "menu": menu, "runs": runs, "single_task": single,
               "flops": {str(w): elastic_cost(config.model, image_shape, tasks,
                                               SubnetConfig(w, tuple((t.name, w) for t in tasks))).flops for w in menu},
               "tables": tables}
    val, test = as_table(tables["supernet"], "val", tasks, menu), as_table(tables["supernet"], "test", tasks, menu)
    results["control"] = control_study(config, tasks, image_shape, val, test, single)
    results["control_largest"] = control_study(config, tasks, image_shape, val, test, single, decoder_level="largest")
    suffix = ("_" + args.supernet).replace(",", "_").replace("=", "") if args.supernet else ""
    output = args.output or os.path.join(HERE, f"results_{ds}{suffix}.json")
    json.dump(results, open(output, "w"), indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
