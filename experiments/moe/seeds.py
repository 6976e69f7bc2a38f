"""Seed-to-seed summary of the MoE evidence: reads one analyze.py results file per training seed (or per
training schedule, labelled with --names) and
prints the README tables (per task MoE - dense with mean and spread over seeds, the sign of top-p vs
hardness per seed, usage differences, merging and MC# bits fidelity per seed) and writes
seeds_<dataset>.png (MoE - dense per task and seed; experts per token by hardness quartile per seed).

  python -m experiments.moe.seeds --dataset=shapes \
      --results=experiments/moe/results_shapes800_seed0.json,experiments/moe/results_shapes800_seed1.json

Spread = sample standard deviation over seeds. Accuracy and mIoU in
points (x100), depth RMSE x100 as well so that "1 point" means 0.01 RMSE (about 1% of its value).
"""

from __future__ import annotations

import argparse
import os

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.seed_stats import mean_std  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = (("moe_topk", "MoE top-2"), ("moe_topp", "MoE top-p"))
LOWER_IS_BETTER = ("rmse",)


def present_models(seeds):
    """The MoE models every results file has (an entropy-weight sweep, say, has only the top-p run)."""
    return tuple((key, label) for key, label in MODELS if all(key in res["accuracy"] for _, res in seeds))


def _row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(cells):
    return [_row(cells), _row(["---"] * len(cells))]


def _better_sign(res, task):
    """+1 where a larger metric is better, -1 for RMSE: (model - dense) * sign > 0 means the MoE is better."""
    return -1.0 if res["tasks"][task] in LOWER_IS_BETTER else 1.0


def accuracy(seeds):
    res0 = seeds[0][1]
    tasks = list(res0["tasks"])
    lines = _header(["model", "seed"] + [f"{t} ({res0['tasks'][t]}, x100)" for t in tasks])
    for key, label in (("dense", "dense mt_vit"),) + present_models(seeds):
        for name, res in seeds:
            lines.append(_row([label, name] + [f"{100 * res['accuracy'][key][t]:.2f}" for t in tasks]))
    lines += ["", "MoE - dense in points (x100; for depth RMSE a negative difference is better), "
                  + ("mean ± sample std over seeds, then each seed:" if len(seeds) > 1 else "one seed, no spread:"), ""]
    lines += _header(["model"] + tasks + ["worst seed, every task within 1 point of dense (or better)?"])
    for key, label in present_models(seeds):
        cells, ok = [], True
        for t in tasks:
            diffs = [100 * (res["accuracy"][key][t] - res["accuracy"]["dense"][t]) for _, res in seeds]
            worst = min(d * _better_sign(res0, t) for d in diffs)
            ok &= worst >= -1.0
            cells.append(f"{mean_std(diffs, digits=2, signed=True)} ({', '.join(f'{d:+.2f}' for d in diffs)})" if len(diffs) > 1 else f"{diffs[0]:+.2f}")
        lines.append(_row([label] + cells + ["yes" if ok else "no"]))
    dense_values = {tuple(res["accuracy"]["dense"][t] for t in tasks) for _, res in seeds}
    if len(dense_values) > 1:  # runs against one shared dense baseline (a hyper-parameter sweep) have no dense spread
        dense_gap = [100 * np.ptp([res["accuracy"]["dense"][t] for _, res in seeds]) for t in tasks]
        lines += ["", "dense baseline, largest seed-to-seed difference (points): "
                  + ", ".join(f"{t} {d:.2f}" for t, d in zip(tasks, dense_gap))]
    if any("paired_bootstrap" in res for _, res in seeds):
        lines += ["", "MoE - dense with its 95% paired-bootstrap interval over the test examples (test-set sampling noise "
                      "of one trained pair; not seed noise), points:", ""]
        lines += _header(["model", "seed"] + tasks)
        for key, label in present_models(seeds):
            for name, res in seeds:
                boot = res.get("paired_bootstrap", {}).get(key)
                if boot:
                    lines.append(_row([label, name] + [f"{100 * boot[t]['difference']:+.2f} [{100 * boot[t]['ci95'][0]:+.2f}, "
                                                       f"{100 * boot[t]['ci95'][1]:+.2f}]" for t in tasks]))
    return lines


def flops(seeds):
    res0 = seeds[0][1]
    tasks = list(res0["tasks"])
    lines = _header(["model", "seed", "experts / token per task"] + [f"single-task {t} FLOPs (vs dense)" for t in tasks]
                    + ["all-task FLOPs (vs dense)"])
    for name, res in seeds:
        dense = res["flops"]["dense (all tasks)"]
        lines.append(_row(["dense mt_vit", name, "-"] + [f"{dense / 1e6:.2f} M"] * len(tasks) + [f"{dense / 1e6:.2f} M"]))
        for key, label in present_models(seeds):
            f = res["flops"]
            k = res["experts_per_token"][key]
            lines.append(_row([label, name, ", ".join(f"{k[t]:.2f}" for t in tasks)]
                              + [f"{f[f'{key} single-task {t}'] / 1e6:.2f} M ({100 * (f[f'{key} single-task {t}'] / dense - 1):+.1f}%)"
                                 for t in tasks]
                              + [f"{f[f'{key} (all tasks)'] / 1e6:.2f} M ({100 * (f[f'{key} (all tasks)'] / dense - 1):+.1f}%)"]))
        if "moe_topk" not in res["accuracy"]:
            continue
        all_active = res["all_experts_active_flops"]
        best = min(res["flops"][f"moe_topk single-task {t}"] for t in tasks)
        worst = max(res["flops"][f"moe_topk single-task {t}"] for t in tasks)
        lines.append(_row(["all tasks, all experts active (3 passes)", name, "8"] + [f"{all_active / 1e6:.2f} M"] * len(tasks)
                          + [f"top-2 single-task saves {100 * (1 - worst / all_active):.1f}-{100 * (1 - best / all_active):.1f}%"]))
    return lines


def hardness(seeds):
    res0 = seeds[0][1]
    defs = [("A (dense per-example loss)", lambda r: r.get("top_p_vs_hardness", {})),
            ("B (own per-example loss)", lambda r: r.get("top_p_vs_own_loss", {}))]
    for name in res0.get("top_p_vs_token_loss", {}):
        defs.append((f"per patch token ({name})", lambda r, n=name: r.get("top_p_vs_token_loss", {}).get(n, {})))
    lines = _header(["task", "hardness", "run", "Q1 (easy)", "Q2", "Q3", "Q4 (hard)", "Spearman", "p", "sign same in every run?"])
    for task in res0["tasks"]:
        for label, get in defs:
            rows = [(name, get(res).get(task)) for name, res in seeds]
            rows = [(n, r) for n, r in rows if r]
            if not rows:
                continue
            signs = {np.sign(r["spearman"]) for _, r in rows}
            for i, (n, r) in enumerate(rows):
                q = r["experts_by_hardness_quartile"]
                lines.append(_row([task, label, n] + [f"{v:.2f}" for v in q] + [f"{r['spearman']:+.2f}", f"{r['p_value']:.1g}",
                                  (("yes" if len(signs) == 1 else "no") if len(rows) > 1 else "-") if i == 0 else ""]))
    objects = [f"{n}: " + ", ".join(f"{k}: {v:.2f}" for k, v in res["top_p_vs_hardness"]["count"]["experts_by_objects"].items())
               for n, res in seeds if "count" in res.get("top_p_vs_hardness", {})]
    if objects:
        lines += ["", "count, experts per token by number of objects: " + "; ".join(objects)]
    return lines


def usage(seeds):
    res0 = seeds[0][1]
    lines = []
    for key, _ in present_models(seeds):
        pairs = list(next(iter(res0["usage_tv"][key].values())))
        if not lines:
            lines += _header(["run", "seed", "layer"] + pairs)
        for name, res in seeds:
            for layer, tv in res["usage_tv"][key].items():
                lines.append(_row([key, name, layer] + [f"{tv[p]:.3f}" for p in pairs]))
    return lines


def _metric_table(res0, first_column):
    """Task names, the tasks with a KL column (classification-like), and the header of a per-seed metric table."""
    tasks = list(res0["tasks"])
    kl_tasks = [t for t in tasks if res0["tasks"][t] not in LOWER_IS_BETTER]
    return tasks, kl_tasks, _header([first_column, "seed"] + [f"{t} (x100)" for t in tasks]
                                    + [f"KL {t} (x1e-3)" for t in kl_tasks])


def merging(seeds):
    res0 = seeds[0][1]
    tasks, kl_tasks, lines = _metric_table(res0, "merge (E=8 -> 4, both layers)")
    for variant in res0["merging"]:
        for name, res in seeds:
            row = res["merging"][variant]
            kl = row.get("kl_to_original", {})
            lines.append(_row([variant, name] + [f"{100 * row[t]:.2f}" for t in tasks]
                              + [f"{1e3 * kl[t]:.2f}" if t in kl else "-" for t in kl_tasks]))
    aligned, plain = "MC-SMoE: aligned + frequency-weighted", "plain averaging (unaligned, uniform)"
    lines += ["", "MC-SMoE vs plain averaging, per seed (KL ratio < 1: the aligned merge is closer to the unmerged model; "
                  "damage = merged - original in points, sign flipped for RMSE so that negative = worse):", ""]
    lines += _header(["seed"] + [f"KL ratio {t}" for t in kl_tasks] + [f"damage {t}: MC-SMoE / plain" for t in tasks])
    for name, res in seeds:
        m = res["merging"]
        original = m["original (E experts)"]
        lines.append(_row([name] + [f"{m[aligned]['kl_to_original'][t] / m[plain]['kl_to_original'][t]:.2f}" for t in kl_tasks]
                          + [f"{100 * _better_sign(res0, t) * (m[aligned][t] - original[t]):+.2f} / "
                             f"{100 * _better_sign(res0, t) * (m[plain][t] - original[t]):+.2f}" for t in tasks]))
    return lines


def bits(seeds):
    res0 = seeds[0][1]
    tasks, kl_tasks, lines = _metric_table(res0, "plan")
    for name, res in seeds:
        b = res["bits"]
        random_rows = [row for k, row in b.items() if k.startswith("random order")]
        for plan in ("uniform 4 bits", "MC# avg 3 of {2,4,8}", "reversed MC# avg-3 (important experts get fewest bits)", "uniform 2 bits"):
            row = b[plan]
            lines.append(_row([plan, name] + [f"{100 * row['metrics'][t]:.2f}" for t in tasks]
                              + [f"{1e3 * row['kl_to_float'][t]:.2f}" for t in kl_tasks]))
        lines.append(_row([f"random order of the MC# avg-3 bits, {len(random_rows)} orders: mean (min-max)", name]
                          + [f"{100 * np.mean([r['metrics'][t] for r in random_rows]):.2f} "
                             f"({100 * min(r['metrics'][t] for r in random_rows):.2f}-{100 * max(r['metrics'][t] for r in random_rows):.2f})"
                             for t in tasks]
                          + [f"{1e3 * np.mean([r['kl_to_float'][t] for r in random_rows]):.2f} "
                             f"({1e3 * min(r['kl_to_float'][t] for r in random_rows):.2f}-{1e3 * max(r['kl_to_float'][t] for r in random_rows):.2f})"
                             for t in kl_tasks]))
    lines += ["", "MC# avg-3 against the same-budget random orders, per seed (rank 0 = better than every random order; "
                  "for KL and RMSE lower is better):", ""]
    lines += _header(["seed"] + [f"{t}: random orders better than MC#" for t in tasks]
                     + [f"KL {t}: random orders below MC#" for t in kl_tasks])
    for name, res in seeds:
        b = res["bits"]
        mc = b["MC# avg 3 of {2,4,8}"]
        random_rows = [row for k, row in b.items() if k.startswith("random order")]
        cells = []
        for t in tasks:
            s = _better_sign(res0, t)
            cells.append(f"{sum(s * (r['metrics'][t] - mc['metrics'][t]) > 0 for r in random_rows)} of {len(random_rows)}")
        cells += [f"{sum(r['kl_to_float'][t] < mc['kl_to_float'][t] for r in random_rows)} of {len(random_rows)}" for t in kl_tasks]
        lines.append(_row([name] + cells))
    return lines


def plot(seeds, path, dataset):
    res0 = seeds[0][1]
    tasks = list(res0["tasks"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    ax = axes[0]
    for m, (key, label) in enumerate(present_models(seeds)):
        for i, t in enumerate(tasks):
            diffs = [100 * (res["accuracy"][key][t] - res["accuracy"]["dense"][t]) * _better_sign(res0, t) for _, res in seeds]
            x = i + (m - 0.5) * 0.3
            ax.bar(x, np.mean(diffs), 0.28, color=f"C{m}", alpha=0.5, label=label if i == 0 else None)
            ax.scatter([x] * len(diffs), diffs, color=f"C{m}", zorder=3, s=14)
    ax.axhline(-1, color="k", ls="--", lw=0.8)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(tasks)), [f"{t}\n({res0['tasks'][t]})" for t in tasks])
    ax.set_ylabel("MoE - dense, points (+ = better)")
    ax.set_title(f"{dataset}: MoE vs dense per run (dots), mean (bars)", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    for i, t in enumerate(tasks):
        for s, (name, res) in enumerate(seeds):
            row = res.get("top_p_vs_hardness", {}).get(t)
            if row:
                ax.plot(range(1, 5), row["experts_by_hardness_quartile"], color=f"C{i}", ls=("-", "--", ":")[s % 3], marker="o",
                        ms=3, label=f"{t} {name}")
    ax.set_xticks(range(1, 5), ["Q1 easy", "Q2", "Q3", "Q4 hard"])
    ax.set_xlabel("hardness quartile (dense baseline's per-example loss)")
    ax.set_ylabel("top-p experts / token")
    ax.set_title(f"{dataset}: top-p experts vs per-example hardness", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--results", required=True, help="comma-separated analyze.py results files, one per seed")
    parser.add_argument("--names", default="", help="comma-separated seed labels (default seed0, seed1, ...)")
    parser.add_argument("--plot", default="", help="PNG name in this folder (default seeds_<dataset>.png)")
    args = parser.parse_args()
    paths = args.results.split(",")
    names = args.names.split(",") if args.names else [f"seed{i}" for i in range(len(paths))]
    seeds = [(n, json.load(open(p))[args.dataset]) for n, p in zip(names, paths)]
    sections = [("accuracy vs dense", accuracy(seeds)), ("FLOPs", flops(seeds)), ("usage TV", usage(seeds))]
    if any("top_p_vs_hardness" in res for _, res in seeds):
        sections.append(("top-p vs hardness", hardness(seeds)))
    if all("merging" in res for _, res in seeds):
        sections.append(("merging", merging(seeds)))
    if all("bits" in res for _, res in seeds):
        sections.append(("bits", bits(seeds)))
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    plot(seeds, os.path.join(HERE, args.plot or f"seeds_{args.dataset}.png"), args.dataset)


if __name__ == "__main__":
    main()
