"""Benchmark: sparse attention paths against dense attention at N = 256, 1024, 4096 tokens.

Writes the `sparse_attention` section of BENCHMARKS.md and its raw figures to
benchmarks/sparse_attention.json (with `--reuse_host_memory`, glibc keeping freed memory
as the main job sets it on CPU: the `sparse_attention_reuse_host_memory` section and file).
Run from the repo root:

  python -m tools.bench_sparse_attention

Every path gets the same q, k, v (batch 1, 4 heads of width 32) and a random
selection (the connectivity predictor's own work is priced in the cost model and
measured by the model benchmarks, not here):

  - token-level Sparsifiner `gathered` path: ceil(rho N) keys per query row (forward only);
  - `block_sparse` at block sizes b in {16, 32, 64, 128}: ceil(rho N / b) key blocks
    per query block, gathered as whole blocks and multiplied as dense block matmuls,
    timed forward and forward + backward (gradients of q, k, v).

Each jitted function is timed in interleaved rounds (`bench_report.interleaved_seconds`:
shuffled order, an untimed call before each timed one) and the fastest round taken
(the least disturbed by other work on a shared machine), so the speed-ups are
measured side by side. The FLOPs ratio dense / block counts what the block path
computes (its padded query rows times its whole key blocks, plus the dense class
row). Target: speed-up over dense >= 0.7 x that FLOPs ratio at N = 1024 and 4096.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from effjax.compress.cost_sparse import attention_core_layers
from effjax.models import block_sparse as bs
from effjax.models import sparse_attention as sa
from effjax.subnet import kept_key_count
from effjax.train import host_memory
from tools.bench_report import interleaved_seconds, machine_line, write_raw, write_section

HEADS, HEAD_DIM, BATCH, QUERY_BLOCK = 4, 32, 1, 128
TARGET = 0.7  # speed-up / FLOPs ratio
TARGET_SIZES = (1024, 4096)


def _core_flops(n: int, rho: float, sparse: bool) -> float:
    return float(sum(2 * x.macs + x.elementwise_flops for x in attention_core_layers("b", n, HEADS, HEAD_DIM, rho, sparse)))


def _grad(fn):
    return jax.jit(jax.grad(lambda q, k, v, *rest: jnp.sum(fn(q, k, v, *rest) ** 2), argnums=(0, 1, 2)))


def measure(n: int, rho: float, blocks: tuple[int, ...], rounds: int, with_gathered: bool) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(n), 5)
    q, k, v = (jax.random.normal(key, (BATCH, HEADS, n, HEAD_DIM)) for key in keys[:3])
    scale = HEAD_DIM**-0.5
    dense = lambda q, k, v: sa.dense_attention(q, k, v, scale)[0]  # noqa: E731
    fns = {"dense fwd": (jax.jit(dense), (q, k, v)), "dense fwd+bwd": (_grad(dense), (q, k, v))}
    if with_gathered:
        idx = sa.random_key_indices(keys[3], (BATCH, HEADS, n - 1, n), rho)
        fns["gathered fwd"] = (jax.jit(lambda q, k, v, i: sa.gathered_attention(q, k, v, i, scale,
                                                                                 query_block=QUERY_BLOCK)[0]),
                               (q, k, v, idx))
    for b in blocks:
        bidx = bs.random_key_blocks(keys[4], (BATCH, HEADS), n, rho, b)
        blocked = lambda q, k, v, i, b=b: bs.block_sparse_attention(q, k, v, i, scale, b)[0]  # noqa: E731
        fns[f"b{b} fwd"] = (jax.jit(blocked), (q, k, v, bidx))
        fns[f"b{b} fwd+bwd"] = (_grad(blocked), (q, k, v, bidx))
    for fn, args in fns.values():
        jax.block_until_ready(fn(*args))  # compile + warm up
    times = interleaved_seconds({name: functools.partial(fn, *args) for name, (fn, args) in fns.items()}, rounds)
    best = {name: 1e3 * min(t) for name, t in times.items()}
    row = {"n": n, "rho": rho, "k": kept_key_count(rho, n), "ms": best, "all_ms": {k: [1e3 * x for x in t]
                                                                                    for k, t in times.items()},
           "gathered_flops_ratio": _core_flops(n, rho, True) / _core_flops(n, rho, False), "blocks": {}}
    for b in blocks:
        f = bs.block_sparse_flops(n, HEAD_DIM, HEADS, rho, b)
        flops_ratio = f["dense_flops"] / f["block_flops"]
        row["blocks"][b] = {"kept_blocks": f["kept_blocks"], "dense_over_block_flops": flops_ratio,
                            "speedup_fwd": best["dense fwd"] / best[f"b{b} fwd"],
                            "speedup_fwd_bwd": best["dense fwd+bwd"] / best[f"b{b} fwd+bwd"]}
    return row


def _verdict(speedup: float, flops_ratio: float) -> str:
    return "met" if speedup >= TARGET * flops_ratio else "MISSED"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--rhos", default="0.25,0.1")
    parser.add_argument("--blocks", default="16,32,64,128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reuse_host_memory", action="store_true",
                        help="keep freed host memory in the process, as effjax.main does on CPU (its own section)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    section = "sparse_attention"
    allocator = "glibc malloc defaults"
    if args.reuse_host_memory:
        if not host_memory.keep_freed_memory():
            parser.error("--reuse_host_memory: this C library has no mallopt (glibc only)")
        section = "sparse_attention_reuse_host_memory"
        allocator = "freed host memory kept in the process (effjax.main's CPU default)"
    blocks = tuple(map(int, args.blocks.split(",")))
    changed = [f"--{k}={v}" for k, v in vars(args).items() if k != "no_write" and v != parser.get_default(k)]
    command = " ".join(["python -m tools.bench_sparse_attention", *changed])
    rows = [measure(n, rho, blocks, args.rounds, with_gathered=True)
            for n in map(int, args.sizes.split(",")) for rho in map(float, args.rhos.split(","))]
    title = "dense vs Sparsifiner gathered vs block-sparse" + (", freed memory kept" if args.reuse_host_memory else "")
    lines = [f"## Sparse attention ({title})", "",
             f"`{command}` - " + machine_line() + f". CPU only: no accelerator was lent. Allocator: {allocator}.",
             f"Batch {BATCH}, {HEADS} heads of width {HEAD_DIM}; random selections; fastest of {args.rounds} "
             f"interleaved rounds (each round in a shuffled order, every timed call after an untimed one of the same function). Raw: `benchmarks/{section}.json`.", "",
             "**Token-level gathered path** (query rows in blocks of "
             f"{QUERY_BLOCK}; FLOPs: logits + softmax + mixing from the cost model), forward:", "",
             "| N tokens | rho | keys kept k | dense ms | gathered ms | wall-clock ratio | FLOPs ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, g = r["ms"]["dense fwd"], r["ms"]["gathered fwd"]
        lines.append(f"| {r['n']} | {r['rho']} | {r['k']} | {d:.2f} | {g:.2f} | {g / d:.2f} | "
                     f"{r['gathered_flops_ratio']:.3f} |")
    lines += ["", "**Block-sparse path**: speed-up = dense ms / block ms; FLOPs ratio = dense FLOPs / block FLOPs "
              "(what the block path computes); target speed-up >= "
              f"{TARGET} x FLOPs ratio at N in {list(TARGET_SIZES)}.", "",
              "| N | rho | b | kept blocks | FLOPs ratio | dense fwd ms | block fwd ms | speed-up fwd | "
              "dense fwd+bwd ms | block fwd+bwd ms | speed-up fwd+bwd | target |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for r in rows:
        for b, x in r["blocks"].items():
            fr = x["dense_over_block_flops"]
            target = "-"
            if r["n"] in TARGET_SIZES:
                target = f"fwd {_verdict(x['speedup_fwd'], fr)}, fwd+bwd {_verdict(x['speedup_fwd_bwd'], fr)}"
                verdicts.append(target)
            lines.append(f"| {r['n']} | {r['rho']} | {b} | {x['kept_blocks']} | {fr:.2f} | "
                         f"{r['ms']['dense fwd']:.2f} | {r['ms'][f'b{b} fwd']:.2f} | {x['speedup_fwd']:.2f} | "
                         f"{r['ms']['dense fwd+bwd']:.2f} | {r['ms'][f'b{b} fwd+bwd']:.2f} | "
                         f"{x['speedup_fwd_bwd']:.2f} | {target} |")
            print(lines[-1], flush=True)
    met = sum(v.count("met") for v in verdicts)
    lines += ["", f"Target met in {met} of {2 * len(verdicts)} (size, rho, b, pass) cells at N in {list(TARGET_SIZES)}."]
    if not args.no_write:
        write_raw(section, {"machine": machine_line(), "rounds": args.rounds, "allocator": allocator,
                            "rows": rows})
        write_section(section, "\n".join(lines))
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
