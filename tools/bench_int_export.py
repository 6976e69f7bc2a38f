"""Integer serving of an export vs its float `predict`, side by side, at the shapes main job's model sizes.

The model is the main job's supernet (`configs/pipeline.py:shapes`: 32x32 scenes, patch 4,
65 tokens), untrained weights; each row exports one subnet (width and weight bits) and
times, interleaved round by round, `ExportedModel.predict` (codes dequantized into float
matmuls) against `IntegerExportedModel.predict` (int8 x int8 -> int32 Dense matmuls,
per-token int8 activations) on one batch. Writes the `int_export_serving` section of
BENCHMARKS.md and benchmarks/int_export_serving.json:

  python -m tools.bench_int_export [--rounds=21] [--batch=256]

Target: integer >= 1.3x faster than float, outputs within the 8-bit activation rounding of predict.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from configs.pipeline import get_config
from effjax.compress import export as export_lib
from effjax.subnet import SubnetConfig
from effjax.data import shapes
from effjax.models import build_model
from effjax.quant import integer_serving as ints
from tools.bench_report import interleaved_seconds, machine_line, write_raw, write_section

TARGET = 1.3
SUBNETS = {
    "width 1.0, W8": SubnetConfig(1.0, weight_bits=8, first_last_bits=8),
    "width 1.0, W4 (first/last 8)": SubnetConfig(1.0, weight_bits=4, first_last_bits=8),
    "width 0.5, W8": SubnetConfig(0.5, weight_bits=8, first_last_bits=8),
    "width 0.5, W4 (first/last 8)": SubnetConfig(0.5, weight_bits=4, first_last_bits=8),
}


def _time(fns: dict, x, rounds: int, iters: int) -> dict:
    calls = {name: functools.partial(fn, x) for name, fn in fns.items()}
    for call in calls.values():
        jax.block_until_ready(call())  # compile + warm up
    return interleaved_seconds(calls, rounds, iters)


def bare_matmuls(rows: int, inner: int, outer: int, rounds: int) -> dict:
    """One Dense matmul of the model's shape: f32; int4 weight-only (int4 codes dequantized in the
    graph, then an f32 matmul: what a weight-only int4 kernel does on a CPU without int4 GEMMs);
    int8 x int8 -> int32."""
    x = jax.random.normal(jax.random.PRNGKey(0), (rows, inner))
    w = jax.random.normal(jax.random.PRNGKey(1), (inner, outer))
    scale = jnp.abs(w).max(0) / 7
    w4 = jnp.clip(jnp.round(w / scale), -7, 7).astype(jnp.int4)
    x8 = jnp.clip(jnp.round(x * 30), -127, 127).astype(jnp.int8)
    w8 = jnp.clip(jnp.round(w * 30), -127, 127).astype(jnp.int8)
    fns = {"f32": (jax.jit(lambda x, w: x @ w), (x, w)),
           "int4 weight-only": (jax.jit(lambda x, w, s: x @ (w.astype(jnp.float32) * s)), (x, w4, scale)),
           "int8 x int8": (jax.jit(lambda x, w: jax.lax.dot_general(x, w, (((1,), (0,)), ((), ())),
                                                                     preferred_element_type=jnp.int32)), (x8, w8))}
    samples = _time({k: (lambda _, f=f, args=args: f(*args)) for k, (f, args) in fns.items()}, None, rounds, 5)
    base = samples["f32"]
    return {k: {"ms": 1e3 * statistics.median(v), "speedup_paired": statistics.median([b / t for b, t in zip(base, v)])}
            for k, v in samples.items()}


def serving_rows(batch: int, rounds: int) -> tuple[list[dict], object]:
    """Float predict vs integer predict of each subnet in SUBNETS on one batch: (rows, model config)."""
    config = get_config("shapes")
    mc = config.model
    tasks = shapes.tasks()
    size = config.data.image_size
    model = build_model(mc, tasks)
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (batch, size, size, 3)), np.float32)
    params = jax.jit(lambda x: model.init({"params": jax.random.PRNGKey(0)}, x)["params"])(x[:1])
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x[:1])["params"])
    host = jax.tree.map(np.asarray, jax.tree.map(lambda b: b.value if hasattr(b, "value") else b, params,
                                                 is_leaf=lambda b: hasattr(b, "value")))
    rows = []
    for name, subnet in SUBNETS.items():
        with tempfile.TemporaryDirectory() as directory:
            export_lib.write(directory, host, export_lib.plan(boxed, mc, tasks, subnet),
                             {"model_config": mc.to_dict(), "tasks": [dataclasses.asdict(t) for t in tasks],
                              "subnet": subnet.to_dict()})
            float_model = export_lib.load(directory)
            int_model = ints.IntegerExportedModel(directory, exported=float_model)
            int_attn = ints.IntegerExportedModel(directory, exported=float_model, attention_scores=True)
            samples = _time({"float": float_model.predict, "integer": int_model.predict,
                             "integer+attn": int_attn.predict}, x, rounds, 2)
            ref, out = float_model.predict(x), int_model.predict(x)
        rel = max(float(np.linalg.norm(out[t] - ref[t]) / max(np.linalg.norm(ref[t]), 1e-12)) for t in ref)
        ratios = [f / i for f, i in zip(samples["float"], samples["integer"])]
        row = {"subnet": name, "float_ms": 1e3 * statistics.median(samples["float"]),
               "integer_ms": 1e3 * statistics.median(samples["integer"]), "speedup_paired": statistics.median(ratios),
               "max_task_rel_l2": rel, "samples_ms": {k: [1e3 * s for s in v] for k, v in samples.items()}}
        rows.append(row)
        attn_ratios = [f / i for f, i in zip(samples["float"], samples["integer+attn"])]
        row["attn_speedup_paired"] = statistics.median(attn_ratios)
        print(row["subnet"], f"{row['float_ms']:.1f} {row['integer_ms']:.1f} {row['speedup_paired']:.2f} {rel:.4f} "
              f"attn {row['attn_speedup_paired']:.2f}", flush=True)
    return rows, mc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows, mc = serving_rows(args.batch, args.rounds)
    lines = ["## Integer serving of an export vs float predict (CPU)", "",
             "Written by `python -m tools.bench_int_export`. " + machine_line() + ". CPU only: no accelerator was lent.",
             f"Main job supernet of `configs/pipeline.py:shapes` ({mc.name}, hidden {mc.hidden_dim}, mlp "
             f"{mc.mlp_dim}, {mc.num_layers} blocks, 32x32 inputs, patch {mc.patch_size}), untrained weights, "
             f"batch {args.batch}; median of {args.rounds} interleaved rounds (shuffled order, an untimed call before each timed pair); speed-up is the median of the "
             "per-round float / integer ratios. `rel. L2` is the largest per-task relative L2 distance of the "
             f"integer outputs from predict's. Target: speed-up >= {TARGET}. Raw: `benchmarks/int_export_serving.json`.",
             "`+ attention` also runs attention's two activation x activation einsums as int8 x int8.",
             "", "| subnet | float predict ms | integer ms | speed-up | target | rel. L2 vs predict | "
             "speed-up, + attention |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['subnet']} | {r['float_ms']:.1f} | {r['integer_ms']:.1f} | {r['speedup_paired']:.2f}x | "
                     f"{'met' if r['speedup_paired'] >= TARGET else 'MISSED'} | {r['max_task_rel_l2']:.4f} | "
                     f"{r['attn_speedup_paired']:.2f}x |")
    mm = bare_matmuls(args.batch * 65, mc.hidden_dim, mc.mlp_dim, args.rounds)
    lines += ["", f"**One Dense matmul of the model** ({args.batch * 65} x {mc.hidden_dim} x {mc.mlp_dim}): "
              + ", ".join(f"{k} {v['ms']:.2f} ms ({v['speedup_paired']:.2f}x f32)" for k, v in mm.items())
              + ". Weight-only int4 can at best tie float on this CPU: XLA has no int4 GEMM, so the codes are "
              "widened and scaled, then multiplied by the same f32 matmul; only int8 x int8 changes the matmul."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_raw("int_export_serving", {"machine": machine_line(), "batch": args.batch, "rows": rows,
                                         "bare_matmul": mm})
        write_section("int_export_serving", text)


if __name__ == "__main__":
    main()
