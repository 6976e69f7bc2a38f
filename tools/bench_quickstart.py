"""Wall time of the quickstart's main job, with and without host-memory reuse, runs interleaved.

Runs the README's first command's job (`python -m effjax.main --config=configs/pipeline.py`, a fresh workdir each
time) `--repeats` times per setting of `--reuse_host_memory` in ABBA order with this interpreter; run it from the
quickstart's virtual environment (`pip install -e .`, nothing else) for the quickstart's figure. Per run: wall time
of the process, its user and kernel CPU seconds, the job's own `wall_seconds` (train, search, job), and the results
(front size, full supernet's validation score) to show both settings compute the same thing. Writes
`benchmarks/quickstart.json` and the "quickstart" section of BENCHMARKS.md.

    .venv/bin/python -m tools.bench_quickstart --repeats=3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.bench_report import machine_line, write_raw, write_section  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB = ["-m", "effjax.main", "--config=configs/pipeline.py"]
COMMAND = ".venv/bin/python -m tools.bench_quickstart --repeats=3"
TARGET_S = 120.0  # issue 20: the quickstart end to end in at most 2 minutes plus installation


def abba_order(repeats: int) -> list[bool]:
    """`repeats` runs with reuse and `repeats` without, in the order True, False, False, True, True, ..."""
    pattern = [True, False, False, True] * repeats
    return [r for i, r in enumerate(pattern) if pattern[:i].count(r) < repeats]


def run_job(reuse: bool, workdir: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, *JOB, f"--workdir={workdir}", f"--reuse_host_memory={str(reuse).lower()}"],
                         cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"bench_quickstart: the job failed (rc {out.returncode}): {out.stderr.strip()[-2000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    return {"reuse_host_memory": reuse, "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "job_wall_seconds": summary["wall_seconds"],
            "front_size": summary["front_size"], "full_supernet_val_score": summary["full_supernet_val_score"]}


def render(results: dict) -> str:
    runs = results["runs"]
    lines = ["## Quickstart job: wall time with and without host-memory reuse (`tools/bench_quickstart.py`)", "",
             f"Command: `{COMMAND}` (from the quickstart's venv: `pip install -e .` only)  ",
             f"{results['machine']}; the job of README line 1 (`python -m effjax.main --config=configs/pipeline.py`), "
             "one fresh workdir per run, runs interleaved (ABBA).", "",
             "| run | reuse_host_memory | wall s | train s | search s | user s | sys s | front | full val |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(runs):
        w = r["job_wall_seconds"]
        lines.append(f"| {i + 1} | {r['reuse_host_memory']} | {r['wall_s']:.1f} | {w['train']:.1f} | {w['search']:.1f} | "
                     f"{r['user_s']:.1f} | {r['sys_s']:.1f} | {r['front_size']} | {r['full_supernet_val_score']:.4f} |")
    lines.append("")
    for reuse in (True, False):
        walls = [r["wall_s"] for r in runs if r["reuse_host_memory"] is reuse]
        spread = f" ± {statistics.stdev(walls):.1f}" if len(walls) > 1 else ""
        lines.append(f"- reuse_host_memory={reuse}: wall {statistics.mean(walls):.1f}{spread} s (mean ± sample std, "
                     f"{len(walls)} runs), kernel CPU "
                     f"{statistics.mean(r['sys_s'] for r in runs if r['reuse_host_memory'] is reuse):.1f} s")
    best = statistics.mean(r["wall_s"] for r in runs if r["reuse_host_memory"])
    verdict = "met" if best <= TARGET_S else f"missed by {best - TARGET_S:.0f} s"
    lines += [f"- Target (issue 20): the quickstart end to end in at most {TARGET_S:.0f} s plus installation: {verdict} "
              "with the default (reuse).", "",
              f"Raw results: `{results['raw']}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting")
    args = parser.parse_args()
    order = abba_order(args.repeats)
    runs = []
    for i, reuse in enumerate(order):
        with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as workdir:
            runs.append(run_job(reuse, workdir))
        r = runs[-1]
        print(f"run {i + 1}/{len(order)} reuse_host_memory={reuse}: {r['wall_s']:.1f} s", flush=True)
    results = {"machine": machine_line(), "command": COMMAND, "runs": runs}
    results["raw"] = write_raw("quickstart", results)
    write_section("quickstart", render(results))
    print(render(results))


if __name__ == "__main__":
    main()
