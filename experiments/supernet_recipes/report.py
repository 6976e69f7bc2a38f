"""Prints the recipe comparison (digits): validation scores at the fixed configurations, the selection by
the rule in `recipes.py`, test scores of the selected recipe, and each recipe's training FLOPs.

  python -m experiments.supernet_recipes.report > /dev/null  # the README tables are this script's output
  python -m experiments.supernet_recipes.report

Reads results/<dataset>_<recipe>_seed<N>.json (`run.py`) and results/flops_<dataset>.json (`flops.py`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from experiments.seed_stats import mean_std as _mean_std
from experiments.supernet_recipes.recipes import BASELINE, FRESH_SEEDS, RECIPES, SEEDS

HERE = os.path.dirname(os.path.abspath(__file__))


def mean_std(values) -> str:
    return _mean_std(values, digits=2)


def load(dataset: str, seeds=SEEDS) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for recipe in RECIPES:
        for seed in seeds:
            path = os.path.join(HERE, "results", f"{dataset}_{recipe}_seed{seed}.json")
            if os.path.exists(path):
                with open(path) as f:
                    runs.setdefault(recipe, {})[seed] = json.load(f)
    return runs


def scores(run: dict, split: str) -> dict[str, float]:
    return {c["name"]: 100 * c[split]["score"] for c in run["configs"]}


def differences(runs, recipe: str, split: str, seeds=SEEDS) -> tuple[list[int], np.ndarray]:
    """Per seed, `recipe`'s score minus the baseline's (means over the fixed configurations)."""
    common = [s for s in seeds if s in runs.get(recipe, {}) and s in runs.get(BASELINE, {})]
    return common, np.asarray([np.mean(list(scores(runs[recipe][s], split).values()))
                               - np.mean(list(scores(runs[BASELINE][s], split).values())) for s in common])


def beats_baseline(diff: np.ndarray) -> bool:
    return len(diff) >= 2 and diff.mean() > diff.std(ddof=1)


def select(runs) -> tuple[str, dict[str, np.ndarray]]:
    """The rule of `recipes.py`: highest mean validation score over configurations and seeds, kept only
    if it beats the baseline by more than the sample std of its per-seed difference."""
    merit = {r: np.asarray([np.mean(list(scores(runs[r][s], "val").values())) for s in SEEDS if s in runs[r]])
             for r in runs}
    best = max(merit, key=lambda r: merit[r].mean())
    if best == BASELINE or BASELINE not in runs:
        return best, merit
    return (best if beats_baseline(differences(runs, best, "val")[1]) else BASELINE), merit


def main(dataset: str = "digits"):
    runs = load(dataset)
    names = [c["name"] for c in next(iter(next(iter(runs.values())).values()))["configs"]]
    print(f"### {dataset}: validation score (mean task score x 100) at the fixed configurations, mean ± std over seeds\n")
    print("| recipe | seeds | " + " | ".join(names) + " | mean over configs |")
    print("|---|---|" + "---|" * (len(names) + 1))
    for recipe, by_seed in runs.items():
        per = [scores(by_seed[s], "val") for s in sorted(by_seed)]
        cells = [mean_std([p[n] for p in per]) for n in names]
        print(f"| {recipe} | {','.join(map(str, sorted(by_seed)))} | " + " | ".join(cells)
              + f" | {mean_std([np.mean(list(p.values())) for p in per])} |")
    chosen, merit = select(runs)
    print("\nPer-seed difference to the baseline (mean over configs, validation):\n")
    for recipe in runs:
        if recipe == BASELINE or BASELINE not in runs:
            continue
        common, diff = differences(runs, recipe, "val")
        print(f"- {recipe} minus {BASELINE}: {mean_std(diff)} points (seeds {common}; per seed "
              + ", ".join(f"{d:+.2f}" for d in diff) + ")")
    print(f"\n**Selected on validation by the rule of `recipes.py`: `{chosen}`.**\n")
    print(f"### {dataset}: test score of the selected recipe `{chosen}`, mean ± std over seeds\n")
    print("| configuration | " + " | ".join(t for t in next(iter(runs[chosen].values()))["configs"][0]["test"] if t != "score")
          + " | score |")
    tasks = [t for t in next(iter(runs[chosen].values()))["configs"][0]["test"] if t != "score"]
    print("|---|" + "---|" * (len(tasks) + 1))
    for n in names:
        rows = [next(c for c in runs[chosen][s]["configs"] if c["name"] == n)["test"] for s in sorted(runs[chosen])]
        print(f"| {n} | " + " | ".join(mean_std([100 * r[t] for r in rows]) for t in tasks)
              + f" | {mean_std([100 * r['score'] for r in rows])} |")
    if chosen != BASELINE and BASELINE in runs:
        common, diff = differences(runs, chosen, "test")
        print(f"\nTest, {chosen} minus {BASELINE} (mean over the configurations; reported after the selection, not used "
              f"by it): {mean_std(diff)} points (per seed " + ", ".join(f"{d:+.2f}" for d in diff) + ")")
    if chosen != BASELINE:
        confirm(dataset, chosen)
    conflicts_path = os.path.join(HERE, "results", f"conflicts_{dataset}.json")
    if os.path.exists(conflicts_path):
        with open(conflicts_path) as f:
            rows = json.load(f)
        print(f"\n### {dataset}: gradient conflicts, sub-configurations vs max configuration (`conflicts.py`)\n")
        print("| run | logged steps | cosine < 0 (fraction) | min cosine | mean cosine |")
        print("|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['logged_steps']} | {r['negative_fraction']:.2f} | {r['min']:.2f} | {r['mean']:.2f} |")
    flops_path = os.path.join(HERE, "results", f"flops_{dataset}.json")
    if os.path.exists(flops_path):
        with open(flops_path) as f:
            flops = json.load(f)["recipes"]
        print(f"\n### {dataset}: training cost per recipe (XLA cost analysis of static-configuration forward + backward)\n")
        print("| recipe | GFLOPs per step (mean over the schedule) | total TFLOPs | full config alone, GFLOPs per step | "
              "ratio to the full config alone | train wall s (mean over seeds, shared 2-core CPU) |")
        print("|---|---|---|---|---|---|")
        for recipe, f in flops.items():
            walls = [r["train_wall_s"] for r in runs.get(recipe, {}).values() if r.get("train_wall_s")]
            print(f"| {recipe} | {f['mean_flops_per_step'] / 1e9:.2f} | {f['total_flops'] / 1e12:.2f} | "
                  f"{f['full_config_step_flops'] / 1e9:.2f} | {f['mean_flops_per_step'] / f['full_config_step_flops']:.2f} | "
                  f"{np.mean(walls) if walls else float('nan'):.0f} |")


def confirm(dataset: str, chosen: str) -> None:
    """The confirmation of `recipes.py` on the fresh seeds: the same rule, then test for both recipes."""
    fresh = load(dataset, FRESH_SEEDS)
    common, diff = differences(fresh, chosen, "val", FRESH_SEEDS)
    print(f"\n### {dataset}: confirmation of `{chosen}` on fresh seeds {list(FRESH_SEEDS)} (rule of `recipes.py`)\n")
    if not common:
        print("Not run yet.")
        return
    _, test = differences(fresh, chosen, "test", FRESH_SEEDS)
    for split, d in (("validation", diff), ("test", test)):
        print(f"- {split}, {chosen} minus {BASELINE}: {mean_std(d)} points (seeds {common}; per seed "
              + ", ".join(f"{x:+.2f}" for x in d) + ")")
    for recipe in (BASELINE, chosen):
        per = [np.mean(list(scores(fresh[recipe][s], "test").values())) for s in common]
        print(f"- test score of `{recipe}` (mean over the configurations): {mean_std(per)}")
    verdict = "confirmed" if len(common) == len(FRESH_SEEDS) and beats_baseline(diff) else "not confirmed"
    print(f"\n**`{chosen}` {verdict} on the fresh seeds.**")


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else "digits")  # python -m experiments.supernet_recipes.report shapes
