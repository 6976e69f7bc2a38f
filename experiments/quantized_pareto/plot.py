"""Plots accuracy vs BOPs and vs model bits from `results.jsonl`, and prints the README tables.

  python -m experiments.quantized_pareto.plot

Writes `pareto_<dataset>.png` next to this file. BOPs and model bits are the
shared `vit_cost` of each run's config, recomputed here: BOPs = sum(MACs x weight
bits x activation bits), attention einsums at activation bits squared (they run
quantized); model bits = quantized kernels at their bits, scales, biases, norms and
tokens at 32 bits (as served).
"""

from __future__ import annotations

import functools
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PRIMARY = {"digits": ("digit", "test accuracy (digit)"), "shapes": ("segmentation", "test mIoU (segmentation)")}
STYLE = {"float": ("tab:blue", "o", "float32"), "8": ("tab:orange", "s", "int8"), "4": ("tab:green", "^", "int4 (first/last 8)")}


@functools.lru_cache(maxsize=None)
def _cost(dataset: str, width: int, precision: str) -> dict:
    from experiments.quantized_pareto.run import run_cost
    return run_cost(dataset, width, precision)


def cost(record: dict, key: str) -> float:
    return _cost(record["dataset"], record["width"], record["precision"])[key]


def load(path=os.path.join(HERE, "results.jsonl")) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pareto(points):
    """Indices of points not dominated (lower cost, higher metric)."""
    keep = []
    for i, (c, m) in enumerate(points):
        if not any((c2 <= c and m2 >= m) and (c2 < c or m2 > m) for c2, m2 in points):
            keep.append(i)
    return keep


def plot(dataset: str, records: list[dict]) -> str:
    task, label = PRIMARY[dataset]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, xlabel) in zip(axes, (("bops", "BOPs per example"), ("weight_bits", "model bits (as served)"))):
        cost_of = functools.partial(cost, key=key)
        for precision, (color, marker, name) in STYLE.items():
            rs = [r for r in records if r["precision"] == precision and not r["from_float"]]
            ax.scatter([cost_of(r) for r in rs], [r["test"][task] for r in rs], c=color, marker=marker, label=name, s=50)
            for r in rs:
                ax.annotate(f"w{r['width']}", (cost_of(r), r["test"][task]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        scratch = [r for r in records if not r["from_float"]]
        front = sorted((cost_of(scratch[i]), scratch[i]["test"][task])
                       for i in pareto([(cost_of(r), r["test"][task]) for r in scratch]))
        ax.step([c for c, _ in front], [m for _, m in front], where="post", color="gray", lw=1, ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{dataset}: QAT with AQT, one seed per point")
    fig.tight_layout()
    out = os.path.join(HERE, f"pareto_{dataset}.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def table(dataset: str, records: list[dict]) -> str:
    tasks = list(records[0]["test"])
    head = ("| width | precision | start | " + " | ".join(f"{t} (test)" for t in tasks)
            + " | served = eval | BOPs | model bits | serving memory B | float ckpt B | serving ckpt B | ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(records, key=lambda r: (r["width"], r["from_float"], {"float": 0, "8": 1, "4": 2}[r["precision"]])):
        metrics = " | ".join(f"{r['test'][t]:.4f}" for t in tasks)
        served = r.get("served_test")
        same = "-" if served is None else ("yes" if all(abs(served[t] - r["test"][t]) < 1e-6 for t in tasks) else "NO")
        ckpt = r.get("serving_checkpoint_bytes")
        ratio = "-" if ckpt is None else f"{r['float_checkpoint_bytes'] / ckpt:.2f}x"
        lines.append(f"| {r['width']} | {STYLE[r['precision']][2]} | {'float ckpt' if r['from_float'] else 'scratch'} | "
                     f"{metrics} | {same} | {cost(r, 'bops'):.3g} | {cost(r, 'weight_bits'):.3g} | "
                     f"{r.get('serving_memory_bytes', r['float_param_bytes'])} | {r['float_checkpoint_bytes']} | "
                     f"{ckpt or '-'} | {ratio} |")
    return "\n".join(lines)


def dominance(dataset: str, records: list[dict]) -> str:
    task, _ = PRIMARY[dataset]
    scratch = [r for r in records if not r["from_float"]]
    out = []
    for key, cost_of in (("BOPs", functools.partial(cost, key="bops")), ("bits", functools.partial(cost, key="weight_bits"))):
        front = [scratch[i] for i in pareto([(cost_of(r), r["test"][task]) for r in scratch])]
        out.append(f"{dataset} front by {key}: " + ", ".join(f"w{r['width']}/{STYLE[r['precision']][2]}" for r in
                                                             sorted(front, key=cost_of)))
    return "\n".join(out)


def main():
    records = load()
    for dataset in PRIMARY:
        rs = [r for r in records if r["dataset"] == dataset]
        if not rs:
            continue
        print(plot(dataset, rs))
        print(table(dataset, rs))
        print(dominance(dataset, rs))
        print()


if __name__ == "__main__":
    main()
