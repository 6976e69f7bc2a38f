"""Prints the README's tables from results.jsonl (run.py) and the two ViT-B/16 compile reports.

    python -m experiments.libtpu_crash.report
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BARRIER_LABEL = "ViT-B/16 supernet (connectivity predictor in blocks 0-2, keep 0.25/0.5/1), sandwich train step"


def crash_table(rows) -> list[str]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["libtpu_init_args"])].append(r)
    lines = ["| artifact | LIBTPU_INIT_ARGS | compiles | crashes (SIGSEGV) | wall s | temporaries MiB |",
             "|---|---|---:|---:|---|---:|"]
    for (label, flags), runs in groups.items():
        walls = [r["wall_s"] for r in runs]
        mib = sorted({r["temporaries_mib"] for r in runs if r["compiled"]})
        lines.append(f"| {label} | {f'`{flags}`' if flags else 'default'} | {sum(r['compiled'] for r in runs)} of "
                     f"{len(runs)} | {sum(r['returncode'] in (-11, 139) for r in runs)} | {min(walls):.0f}-{max(walls):.0f} | "
                     f"{', '.join(f'{m:.1f}' for m in mib) or '-'} |")
    return lines


def vitb_table() -> list[str]:
    with open(os.path.join(REPO, "benchmarks", "aot_compile.json")) as f:
        barrier = next(r for r in json.load(f) if r["label"] == BARRIER_LABEL and r["topology"] == "v5e:16x16")
    with open(os.path.join(HERE, "vitb_no_barrier_fiber_stack.json")) as f:
        stack = json.load(f)
    lines = ["| ViT-B/16 sandwich step, v5e:16x16, fsdp=16 x expert=16 | peak GiB / chip | FLOPs / chip | "
             "collectives GiB / chip | roofline ms |", "|---|---:|---:|---:|---:|"]
    for name, r in (("with the barrier", barrier), ("without it, fiber stack 128 KiB", stack)):
        lines.append(f"| {name} | {r['per_chip_bytes']['peak_estimate'] / 2**30:.3f} | {r['flops_per_chip']:.4g} | "
                     f"{sum(r['collective_bytes_per_chip'].values()) / 2**30:.3f} | {1e3 * r['roofline']['step_s']:.2f} |")
    return lines


def main():
    with open(os.path.join(HERE, "results.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    versions = sorted({(r["jax"], r["libtpu"], r["date"]) for r in rows})
    print("Runs: " + "; ".join(f"jax {j}, libtpu {t}, {d}" for j, t, d in versions) + "\n")
    print("\n".join(crash_table(rows)) + "\n")
    print("\n".join(vitb_table()))


if __name__ == "__main__":
    main()
