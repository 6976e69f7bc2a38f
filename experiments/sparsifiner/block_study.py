"""Tables of the block-vs-token Sparsifiner study on shapes at patch 2, read from results/block_patch2/seed*/
(the JSONs of evaluate.py written by block_study.sh).

  python -m experiments.sparsifiner.block_study            # print
  python -m experiments.sparsifiner.block_study --readme   # also write them into README.md (tables:block_patch2)

Per seed and variant (dense teacher, stage 2 with the token-level mask, with each block mask) the val / test
metrics and the cost model's MHSA and total FLOPs at the target rho; then the reported quantity: test (and val)
metrics of each block variant minus the token-level variant of the same seed, mean ± sample std (ddof 1) over
the seeds, with the dense teacher's metrics next to them; last, every fine-tuned variant evaluated dense (rho 1).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from effjax.subnet import kept_key_count
from effjax.models.block_sparse import kept_block_count
from experiments.seed_stats import mean_std
from experiments.sparsifiner.plot import HERE, _fmt, _scale, write_readme

RESULTS = os.path.join(HERE, "results", "block_patch2")
RHO = 0.25
SPLITS = ("val", "test")


def load(directory: str = RESULTS) -> dict[int, dict[str, dict]]:
    """{seed: {variant: evaluate.py JSON}}; variants 'dense' and 'block<b>' (b = 0: token-level)."""
    out = {}
    for seed_dir in sorted(glob.glob(os.path.join(directory, "seed*")), key=lambda p: int(p.rsplit("seed", 1)[1])):
        runs = {}
        for path in sorted(glob.glob(os.path.join(seed_dir, "*.json"))):
            name = os.path.basename(path)[:-5]
            runs[name.replace("finetuned_", "")] = json.load(open(path))
        out[int(seed_dir.rsplit("seed", 1)[1])] = runs
    return out


def label(variant: str) -> str:
    if variant == "dense":
        return "dense teacher"
    block = int(variant[len("block"):])
    return "stage 2, token-level top-k" if block == 0 else f"stage 2, block {block}"


def row_at(result: dict, rho: float) -> dict:
    rho = 1.0 if result["mask"] == "dense" else rho
    return next(r for r in result["rows"] if abs(r["rho"] - rho) < 1e-9)


def variants_of(results: dict) -> list[str]:
    names = {v for runs in results.values() for v in runs}
    blocks = sorted(int(v[len("block"):]) for v in names if v.startswith("block"))
    return (["dense"] if "dense" in names else []) + [f"block{b}" for b in blocks]


def metric_value(result: dict, rho: float, split: str, task: str) -> float:
    return row_at(result, rho)["metrics"][split][task]


def per_seed_table(results: dict, tasks: dict, rho: float) -> str:
    head = ["seed", "variant", "rho", "keys kept per query row"] + [f"{t} {m} val / test" for t, m in tasks.items()] \
        + ["MHSA MFLOPs", "MHSA cut vs dense", "predictor MFLOPs", "total MFLOPs"]
    lines = ["| " + " | ".join(head) + " |", "|---:|---|" + "---:|" * (len(head) - 2)]
    for seed, runs in results.items():
        dense_mhsa = row_at(runs["dense"], 1.0)["mhsa_flops"] if "dense" in runs else None
        for v in variants_of(results):
            if v not in runs:
                lines.append(f"| {seed} | {label(v)} | not run |" + " |" * (len(head) - 3))
                continue
            r = row_at(runs[v], rho)
            cells = [str(seed), label(v), f"{r['rho']:g}", keys_kept(runs[v], r)]
            cells += [" / ".join(_fmt(m, r["metrics"][s][t]) for s in SPLITS) for t, m in tasks.items()]
            cut = f"{100 * (1 - r['mhsa_flops'] / dense_mhsa):.1f}%" if dense_mhsa else ""
            cells += [f"{r['mhsa_flops'] / 1e6:.3f}", cut, f"{r['predictor_flops'] / 1e6:.3f}",
                      f"{r['total_flops'] / 1e6:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def keys_kept(result: dict, row: dict) -> str:
    """Keys per query row of rows 1..N-1 at the row's rho (the class row is dense): ceil(rho N) token-level,
    kb whole blocks of b (an upper bound: the padded last key block has fewer real keys)."""
    n, block = result["num_tokens"], result["attention_block"]
    if result["mask"] == "dense" or row["rho"] >= 1:
        return str(n)
    if not block:
        return str(kept_key_count(row["rho"], n))
    kb = kept_block_count(row["rho"], n, block)
    return f"{kb} x {block} = {kb * block}"


def _decimals(metric: str) -> int:
    return 3 if metric == "rmse" else 1


def difference_table(results: dict, tasks: dict, rho: float) -> str:
    blocks = [v for v in variants_of(results) if v.startswith("block") and v != "block0"]
    columns = [(t, m, split) for t, m in tasks.items() for split in SPLITS]
    head = ["quantity", "seeds"] + [f"{t} {m} {s}" for t, m, s in columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for v in blocks:
        seeds = [s for s, runs in results.items() if v in runs and "block0" in runs]
        diffs = {s: [_scale(m) * (metric_value(results[s][v], rho, split, t)
                                  - metric_value(results[s]["block0"], rho, split, t)) for t, m, split in columns]
                 for s in seeds}
        for seed in seeds:
            cells = [f"{label(v)} minus token-level, seed {seed}", "1"]
            cells += [f"{d:+.{_decimals(m)}f}" for d, (_, m, _) in zip(diffs[seed], columns)]
            lines.append("| " + " | ".join(cells) + " |")
        if seeds:
            cells = [f"**{label(v)} minus token-level, mean ± std**", str(len(seeds))]
            cells += [mean_std([diffs[s][i] for s in seeds], _decimals(m), signed=True)
                      for i, (_, m, _) in enumerate(columns)]
            lines.append("| " + " | ".join(cells) + " |")
    for v in variants_of(results):
        seeds = [s for s, runs in results.items() if v in runs]
        if not seeds:
            continue
        r = rho if v != "dense" else 1.0
        cells = [f"{label(v)} (rho {r:g}), mean ± std", str(len(seeds))]
        cells += [mean_std([_scale(m) * metric_value(results[s][v], r, split, t) for s in seeds], _decimals(m))
                  for t, m, split in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dense_eval_table(results: dict, tasks: dict) -> str:
    head = ["variant", "seeds"] + [f"{t} {m} {s}" for t, m in tasks.items() for s in SPLITS] + ["MHSA MFLOPs"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for v in variants_of(results):
        if v == "dense":
            continue
        seeds = [s for s, runs in results.items() if v in runs and any(abs(r["rho"] - 1) < 1e-9
                                                                          for r in runs[v]["rows"])]
        if not seeds:
            continue
        cells = [f"{label(v)} evaluated at rho 1", str(len(seeds))]
        cells += [mean_std([_scale(m) * metric_value(results[s][v], 1.0, split, t) for s in seeds], _decimals(m))
                  for t, m in tasks.items() for split in SPLITS]
        cells.append(f"{row_at(results[seeds[0]][v], 1.0)['mhsa_flops'] / 1e6:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(directory: str = RESULTS, rho: float = RHO) -> str:
    results = load(directory)
    if not results:
        raise SystemExit(f"no results under {directory}")
    first = next(iter(next(iter(results.values())).values()))
    tasks = first["tasks"]
    seeds = ", ".join(str(s) for s in results)
    return "\n\n".join([
        f"Per seed, val / test at rho = {rho:g} (dense teacher: rho 1); mIoU and accuracy in %, depth RMSE; "
        f"results/block_patch2/seed{{{seeds}}}",
        per_seed_table(results, tasks, rho),
        f"Block minus token-level (same seed, same stage-1 checkpoint), rho = {rho:g}: points for mIoU / accuracy "
        "(higher is better), RMSE for depth (lower is better); mean ± sample std (ddof 1) over seeds; then each "
        "variant's own metrics, mean ± std",
        difference_table(results, tasks, rho),
        "The fine-tuned variants evaluated dense (rho 1, reference), mean ± std over seeds",
        dense_eval_table(results, tasks),
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    parser.add_argument("--dir", default=RESULTS)
    args = parser.parse_args()
    text = report(args.dir)
    print(text)
    if args.readme:
        write_readme("block_patch2", "shapes", text)


if __name__ == "__main__":
    main()
