"""`report.md`: a short human summary of a supernet search (best points per budget, the front).

Paths in it are relative to the workdir it is written to (where report.md lives). Points are
selected on validation; test scores are shown beside them, and the gap to the same configurations
trained alone is read from the supernet-vs-standalone study's shipped summary
(`experiments/supernet_vs_standalone/results/summary.json`), or stated as not measured."""

from __future__ import annotations

import json
import os

import numpy as np

from effjax.search import reference


def budget_picks(points, fractions=(1.0, 0.5, 0.25, 0.1)) -> list[dict]:
    """The best-scoring front point within each fraction of the largest evaluated FLOPs."""
    front = [p for p in points if p["pareto"]]
    if not front:
        return []
    top = max(p["cost"]["flops"] for p in points)
    picks = []
    for f in fractions:
        within = [p for p in front if p["cost"]["flops"] <= f * top]
        if within:
            best = max(within, key=lambda p: p["metrics"]["score"])
            if best not in picks:
                picks.append(best)
    return picks


def search_trace(points) -> list[tuple[int, float, float]]:
    """(evaluation number, hypervolume, best score) after each evaluation, in evaluation (id) order.

    Hypervolume of (score up, FLOPs down, bits down) with FLOPs and bits divided by their largest
    evaluated value, against the reference point (score 0, FLOPs 1.1, bits 1.1) in those units."""
    from effjax.search import hypervolume

    ordered = sorted(points, key=lambda p: p["id"])
    if not ordered:
        return []
    top_flops = max(p["cost"]["flops"] for p in ordered) or 1.0
    top_bits = max(p["cost"]["bits"] for p in ordered) or 1.0
    values = np.array([[p["metrics"]["score"], p["cost"]["flops"] / top_flops, p["cost"]["bits"] / top_bits]
                       for p in ordered], np.float64)
    return [(n, float(hypervolume(values[:n], [0.0, 1.1, 1.1], ["max", "min", "min"])), float(values[:n, 0].max()))
            for n in range(1, len(values) + 1)]


STUDY = "experiments/supernet_vs_standalone"
STUDY_SUMMARY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             STUDY, "results", "summary.json")


def standalone_gap(dataset: str, path: str = STUDY_SUMMARY) -> str:
    """One paragraph: the study's measured supernet-minus-alone gap for `dataset`, or "not measured"."""
    try:
        with open(path) as f:
            measured = json.load(f).get(dataset)
    except (OSError, ValueError):
        measured = None
    if not measured:
        return (f"Gap to the same configurations trained alone: not measured for {dataset} "
                f"(study: `{STUDY}`, `python -m tools.standalone_grid --workdir=<this dir>`).")
    parts = []
    for budget, label in (("a", "same steps"), ("b", "equal total training FLOPs")):
        b = measured.get(f"budget_{budget}")
        if b:
            parts.append(f"budget ({budget}, {label}): mean {b['score_gap_mean']:+.2f} score points over the "
                         f"study's {b['k']} configurations (from {b['score_gap_min']:+.2f} to {b['score_gap_max']:+.2f}), "
                         f"{b['seeds']} seed(s)")
    return (f"Gap to the same configurations trained alone, measured on the test split (supernet zero-shot minus alone; "
            f"`{STUDY}`): " + "; ".join(parts) + ".")


def _describe(p) -> str:
    c = p["config"]
    dec = ", ".join(f"{k} {v:g}" for k, v in sorted(c["decoder_widths"].items()))
    bits = "float32" if c["weight_bits"] is None else f"int{c['weight_bits']} (first/last int{c['first_last_bits']})"
    if p.get("pvq"):
        q = p["pvq"]
        bits = (f"PVQ L{q['group_size']} K{q['pulses']} b_s{q['scale_bits']}{' rot' if q['rotate'] else ''} "
                f"({q['bits_per_weight']:g} bits/w; first/last int{c['first_last_bits']})")
    knobs = ""
    if c.get("attention_keep_ratio", 1.0) < 1:
        knobs += f", keep {c['attention_keep_ratio']:g}"
    if c.get("moe_top_k"):
        knobs += f", top-{c['moe_top_k']}"
    return f"encoder {c['encoder_width']:g}, decoders [{dec}]{knobs}, weights {bits}"


def _cells(p) -> str:
    """A table row's config, val score, test score, MFLOPs and size cells of a point (or the full supernet's record)."""
    return (f"{_describe(p)} | {p['metrics']['score']:.4f} | {p['metrics'].get('test_score', float('nan')):.4f} | "
            f"{p['cost']['flops'] / 1e6:.3f} | {p['cost']['bits'] / 8 / 1024:.1f}")


def render(points, full_metrics, config, exports, workdir: str | None = None) -> str:
    """The report's markdown; with `workdir` (where report.md is written), export paths are relative to it.
    `full_metrics`: the full supernet's metrics (or its pareto.json record, with "metrics")."""
    full_record = full_metrics if "metrics" in full_metrics else None
    full_metrics = full_metrics.get("metrics", full_metrics)
    full_test = full_metrics.get("test_score")
    full_test_text = "" if full_test is None else f", test score {full_test:.4f}"
    if workdir is not None:
        exports = {k: os.path.relpath(os.path.abspath(v), os.path.abspath(workdir)) for k, v in exports.items()}
    front = sorted((p for p in points if p["pareto"]), key=lambda p: p["cost"]["flops"])
    flops = [p["cost"]["flops"] for p in front]
    best = max(points, key=lambda p: p["metrics"]["score"])
    vectors = [(p["metrics"]["score"], p["cost"]["flops"], p["cost"]["bits"]) for p in front]
    tied = sum(1 for v in vectors if vectors.count(v) > 1)
    ties = (f" ({tied} of them tie another front point's score, FLOPs and bits exactly; ties are all flagged and "
            "counted)") if tied else ""
    lines = [
        f"# Supernet search report ({config.data.name})",
        "",
        f"{len(points)} configurations evaluated zero-shot on the validation split; {len(front)} are Pareto-optimal in "
        f"(score up, FLOPs down, bits down), spanning {min(flops):.3g} to {max(flops):.3g} FLOPs per example "
        f"({max(flops) / max(min(flops), 1):.1f}x){ties}. Search: qLogNEHVI, {reference.describe()}",
        "",
        f"Full supernet (all widths 1, dense attention, most experts, float32): validation score {full_metrics['score']:.4f}"
        f"{full_test_text}. "
        f"Best evaluated point: {best['metrics']['score']:.4f} (id {best['id']}, {_describe(best)}), "
        f"{100 * (best['metrics']['score'] - full_metrics['score']):+.2f} points.",
        "",
        "## Best point per FLOPs budget",
        "",
        "| budget (of max FLOPs) | id | config | val score | test score | MFLOPs | size (KiB) | export |",
        "|---|---|---|---|---|---|---|---|",
    ]
    top = max(p["cost"]["flops"] for p in points)
    for p in budget_picks(points):
        lines.append(f"| {p['cost']['flops'] / top:.0%} | {p['id']} | {_cells(p)} | `{exports.get(p['id'], '-')}` |")
    lines += ["", "## The front", "", "| id | config | val score | test score | MFLOPs | size (KiB) |",
              "|---|---|---|---|---|---|"]
    for p in front:
        lines.append(f"| {p['id']} | {_cells(p)} |")
    if full_record is not None and full_test is not None:
        lines.append(f"| full supernet (not selectable) | {_cells(full_record)} |")
    scores = np.array([p["metrics"]["score"] for p in front])
    lines += ["", "What the front says: going from the largest to the smallest front point divides FLOPs by "
              f"{max(flops) / max(min(flops), 1):.1f}x and changes the score by {100 * (scores[0] - scores[-1]):+.2f} points "
              "(smallest minus largest). Export any point: `python -m effjax.job.export --workdir=<this dir> --point=<id>` "
              "or `--max_flops=<F>`.", "", "## Compared with training each configuration alone", "",
              standalone_gap(config.data.name), ""]
    return "\n".join(lines)

