"""Block-sparse attention at this revision against an earlier one, side by side: forward and forward+backward.

  python -m experiments.sparsifiner.backward_compare --against=feee8aa --seed_offset=3000
  python -m experiments.sparsifiner.backward_compare --table

The earlier `effjax/models/block_sparse.py` is read from git (`git show REV:...`) into a temporary module, so both
versions run in one process on the same q, k, v and random block selections (batch 1, 4 heads of width 32, as
tools/bench_sparse_attention, but a different seed: `PRNGKey(N + seed_offset)`), timed in interleaved rounds
(fastest of `--rounds`). Appends one JSON line per cell to experiments/sparsifiner/results/backward_compare.jsonl;
`--table` prints them with the new / old time ratios.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "backward_compare.jsonl")
MODULE = "effjax/models/block_sparse.py"


def _module_at(revision: str):
    source = subprocess.run(["git", "show", f"{revision}:{MODULE}"], check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "block_sparse_at_revision.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("block_sparse_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(against: str, seed_offset: int, rounds: int) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from effjax.models import block_sparse
    from tools.bench_report import interleaved_seconds, machine_line

    old = _module_at(against)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout
    rows = []
    for n in (1024, 4096):
        keys = jax.random.split(jax.random.PRNGKey(n + seed_offset), 5)
        q, k, v = (jax.random.normal(key, (1, 4, n, 32)) for key in keys[:3])
        scale = 32**-0.5
        for rho in (0.25, 0.1):
            for block in (16, 32, 64, 128):
                indices = block_sparse.random_key_blocks(keys[4], (1, 4), n, rho, block)
                fns = {}
                for name, module in (("old", old), ("new", block_sparse)):
                    fwd = functools.partial(lambda q, k, v, i, m: m.block_sparse_attention(q, k, v, i, scale, block)[0],
                                            m=module)
                    fns[f"{name} fwd"] = jax.jit(fwd)
                    fns[f"{name} fwd+bwd"] = jax.jit(jax.grad(lambda q, k, v, i, f=fwd: jnp.sum(f(q, k, v, i) ** 2),
                                                              argnums=(0, 1, 2)))
                for fn in fns.values():
                    jax.block_until_ready(fn(q, k, v, indices))
                times = interleaved_seconds({name: functools.partial(fn, q, k, v, indices) for name, fn in fns.items()},
                                            rounds)
                row = {"n": n, "rho": rho, "b": block, "old": against, "new": head.strip(), "seed_offset": seed_offset,
                       "rounds": rounds, "machine": machine_line(),
                       "ms": {name: 1e3 * min(t) for name, t in times.items()}}
                rows.append(row)
                print(json.dumps(row["ms"]), n, rho, block, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| N | rho | b | old fwd ms | new fwd ms | new/old | old fwd+bwd ms | new fwd+bwd ms | new/old | old, new, seed |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ms = r["ms"]
        lines.append(f"| {r['n']} | {r['rho']} | {r['b']} | {ms['old fwd']:.2f} | {ms['new fwd']:.2f} | "
                     f"{ms['new fwd'] / ms['old fwd']:.2f} | {ms['old fwd+bwd']:.2f} | {ms['new fwd+bwd']:.2f} | "
                     f"{ms['new fwd+bwd'] / ms['old fwd+bwd']:.2f} | {r['old']}, {r['new']}, +{r['seed_offset']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="feee8aa", help="git revision of the earlier block_sparse.py")
    parser.add_argument("--seed_offset", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--table", action="store_true", help="print the recorded results and exit")
    args = parser.parse_args()
    if not args.table:
        rows = measure(args.against, args.seed_offset, args.rounds)
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if not os.path.exists(RESULTS):
        sys.exit(f"no results yet in {RESULTS}: run without --table first")
    with open(RESULTS) as f:
        print(table([json.loads(line) for line in f if line.strip()]))


if __name__ == "__main__":
    main()
