"""Tables and plots of the Sparsifiner evidence, all read from results/ (written by evaluate.py).

  python -m experiments.sparsifiner.plot digits shapes                  # round "long" (seeds), the default
  python -m experiments.sparsifiner.plot --round=short digits shapes    # the earlier short-run round
  python -m experiments.sparsifiner.plot --variant=recipe digits       # + a stage-2 recipe variant's rows
  python -m experiments.sparsifiner.plot --sweep=sweep digits          # the stage-2 recipe sweep table

A round is a folder results/<round>/ holding either the JSONs of one run set or one folder per seed
(seed0, seed1, ...). Per data set this prints
  - the full table over rho of the first seed (and writes <data>_accuracy_vs_mhsa_flops[_<round>].png
    next to this file: accuracy vs MHSA FLOPs, mean of val and test),
  - per-seed values of the main task at the target rho,
  - the gap to the dense model of the same seed at the target rho, mean +- sample std over seeds.
A variant (results/<variant>/seed*/) holds only stage-2 results; its gaps are taken against the dense
model of the same seed in the round, and with a variant only the per-seed, gap and selection-metric tables
are printed (round and variant side by side). A sweep (results/<sweep>/<name>/, one seed, written by
sweep_digits.sh) gives one row per stage-2 recipe, the round's first seed as the default recipe, and the
recipe that the selection rule (`select`) picks on val. `--readme` also replaces, in README.md, the text
between the lines `<!-- tables:<block>:<data> -->` and `<!-- /tables -->` with what is printed for that data
set; the block is the round, `<round>+<variant>` with a variant, or the sweep's name.
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

from experiments.seed_stats import mean_std  # noqa: E402

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

VARIANT_SERIES = GAP_SERIES[:2] + GAP_SERIES[4:]  # what a stage-2 variant has: both fine-tuned masks, and rho 1


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
                for suffix, r, label in VARIANT_SERIES]
    seeds = _seed_dirs(directory)
    dense0 = _load(seeds[0], data, "dense")
    task, metric = next(iter(dense0["tasks"].items()))
    lines = ["| seed | " + " | ".join(label for _, label, _, _ in columns) + " |",
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
    series += [(suffix, r, f"{name}: {label}", vdir) for name, vdir in variants.items() for suffix, r, label in VARIANT_SERIES]
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
            cells.append(mean_std(values, digits, signed=True))
        lines.append(f"| {label}{'' if r is None else f' (rho = {r})'} | {n} | " + " | ".join(cells) + " |")
    return ("gap = sparse - dense of the same seed; points for accuracy / mIoU (higher is better), RMSE for depth "
            "(lower is better); mean ± sample std over seeds (no ± with one seed)\n\n" + "\n".join(lines))


def selection_metric(row: dict, tasks: dict, split: str = "val") -> float:
    """The metric stage-2 recipes are compared on (split val, predictor mask, target rho): the mean accuracy of
    the tasks when all are accuracy tasks (digits); otherwise the segmentation mIoU, the metric of the shapes
    target."""
    if all(metric == "accuracy" for metric in tasks.values()):
        return float(np.mean([row["metrics"][split][t] for t in tasks]))
    if tasks.get("segmentation") == "miou":
        return float(row["metrics"][split]["segmentation"])
    raise ValueError(f"selection_metric: tasks {tasks}: need all accuracy tasks or a segmentation (miou) task")


def selection_label(tasks: dict) -> str:
    if all(metric == "accuracy" for metric in tasks.values()):
        return f"mean accuracy of the {len(tasks)} tasks, %"
    return "segmentation mIoU, points"


def select(candidates: list[tuple[str, dict, dict]], tasks: dict) -> str:
    """Name of the recipe with the highest val selection metric; ties go to the config default ("default"),
    then to fewer steps, then to the lower learning rate (the smaller move away from the stage-1 weights).
    `candidates`: (name, recipe, row at the target rho)."""
    def key(candidate):
        name, recipe, row = candidate
        return (-round(selection_metric(row, tasks), 9), name != "default", recipe["num_steps"], recipe["learning_rate"])
    return min(candidates, key=key)[0]


def sweep_table(data: str, sweep_dir: str, dense_dir: str) -> str:
    """One row per stage-2 recipe in results/<sweep>/<name>/ (predictor mask, one seed), at the target rho and
    run dense (rho 1), with the selected recipe marked; gaps against the dense model in `dense_dir`."""
    rho = TARGET_RHO[data]
    dense = _load(dense_dir, data, "dense")
    tasks = dense["tasks"]
    entries = []
    for name in sorted(os.listdir(sweep_dir)):
        result = _load(os.path.join(sweep_dir, name), data, "finetuned_predictor")
        if result is not None:
            entries.append((name, result["recipe"], _row_at(result, rho), _row_at(result, 1.0)))
    entries.sort(key=lambda e: (e[1]["learning_rate"], e[1]["num_steps"], e[1]["distill_logits_weight"]))
    chosen = select([(name, recipe, row) for name, recipe, row, _ in entries], tasks)
    d = dense["rows"][0]
    head = " | ".join(f"{t} val / test" for t in tasks)
    lines = [f"| recipe | learning rate | steps | distillation weights (logits / tokens) | {head} | "
             f"mean of the {len(tasks)} tasks val / test | gap of the mean vs dense val / test | "
             "same weights run dense (rho 1): mean val / test | selected |",
             "|---|---:|---:|---:|" + "---:|" * (len(tasks) + 3) + "---|"]
    lines.append(f"| dense teacher ({os.path.relpath(dense_dir, HERE)}) | | | | "
                 + " | ".join(f"{100 * d['metrics']['val'][t]:.1f} / {100 * d['metrics']['test'][t]:.1f}" for t in tasks)
                 + f" | {100 * selection_metric(d, tasks):.2f} / {100 * selection_metric(d, tasks, 'test'):.2f} | | | |")
    for name, recipe, row, dense_row in entries:
        cells = " | ".join(f"{100 * row['metrics']['val'][t]:.1f} / {100 * row['metrics']['test'][t]:.1f}" for t in tasks)
        means = {split: 100 * selection_metric(row, tasks, split) for split in ("val", "test")}
        gaps = {split: means[split] - 100 * selection_metric(d, tasks, split) for split in ("val", "test")}
        at_one = ("-" if dense_row is None else f"{100 * selection_metric(dense_row, tasks):.2f} / "
                  f"{100 * selection_metric(dense_row, tasks, 'test'):.2f}")
        lines.append(f"| {name} | {recipe['learning_rate']:g} | {recipe['num_steps']} | "
                     f"{recipe['distill_logits_weight']:g} / {recipe['distill_tokens_weight']:g} | {cells} | "
                     f"{means['val']:.2f} / {means['test']:.2f} | {gaps['val']:+.2f} / {gaps['test']:+.2f} | {at_one} | "
                     f"{'**selected**' if name == chosen else ''} |")
    return (f"predictor mask, rho = {rho}, {os.path.basename(dense_dir)}; accuracy in %; selection: the highest val "
            f"{selection_label(tasks).rsplit(',', 1)[0]} (ties: the default, then fewer steps, then the lower learning rate)\n\n"
            + "\n".join(lines))


def selection_table(data: str, directory: str, variants: dict[str, str]) -> str:
    """The selection metric (val and test) of the fine-tuned predictor mask per seed and its mean over seeds,
    for the round's recipe and each variant."""
    rho = TARGET_RHO[data]
    seeds = _seed_dirs(directory)
    tasks = _load(seeds[0], data, "dense")["tasks"]
    names = [os.path.basename(s) for s in seeds]
    lines = ["| stage-2 recipe | " + " | ".join(f"{n} val / test" for n in names)
             + " | mean over seeds val / test | gap vs dense, mean ± std over seeds, val / test |",
             "|---|" + "---:|" * (len(names) + 2)]
    for label, base in [(f"{os.path.basename(directory)} (round)", directory)] + list(variants.items()):
        values, gaps = {"val": [], "test": []}, {"val": [], "test": []}
        cells = []
        for seed_dir, n in zip(seeds, names):
            result = _load(os.path.join(base, n), data, "finetuned_predictor")
            row = None if result is None else _row_at(result, rho)
            if row is None:
                cells.append("-")
                continue
            dense = _load(seed_dir, data, "dense")["rows"][0]
            for split in values:
                values[split].append(100 * selection_metric(row, tasks, split))
                gaps[split].append(values[split][-1] - 100 * selection_metric(dense, tasks, split))
            cells.append(f"{values['val'][-1]:.2f} / {values['test'][-1]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(values['val']):.2f} / {np.mean(values['test']):.2f} | "
                     + " / ".join(mean_std(gaps[split], 2, signed=True) for split in ("val", "test")) + " |")
    return (f"Selection metric ({selection_label(tasks)}), predictor mask, fine-tuned, rho = {rho}:\n\n"
            + "\n".join(lines))


def paired_mask_table(data: str, directory: str, variants: dict[str, str]) -> str:
    """Predictor mask minus random mask, both fine-tuned with the same recipe on the same seed, at the target
    rho: mean ± sample std over seeds per task and split, and in how many (seed, split) pairs the predictor
    mask is ahead / level / behind."""
    rho = TARGET_RHO[data]
    seeds = _seed_dirs(directory)
    tasks = _load(seeds[0], data, "dense")["tasks"]
    head = " | ".join(f"{t} val | {t} test" for t in tasks)
    lines = [f"| stage-2 recipe | seeds | {head} | {next(iter(tasks))}: (seed, split) pairs predictor ahead / level / behind |",
             "|---|---:|" + "---:|" * (2 * len(tasks) + 1)]
    for label, base in [(f"{os.path.basename(directory)} (round)", directory)] + list(variants.items()):
        diffs = {(t, split): [] for t in tasks for split in ("val", "test")}
        n = 0
        for seed_dir in seeds:
            folder = os.path.join(base, os.path.basename(seed_dir))
            pred, rand = (_load(folder, data, f"finetuned_{mask}") for mask in ("predictor", "random"))
            if pred is None or rand is None:
                continue
            n += 1
            p_row, r_row = _row_at(pred, rho), _row_at(rand, rho)
            for (t, split), values in diffs.items():
                values.append(_scale(tasks[t]) * (p_row["metrics"][split][t] - r_row["metrics"][split][t]))
        if n == 0:
            continue
        main = [v for (t, _), values in diffs.items() if t == next(iter(tasks)) for v in values]
        tally = f"{sum(v > 1e-6 for v in main)} / {sum(abs(v) <= 1e-6 for v in main)} / {sum(v < -1e-6 for v in main)}"
        lines.append(f"| {label} | {n} | " + " | ".join(mean_std(v, 1, signed=True) for v in diffs.values()) + f" | {tally} |")
    return (f"Predictor mask minus random mask (both fine-tuned, same recipe and seed), rho = {rho}; points, "
            "mean ± sample std over seeds:\n\n" + "\n".join(lines))


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
    parser.add_argument("--sweep", default="", help="folder under results/ with a stage-2 recipe sweep (one seed)")
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = parser.parse_args()
    directory = os.path.join(HERE, "results", args.round)
    variants = {v: os.path.join(HERE, "results", v) for v in args.variant}
    suffix = "" if args.round == "long" else f"_{args.round}"
    for data in args.data:
        first = _seed_dirs(directory)[0]
        if args.sweep:
            block, parts = args.sweep, ["Stage-2 recipe sweep, " + sweep_table(data, os.path.join(HERE, "results", args.sweep), first)]
        elif variants:
            block = "+".join([args.round] + args.variant)
            parts = ["Per seed, " + per_seed_table(data, directory, variants), "Gaps, " + gap_table(data, directory, variants),
                     selection_table(data, directory, variants), paired_mask_table(data, directory, variants)]
        else:
            block = args.round
            print(plot(data, first, os.path.join(HERE, f"{data}_accuracy_vs_mhsa_flops{suffix}.png")))
            parts = [f"Full table, {os.path.relpath(first, HERE)}:", table(data, first)]
            if glob.glob(os.path.join(directory, "seed*")):
                parts += ["Per seed, " + per_seed_table(data, directory, variants), "Gaps, " + gap_table(data, directory, variants)]
        text = "\n\n".join(parts)
        print(text + "\n")
        if args.readme:
            write_readme(block, data, text)


if __name__ == "__main__":
    main()
