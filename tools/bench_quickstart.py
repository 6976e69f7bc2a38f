"""Wall time of the quickstart's main job, with and without host-memory reuse, runs interleaved.

Runs the README's first command's job (`python -m effjax.main --config=configs/pipeline.py`, a fresh workdir each
time) `--repeats` times per setting of `--reuse_host_memory` in ABBA order with this interpreter; run it from the
quickstart's virtual environment (`pip install -e .`, nothing else) for the quickstart's figure. Per run: wall time
of the process, its user and kernel CPU seconds, the job's own `wall_seconds` (train, search, job), and the results
(front size, full supernet's validation score) to show both settings compute the same thing. Writes
`benchmarks/quickstart.json` and the "quickstart" section of BENCHMARKS.md.

`--against=<git revision>` compares code instead: the same job from this working tree and from a temporary git
worktree of the revision (each run imports effjax from its own tree), both with the default reuse, interleaved
the same way; writes `benchmarks/quickstart_versions.json` and the "quickstart_versions" section.

    .venv/bin/python -m tools.bench_quickstart --repeats=3
    .venv/bin/python -m tools.bench_quickstart --repeats=3 --against=HEAD~1
"""

from __future__ import annotations

import argparse
import contextlib
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
COMMAND = ".venv/bin/python -m tools.bench_quickstart"
TARGET_S = 120.0  # issue 20: the quickstart end to end in at most 2 minutes plus installation


def abba_order(repeats: int) -> list[bool]:
    """`repeats` runs with reuse and `repeats` without, in the order True, False, False, True, True, ..."""
    pattern = [True, False, False, True] * repeats
    return [r for i, r in enumerate(pattern) if pattern[:i].count(r) < repeats]


def run_job(reuse: bool, workdir: str, tree: str = REPO) -> dict:
    """One run of the job with effjax and the configs of `tree` (a checkout of this repository)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    out = subprocess.run([sys.executable, *JOB, f"--workdir={workdir}", f"--reuse_host_memory={str(reuse).lower()}"],
                         cwd=tree, env=env, capture_output=True, text=True)
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
    key = "code" if results.get("against") else "reuse_host_memory"  # what the two settings differ in
    judged = results["this_code"] if key == "code" else True  # the setting the target is judged on
    title = ("wall time of this code and of " + results["against"] if key == "code"
             else "wall time with and without host-memory reuse")
    lines = [f"## Quickstart job: {title} (`tools/bench_quickstart.py`)", "",
             f"Command: `{results['command']}` (from the quickstart's venv: `pip install -e .` only)  ",
             f"{results['machine']}; the job of README line 1 (`python -m effjax.main --config=configs/pipeline.py`), "
             "one fresh workdir per run, runs interleaved (ABBA).", "",
             f"| run | {key} | wall s | train s | search s | user s | sys s | front | full val |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(runs):
        w = r["job_wall_seconds"]
        lines.append(f"| {i + 1} | {r[key]} | {r['wall_s']:.1f} | {w['train']:.1f} | {w['search']:.1f} | "
                     f"{r['user_s']:.1f} | {r['sys_s']:.1f} | {r['front_size']} | {r['full_supernet_val_score']:.4f} |")
    lines.append("")
    for setting in dict.fromkeys(r[key] for r in runs):
        walls = [r["wall_s"] for r in runs if r[key] == setting]
        spread = f" ± {statistics.stdev(walls):.1f}" if len(walls) > 1 else ""
        lines.append(f"- {key}={setting}: wall {statistics.mean(walls):.1f}{spread} s (mean ± sample std, "
                     f"{len(walls)} runs), kernel CPU "
                     f"{statistics.mean(r['sys_s'] for r in runs if r[key] == setting):.1f} s")
    best = statistics.mean(r["wall_s"] for r in runs if r[key] == judged)
    verdict = "met" if best <= TARGET_S else f"missed by {best - TARGET_S:.0f} s"
    lines += [f"- Target (issue 20): the quickstart end to end in at most {TARGET_S:.0f} s plus installation: {verdict} "
              f"with {'this code' if key == 'code' else 'the default (reuse)'}.", "",
              f"Raw results: `{results['raw']}`."]
    return "\n".join(lines)


def git_revision(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting")
    parser.add_argument("--against", default="", help="a git revision: compare this working tree's code with it")
    args = parser.parse_args()
    order = abba_order(args.repeats)
    runs = []
    label = {}
    tree = tempfile.TemporaryDirectory(prefix="bench_quickstart_tree_") if args.against else contextlib.nullcontext()
    with tree as other:
        if args.against:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                   capture_output=True, text=True).stdout.strip()
            label = {True: git_revision("HEAD") + (" + changes" if dirty else ""), False: git_revision(args.against)}
            subprocess.run(["git", "worktree", "add", "--detach", other, args.against], cwd=REPO, check=True,
                           capture_output=True)
        try:
            for i, setting in enumerate(order):
                with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as workdir:
                    if args.against:
                        runs.append({"code": label[setting], **run_job(True, workdir, REPO if setting else other)})
                    else:
                        runs.append(run_job(setting, workdir))
                r = runs[-1]
                print(f"run {i + 1}/{len(order)} {r.get('code', setting)}: {r['wall_s']:.1f} s", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "worktree", "remove", "--force", other], cwd=REPO, capture_output=True)
    name = "quickstart_versions" if args.against else "quickstart"
    command = f"{COMMAND} --repeats={args.repeats}" + (f" --against={args.against}" if args.against else "")
    results = {"machine": machine_line(), "command": command, "runs": runs,
               **({"against": args.against, "this_code": label[True]} if args.against else {})}
    results["raw"] = write_raw(name, results)
    write_section(name, render(results))
    print(render(results))


if __name__ == "__main__":
    main()
