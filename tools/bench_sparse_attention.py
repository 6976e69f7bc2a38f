"""Benchmark: Sparsifiner's gathered sparse attention vs dense attention at N = 256, 1024, 4096 tokens.

Writes the `sparse_attention` section of BENCHMARKS.md. Run from the repo root:

  python -m tools.bench_sparse_attention

Both paths get the same q, k, v (batch 1, 4 heads of width 32) and, for the
sparse one, the kept-key indices of every query row (ceil(rho N) each; the class
row dense), drawn at random: the connectivity predictor's own work is priced in
the cost model and measured separately by the model benchmarks, not here. Each
jitted function is timed in interleaved rounds and the fastest round taken (the
least disturbed by other work on a shared machine), so the wall-clock ratio is
measured side by side. The FLOPs ratio is the cost model's
(effjax.compress.cost_sparse.attention_core_layers): logits + softmax + mixing.
"""

from __future__ import annotations

import argparse
import time

import jax

from effjax.compress.cost_sparse import attention_core_layers
from effjax.models import sparse_attention as sa
from effjax.subnet import kept_key_count
from tools.bench_report import machine_line, write_section

HEADS, HEAD_DIM, BATCH, QUERY_BLOCK = 4, 32, 1, 128


def _core_flops(n: int, rho: float, sparse: bool) -> float:
    return float(sum(2 * x.macs + x.elementwise_flops for x in attention_core_layers("b", n, HEADS, HEAD_DIM, rho, sparse)))


def _time(fn, args, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out.append(time.perf_counter() - t0)
    return out


def measure(n: int, rho: float, rounds: int) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(n), 4)
    q, k, v = (jax.random.normal(key, (BATCH, HEADS, n, HEAD_DIM)) for key in keys[:3])
    idx = sa.random_key_indices(keys[3], (BATCH, HEADS, n - 1, n), rho)
    scale = HEAD_DIM**-0.5
    dense = jax.jit(lambda q, k, v: sa.dense_attention(q, k, v, scale)[0])
    gathered = jax.jit(lambda q, k, v, i: sa.gathered_attention(q, k, v, i, scale, query_block=QUERY_BLOCK)[0])
    for fn, args in ((dense, (q, k, v)), (gathered, (q, k, v, idx))):
        jax.block_until_ready(fn(*args))  # compile + warm up
    dense_t, gathered_t = [], []
    for _ in range(rounds):  # interleaved, so both see the same machine load
        dense_t += _time(dense, (q, k, v), 1)
        gathered_t += _time(gathered, (q, k, v, idx), 1)
    d, g = min(dense_t), min(gathered_t)
    return {"n": n, "rho": rho, "k": kept_key_count(rho, n), "dense_ms": 1e3 * d, "gathered_ms": 1e3 * g,
            "wall_ratio": g / d, "flops_ratio": _core_flops(n, rho, True) / _core_flops(n, rho, False)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--rhos", default="0.25,0.1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    rows = [measure(n, rho, args.rounds) for n in map(int, args.sizes.split(",")) for rho in map(float, args.rhos.split(","))]
    lines = ["## Sparse attention (Sparsifiner gathered path vs dense)", "",
             "`python -m tools.bench_sparse_attention` - " + machine_line() + ".",
             f"Batch {BATCH}, {HEADS} heads of width {HEAD_DIM}, query rows in blocks of {QUERY_BLOCK}; fastest of "
             f"{args.rounds} interleaved rounds. FLOPs: attention logits + softmax + mixing (predictor excluded).", "",
             "| N tokens | rho | keys kept k | dense ms | gathered ms | wall-clock ratio | FLOPs ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['rho']} | {r['k']} | {r['dense_ms']:.2f} | {r['gathered_ms']:.2f} | "
                     f"{r['wall_ratio']:.2f} | {r['flops_ratio']:.3f} |")
        print(lines[-1], flush=True)
    if not args.no_write:
        write_section("sparse_attention", "\n".join(lines))


if __name__ == "__main__":
    main()
