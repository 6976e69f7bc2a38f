"""Mean ± std over seeds, int4-minus-float gaps, and Pareto plots from `results.jsonl`.

  python -m experiments.quantized_pareto.plot

Writes `pareto_<dataset>.png` next to this file and prints the README tables:
per point (width x precision x recipe) the mean ± std over seeds of every test
metric; the int4-minus-float gap per width, paired by seed; the int4 recipes
compared on val (the recipe is selected on val, its test gap reported); the
Pareto front of the seed means. Where an int4 recipe that starts from the float
checkpoint has a float control (the same continuation without quantization, so
the same number of training steps), the int4 run is also compared with it, and
the control joins the front next to the recipe. Only rows on the current schedule of `run.py`
(`job_config`) are used; rows of older schedules are counted and left out.
BOPs and model bits are the shared `elastic_cost` of each run's config, recomputed
here: BOPs = sum(MACs x weight bits x activation bits), attention einsums at
activation bits squared (they run quantized); model bits = quantized kernels at
their bits, scales, biases, norms and tokens at 32 bits (as served).
Accuracy and mIoU are shown in points (x100); depth RMSE in its own units (lower
is better). std is the sample standard deviation (ddof = 1).
"""

from __future__ import annotations

import functools
import json
import os
from collections import defaultdict

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments import seed_stats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PRIMARY = {"digits": ("digit", "test accuracy (digit), %"), "shapes": ("segmentation", "test mIoU (segmentation), %")}
LOWER_IS_BETTER = {"depth"}
STYLE = {"float": ("tab:blue", "o", "float32"), "8": ("tab:orange", "s", "int8"), "4": ("tab:green", "^", "int4 (first/last 8)")}
PRECISION_ORDER = {"float": 0, "8": 1, "4": 2}


@functools.lru_cache(maxsize=None)
def _cost(dataset: str, width: int, precision: str) -> dict:
    from experiments.quantized_pareto.run import run_cost
    return run_cost(dataset, width, precision)


def cost(dataset: str, width: int, precision: str, key: str) -> float:
    return _cost(dataset, width, precision)[key]


@functools.lru_cache(maxsize=None)
def current_steps(dataset: str, width: int, precision: str, recipe: str) -> int:
    from experiments.quantized_pareto.run import Job, job_config
    return int(job_config(Job(dataset, width, precision, 0, recipe)).train.num_steps)


def recipe_of(r: dict) -> str:
    return r.get("recipe", "from_float" if r["from_float"] else "scratch")


def load(path=os.path.join(HERE, "results.jsonl")) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def scale(task: str, value: float) -> float:
    return value if task in LOWER_IS_BETTER else 100.0 * value


def mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def fmt(values, digits: int = 2) -> str:
    return seed_stats.mean_std(values, digits)


def digits_of(task: str) -> int:
    return 3 if task in LOWER_IS_BETTER else 2


class Point:
    """One (dataset, width, precision, recipe): its rows, one per seed."""

    def __init__(self, dataset, width, precision, recipe, rows):
        self.dataset, self.width, self.precision, self.recipe = dataset, width, precision, recipe
        self.rows = sorted(rows, key=lambda r: r.get("seed", 0))

    @property
    def label(self) -> str:
        start = "" if self.recipe == "scratch" else f" [{self.recipe}]"
        return f"w{self.width}/{STYLE[self.precision][2]}{start}"

    def seeds(self) -> list[int]:
        return [r.get("seed", 0) for r in self.rows]

    def test(self, task: str) -> list[float]:
        return [scale(task, r["test"][task]) for r in self.rows]

    def by_seed(self, split: str, task: str) -> dict[int, float]:
        return {r.get("seed", 0): scale(task, r[split][task]) for r in self.rows if split in r}

    def mean(self, task: str) -> float:
        return mean_std(self.test(task))[0]

    def cost(self, key: str) -> float:
        return cost(self.dataset, self.width, self.precision, key)


def points_of(dataset: str, records: list[dict]) -> tuple[list[Point], int]:
    groups, left_out = defaultdict(list), 0
    for r in records:
        if r["dataset"] != dataset:
            continue
        if r["steps"] != current_steps(dataset, r["width"], r["precision"], recipe_of(r)):
            left_out += 1
            continue
        groups[(r["width"], r["precision"], recipe_of(r))].append(r)
    points = [Point(dataset, w, p, rec, rows) for (w, p, rec), rows in groups.items()]
    points.sort(key=lambda p: (p.width, p.recipe != "scratch", p.recipe, PRECISION_ORDER[p.precision]))
    return points, left_out


def pareto(points):
    """Indices of points not dominated (lower cost, higher metric)."""
    keep = []
    for i, (c, m) in enumerate(points):
        if not any((c2 <= c and m2 >= m) and (c2 < c or m2 > m) for c2, m2 in points):
            keep.append(i)
    return keep


def front(points: list[Point], task: str, key: str) -> list[Point]:
    return sorted((points[i] for i in pareto([(p.cost(key), p.mean(task)) for p in points])), key=lambda p: p.cost(key))


def controls_of(points: list[Point], chosen: list[Point]) -> list[Point]:
    """Float runs of the same recipe and width as a chosen int4 recipe (its control at equal steps)."""
    return [p for p in points if p.precision == "float" and p.recipe != "scratch"
            and any(c.width == p.width and c.recipe == p.recipe for c in chosen)]


def plot(dataset: str, points: list[Point], extra: list[Point]) -> str:
    """Scratch points (filled), the val-selected int4 recipes and their float controls (hollow); front over the
    scratch means."""
    task, label = PRIMARY[dataset]
    scratch = [p for p in points if p.recipe == "scratch"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.9))
    for ax, (key, xlabel) in zip(axes, (("bops", "BOPs per example"), ("weight_bits", "model bits (as served)"))):
        for precision, (color, marker, name) in STYLE.items():
            for group, hollow in ((scratch, False), (extra, True)):
                ps = [p for p in group if p.precision == precision]
                if not ps:
                    continue
                stats = [mean_std(p.test(task)) for p in ps]
                ax.errorbar([p.cost(key) for p in ps], [m for m, _ in stats], yerr=[0 if np.isnan(s) else s for _, s in stats],
                            fmt=marker, color=color, mfc="none" if hollow else color, ms=7, capsize=3,
                            label=name + ("" if not hollow else " [float control of the recipe]" if precision == "float"
                                          else " [val-selected recipe]"))
                for p, (m, _) in zip(ps, stats):
                    ax.annotate(f"w{p.width}", (p.cost(key), m), fontsize=7, xytext=(4, -9 if hollow else 4),
                                textcoords="offset points")
        f = front(scratch, task, key)
        ax.step([p.cost(key) for p in f], [p.mean(task) for p in f], where="post", color="gray", lw=1, ls="--",
                label="Pareto front (scratch means)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)  # below the axes: no point hidden
    n = sorted({len(p.rows) for p in scratch})
    fig.suptitle(f"{dataset}: QAT with AQT, " + ("one seed per point" if n == [1] else
                                                 f"mean ± std over {'/'.join(map(str, n))} seeds per point"))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    out = os.path.join(HERE, f"pareto_{dataset}.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def table(points: list[Point]) -> str:
    tasks = list(points[0].rows[0]["test"])
    head = ("| width | precision | start | seeds | " + " | ".join(f"{t} (test)" for t in tasks)
            + " | served = eval | BOPs | model bits | serving memory B | float ckpt B | serving ckpt B | ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        r0 = p.rows[0]
        metrics = " | ".join(fmt(p.test(t), digits_of(t)) for t in tasks)
        served = [r.get("served_test") for r in p.rows]
        same = "-" if served[0] is None else (
            "yes" if all(s is not None and all(abs(s[t] - r["test"][t]) < 1e-6 for t in tasks)
                         for s, r in zip(served, p.rows)) else "NO")
        ckpt = r0.get("serving_checkpoint_bytes")
        ratio = "-" if ckpt is None else f"{r0['float_checkpoint_bytes'] / ckpt:.2f}x"
        lines.append(f"| {p.width} | {STYLE[p.precision][2]} | {p.recipe} | {','.join(map(str, p.seeds()))} | "
                     f"{metrics} | {same} | {p.cost('bops'):.3g} | {p.cost('weight_bits'):.3g} | "
                     f"{r0.get('serving_memory_bytes', r0['float_param_bytes'])} | {r0['float_checkpoint_bytes']} | "
                     f"{ckpt or '-'} | {ratio} |")
    return "\n".join(lines)


def paired_gaps(a: Point, b: Point, split: str, task: str) -> dict[int, float]:
    """a - b per seed both have (in points; for lower-is-better tasks, raw units)."""
    va, vb = a.by_seed(split, task), b.by_seed(split, task)
    return {s: va[s] - vb[s] for s in sorted(set(va) & set(vb))}


def gap_table(points: list[Point]) -> str:
    """int4 (each recipe) minus float at the same width, paired by seed, every test task."""
    tasks = list(points[0].rows[0]["test"])
    floats = {p.width: p for p in points if p.precision == "float" and p.recipe == "scratch"}
    controls = {(p.width, p.recipe): p for p in points if p.precision == "float" and p.recipe != "scratch"}
    head = "| width | int4 start | " + " | ".join(f"{t}: gap mean ± std | {t}: per seed" for t in tasks) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        if p.precision != "4" or p.width not in floats:
            continue
        references = [(floats[p.width], p.recipe)]
        if (p.width, p.recipe) in controls:
            references.append((controls[(p.width, p.recipe)], f"{p.recipe} (minus float {p.recipe}, equal steps)"))
        for reference, start in references:
            cells = []
            for t in tasks:
                g = paired_gaps(p, reference, "test", t)
                d = digits_of(t)
                cells.append(f"{fmt(list(g.values()), d)} | " + ", ".join(f"s{s}: {v:+.{d}f}" for s, v in g.items()))
            lines.append(f"| {p.width} | {start} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_selection(dataset: str, points: list[Point]) -> tuple[str, dict[int, str]]:
    """int4 recipes per width, as gaps to float paired by seed, on val (primary task) over the seeds where
    every recipe of that width and the float run have val; the recipe with the best mean val gap is
    selected (ties keep the earlier: scratch first). Returns (markdown table, {width: selected recipe})."""
    task, _ = PRIMARY[dataset]
    floats = {p.width: p for p in points if p.precision == "float" and p.recipe == "scratch"}
    int4 = [p for p in points if p.precision == "4" and p.width in floats]
    recipes = sorted({p.recipe for p in int4}, key=lambda r: (r != "scratch", r))
    head = ("| width | seeds with val | " + " | ".join(f"{r}: val gap | {r}: test gap" for r in recipes)
            + " | selected on val | its test gap |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    selected = {}
    for w in sorted(floats):
        present = {r: p for r in recipes for p in int4 if p.width == w and p.recipe == r}
        common = set(floats[w].by_seed("val", task))
        for p in present.values():
            common &= set(p.by_seed("val", task))
        cells, val_means = [], {}
        for r in recipes:
            if r not in present:
                cells.append("- | -")
                continue
            val = [g for s, g in paired_gaps(present[r], floats[w], "val", task).items() if s in common]
            test = paired_gaps(present[r], floats[w], "test", task)
            if val:
                val_means[r] = float(np.mean(val))
            cells.append(f"{fmt(val) if val else '-'} | {fmt(list(test.values()))} (n={len(test)})")
        best = max(val_means, key=lambda r: val_means[r], default=None)
        ties = [r for r in val_means if r != best and val_means[r] == val_means.get(best)]
        if best is not None:
            selected[w] = best
            test = paired_gaps(present[best], floats[w], "test", task)
        lines.append(f"| {w} | {','.join(map(str, sorted(common))) or '-'} | " + " | ".join(cells) + " | "
                     + ("-" if best is None else best + (f" (tie with {', '.join(ties)})" if ties else ""))
                     + " | " + ("-" if best is None else fmt(list(test.values()))) + " |")
    return "\n".join(lines), selected


def dominance(dataset: str, points: list[Point], selected: dict[int, str]) -> str:
    task, _ = PRIMARY[dataset]
    scratch = [p for p in points if p.recipe == "scratch"]
    chosen = [p for p in points if p.precision == "4" and p.recipe != "scratch" and selected.get(p.width) == p.recipe]
    controls = controls_of(points, chosen)
    out = []
    for key, name in (("bops", "BOPs"), ("weight_bits", "model bits")):
        out.append(f"- front by {name} (scratch means): " + ", ".join(
            f"{p.label} ({p.mean(task):.2f})" for p in front(scratch, task, key)))
        if chosen:
            out.append(f"- front by {name} with the val-selected int4 recipes added: " + ", ".join(
                f"{p.label} ({p.mean(task):.2f})" for p in front(scratch + chosen, task, key)))
        if controls:
            out.append(f"- front by {name} with the val-selected int4 recipes and their float controls added: " + ", ".join(
                f"{p.label} ({p.mean(task):.2f})" for p in front(scratch + chosen + controls, task, key)))
    for f in [p for p in scratch if p.precision == "float"] + controls:
        candidates = [q for q in scratch if q.precision != "float"] + ([] if f.recipe == "scratch" else chosen)
        better = [q for q in candidates if q.cost("bops") < f.cost("bops")
                  and q.cost("weight_bits") < f.cost("weight_bits") and q.mean(task) >= f.mean(task)]
        cheapest = min(better, key=lambda q: q.cost("bops"), default=None)
        out.append(f"- {f.label} ({fmt(f.test(task))}): " + (
            "no quantized model with fewer BOPs and fewer bits reaches its mean" if cheapest is None else
            f"dominated by {cheapest.label} ({fmt(cheapest.test(task))}) at {f.cost('bops') / cheapest.cost('bops'):.0f}x "
            f"fewer BOPs, {f.cost('weight_bits') / cheapest.cost('weight_bits'):.1f}x fewer bits; per seed "
            + ", ".join(f"s{s}: {g:+.2f}" for s, g in paired_gaps(cheapest, f, "test", task).items())))
    return "\n".join(out)


def main():
    records = load()
    for dataset in PRIMARY:
        points, left_out = points_of(dataset, records)
        if not points:
            continue
        selection, selected = recipe_selection(dataset, points)
        chosen = [p for p in points if p.precision == "4" and p.recipe != "scratch" and selected.get(p.width) == p.recipe]
        chosen += controls_of(points, chosen)
        print(f"## {dataset}: {left_out} rows of older schedules left out\n")
        print(plot(dataset, points, chosen))
        print()
        print(table(points))
        print("\nint4 minus float, same width, paired by seed (test):\n")
        print(gap_table(points))
        print(f"\nint4 recipes, gap to float on val and test ({PRIMARY[dataset][0]}), selected on val per width:\n")
        print(selection)
        print()
        print(dominance(dataset, points, selected))
        print()


if __name__ == "__main__":
    main()
