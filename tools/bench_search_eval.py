"""Wall time of the main job's search: one compiled program per encoder width vs one per configuration.

Trains the main job's supernet (or reuses the checkpoint in `--workdir`), then runs the
same 40-evaluation search twice on it, side by side: with the evaluator's traced knobs
(decoder widths, keep ratio and top-k traced; one program per encoder width) and with
one compiled program per configuration (the reference). Both searches see the same
scores up to float rounding (tests/supernet/test_super_vit.py), so they propose the
same configurations unless a near-tie flips. Writes the "search_eval" section of
BENCHMARKS.md and `experiments/pipeline/search_eval.json`.

`--batched` measures instead whether evaluating several configurations in one call pays: for
each encoder width, `--batch` random configurations of the search space evaluated on the whole
validation split one call each (the search's way) against one `vmap`ped call over the stacked
quantized parameters and knobs (outputs checked equal), in interleaved rounds:

    python -m tools.bench_search_eval --workdir=/tmp/bench_search_eval
    python -m tools.bench_search_eval --workdir=/tmp/bench_search_eval --batched
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import flax.linen as nn
import jax
import numpy as np

from effjax.compress import export as export_lib
from effjax.config.load import load_config
from effjax.data import pipeline
from effjax.job.subnet_search import (SubnetEvaluator, config_score_weights, knob_args, knob_menus,
                                      make_knob_eval_step, max_top_k, run_search, search_space)
from effjax.train.setup import load_run
from effjax.train.trainer import train_and_evaluate
from tools.bench_report import interleaved_seconds, machine_line, write_section

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


def batched_vs_sequential(run, batch: int, rounds: int, seed: int = 0) -> list[dict]:
    """Per encoder width: seconds to score `batch` random configurations of that width on the validation
    split one call each, and in one vmapped call."""
    evaluator = SubnetEvaluator(run.setup, run.params, config_score_weights(run.config))
    tasks, model = evaluator.tasks, run.setup.model
    menu = tuple(sorted(float(w) for w in model.width_menu))
    space = search_space(model.width_menu, tasks, run.config.search.bits, knob_menus(run.config))
    rng = np.random.default_rng(seed)
    bs = run.config.eval.batch_size
    rows = []
    with jax.set_mesh(run.setup.mesh), nn.logical_axis_rules(run.setup.rules):
        batches = [pipeline.to_global(b, run.setup.batch_sharding, bs)
                   for b in pipeline.eval_batches(run.setup.dataset, "val", bs)]
        for width in menu:
            subnets = []
            while len(subnets) < batch:
                point = space.decode(rng.random(space.dim))
                subnet = evaluator.candidate(dict(point, encoder_width=width))[0]
                if subnet not in subnets:
                    subnets.append(subnet)
            params = [export_lib.quantized_params(evaluator.host_params, evaluator.plan(s), evaluator.pvq_cache)
                      for s in subnets]
            knobs = [knob_args(run.setup, s) for s in subnets]
            step_fn = make_knob_eval_step(model, tasks, width, menu, max_top_k(run.setup))
            one, many = jax.jit(step_fn), jax.jit(jax.vmap(step_fn, in_axes=(0, None, 0, 0, 0)))
            stacked = jax.tree.map(lambda *a: np.stack(a), *params)
            stacked_knobs = tuple(np.stack(k) for k in zip(*knobs))

            def sequential():
                return [[one(p, b, *k) for b in batches] for p, k in zip(params, knobs)]

            def vmapped():
                return [many(stacked, b, *stacked_knobs) for b in batches]

            seq_out, vec_out = jax.device_get(sequential()), jax.device_get(vmapped())
            for i in range(batch):
                for j in range(len(batches)):
                    np.testing.assert_allclose(
                        np.asarray(jax.tree.leaves(seq_out[i][j])),
                        np.asarray([leaf[i] for leaf in jax.tree.leaves(vec_out[j])]), rtol=1e-4, atol=1e-4)
            times = interleaved_seconds({"sequential": sequential, "vmapped": vmapped}, rounds)
            ratio = float(np.median(np.asarray(times["sequential"]) / np.asarray(times["vmapped"])))
            rows.append({"encoder_width": width, "configurations": [s.to_dict() for s in subnets],
                         "sequential_s": float(np.median(times["sequential"])),
                         "vmapped_s": float(np.median(times["vmapped"])), "speedup_paired": ratio})
            print(f"width {width}: sequential {rows[-1]['sequential_s']:.3f} s, vmapped {rows[-1]['vmapped_s']:.3f} s, "
                  f"speed-up {ratio:.2f}x", flush=True)
    return rows


def render(rows: dict) -> str:
    t, s = rows["traced"], rows["per_config"]
    same = sum(a == b for a, b in zip(t["scores"], s["scores"]))
    lines = [
        "## Main job search: one program per encoder width (`tools/bench_search_eval.py`)",
        "",
        f"Command: `{COMMAND}` (and `--batched`)  ",
        f"{rows['machine']}; config `configs/pipeline.py` (digits), budget {t['evaluations']} evaluations.",
        "",
        "| evaluation | compiled programs | search s | s / evaluation |",
        "|---|---:|---:|---:|",
        f"| traced knobs (default) | {t['programs']} | {t['seconds']:.1f} | {t['seconds'] / t['evaluations']:.2f} |",
        f"| one program per configuration | {s['programs']} | {s['seconds']:.1f} | "
        f"{s['seconds'] / s['evaluations']:.2f} |",
        "",
        f"Speed-up {s['seconds'] / t['seconds']:.2f}x; {same} of {t['evaluations']} evaluations scored identically.",
    ]
    train_seconds = rows.get("train_seconds", 0.0)
    if train_seconds:
        for name, row in (("traced", t), ("per configuration", s)):
            share = row["seconds"] / (train_seconds + row["seconds"])
            lines.append(f"Search share of train + search wall time, {name}: {100 * share:.0f}% "
                         f"(training {train_seconds:.0f} s); target <= 20%.")
    batched = rows.get("batched")
    if batched:
        n = len(batched["widths"][0]["configurations"])
        lines += ["", f"**Several configurations per call** (`--batched`; {batched['machine']}, "
                  f"{batched['usable_cores']} usable): {n} random "
                  "configurations of one encoder width scored on the whole validation split, one call each (the "
                  f"search's way) or in one `vmap`ped call (outputs equal); median of {batched['rounds']} interleaved "
                  "rounds; speed-up = sequential s / vmapped s, paired per round.", "",
                  "| encoder width | sequential s | vmapped s | speed-up |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['encoder_width']} | {r['sequential_s']:.3f} | {r['vmapped_s']:.3f} | {r['speedup_paired']:.2f}x |"
                  for r in batched["widths"]]
        faster = [r for r in batched["widths"] if r["speedup_paired"] > 1.0]
        lines += ["", f"Batching is faster at {len(faster)} of {len(batched['widths'])} widths here, so the search "
                  + ("evaluates one configuration per call." if not faster else "could batch those widths.")]
    lines.append("Raw results: `experiments/pipeline/search_eval.json`.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "pipeline.py"))
    parser.add_argument("--batched", action="store_true", help="only the several-configurations-per-call check")
    parser.add_argument("--batch", type=int, default=4, help="configurations per call (--batched)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (--batched)")
    args = parser.parse_args()
    train_seconds = train(args.config, args.workdir)
    run = load_run(args.workdir)
    run.config.search.budget = int(load_config(args.config).search.budget)
    rows = json.load(open(RESULTS)) if os.path.isfile(RESULTS) else {}
    if args.batched:
        rows["batched"] = {"machine": machine_line(), "usable_cores": len(os.sched_getaffinity(0)), "rounds": args.rounds,
                           "widths": batched_vs_sequential(run, args.batch, args.rounds)}
    else:
        rows.update({"traced": timed_search(run, True, run.config.seed),
                     "per_config": timed_search(run, False, run.config.seed), "train_seconds": train_seconds,
                     "machine": machine_line()})
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(rows, f, indent=1)
    text = render(rows)
    write_section("search_eval", text)
    print(text)


if __name__ == "__main__":
    main()
