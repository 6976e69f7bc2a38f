"""Markdown tables for experiments/moe/README.md from the results.json that `analyze.py` writes.

  python -m experiments.moe.tables --dataset=shapes

Metrics are printed x100 for accuracy and mIoU (points) and as-is for depth RMSE (lower is better).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LOWER_IS_BETTER = ("rmse",)


def _metric(res, task, value):
    return f"{value:.4f}" if res["tasks"][task] in LOWER_IS_BETTER else f"{100 * value:.2f}"


def _row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(cells):
    return [_row(cells), _row(["---"] * len(cells))]


def accuracy(res):
    tasks = list(res["tasks"])
    lines = _header(["model"] + [f"{t} ({res['tasks'][t]})" for t in tasks]
                    + ["FLOPs / image (all tasks)", "FLOPs / image, one task"])
    flops = res["flops"]
    for key, label in (("dense", "dense mt_vit"), ("moe_topk", "MoE top-2, per-task routers"),
                       ("moe_topp", "MoE top-p, per-task routers")):
        if key not in res["accuracy"]:
            continue
        if key == "dense":
            all_tasks, single = flops["dense (all tasks)"], "(one pass gives all tasks)"
        else:
            all_tasks = flops[f"{key} (all tasks)"]
            per_task = [flops[f"{key} single-task {t}"] for t in tasks]
            saving = [1 - f / flops["dense (all tasks)"] for f in per_task]
            single = (f"{min(per_task) / 1e6:.2f}-{max(per_task) / 1e6:.2f} M "
                      f"({-100 * max(saving):+.1f}% to {-100 * min(saving):+.1f}% vs dense)")
        lines.append(_row([label] + [_metric(res, t, res["accuracy"][key][t]) for t in tasks]
                          + [f"{all_tasks / 1e6:.2f} M", single]))
    if "experts_per_token" in res:
        lines.append("")
        lines.append("experts per token: " + "; ".join(
            f"{k}: " + ", ".join(f"{t} {v:.2f}" for t, v in per.items()) for k, per in res["experts_per_token"].items()))
    return lines


def usage(res):
    lines = []
    for key, layers in res.get("usage_tv", {}).items():
        pairs = list(next(iter(layers.values())))
        if not lines:
            lines += _header(["run", "layer"] + pairs)
        for layer, tv in layers.items():
            lines.append(_row([key, layer] + [f"{tv[p]:.3f}" for p in pairs]))
    return lines


def hardness(table, title):
    lines = [f"*{title}*", ""] + _header(["task", "Q1 (easy)", "Q2", "Q3", "Q4 (hard)", "Spearman", "p"])
    for task, row in table.items():
        q = row["experts_by_hardness_quartile"]
        lines.append(_row([task] + [f"{v:.3f}" for v in q] + [f"{row['spearman']:+.3f}", f"{row['p_value']:.2g}"]))
    extra = [f"{task}: mean within-image Spearman {row['mean_within_image_spearman']:+.3f} over {row['tokens']} tokens"
             for task, row in table.items() if "mean_within_image_spearman" in row]
    objects = [f"{task}: experts by number of objects " + ", ".join(f"{n}: {v:.3f}" for n, v in row["experts_by_objects"].items())
               for task, row in table.items() if "experts_by_objects" in row]
    return lines + ([""] + extra if extra else []) + ([""] + objects if objects else [])


def merging(res):
    tasks = list(res["tasks"])
    kl_tasks = [t for t in tasks if res["tasks"][t] not in LOWER_IS_BETTER]
    lines = _header(["merge (E -> E/2, both layers)"] + tasks + [f"KL {t}" for t in kl_tasks])
    for name, row in res["merging"].items():
        kl = row.get("kl_to_original", {})
        lines.append(_row([name] + [_metric(res, t, row[t]) for t in tasks]
                          + [f"{kl[t]:.4f}" if t in kl else "-" for t in kl_tasks]))
    return lines


def bits(res):
    tasks = list(res["tasks"])
    kl_tasks = [t for t in tasks if res["tasks"][t] not in LOWER_IS_BETTER]
    layers = list(next(iter(res["bits"].values()))["bits"])
    lines = _header(["plan"] + [f"{layer} bits" for layer in layers] + tasks + [f"KL {t}" for t in kl_tasks])
    random_rows = []
    for name, row in res["bits"].items():
        if name.startswith("random order"):
            random_rows.append(row)
        lines.append(_row([name] + ["".join(map(str, row["bits"][layer])) for layer in layers]
                          + [_metric(res, t, row["metrics"][t]) for t in tasks]
                          + [f"{row['kl_to_float'][t]:.4f}" for t in kl_tasks]))
    if random_rows:
        mean = [np.mean([r["metrics"][t] for r in random_rows]) for t in tasks]
        kl = [np.mean([r["kl_to_float"][t] for r in random_rows]) for t in kl_tasks]
        kl_sd = [np.std([r["kl_to_float"][t] for r in random_rows]) for t in kl_tasks]
        lines.append(_row([f"random order, mean of {len(random_rows)} seeds"] + ["-"] * len(layers)
                          + [_metric(res, t, m) for t, m in zip(tasks, mean)]
                          + [f"{m:.4f} (sd {s:.4f})" for m, s in zip(kl, kl_sd)]))
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    res = json.load(open(args.results))[args.dataset]
    sections = [("accuracy and FLOPs", accuracy(res)), ("usage TV", usage(res))]
    if "top_p_vs_hardness" in res:
        sections.append(("top-p vs hardness (A: dense baseline's per-example loss)",
                         hardness(res["top_p_vs_hardness"], "A: dense baseline's per-example loss")))
    if "top_p_vs_own_loss" in res:
        sections.append(("top-p vs hardness (B: top-p model's own per-example loss)",
                         hardness(res["top_p_vs_own_loss"], "B: top-p model's own per-example loss")))
    for name, table in res.get("top_p_vs_token_loss", {}).items():
        sections.append((f"top-p vs per-patch-token hardness ({name})", hardness(table, f"per patch token, {name}")))
    if "merging" in res:
        sections.append(("merging", merging(res)))
    if "bits" in res:
        sections.append(("bits", bits(res)))
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
