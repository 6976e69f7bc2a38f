"""Throughput of the PVQ codec: vectorized JAX search/encode/decode vs a straightforward per-vector loop.

Run from the repository root:

    python tools/bench_pvq.py            # writes the "pvq" section of BENCHMARKS.md
    python tools/bench_pvq.py --quick    # smaller batches, prints only

Both columns are measured side by side in one run on the same Gaussian groups; the JAX
figures exclude the first (compiling) call. Weights/s = groups * L / seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from effjax.quant.pvq import decode, encode, enumeration, jax_codec, search_reference  # noqa: E402
from effjax.quant.pvq.counting import fits_uint64  # noqa: E402
from tools.bench_report import machine_line, write_section  # noqa: E402

CONFIGS = [(8, 12), (16, 16), (16, 32), (32, 32)]


def best_time(function, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def rate(groups: int, L: int, seconds: float) -> str:
    return f"{groups * L / seconds:,.0f}"


def bench(L: int, K: int, groups: int, loop_groups: int) -> list[str]:
    x = np.random.default_rng(0).standard_normal((groups, L))
    rows = []
    jax_codec.search_batch(x, K)  # compile
    jax_seconds = best_time(lambda: jax_codec.search_batch(x, K))
    loop_seconds = best_time(lambda: search_reference(x[:loop_groups], K), repeats=1)
    rows.append(("search (exact, refined)", rate(groups, L, jax_seconds), "", rate(loop_groups, L, loop_seconds)))
    jax_codec.search_batch(x, K, refine=False)
    greedy_jax = best_time(lambda: jax_codec.search_batch(x, K, refine=False))
    greedy_loop = best_time(lambda: search_reference(x[:loop_groups], K, refine=False), repeats=1)
    rows.append(("search (greedy only)", rate(groups, L, greedy_jax), "", rate(loop_groups, L, greedy_loop)))

    codewords = jax_codec.search_batch(x, K)
    loop_encode = best_time(lambda: [encode(y) for y in codewords[:loop_groups]], repeats=1)
    indices = jax_codec.encode_batch(codewords, K)
    loop_decode = best_time(lambda: [decode(int(i), L, K) for i in indices[:loop_groups]], repeats=1)
    if fits_uint64(L, K):
        encode_jax = best_time(lambda: jax_codec.encode_batch(codewords, K))
        encode_numpy = best_time(lambda: enumeration.encode_batch(codewords, K))
        jax_codec.decode_batch(indices, L, K)
        decode_jax = best_time(lambda: jax_codec.decode_batch(indices, L, K))
        decode_numpy = best_time(lambda: enumeration.decode_batch(indices, L, K))
        rows.append(("encode (uint64)", rate(groups, L, encode_jax), rate(groups, L, encode_numpy), rate(loop_groups, L, loop_encode)))
        rows.append(("decode (uint64)", rate(groups, L, decode_jax), rate(groups, L, decode_numpy), rate(loop_groups, L, loop_decode)))
    else:
        rows.append(("encode (Python int, N >= 2^64)", "n/a", "", rate(loop_groups, L, loop_encode)))
        rows.append(("decode (Python int, N >= 2^64)", "n/a", "", rate(loop_groups, L, loop_decode)))
    return [f"| {L} | {K} | {name} | {a} | {b} | {c} |" for name, a, b, c in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches; print, do not write BENCHMARKS.md")
    args = parser.parse_args()
    groups, loop_groups = (4096, 256) if args.quick else (65536, 2048)
    lines = [
        "## PVQ codec throughput (weights/s)",
        "",
        "Command: `python tools/bench_pvq.py`  ",
        machine_line(),
        "",
        f"Vectorized: one jit-compiled call on {groups} Gaussian groups (best of 3, compile excluded). "
        f"NumPy batch: `enumeration.encode_batch/decode_batch` (uint64, loop over the L coordinates only). "
        f"Per-vector loop: the reference `search_reference` / Python-int `encode` / `decode`, one group at a time, "
        f"on the first {loop_groups} groups.",
        "",
        "| L | K | operation | JAX vectorized | NumPy batch | per-vector loop |",
        "|---|---|---|---|---|---|",
    ]
    load_before = os.getloadavg()[0]
    for L, K in CONFIGS:
        lines += bench(L, K, groups, loop_groups)
        print("\n".join(lines[-4:]), flush=True)
    lines += [
        "",
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
        f"(on {os.cpu_count()} cores; a shared machine: compare columns within a row, not across runs).",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.quick:
        write_section("pvq", markdown)


if __name__ == "__main__":
    main()
