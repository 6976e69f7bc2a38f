"""Benchmark of the MoE dispatch implementations (einsum, gather, ragged, sorted, dense) side by side.

Times a jitted forward + backward of one MoE layer per method at the shapes of
configs/moe_shapes.py (65 tokens per example) and a larger expert count, and
reports XLA's FLOP count of each compiled program, then writes the `moe_dispatch`
section of BENCHMARKS.md (raw figures in benchmarks/moe_dispatch.json). The target
for the dropless `sorted` path is at most 1.2x the time of the capacity-based `gather` path.
Each CPU setting (all cores, and XLA held to one core) runs in its own process:

  python -m tools.bench_moe_dispatch [--repeats=20] [--cores all 1]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from effjax.models import moe
from tools.bench_report import interleaved_seconds, machine_line, write_raw, write_section

CASES = (
    # (examples, tokens per example, d, expert hidden, experts, top_k, capacity factor)
    (64, 65, 64, 32, 8, 2, 1.25),
    (64, 65, 64, 32, 16, 2, 1.25),
    (32, 257, 128, 64, 16, 2, 1.25),
)
METHODS = ("einsum", "gather", "ragged", "sorted", "dense")
SORTED_TARGET = 1.2  # sorted ms / gather ms, forward + backward


def _layer_fn(method, capacity):
    def forward(x, router, w):
        routing = moe.top_k_routing(jnp.einsum("gsd,de->gse", x, router), 2)
        if method == "dense":
            return moe.moe_dense_path(x, routing, w)
        if method == "ragged":
            return moe.moe_ragged_path(x, routing, w)
        if method == "sorted":
            return moe.moe_sorted_path(x, routing, w)
        return moe.moe_capacity_path(x, routing, w, capacity, method)

    def loss(x, router, w):
        return jnp.sum(forward(x, router, w) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))  # the input gradient too, as inside a network


def measure(case, repeats):
    g, s, d, m, e, k, cf = case
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    x = jax.random.normal(keys[0], (g, s, d))
    router = 0.1 * jax.random.normal(keys[1], (d, e))
    w = moe.ExpertWeights(0.1 * jax.random.normal(keys[2], (e, d, m)), jnp.zeros((e, m)),
                          0.1 * jax.random.normal(keys[3], (e, m, d)), jnp.zeros((e, d)))
    capacity = moe.expert_capacity(s, e, k, cf)
    fns = {method: _layer_fn(method, capacity) for method in METHODS}
    flops = {}
    for method, fn in fns.items():
        cost = fn.lower(x, router, w).compile().cost_analysis()
        flops[method] = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))
        jax.block_until_ready(fn(x, router, w))
    times = interleaved_seconds({method: functools.partial(fn, x, router, w) for method, fn in fns.items()}, repeats)
    gather = np.asarray(times["gather"])
    return {method: {"ms": float(np.median(times[method])) * 1e3, "flops": flops[method],
                     "paired_ratio": float(np.median(np.asarray(times[method]) / gather)),
                     "all_ms": [1e3 * t for t in times[method]]} for method in METHODS}, capacity


def _measure_all(repeats):
    return [dict(zip(("result", "capacity"), measure(case, repeats))) for case in CASES]


def _run_setting(cores: str, repeats: int):
    """Measures every case in a fresh process whose CPU affinity is `cores` ("all" or a count)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "tools.bench_moe_dispatch", "--repeats", str(repeats), "--worker", out.name]
        if cores != "all":
            command = ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:int(cores)])] + command
        subprocess.run(command, check=True)
        return json.load(open(out.name))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cores", nargs="+", default=["all", "1"], help='"all" and/or core counts, one run each')
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        json.dump(_measure_all(args.repeats), open(args.worker, "w"))
        return
    lines = ["## MoE dispatch (tools/bench_moe_dispatch.py)", "", machine_line(), "",
             "Forward + backward (gradients of the input, router and experts) of one MoE layer (top-2 routing); median of "
             f"{args.repeats} rounds; GFLOP from XLA's cost analysis of the compiled program. "
             "`einsum` and `gather` use capacity factor 1.25 (tokens may drop); `ragged`, `sorted` and `dense` are "
             f"dropless. `sorted` pads each expert's tokens to tiles of {moe.SORTED_TILE_ROWS} rows. "
             "Each round runs the methods in a shuffled order, each as one untimed call followed by the timed one, so "
             "no method pays for the caches another left behind. `paired` is the median over rounds of "
             "(method ms / gather ms) within one round, which cancels load drift on this shared machine. "
             "Each CPU setting runs in its own process (`cores`: XLA with every core of the machine, or held to "
             f"one with taskset). Target: sorted / gather <= {SORTED_TARGET} (paired). "
             "Raw: `benchmarks/moe_dispatch.json`.", "",
             "| cores | examples x tokens | d | m | E | C | method | ms | GFLOP | ms / gather ms | paired |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    raw, verdicts = [], []
    for cores in args.cores:
        for case, measured in zip(CASES, _run_setting(cores, args.repeats)):
            result, capacity = measured["result"], measured["capacity"]
            g, s, d, m, e, _, _ = case
            base = result["gather"]["ms"]
            for method, r in result.items():
                lines.append(f"| {cores} | {g} x {s} | {d} | {m} | {e} | {capacity} | {method} | {r['ms']:.2f} | "
                             f"{r['flops'] / 1e9:.3f} | {r['ms'] / base:.2f} | {r['paired_ratio']:.2f} |")
                print(lines[-1], flush=True)
            ratio = result["sorted"]["paired_ratio"]
            verdicts.append(f"{cores} cores, {g} x {s}, E={e}: {ratio:.2f} "
                            f"({'met' if ratio <= SORTED_TARGET else 'MISSED'})")
            raw.append({"cores": cores, "examples": g, "tokens": s, "d": d, "m": m, "experts": e,
                        "capacity": capacity, "repeats": args.repeats, "methods": result})
    lines += ["", "Dropless `sorted` / `gather` (paired) against the target: " + "; ".join(verdicts) + "."]
    write_raw("moe_dispatch", {"machine": machine_line(), "tile_rows": moe.SORTED_TILE_ROWS, "cases": raw})
    write_section("moe_dispatch", "\n".join(lines))


if __name__ == "__main__":
    main()
