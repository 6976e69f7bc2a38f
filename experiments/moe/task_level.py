"""Task-level test of "Harder Tasks Need More Experts" (Huang et al., 2024): with one router per task
(M3ViT), does a harder task's router pick more experts per token under top-p routing?

Analysis only (no training). Task difficulty, fixed before any number was computed:
D_t = the dense multi-task baseline's mean test loss on task t (the training loss: cross-entropy,
per-pixel for segmentation; L1 for depth) divided by the test loss of the best input-independent
predictor fitted on the train split (label frequencies, pooled over pixels for segmentation; the
median depth, the L1-optimal constant). 0 = perfect, 1 = no better than the prior. Secondary: the
same ratio for the top-p model's own losses. Experts: the task router's mean experts per token on
the test split, averaged over the MoE layers.

  python -m experiments.moe.task_level --dataset=shapes --runs=/tmp/moe6/runs/seed0 --suffix=800 --name=shapes800_seed0

Appends one entry to experiments/moe/task_level.json; `--print` prints the table of all entries.
With 3 tasks a rank correlation can only be -1, -0.5, +0.5 or +1 (+1 by chance with probability 1/6).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from scipy.stats import spearmanr

from experiments.moe import analyze

RESULTS = os.path.join(analyze.HERE, "task_level.json")


def _test_losses(task, preds, targets):
    """Mean test loss of one task, as the training loss computes it."""
    total, count = 0.0, 0
    for p, b in zip(preds, targets):
        per = analyze.per_example_loss(task, p[task.name], b[task.name])
        total += float(per.sum())
        count += per.size
    return total / count


def prior_loss(task, train_targets, test_targets):
    """Test loss of the best input-independent predictor fitted on the train labels."""
    train = np.asarray(train_targets)
    test = np.asarray(test_targets)
    if task.kind in ("classification", "segmentation"):
        freq = np.bincount(train.reshape(-1).astype(int), minlength=task.num_classes).astype(np.float64)
        freq = np.maximum(freq / freq.sum(), 1e-12)
        return float(-np.log(freq[test.reshape(-1).astype(int)]).mean())
    return float(np.abs(test - np.median(train)).mean())


def measure(dataset: str, runs: str, suffix: str):
    dense_name, moe_name = analyze.CONFIGS[dataset]
    dense_setup, dense_params = analyze.restore_run(analyze.run_config(dense_name), os.path.join(runs, f"dense_{dataset}{suffix}"))
    tasks = dense_setup.dataset.tasks
    dense_preds, _, targets = analyze.predictions_and_stats(dense_setup, dense_params, "test")
    setup, params = analyze.restore_run(analyze.run_config(moe_name, "topp"), os.path.join(runs, f"moe_{dataset}_topp{suffix}"))
    topp_preds, stats, _ = analyze.predictions_and_stats(setup, params, "test")
    experts = analyze.per_example_experts(stats, len(tasks))
    train = dense_setup.dataset.splits["train"]
    test = dense_setup.dataset.splits["test"]
    rows = {}
    for r, t in enumerate(tasks):
        prior = prior_loss(t, train[t.name], test[t.name])
        rows[t.name] = {"prior_loss": prior,
                        "dense_loss": _test_losses(t, dense_preds, targets),
                        "topp_loss": _test_losses(t, topp_preds, targets),
                        "experts_per_token": float(experts[r].mean())}
        rows[t.name]["difficulty_dense"] = rows[t.name]["dense_loss"] / prior
        rows[t.name]["difficulty_topp"] = rows[t.name]["topp_loss"] / prior
    names = [t.name for t in tasks]
    k = [rows[n]["experts_per_token"] for n in names]
    summary = {f"spearman_{d}": float(spearmanr([rows[n][d] for n in names], k)[0])
               for d in ("difficulty_dense", "difficulty_topp")}
    return {"tasks": rows, **summary}


def table(entries):
    lines = ["| run | task | prior loss | dense loss | D (dense) | D (top-p own) | experts / token (top-p) |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in entries.items():
        ordered = sorted(entry["tasks"].items(), key=lambda kv: kv[1]["difficulty_dense"])
        for task, row in ordered:
            lines.append(f"| {name} | {task} | {row['prior_loss']:.4f} | {row['dense_loss']:.4f} | "
                         f"{row['difficulty_dense']:.3f} | {row['difficulty_topp']:.3f} | {row['experts_per_token']:.3f} |")
    lines += ["", "| run | order by D (dense), easy -> hard | experts / token in that order | Spearman (D dense) | Spearman (D top-p) |",
              "|---|---|---|---|---|"]
    for name, entry in entries.items():
        ordered = sorted(entry["tasks"].items(), key=lambda kv: kv[1]["difficulty_dense"])
        lines.append(f"| {name} | {' < '.join(t for t, _ in ordered)} | "
                     f"{' / '.join('%.2f' % row['experts_per_token'] for _, row in ordered)} | "
                     f"{entry['spearman_difficulty_dense']:+.1f} | {entry['spearman_difficulty_topp']:+.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--runs", default="/tmp/moe6/runs/seed0")
    parser.add_argument("--suffix", default="")
    parser.add_argument("--name", default="", help="entry name in task_level.json (default: <dataset><suffix>)")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--print", action="store_true", help="only print the table of the stored entries")
    args = parser.parse_args()
    entries = json.load(open(args.results)) if os.path.exists(args.results) else {}
    if not args.print:
        entries[args.name or f"{args.dataset}{args.suffix}"] = measure(args.dataset, args.runs, args.suffix)
        with open(args.results, "w") as f:
            json.dump(entries, f, indent=1)
    print(table(entries))


if __name__ == "__main__":
    main()
