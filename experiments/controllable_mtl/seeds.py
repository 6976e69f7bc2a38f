"""Seed spread of the supernet-vs-alone width gaps (issue 4 evidence; one seed is within noise on digits).

  nice -n 5 python -m experiments.controllable_mtl.seeds --dataset=shapes --supernet=labels --seeds=0,1,2

For each seed: the supernet (`configs/slim_vit.py:<dataset>,<supernet>`) and every menu width
trained alone, all with that seed (seed 0 is run.py's own runs, shared through the same
--workdir cache). The supernet is evaluated at each uniform width (encoder = every decoder)
on val and test. The gap per task is supernet minus alone, oriented so that positive means the
supernet is better: accuracy / mIoU points, or percent of the alone RMSE for depth. Writes
`seeds_<dataset>_<supernet>.json` here and prints the table (mean ± sample std over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import jax
import numpy as np

from configs.slim_vit import get_config
from effjax.data import TaskSpec, load_dataset
from experiments.controllable_mtl.run import HERE, supernet_tables, train_run
from experiments.seed_stats import mean_std


def oriented_gap(task: TaskSpec, supernet: float, alone: float) -> float:
    """Points for accuracy / mIoU, percent of the alone value for RMSE; positive = supernet better."""
    if task.kind == "depth":
        return 100.0 * (alone - supernet) / alone
    return 100.0 * (supernet - alone)


def seeds_path(dataset: str, supernet: str, common: str = "") -> str:
    """Where seeds.py writes (and report.py finds) the seed study of one supernet variant."""
    name = f"seeds_{dataset}_{supernet or 'kd_cikd'}{common}".replace(",", "_").replace("=", "")
    return os.path.join(HERE, name + ".json")


def seed_suffix(seed: int) -> str:
    return f",seed={seed}" if seed else ""


def measure_seed(dataset: str, supernet: str, seed: int, workdir: str, tasks, menu, common: str = "") -> dict:
    variant = (f"{dataset},{supernet}" if supernet else dataset) + common + seed_suffix(seed)
    train_run(variant, workdir)
    tables = supernet_tables(variant, workdir)
    rows = {}
    for w in menu:
        alone = train_run(f"{dataset},alone={w}{common}{seed_suffix(seed)}", workdir)
        rows[str(w)] = {split: {t.name: {"supernet": tables[split][f"{w}|{t.name}|{w}"], "alone": alone[split][t.name],
                                         "gap": oriented_gap(t, tables[split][f"{w}|{t.name}|{w}"], alone[split][t.name])}
                                for t in tasks} for split in ("val", "test")}
    return rows


def summary_table(results: dict, tasks, menu, split: str = "test") -> str:
    seeds = sorted(results["seeds"], key=int)
    unit = {t.name: ("% RMSE" if t.kind == "depth" else "pts") for t in tasks}
    lines = ["| width | " + " | ".join(f"{t.name} gap ({unit[t.name]}): mean ± std [per seed]" for t in tasks) + " |",
             "|" + "---|" * (len(tasks) + 1)]
    for w in menu:
        cells = []
        for t in tasks:
            gaps = np.array([results["seeds"][s][str(w)][split][t.name]["gap"] for s in seeds])
            if len(gaps) > 1:
                cells.append(mean_std(gaps, signed=True) + " [" + ", ".join(f"{g:+.1f}" for g in gaps) + "]")
            else:
                cells.append(f"{gaps[0]:+.1f} (one seed)")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("digits", "shapes"), required=True)
    parser.add_argument("--supernet", default="labels", help="supernet variant(s) of configs/slim_vit.py, e.g. "
                        "'labels,label_small=0.5' ('' = KD + CIKD)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="", help="variants added to every run, e.g. 'steps=1000'")
    parser.add_argument("--workdir", default="/tmp/effjax/controllable_mtl")
    args = parser.parse_args()
    common = "".join(f",{v.strip()}" for v in args.variants.split(",") if v.strip())
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds={args.seeds!r}: need a comma-separated list of integers >= 0")
    logging.getLogger("effjax").setLevel(logging.WARNING)
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    config = get_config(args.dataset)
    tasks = load_dataset(config.data).tasks
    menu = sorted(config.model.width_menu)
    workdir = os.path.join(args.workdir, args.dataset)
    results = {"dataset": args.dataset, "supernet_variant": args.supernet, "menu": menu,
               "seeds": {str(s): measure_seed(args.dataset, args.supernet, s, workdir, tasks, menu, common)
                         for s in seeds}, "variants": args.variants}
    output = seeds_path(args.dataset, args.supernet, common)
    json.dump(results, open(output, "w"), indent=1)
    print(f"{args.dataset}, supernet {args.supernet or 'KD + CIKD'}{common}: test gaps over seeds {seeds}\n")
    print(summary_table(results, tasks, menu))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
