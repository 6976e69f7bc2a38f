"""Tables of the wide-supernet study (README, "A wider supernet than the configurations it serves").

  python -m experiments.supernet_recipes.report_wide [--seeds=0,1,2] [--factor=2] [--digits_retrained=3,4,5] [--shapes_retrained=0,1,2] \
      [--shapes_confirm=3,4,5]

Reads `results/digits_wide<f>_seed<S>.json` (`wide.py`) and the standalone study's
`grid_digits_budgeta_seed<S>.json`, prints the markdown tables and the verdict of the decision rule, and
writes every figure printed to `results/digits_wide<f>_summary.json`. For context (added after the rule, not
part of it) it also sets the wide supernet beside the baseline supernet trained twice as long
(`grid_digits_x2_budgeta_seed<S>.json`, 1000 steps), the nearest equal-compute point on disk. With the files of
runs where both supernets were retrained on one host (`results/<dataset>_retrained_{base,wide<f>}_seed<S>.json`,
scored by `wide.py`: digits' fresh seeds 3-5, shapes' seeds 0-2) it adds their tables and verdicts.
"""

from __future__ import annotations

import json
import os
import statistics

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
GRIDS = os.path.join(HERE, "..", "supernet_vs_standalone", "results")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
_FACTOR = flags.DEFINE_integer("factor", 2, "width_overprovision of the runs")
_DIGITS_AGAIN = flags.DEFINE_list("digits_retrained", ["3", "4", "5"], "digits seeds with both supernets retrained")
_SHAPES_AGAIN = flags.DEFINE_list("shapes_retrained", ["0", "1", "2"], "shapes seeds with both supernets retrained")
_SHAPES_CONFIRM = flags.DEFINE_list("shapes_confirm", ["3", "4", "5"], "shapes fresh seeds confirming lr 0.006")


def mean_std(values) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values, sign: bool = False) -> str:
    m, s = mean_std(values)
    return f"{m:+.2f} ± {s:.2f}" if sign else f"{m:.2f} ± {s:.2f}"


def describe(config: dict) -> str:
    dec = ", ".join(f"{t} {w:g}" for t, w in sorted(config["decoder_widths"].items()))
    bits = "fp32" if config["weight_bits"] is None else f"int{config['weight_bits']}"
    return (f"enc {config['encoder_width']:g}, dec ({dec}), keep {config['attention_keep_ratio']:g}, "
            f"top-{config['moe_top_k']}, {bits}")


def load(seeds, factor, run: str = "") -> tuple[list[dict], list[dict]]:
    """The standalone study's budget (a) grids and the wide runs (`run`: "" equal steps, "eqflops_") per seed."""
    grids, wides = [], []
    for s in seeds:
        with open(os.path.join(GRIDS, f"grid_digits_budgeta_seed{s}.json")) as f:
            grids.append(json.load(f))
        with open(os.path.join(HERE, "results", f"digits_wide{factor}_{run}seed{s}.json")) as f:
            wides.append(json.load(f))
    return grids, wides


def per_config(grids, wides, tasks) -> list[dict]:
    """Per configuration and seed (x100 points): gaps to alone of both supernets, on test and val."""
    rows = []
    for i, record in enumerate(grids[0]["records"]):
        row = {"point_id": record["point_id"], "roles": record["roles"], "config": record["config"]}
        for split in ("val", "test"):
            for key in tasks + ["score"]:
                alone = [g["records"][i]["alone"][split][key] for g in grids]
                base = [g["records"][i]["supernet"][split][key] for g in grids]
                wide = [w["records"][i]["wide"][split][key] for w in wides]
                assert all(w["records"][i]["point_id"] == record["point_id"] for w in wides)
                row[f"{split}/{key}"] = {"alone": [100 * a for a in alone], "baseline": [100 * b for b in base],
                                         "wide": [100 * w for w in wide],
                                         "gap_baseline": [100 * (b - a) for a, b in zip(alone, base)],
                                         "gap_wide": [100 * (w - a) for a, w in zip(alone, wide)],
                                         "wide_minus_baseline": [100 * (w - b) for b, w in zip(base, wide)]}
        rows.append(row)
    return rows


def longer_baseline(seeds, wides) -> dict:
    """Post hoc: wide (500 steps) minus the baseline supernet at 1000 steps, mean over the K configurations."""
    out = {}
    for split in ("val", "test"):
        per_seed = []
        for s, w in zip(seeds, wides):
            with open(os.path.join(GRIDS, f"grid_digits_x2_budgeta_seed{s}.json")) as f:
                x2 = json.load(f)
            assert [r["point_id"] for r in x2["records"]] == [r["point_id"] for r in w["records"]]
            per_seed.append(100 * statistics.mean(b["wide"][split]["score"] - a["supernet"][split]["score"]
                                                  for a, b in zip(x2["records"], w["records"])))
            out["x2_total_flops"] = x2["supernet_flops"]["total"]
        out[split] = per_seed
    return out


def rule(rows, seeds) -> dict:
    """D_S: mean over the configurations of (wide - baseline) validation score; the README's decision rule."""
    d = [statistics.mean(r["val/score"]["wide_minus_baseline"][j] for r in rows) for j in range(len(seeds))]
    m, s = mean_std(d)
    verdict = "better" if m > 0 and m > s else "worse" if m < 0 and -m > s else "no difference claimed"
    if len(seeds) < 3:
        verdict = "not decided (the rule needs seeds 0, 1, 2)"
    t = [statistics.mean(r["test/score"]["wide_minus_baseline"][j] for r in rows) for j in range(len(seeds))]
    return {"val_D_per_seed": d, "val_D_mean": m, "val_D_std": s, "verdict": verdict, "test_D_per_seed": t,
            "test_D_mean": mean_std(t)[0], "test_D_std": mean_std(t)[1]}


def tables(rows, tasks, decision, flops, seeds, factor) -> str:
    out = [f"### digits, budget (a), wide={factor}: test, seeds {', '.join(seeds)}", "",
           "Score gap to the configuration trained alone (supernet minus alone, points, mean ± sample std over seeds):",
           "", "| id | roles | config | gap baseline supernet | gap wide supernet | wide minus baseline | "
           "score alone | score baseline | score wide |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["test/score"]
        out.append(f"| {r['point_id']} | {', '.join(r['roles'])} | {describe(r['config'])} | {fmt(c['gap_baseline'], True)} "
                   f"| {fmt(c['gap_wide'], True)} | {fmt(c['wide_minus_baseline'], True)} | {fmt(c['alone'])} "
                   f"| {fmt(c['baseline'])} | {fmt(c['wide'])} |")
    out += ["", "Per task, wide supernet minus alone (test, points):", "",
            "| id | " + " | ".join(f"{t} pts" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for r in rows:
        out.append(f"| {r['point_id']} | " + " | ".join(fmt(r[f'test/{t}']['gap_wide'], True) for t in tasks) + " |")
    mean_gap = {k: [statistics.mean(r["test/score"][k][j] for r in rows) for j in range(len(seeds))]
                for k in ("gap_baseline", "gap_wide")}
    worst = {k: min(statistics.mean(r["test/score"][k]) for r in rows) for k in ("gap_baseline", "gap_wide")}
    best = {k: max(statistics.mean(r["test/score"][k]) for r in rows) for k in ("gap_baseline", "gap_wide")}
    met = all(statistics.mean(r["test/score"]["gap_wide"]) >= -1.0 for r in rows)
    d = decision
    out += ["", f"Mean score gap over the K configurations (test): baseline {fmt(mean_gap['gap_baseline'], True)}, "
            f"wide {fmt(mean_gap['gap_wide'], True)}; per-configuration range: baseline {worst['gap_baseline']:+.2f} to "
            f"{best['gap_baseline']:+.2f}, wide {worst['gap_wide']:+.2f} to {best['gap_wide']:+.2f}.", "",
            f"Issue target (every configuration within 1 point of itself trained alone, test, mean over seeds), wide "
            f"supernet: **{'met' if met else 'missed'}**.", "",
            f"Training FLOPs at equal steps ({flops['steps']}): baseline supernet {flops['baseline_per_step']:.3g} per step, "
            f"{flops['baseline_total']:.3g} in all; wide supernet {flops['wide_per_step']:.3g} per step "
            f"(max configuration's gradient {flops['wide_max_grad']:.3g}, baseline's {flops['baseline_max_grad']:.3g}), "
            f"{flops['wide_total']:.3g} in all: **{flops['ratio']:.2f}x** the baseline. The 6 standalone models together: "
            f"{flops['standalone_total']:.3g} (mean over seeds); wide supernet / all standalone "
            f"{flops['wide_total'] / flops['standalone_total']:.2f}.", "",
            "Decision rule (validation, mean over the K configurations of wide minus baseline supernet score, points): "
            f"D = {d['val_D_mean']:+.2f} ± {d['val_D_std']:.2f} (per seed "
            + ", ".join(f"{x:+.2f}" for x in d["val_D_per_seed"]) + f"): **{d['verdict']}**. Test, reported only: "
            f"{d['test_D_mean']:+.2f} ± {d['test_D_std']:.2f} (per seed " + ", ".join(f"{x:+.2f}" for x in d["test_D_per_seed"]) + ")."]
    return "\n".join(out)


def context(x2, flops) -> str:
    return ("Context, added after the rule and not part of it: against the baseline supernet trained twice as long "
            f"(1000 steps, {x2['x2_total_flops']:.3g} FLOPs; the wide supernet used {flops['wide_total'] / x2['x2_total_flops']:.2f}x "
            "that), wide minus 2x baseline, mean over the K configurations: validation "
            f"{fmt(x2['val'], True)}, test {fmt(x2['test'], True)} points.")


def equal_flops(seeds, factor) -> tuple[str, dict]:
    """The secondary: the wide supernet trained for the baseline's total FLOPs (files digits_wide<f>_eqflops_*)."""
    present = [s for s in seeds if os.path.isfile(os.path.join(HERE, "results", f"digits_wide{factor}_eqflops_seed{s}.json"))]
    if not present:
        return "", {}
    grids, wides = load(present, factor, "eqflops_")
    rows = per_config(grids, wides, grids[0]["tasks"])
    d, flops = rule(rows, present), flops_summary(grids, wides)
    out = [f"### digits, equal FLOPs (secondary): wide={factor} for {flops['steps']} steps, test, seeds {', '.join(present)}",
           "", "| id | gap baseline supernet (500 steps) | gap wide supernet | wide minus baseline |", "|---|---|---|---|"]
    for r in rows:
        c = r["test/score"]
        out.append(f"| {r['point_id']} | {fmt(c['gap_baseline'], True)} | {fmt(c['gap_wide'], True)} "
                   f"| {fmt(c['wide_minus_baseline'], True)} |")
    out += ["", f"Training FLOPs: wide {flops['wide_total']:.3g} against the baseline's {flops['baseline_total']:.3g} "
            f"({flops['ratio']:.2f}x). Mean over the K configurations, wide minus baseline: validation "
            f"{d['val_D_mean']:+.2f} ± {d['val_D_std']:.2f} (per seed " + ", ".join(f"{x:+.2f}" for x in d["val_D_per_seed"])
            + f"; by the rule's thresholds: {d['verdict']}), test {d['test_D_mean']:+.2f} ± {d['test_D_std']:.2f}."]
    return "\n".join(out), {"rows": rows, "rule": d, "flops": flops}


def retrained(dataset: str, seeds, variant: str, label: str, confirmation: bool) -> tuple[str, dict]:
    """A variant supernet against the baseline, both trained on one host (`<dataset>_retrained_{base,<variant>}_seed<S>
    .json`, both from `wide.py`; `label` names the variant in the tables): D_S as in the rule, on val (decides) and test (reported); with the standalone study's grid of a
    seed, each side's test gap to the configurations trained alone as context. `confirmation`: the seeds confirm a
    pass on earlier seeds (verdict "confirmed" / "not confirmed") rather than decide one."""
    path = lambda run, s: os.path.join(HERE, "results", f"{dataset}_retrained_{run}_seed{s}.json")  # noqa: E731
    present = [s for s in seeds if os.path.isfile(path("base", s)) and os.path.isfile(path(variant, s))]
    if not present:
        return "", {}
    runs = {}
    for run in ("base", variant):
        runs[run] = []
        for s in present:
            with open(path(run, s)) as f:
                runs[run].append(json.load(f))
    base, wide = runs["base"], runs[variant]
    for bs, ws in zip(base, wide):
        assert [r["point_id"] for r in bs["records"]] == [r["point_id"] for r in ws["records"]]
    def grid_path(s):  # this study's own standalone grids (seeds the standalone study did not run) first
        name = f"grid_{dataset}_budgeta_seed{s}.json"
        own = os.path.join(HERE, "results", name)
        return own if os.path.isfile(own) else os.path.join(GRIDS, name)
    grids = None
    if all(os.path.isfile(grid_path(s)) for s in present):
        grids = []
        for s in present:
            with open(grid_path(s)) as f:
                grids.append({r["point_id"]: r for r in json.load(f)["records"]})
    d = {split: [100 * statistics.mean(w["wide"][split]["score"] - b["wide"][split]["score"]
                                       for b, w in zip(bs["records"], ws["records"], strict=True))
                 for bs, ws in zip(base, wide)] for split in ("val", "test")}
    m, sd = mean_std(d["val"])
    if len(present) < 3:
        verdict = "not decided (fewer than 3 seeds)"
    elif confirmation:
        verdict = "confirmed" if m > 0 and m > sd else "not confirmed"
    else:
        verdict = "better" if m > 0 and m > sd else "worse" if m < 0 and -m > sd else "no difference claimed"
    header = (f"| id | config | val baseline | val {label} | val {label} minus baseline | test baseline | test {label} "
              f"| test {label} minus baseline |")
    if grids:
        header += f" test gap baseline to alone | test gap {label} to alone |"
    rows = [header, "|---" * header.count(" |") + "|"]
    gaps = {"base": [], "wide": []}
    for i, r in enumerate(base[0]["records"]):
        cell = lambda run, split: [100 * x["records"][i]["wide"][split]["score"] for x in run]  # noqa: E731
        diff = lambda split: [w - b for b, w in zip(cell(base, split), cell(wide, split))]  # noqa: E731
        line = (f"| {r['point_id']} | {describe(r['config'])} | {fmt(cell(base, 'val'))} | {fmt(cell(wide, 'val'))} "
                f"| {fmt(diff('val'), True)} | {fmt(cell(base, 'test'))} | {fmt(cell(wide, 'test'))} "
                f"| {fmt(diff('test'), True)} |")
        if grids:
            alone = [100 * g[r["point_id"]]["alone"]["test"]["score"] for g in grids]
            gap_b = [b - a for a, b in zip(alone, cell(base, "test"))]
            gap_w = [w - a for a, w in zip(alone, cell(wide, "test"))]
            gaps["base"].append(statistics.mean(gap_b))
            gaps["wide"].append(statistics.mean(gap_w))
            line += f" {fmt(gap_b, True)} | {fmt(gap_w, True)} |"
        rows.append(line)
    lines = [f"#### {dataset}, seeds {', '.join(present)}: {label} against the baseline, both retrained on one host", "",
             "Score (mean task score x 100, mean ± sample std over seeds) at the K configurations:", ""] + rows + [
        "", f"Rule (validation): D = {m:+.2f} ± {sd:.2f} (per seed " + ", ".join(f"{x:+.2f}" for x in d["val"])
        + f"): **{verdict}**. Test, reported only: {fmt(d['test'], True)} (per seed "
        + ", ".join(f"{x:+.2f}" for x in d["test"]) + ")."]
    summary = {"dataset": dataset, "seeds": present, "D_val": d["val"], "D_test": d["test"], "verdict": verdict,
               "train_flops_per_step": {"baseline": base[0]["supernet_flops"]["per_step"],
                                        "variant": wide[0]["supernet_flops"]["per_step"]}}
    ratio = summary["train_flops_per_step"]["variant"] / summary["train_flops_per_step"]["baseline"]
    lines += ["", f"Training FLOPs per step: baseline {summary['train_flops_per_step']['baseline']:.3g}, {label} "
              f"{summary['train_flops_per_step']['variant']:.3g} ({ratio:.2f}x)."]
    if grids:
        within = {k: sum(g >= -1.0 for g in v) for k, v in gaps.items()}
        summary.update(mean_gap_to_alone=gaps, within_1_point=within)
        lines += ["", f"Test gap to the configurations trained alone (`{os.path.relpath(grid_path(present[0]), HERE)}` and "
                  "its other seeds), mean over "
                  f"the K configurations: baseline {statistics.mean(gaps['base']):+.2f}, {label} {statistics.mean(gaps['wide']):+.2f}; "
                  f"per configuration: baseline {min(gaps['base']):+.2f} to {max(gaps['base']):+.2f}, {label} "
                  f"{min(gaps['wide']):+.2f} to {max(gaps['wide']):+.2f}; within 1 point: baseline {within['base']}, {label} "
                  f"{within['wide']} of {len(gaps['wide'])}."]
    return "\n".join(lines), summary


def same_lr_gaps(dataset: str, tag: str, label: str, seeds) -> tuple[str, dict]:
    """Supernet minus alone (test) from this study's grids `grid_<dataset>_<tag>_budgeta_seed<S>.json`, where the
    standalone models were trained with the supernet's own recipe (`tools.standalone_grid --workdir=<it>`)."""
    paths = [os.path.join(HERE, "results", f"grid_{dataset}_{tag}_budgeta_seed{s}.json") for s in seeds]
    if not all(os.path.isfile(p) for p in paths):
        return "", {}
    grids = []
    for p in paths:
        with open(p) as f:
            grids.append(json.load(f))
    tasks = grids[0]["tasks"]
    lines = [f"#### {dataset}, seeds {', '.join(seeds)}: the {label} supernet against standalone models at the same learning rate", "",
             "| id | config | " + " | ".join("depth RMSE %" if t == "depth" else f"{t} pts" for t in tasks)
             + " | score pts | score supernet | score alone |",
             "|---" * (len(tasks) + 5) + "|"]
    gaps = {}
    for i, r in enumerate(grids[0]["records"]):
        assert all(g["records"][i]["point_id"] == r["point_id"] for g in grids)
        per = lambda key, side: [100 * g["records"][i][side]["test"][key] for g in grids]  # noqa: E731
        gap = lambda key: [(b - a) / a * 100 if key == "depth" else b - a  # noqa: E731
                           for a, b in zip(per(key, "alone"), per(key, "supernet"))]
        gaps[r["point_id"]] = gap("score")
        lines.append(f"| {r['point_id']} | {describe(r['config'])} | " + " | ".join(fmt(gap(t), True) for t in tasks)
                     + f" | {fmt(gap('score'), True)} | {fmt(per('score', 'supernet'))} | {fmt(per('score', 'alone'))} |")
    means = [statistics.mean(v) for v in gaps.values()]
    within = sum(m >= -1.0 for m in means)
    lines += ["", f"Score gap, mean over the K configurations: {statistics.mean(means):+.2f} (per configuration "
              f"{min(means):+.2f} to {max(means):+.2f}); within 1 point on {within} of {len(means)}. Depth: the supernet's RMSE minus the "
              "standalone model's, in % of the latter (positive: the supernet is worse)."]
    return "\n".join(lines), {"gaps": {str(k): v for k, v in gaps.items()}, "mean": statistics.mean(means),
                              "within_1_point": within}


def flops_summary(grids, wides) -> dict:
    base, wide = grids[0]["supernet_flops"], wides[0]["supernet_flops"]
    return {"steps": wides[0]["steps"], "baseline_per_step": base["per_step"], "baseline_total": base["total"],
            "baseline_max_grad": base["max_grad"], "wide_per_step": wide["per_step"], "wide_total": wide["total"],
            "wide_max_grad": wide["max_grad"], "ratio": wide["total"] / base["total"],
            "standalone_total": statistics.mean(g["standalone_total_flops"] for g in grids)}


def main(_):
    seeds, factor = _SEEDS.value, _FACTOR.value
    grids, wides = load(seeds, factor)
    tasks = grids[0]["tasks"]
    rows = per_config(grids, wides, tasks)
    decision, flops = rule(rows, seeds), flops_summary(grids, wides)
    x2 = longer_baseline(seeds, wides)
    eq_text, eq = equal_flops(seeds, factor)
    text = tables(rows, tasks, decision, flops, seeds, factor) + "\n\n" + context(x2, flops)
    text += "\n\n" + eq_text if eq_text else ""
    again = {}
    for dataset, seeds_again, variant, label, confirmation in (
            ("digits", _DIGITS_AGAIN.value, f"wide{factor}", "wide", True),
            ("shapes", _SHAPES_AGAIN.value, f"wide{factor}", "wide", False),
            ("shapes", _SHAPES_AGAIN.value, "lr2x", "lr 0.006", False),
            ("shapes", _SHAPES_CONFIRM.value, "lr2x", "lr 0.006", True)):
        again_text, again[f"{dataset}_{variant}_seeds{''.join(seeds_again)}"] = retrained(
            dataset, seeds_again, variant, label, confirmation)
        text += "\n\n" + again_text if again_text else ""
    lr_text, again["shapes_lr2x_same_lr_standalone"] = same_lr_gaps("shapes", "lr2x", "lr 0.006", _SHAPES_AGAIN.value)
    text += "\n\n" + lr_text if lr_text else ""
    with open(os.path.join(HERE, "results", f"digits_wide{factor}_summary.json"), "w") as f:
        json.dump({"seeds": seeds, "factor": factor, "rows": rows, "rule": decision, "flops": flops,
                   "vs_baseline_2x_steps": x2, "equal_flops": eq, "retrained": again}, f, indent=1)
    print(text)


if __name__ == "__main__":
    app.run(main)
