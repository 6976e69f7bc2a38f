"""Accuracy vs MHSA FLOPs over rho from results/<data>_*.json (written by evaluate.py):
writes <data>_accuracy_vs_mhsa_flops.png next to this file and prints the markdown tables.

  python -m experiments.sparsifiner.plot digits
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SERIES = (  # file suffix, label, style
    ("finetuned_predictor", "Sparsifiner (stage 1 + 2, predictor mask)", "o-"),
    ("finetuned_random", "random mask, fine-tuned the same way", "s--"),
    ("stage1_predictor", "predictor mask, stage 1 only (no fine-tuning)", "^:"),
    ("stage1_random", "random mask, no fine-tuning", "v:"),
)


def _load(data: str, suffix: str):
    path = os.path.join(HERE, "results", f"{data}_{suffix}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def _fmt(task_metric: str, value: float) -> str:
    return f"{value:.3f}" if task_metric == "rmse" else f"{100 * value:.1f}"


def table(data: str) -> str:
    dense = _load(data, "dense")
    tasks = dense["tasks"]
    dense_mhsa = dense["rows"][0]["mhsa_flops"]
    head = " | ".join(f"{t} {m} val / test" for t, m in tasks.items())
    lines = [f"| model | mask | rho | tokens kept | MHSA MFLOPs | MHSA cut | predictor MFLOPs | total MFLOPs | {head} |",
             "|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(tasks)]
    for suffix, label, _ in (("dense", "dense mt_vit", None),) + SERIES + (
            ("finetuned_predictor_tokens0.5", "Sparsifiner + token pruning (blocks 1, 2)", None),):
        result = _load(data, suffix)
        if result is None:
            continue
        for row in result["rows"]:
            m = row["metrics"]
            cells = " | ".join(f"{_fmt(metric, m['val'][t])} / {_fmt(metric, m['test'][t])}" for t, metric in tasks.items())
            lines.append(f"| {label} | {result['mask']} | {row['rho']} | {row['token_keep_ratio']} | "
                         f"{row['mhsa_flops'] / 1e6:.3f} | {100 * (1 - row['mhsa_flops'] / dense_mhsa):.1f}% | "
                         f"{row['predictor_flops'] / 1e6:.3f} | {row['total_flops'] / 1e6:.2f} | {cells} |")
    return "\n".join(lines)


def _both(row: dict, task: str) -> float:
    """Mean of the val and test metric (equal-sized splits): twice the examples of either."""
    return 0.5 * (row["metrics"]["val"][task] + row["metrics"]["test"][task])


def plot(data: str) -> str:
    dense = _load(data, "dense")
    tasks = dense["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, (task, metric) in zip(axes[0], tasks.items()):
        scale = 1 if metric == "rmse" else 100
        for suffix, label, style in SERIES:
            result = _load(data, suffix)
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
    out = os.path.join(HERE, f"{data}_accuracy_vs_mhsa_flops.png")
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or ["digits", "shapes"]:
        print(plot(name))
        print(table(name))
