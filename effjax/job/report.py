"""`report.md`: a short human summary of a supernet search (best points per budget, the front).

Paths in it are relative to the workdir it is written to (where report.md lives)."""

from __future__ import annotations

import os

import numpy as np


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
    trace = []
    for n in range(1, len(values) + 1):
        hv = hypervolume(values[:n], [0.0, 1.1, 1.1], ["max", "min", "min"])
        trace.append((n, float(hv), float(values[:n, 0].max())))
    return trace


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


def render(points, full_metrics, config, exports, workdir: str | None = None) -> str:
    """The report's markdown; with `workdir` (where report.md is written), export paths are relative to it."""
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
        f"({max(flops) / max(min(flops), 1):.1f}x){ties}.",
        "",
        f"Full supernet (all widths 1, dense attention, most experts, float32): validation score {full_metrics['score']:.4f}. "
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
        lines.append(
            f"| {p['cost']['flops'] / top:.0%} | {p['id']} | {_describe(p)} | {p['metrics']['score']:.4f} | "
            f"{p['metrics'].get('test_score', float('nan')):.4f} | {p['cost']['flops'] / 1e6:.3f} | "
            f"{p['cost']['bits'] / 8 / 1024:.1f} | `{exports.get(p['id'], '-')}` |")
    lines += ["", "## The front", "", "| id | config | val score | MFLOPs | size (KiB) |", "|---|---|---|---|---|"]
    for p in front:
        lines.append(f"| {p['id']} | {_describe(p)} | {p['metrics']['score']:.4f} | {p['cost']['flops'] / 1e6:.3f} | "
                     f"{p['cost']['bits'] / 8 / 1024:.1f} |")
    scores = np.array([p["metrics"]["score"] for p in front])
    lines += ["", "What the front says: going from the largest to the smallest front point divides FLOPs by "
              f"{max(flops) / max(min(flops), 1):.1f}x and changes the score by {100 * (scores[0] - scores[-1]):+.2f} points "
              "(smallest minus largest). Export any point: `python -m effjax.job.export --workdir=<this dir> --point=<id>` "
              "or `--max_flops=<F>`.", ""]
    return "\n".join(lines)
