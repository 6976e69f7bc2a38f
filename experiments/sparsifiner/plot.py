"""Tables and plots of the Sparsifiner evidence, all read from results/ (written by evaluate.py).

  python -m experiments.sparsifiner.plot digits shapes                  # round "long" (seeds), the default
  python -m experiments.sparsifiner.plot --round=short digits shapes    # the earlier short-run round
  python -m experiments.sparsifiner.plot --variant=kd_only digits      # + a recipe variant's gap rows

A round is a folder results/<round>/ holding either the JSONs of one run set or one folder per seed
(seed0, seed1, ...). Per data set this prints
  - the full table over rho of the first seed (and writes <data>_accuracy_vs_mhsa_flops[_<round>].png
    next to this file: accuracy vs MHSA FLOPs, mean of val and test),
  - per-seed values of the main task at the target rho,
  - the gap to the dense model of the same seed at the target rho, mean +- sample std over seeds.
A variant (results/<variant>/seed*/) holds only stage-2 results; its gaps are taken against the dense
model of the same seed in the round. `--readme` also replaces, in README.md, the text between the lines
`<!-- tables:<round>:<data> -->` and `<!-- /tables -->` with what is printed for that data set.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_RHO = {"digits": 0.2, "shapes": 0.25}
SERIES = (  # file suffix, label, style
    ("finetuned_predictor", "Sparsifiner (stage 1 + 2, predictor mask)", "o-"),
    ("finetuned_random", "random mask, fine-tuned the same way", "s--"),
    ("stage1_predictor", "predictor mask, stage 1 only (no fine-tuning)", "^:"),
    ("stage1_random", "random mask, no fine-tuning", "v:"),
)
GAP_SERIES = (  # file suffix, rho (None: the target), label
    ("finetuned_predictor", None, "predictor mask, fine-tuned (stage 1 + 2)"),
    ("finetuned_random", None, "random mask, fine-tuned"),
    ("stage1_predictor", None, "predictor mask, no fine-tuning (stage 1)"),
    ("stage1_random", None, "random mask, no fine-tuning"),
    ("finetuned_predictor", 1.0, "fine-tuned predictor model evaluated dense"),
)


def _load(directory: str, data: str, suffix: str):
    path = os.path.join(directory, f"{data}_{suffix}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def _seed_dirs(directory: str) -> list[str]:
    seeds = sorted(glob.glob(os.path.join(directory, "seed*")), key=lambda p: int(p.rsplit("seed", 1)[1]))
    return seeds or [directory]


def _scale(metric: str) -> float:
    return 1.0 if metric == "rmse" else 100.0


def _fmt(task_metric: str, value: float) -> str:
    return f"{value:.3f}" if task_metric == "rmse" else f"{100 * value:.1f}"


def _row_at(result: dict, rho: float):
    return next((r for r in result["rows"] if abs(r["rho"] - rho) < 1e-9 and r["token_keep_ratio"] == 1.0), None)


def table(data: str, directory: str) -> str:
    dense = _load(directory, data, "dense")
    tasks = dense["tasks"]
    dense_mhsa = dense["rows"][0]["mhsa_flops"]
    head = " | ".join(f"{t} {m} val / test" for t, m in tasks.items())
    lines = [f"| model | mask | rho | tokens kept | MHSA MFLOPs | MHSA cut | predictor MFLOPs | total MFLOPs | {head} |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(tasks)]
    for suffix, label, _ in (("dense", "dense mt_vit", None),) + SERIES + (
            ("finetuned_predictor_tokens0.5", "Sparsifiner + token pruning (blocks 1, 2)", None),):
        result = _load(directory, data, suffix)
        if result is None:
            continue
        for row in result["rows"]:
            m = row["metrics"]
            cells = " | ".join(f"{_fmt(metric, m['val'][t])} / {_fmt(metric, m['test'][t])}" for t, metric in tasks.items())
            lines.append(f"| {label} | {result['mask']} | {row['rho']} | {row['token_keep_ratio']} | "
                         f"{row['mhsa_flops'] / 1e6:.3f} | {100 * (1 - row['mhsa_flops'] / dense_mhsa):.1f}% | "
                         f"{row['predictor_flops'] / 1e6:.3f} | {row['total_flops'] / 1e6:.2f} | {cells} |")
    return "\n".join(lines)


def per_seed_table(data: str, directory: str, variants: dict[str, str]) -> str:
    """The main task (first task) at the target rho, val / test, one line per seed."""
    rho = TARGET_RHO[data]
    columns = [("dense", "dense", None, directory)] + [(suffix, label, r, directory) for suffix, r, label in GAP_SERIES]
    columns += [(suffix, f"{name}: {label}", r, vdir) for name, vdir in variants.items()
                for suffix, r, label in GAP_SERIES[:2]]
    seeds = _seed_dirs(directory)
    dense0 = _load(seeds[0], data, "dense")
    task, metric = next(iter(dense0["tasks"].items()))
    lines = [f"| seed | " + " | ".join(label for _, label, _, _ in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for seed_dir in seeds:
        if _load(seed_dir, data, "dense") is None:
            continue
        seed = os.path.basename(seed_dir).replace("seed", "")
        cells = []
        for suffix, _, r, base in columns:
            result = _load(os.path.join(base, os.path.basename(seed_dir)) if base != directory else seed_dir, data, suffix)
            row = None if result is None else (result["rows"][0] if suffix == "dense" else _row_at(result, r or rho))
            cells.append("-" if row is None else
                         f"{_fmt(metric, row['metrics']['val'][task])} / {_fmt(metric, row['metrics']['test'][task])}")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return f"{task} {metric}, val / test, rho = {rho}\n\n" + "\n".join(lines)


def gap_table(data: str, directory: str, variants: dict[str, str]) -> str:
    """Metric(series at rho) - metric(dense of the same seed), mean +- sample std over the seeds that have both."""
    rho = TARGET_RHO[data]
    seeds = _seed_dirs(directory)
    tasks = _load(seeds[0], data, "dense")["tasks"]
    series = [(suffix, r, label, directory) for suffix, r, label in GAP_SERIES]
    series += [(suffix, r, f"{name}: {label}", vdir) for name, vdir in variants.items() for suffix, r, label in GAP_SERIES[:2]]
    head = " | ".join(f"{t} {m} gap val | {t} {m} gap test" for t, m in tasks.items())
    lines = [f"| series (rho = {rho} unless noted) | seeds | {head} |", "|---|---:|" + "---:|" * (2 * len(tasks))]
    for suffix, r, label, base in series:
        gaps = {(t, split): [] for t in tasks for split in ("val", "test")}
        n = 0
        for seed_dir in seeds:
            dense = _load(seed_dir, data, "dense")
            result = _load(os.path.join(base, os.path.basename(seed_dir)) if base != directory else seed_dir, data, suffix)
            row = None if result is None or dense is None else _row_at(result, r or rho)
            if row is None:
                continue
            n += 1
            for (t, split), values in gaps.items():
                values.append(_scale(tasks[t]) * (row["metrics"][split][t] - dense["rows"][0]["metrics"][split][t]))
        if n == 0:
            continue
        cells = []
        for (t, split), values in gaps.items():
            digits = 3 if tasks[t] == "rmse" else 1
            spread = f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else ""
            cells.append(f"{np.mean(values):+.{digits}f}{spread}")
        lines.append(f"| {label}{'' if r is None else f' (rho = {r})'} | {n} | " + " | ".join(cells) + " |")
    return ("gap = sparse - dense of the same seed; points for accuracy / mIoU (higher is better), RMSE for depth "
            "(lower is better); mean ± sample std over seeds (no ± with one seed)\n\n" + "\n".join(lines))


def _both(row: dict, task: str) -> float:
    """Mean of the val and test metric (equal-sized splits): twice the examples of either."""
    return 0.5 * (row["metrics"]["val"][task] + row["metrics"]["test"][task])


def plot(data: str, directory: str, out: str) -> str:
    dense = _load(directory, data, "dense")
    tasks = dense["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, (task, metric) in zip(axes[0], tasks.items()):
        scale = _scale(metric)
        for suffix, label, style in SERIES:
            result = _load(directory, data, suffix)
            if result is None:
                continue
            rows = sorted(result["rows"], key=lambda r: r["mhsa_flops"])
            ax.plot([r["mhsa_flops"] / 1e6 for r in rows], [scale * _both(r, task) for r in rows], style, label=label)
            for r in rows:
                ax.annotate(f"{r['rho']:g}", (r["mhsa_flops"] / 1e6, scale * _both(r, task)), fontsize=7)
        d = dense["rows"][0]
        ax.plot([d["mhsa_flops"] / 1e6], [scale * _both(d, task)], "k*", markersize=12, label="dense mt_vit")
        ax.set_xlabel("MHSA MFLOPs per image (logits + softmax + mixing + predictor)")
        ax.set_ylabel(f"{task} {metric}, mean of val and test" + (" (%)" if scale == 100 else ""))
        ax.set_title(f"{data}: {task}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def write_readme(round_name: str, data: str, text: str) -> None:
    path = os.path.join(HERE, "README.md")
    readme = open(path).read()
    begin = f"<!-- tables:{round_name}:{data} -->"
    pattern = re.compile(re.escape(begin) + r"\n.*?<!-- /tables -->", re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md: no '{begin}' ... '<!-- /tables -->' block")
    with open(path, "w") as f:
        f.write(pattern.sub(lambda _: f"{begin}\n{text}\n<!-- /tables -->", readme))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="*", default=["digits", "shapes"])
    parser.add_argument("--round", default="long", help="folder under results/")
    parser.add_argument("--variant", action="append", default=[], help="folder under results/ with stage-2 variants")
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = parser.parse_args()
    directory = os.path.join(HERE, "results", args.round)
    variants = {v: os.path.join(HERE, "results", v) for v in args.variant}
    suffix = "" if args.round == "long" else f"_{args.round}"
    for data in args.data:
        first = _seed_dirs(directory)[0]
        print(plot(data, first, os.path.join(HERE, f"{data}_accuracy_vs_mhsa_flops{suffix}.png")))
        parts = [f"Full table, {os.path.relpath(first, HERE)}:", table(data, first)]
        if glob.glob(os.path.join(directory, "seed*")) or variants:
            parts += ["Per seed, " + per_seed_table(data, directory, variants), "Gaps, " + gap_table(data, directory, variants)]
        text = "\n\n".join(parts)
        print(text + "\n")
        if args.readme:
            write_readme(args.round, data, text)


if __name__ == "__main__":
    main()
