"""Wall time of the main job's search: one compiled program per encoder width vs one per configuration.

Trains the main job's supernet (or reuses the checkpoint in `--workdir`), then runs the
same 40-evaluation search twice on it, side by side: with the evaluator's traced knobs
(decoder widths, keep ratio and top-k traced; one program per encoder width) and with
one compiled program per configuration (the reference). Both searches see the same
scores up to float rounding (tests/supernet/test_super_vit.py), so they propose the
same configurations unless a near-tie flips. Writes the "search_eval" section of
BENCHMARKS.md and `experiments/pipeline/search_eval.json`.

    python -m tools.bench_search_eval --workdir=/tmp/bench_search_eval
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax

from effjax.config.load import load_config
from effjax.job.subnet_search import SubnetEvaluator, run_search
from effjax.train.setup import load_run
from effjax.train.trainer import train_and_evaluate
from tools.bench_report import machine_line, write_section

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "experiments", "pipeline", "search_eval.json")
COMMAND = "python -m tools.bench_search_eval --workdir=/tmp/bench_search_eval"


def train(config_spec: str, workdir: str) -> float:
    """Seconds of the main job's training (0 when the workdir already holds a trained run)."""
    if os.path.isfile(os.path.join(workdir, "config.json")):
        return 0.0
    config = load_config(config_spec)
    config.log.progress_bar = False
    os.makedirs(workdir, exist_ok=True)
    start = time.perf_counter()
    train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    seconds = time.perf_counter() - start
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2))
    return seconds


def timed_search(run, traced: bool, seed: int) -> dict:
    evaluator = SubnetEvaluator(run.setup, run.params, dict(run.config.search.score_weights), traced_knobs=traced)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_search(evaluator, run.config.search, out, seed)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "evaluations": len(result.history), "programs": evaluator.compiled_programs,
            "scores": [e.values["score"] for e in result.history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "pipeline.py"))
    args = parser.parse_args()
    train_seconds = train(args.config, args.workdir)
    run = load_run(args.workdir)
    run.config.search.budget = int(load_config(args.config).search.budget)
    rows = {"traced": timed_search(run, True, run.config.seed), "per_config": timed_search(run, False, run.config.seed)}
    rows["train_seconds"] = train_seconds
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(rows, f, indent=1)
    t, s = rows["traced"], rows["per_config"]
    same = sum(a == b for a, b in zip(t["scores"], s["scores"]))
    lines = [
        "## Main job search: one program per encoder width (`tools/bench_search_eval.py`)",
        "",
        f"Command: `{COMMAND}`  ",
        f"{machine_line()}; config `configs/pipeline.py` (digits), budget {t['evaluations']} evaluations.",
        "",
        "| evaluation | compiled programs | search s | s / evaluation |",
        "|---|---:|---:|---:|",
        f"| traced knobs (default) | {t['programs']} | {t['seconds']:.1f} | {t['seconds'] / t['evaluations']:.2f} |",
        f"| one program per configuration | {s['programs']} | {s['seconds']:.1f} | "
        f"{s['seconds'] / s['evaluations']:.2f} |",
        "",
        f"Speed-up {s['seconds'] / t['seconds']:.2f}x; {same} of {t['evaluations']} evaluations scored identically.",
    ]
    if train_seconds:
        for name, row in (("traced", t), ("per configuration", s)):
            share = row["seconds"] / (train_seconds + row["seconds"])
            lines.append(f"Search share of train + search wall time, {name}: {100 * share:.0f}% "
                         f"(training {train_seconds:.0f} s); target <= 20%.")
    lines.append("Raw results: `experiments/pipeline/search_eval.json`.")
    write_section("search_eval", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
