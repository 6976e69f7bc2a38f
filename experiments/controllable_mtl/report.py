"""Markdown tables (stdout) and plots (PNG here) from results_<dataset>[_labels].json written by run.py
(and seeds_<dataset>_<variant>.json written by seeds.py).

  python -m experiments.controllable_mtl.report
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from effjax.data.specs import TaskSpec  # noqa: E402
from effjax.train import mtl_metrics  # noqa: E402
from experiments.controllable_mtl.seeds import oriented_gap, seeds_path, summary_table  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# digits supernet variants whose decoders do more work: (results file key, label); run.py --extra, see the README
DECODER_VARIANTS = (("pool", "mean-pool heads, decoder 128"),
                    ("blocks", "2 encoder blocks + 1 decoder block per task"))
KINDS = {"digit": "classification", "parity": "classification", "ge5": "classification",
         "segmentation": "segmentation", "depth": "depth", "count": "classification"}


def task_specs(names):
    return [TaskSpec(n, KINDS[n], 2) for n in names]


def points(task: TaskSpec, value: float) -> str:
    return f"{value:.3f}" if task.kind == "depth" else f"{100 * value:.1f}"


def gap(task: TaskSpec, supernet: float, alone: float) -> str:
    """Supernet minus alone, oriented so that positive = supernet better: points, or % for RMSE."""
    return f"{oriented_gap(task, supernet, alone):+.1f}" + ("%" if task.kind == "depth" else "")


def width_table(r) -> str:
    tasks = task_specs(r["tasks"])
    head = "| width | MFLOPs/img | " + " | ".join(f"{t.name} super / alone / gap" for t in tasks) + " | Δm super | Δm alone |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    table = r["tables"]["supernet"]["test"]
    for w in r["menu"]:
        sup = {t.name: table[f"{w}|{t.name}|{w}"] for t in tasks}
        alone = r["runs"][f"alone_{w}"]["test"]
        cells = [f"{points(t, sup[t.name])} / {points(t, alone[t.name])} / {gap(t, sup[t.name], alone[t.name])}" for t in tasks]
        lines.append(f"| {w} | {r['flops'][str(w)] / 1e6:.3f} | " + " | ".join(cells) +
                     f" | {mtl_metrics.delta_m(sup, r['single_task'], tasks):+.1f}% | "
                     f"{mtl_metrics.delta_m(alone, r['single_task'], tasks):+.1f}% |")
    single = " / ".join(f"{t.name} {points(t, r['single_task'][t.name])}" for t in tasks)
    return "\n".join(lines) + f"\n\nSingle-task baselines (full width, test): {single}."


def cikd_table(r) -> str:
    tasks = task_specs(r["tasks"])
    w = r["menu"][0]
    lines = ["| encoder | decoders | CIKD | " + " | ".join(t.name for t in tasks) + " | Δm |", "|" + "---|" * (len(tasks) + 4)]
    for d in (w, 1.0):
        for name, label in (("supernet", "on"), ("supernet_nocikd", "off")):
            table = r["tables"][name]["test"]
            m = {t.name: table[f"{w}|{t.name}|{d}"] for t in tasks}
            lines.append(f"| {w} | {d} | {label} | " + " | ".join(points(t, m[t.name]) for t in tasks) +
                         f" | {mtl_metrics.delta_m(m, r['single_task'], tasks):+.1f}% |")
    return "\n".join(lines)


def budget_table(r) -> str:
    tasks = task_specs(r["tasks"])
    c = r["control"]
    lines = ["| budget (MFLOPs) | picked: encoder, decoders | FLOPs (M) | within | " + " | ".join(t.name for t in tasks)
             + " | Δm |", "|" + "---|" * (len(tasks) + 5)]
    for row in c["budget_sweep"]:
        dec = ", ".join(f"{k} {v}" for k, v in sorted(row["subnet"]["decoder_widths"].items()))
        lines.append(f"| {row['budget'] / 1e6:.3f} | {row['subnet']['encoder_width']}; {dec} | {row['flops'] / 1e6:.3f} | "
                     f"{'yes' if row['within_budget'] else 'NO'} | " +
                     " | ".join(points(t, row["test"][t.name]) for t in tasks) + f" | {row['test_delta_m']:+.1f}% |")
    return "\n".join(lines) + f"\n\nHypervolume of (FLOPs, Δm) over the sweep: {c['hypervolume']:.4g} " \
        f"(reference point {c['hypervolume_reference'][0] / 1e6:.3f} MFLOPs, {c['hypervolume_reference'][1]:.1f}% Δm)."


def preference_table(r) -> str:
    tasks = task_specs(r["tasks"])
    c = r["control"]
    sweep = c["preference_sweep"]
    prefs = [row["preference"][0] for row in sweep[tasks[0].name]]
    lines = [f"Fixed budget {c['fixed_budget'] / 1e6:.3f} MFLOPs/img; p = preference of the swept task, the others "
             "share 1 - p. Cell: test metric (picked encoder width e / the task's decoder width d).", "",
             "| swept task | " + " | ".join(f"p={p:.1f}" for p in prefs) + " | Spearman |",
             "|" + "---|" * (2 + len(prefs))]
    for t in tasks:
        cells = [f"{points(t, row['test'][t.name])} (e{row['subnet']['encoder_width']}/d{row['subnet']['decoder_widths'][t.name]})"
                 for row in sweep[t.name]]
        lines.append(f"| {t.name} | " + " | ".join(cells) + f" | {c['controllability'][t.name]:+.2f} |")
    by_budget = ", ".join(f"{b / 1e6:.2f}: {v:+.2f}" for b, v in zip(c["budgets"], c["mean_controllability_by_budget"]))
    return "\n".join(lines) + f"\n\nMean controllability: {c['mean_controllability']:+.2f}. The same study at every " \
        f"budget of the sweep (MFLOPs: mean ρ): {by_budget}."


def decoder_width_effect(r, task: TaskSpec) -> float:
    """Largest test-metric spread across decoder widths at any one encoder width (points; % of the mean for RMSE)."""
    table = r["tables"]["supernet"]["test"]
    spreads = []
    for e in r["menu"]:
        values = [table[f"{e}|{task.name}|{d}"] for d in r["menu"]]
        scale = 100.0 / (sum(values) / len(values)) if task.kind == "depth" else 100.0
        spreads.append(scale * (max(values) - min(values)))
    return max(spreads)


def head_variant_table(named_results) -> str:
    """Controllability per run (seed or head variant) of the digits supernets: does decoder width move accuracy?"""
    tasks = task_specs(named_results[0][1]["tasks"])
    lines = ["| supernet | " + " | ".join(f"ρ {t.name}" for t in tasks) + " | mean ρ (fixed budget) | "
             "mean ρ at the 8 budgets | largest decoder-width effect, test pts (" + " / ".join(t.name for t in tasks) + ") |",
             "|" + "---|" * (len(tasks) + 4)]
    for name, r in named_results:
        c = r["control"]
        lines.append(f"| {name} | " + " | ".join(f"{c['controllability'][t.name]:+.2f}" for t in tasks) +
                     f" | {c['mean_controllability']:+.2f} | " +
                     " ".join(f"{v:+.2f}" for v in c["mean_controllability_by_budget"]) + " | " +
                     " / ".join(f"{decoder_width_effect(r, t):.1f}" for t in tasks) + " |")
    return "\n".join(lines)


def plot_preference(results) -> str:
    fig, axes = plt.subplots(len(results), 3, figsize=(12, 3.2 * len(results)), squeeze=False)
    for row_axes, r in zip(axes, results):
        tasks = task_specs(r["tasks"])
        for i, (ax, t) in enumerate(zip(row_axes, tasks)):
            rows = r["control"]["preference_sweep"][t.name]
            ax.plot([x["preference"][i] for x in rows], [x["test"][t.name] for x in rows], "o-")
            ax.set_title(f"{title(r)}: {t.name} (ρ={r['control']['controllability'][t.name]:+.2f})", fontsize=9)
            ax.set_xlabel(f"preference of {t.name}")
            ax.set_ylabel({"depth": "RMSE (lower better)", "segmentation": "mIoU"}.get(t.kind, "accuracy"))
    fig.tight_layout()
    path = os.path.join(HERE, "performance_vs_preference.png")
    fig.savefig(path, dpi=110)
    return path


def plot_budget(results) -> str:
    cols = 2
    fig, axes = plt.subplots((len(results) + cols - 1) // cols, cols, figsize=(12, 4 * ((len(results) + 1) // cols)),
                             squeeze=False)
    for ax, r in zip(axes.ravel(), results):
        tasks = task_specs(r["tasks"])
        sweep = r["control"]["budget_sweep"]
        ax.plot([x["budget"] / 1e6 for x in sweep], [x["test_delta_m"] for x in sweep], "o-", label="controller pick (test)")
        table = r["tables"]["supernet"]["test"]
        for w in r["menu"]:
            m = {t.name: table[f"{w}|{t.name}|{w}"] for t in tasks}
            alone = r["runs"][f"alone_{w}"]["test"]
            ax.plot(r["flops"][str(w)] / 1e6, mtl_metrics.delta_m(m, r["single_task"], tasks), "s", color="C1",
                    label="supernet, uniform width" if w == r["menu"][0] else None)
            ax.plot(r["flops"][str(w)] / 1e6, mtl_metrics.delta_m(alone, r["single_task"], tasks), "^", color="C2",
                    label="width trained alone" if w == r["menu"][0] else None)
        ax.set_xlabel("FLOPs budget (M per image)")
        ax.set_ylabel("Δm vs single-task (%)")
        ax.set_title(f"{title(r)}: Δm against budget (uniform preference)", fontsize=9)
        ax.legend()
    fig.tight_layout()
    path = os.path.join(HERE, "performance_vs_budget.png")
    fig.savefig(path, dpi=110)
    return path


def title(r) -> str:
    return f"{r['dataset']}, {'supernet ' + r['supernet_variant'] if r.get('supernet_variant') else 'KD + CIKD supernet'}"


def main():
    names = [f"results_{d}{v}.json" for d in ("digits", "shapes") for v in ("", "_labels")]
    results = [json.load(open(os.path.join(HERE, n))) for n in names if os.path.exists(os.path.join(HERE, n))]
    for r in results:
        runs = r["runs"]
        print(f"\n## {title(r)}\n")
        print("Training wall time (s, 2-core CPU): " + ", ".join(f"{k} {v['seconds']:.0f}" for k, v in runs.items()))
        print("\n### Every width of the supernet vs the same width trained alone (test, seed 0)\n")
        print(width_table(r))
        seeds_file = seeds_path(r["dataset"], r.get("supernet_variant", ""))
        if os.path.exists(seeds_file):
            seeds = json.load(open(seeds_file))
            print(f"\nOver seeds {', '.join(sorted(seeds['seeds'], key=int))} (`seeds.py`), supernet minus alone, test:\n")
            print(summary_table(seeds, task_specs(r["tasks"]), r["menu"]))
        if "supernet_nocikd" in r["tables"]:
            print("\n### CIKD on vs off at the smallest encoder (test)\n")
            print(cikd_table(r))
        print("\n### Budget sweep, uniform preference (selected on val, reported on test)\n")
        print(budget_table(r))
        print("\n### Preference sweep (selected on val, reported on test)\n")
        print(preference_table(r))
        if "control_largest" in r:
            cs = r["control_largest"]
            print("\nWith the largest fitting decoder level instead (`decoder_level=\"largest\"`): controllability " +
                  ", ".join(f"{k} {v:+.2f}" for k, v in cs["controllability"].items()) +
                  f", mean {cs['mean_controllability']:+.2f}; budget-sweep hypervolume {cs['hypervolume']:.4g}.")
    printed = {os.path.basename(seeds_path(r["dataset"], r.get("supernet_variant", ""))) for r in results}
    extra = sorted(n for n in os.listdir(HERE) if n.startswith("seeds_") and n.endswith(".json") and n not in printed)
    if extra:
        print("\n## Other supernet variants and schedules (`seeds.py`), supernet minus alone, test\n")
    for name in extra:
        seeds = json.load(open(os.path.join(HERE, name)))
        with_steps = f" + `{seeds['variants']}` on every run" if seeds.get("variants") else ""
        print(f"{seeds['dataset']}, supernet `{seeds['supernet_variant'] or 'KD + CIKD'}`{with_steps}, seeds "
              f"{', '.join(sorted(seeds['seeds'], key=int))}:\n")
        first = next(iter(seeds["seeds"].values()))
        print(summary_table(seeds, task_specs(list(first[str(seeds["menu"][0])]["test"])), seeds["menu"]) + "\n")
    variants = [(f"labels, {label}, seed {n}", os.path.join(HERE, f"results_digits_labels_{key}_seed{n}.json"))
                for key, label in DECODER_VARIANTS for n in range(3)]
    variants = [(name, json.load(open(path))) for name, path in variants if os.path.exists(path)]
    if variants:
        baseline = [("labels, class-token heads, decoder 64, seed 0", r) for r in results
                    if r["dataset"] == "digits" and r.get("supernet_variant") == "labels"]
        print("\n## digits: decoders with more work to do (mean-pool heads; task decoder blocks)\n")
        print(head_variant_table(baseline + variants))
        for key, label in DECODER_VARIANTS:
            runs = [r for name, r in variants if label in name]
            if runs:
                mean = sum(r["control"]["mean_controllability"] for r in runs) / len(runs)
                print(f"\n{label}: mean ρ over {len(runs)} seed(s) = {mean:+.2f}.", end="")
        print()
    if results:
        print("\n", plot_preference(results), plot_budget(results))


if __name__ == "__main__":
    main()
