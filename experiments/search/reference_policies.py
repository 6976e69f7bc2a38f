"""Reference-point policies of effjax.search measured with no `ref` on any objective.

Each run: qLogNEHVI, 50 evaluations, objectives without reference points (the search
infers them every round with the given policy and margin); the final hypervolume is
measured against the problem's standard reference point. The policy is selected on
seeds 0-4 (highest mean of the per-problem fraction of the maximum hypervolume, every
problem weighted equally); seeds 10-14 and fresh seeds (20-24, round 5: 30-34) give the reported
figures. Each jsonl file is tabled on its own (round 5 reran its baseline in another environment).

    python experiments/search/reference_policies.py run --policies front:0.1 observed:0.1 \
        --seeds 0 1 2 3 4 --jsonl experiments/search/reference_policies.jsonl
    python experiments/search/reference_policies.py table experiments/search/reference_policies.jsonl \
        experiments/search/reference_policies_round5.jsonl [--write]

`--write` also puts the table in the "search_reference" section of BENCHMARKS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from effjax.search import Objective, hypervolume, optimize  # noqa: E402
from effjax.search.problems import get_problem  # noqa: E402

PROBLEMS = ["branincurrin", "dtlz2", "vehiclesafety"]


def parse_policy(text: str) -> tuple[str, float]:
    name, _, margin = text.partition(":")
    return name, float(margin or 0.1)


def run_one(problem_name: str, policy: str, margin: float, seed: int, budget: int) -> dict:
    problem = get_problem(problem_name)
    objectives = [Objective(o.name, o.direction) for o in problem.objectives]
    start, cpu = time.perf_counter(), time.process_time()
    result = optimize(problem, problem.space, objectives, budget=budget, seed=seed, progress=False,
                      reference=policy, reference_margin=margin)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    y = np.array([[e.values[n] for n in problem.objective_names] for e in result.history])
    return {"problem": problem_name, "policy": policy, "margin": margin, "seed": seed, "budget": budget,
            "hv": hypervolume(y, problem.ref_point), "max_hv": problem.max_hv,
            "optimizer_s": float(sum(result.proposal_seconds)), "wall_s": wall, "cpu_s": cpu}


def load(paths) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def seed_set(seed: int) -> str:
    """The block of 10 seeds a run belongs to, named by its first five: 0-4 (selection), 10-14, 20-24 (reports)."""
    first = seed // 10 * 10
    return f"{first}-{first + 4}"


def table(rows: list[dict]) -> str:
    seed_sets = sorted({seed_set(r["seed"]) for r in rows}, key=lambda s: int(s.split("-")[0]))
    lines = ["| policy | seeds | " + " | ".join(PROBLEMS) + " | mean fraction of max HV | worst optimizer s | worst cpu s |",
             "|---|---|" + "---|" * len(PROBLEMS) + "---|---|---|"]
    for policy, margin in sorted({(r["policy"], r["margin"]) for r in rows}):
        for seeds in seed_sets:
            sel = [r for r in rows if (r["policy"], r["margin"]) == (policy, margin)
                   and seed_set(r["seed"]) == seeds]
            if not sel:
                continue
            cells, fractions = [], []
            for name in PROBLEMS:
                hv = np.array([r["hv"] for r in sel if r["problem"] == name])
                if len(hv) == 0:
                    cells.append("-")
                    continue
                std = hv.std(ddof=1) if len(hv) > 1 else float("nan")
                cells.append(f"{hv.mean():.4f} ± {std:.4f} (n={len(hv)})")
                fractions.append(hv.mean() / get_problem(name).max_hv)
            worst = max((r["optimizer_s"] for r in sel), default=float("nan"))
            cpu = [r["cpu_s"] for r in sel if "cpu_s" in r]
            cpu_cell = f"{max(cpu):.1f}" if len(cpu) == len(sel) else "-"
            lines.append(f"| {policy}, margin {margin:g} | {seeds} | " + " | ".join(cells)
                         + f" | {np.mean(fractions):.4f} | {worst:.1f} | {cpu_cell} |")
    return "\n".join(lines)


def tables(paths) -> str:
    """One table per jsonl file, each headed by the file's name when there are several."""
    if len(paths) == 1:
        return table(load(paths))
    return "\n\n".join(f"Rows of `{os.path.relpath(p)}`:\n\n{table(load([p]))}" for p in paths)


def write_benchmarks(text: str, paths) -> None:
    from tools.bench_report import machine_line, write_section
    from effjax.search.reference import DEFAULT_MARGIN, DEFAULT_POLICY
    rel = [os.path.relpath(p) for p in paths]
    section = (f"## search_reference: no reference point given (inferred every round)\n\n"
               f"`python experiments/search/reference_policies.py run --policies POLICY:MARGIN --seeds ... --jsonl "
               f"{rel[0]}` then `python experiments/search/reference_policies.py table {' '.join(rel)} --write`\n\n"
               f"{machine_line()}\n\nqLogNEHVI, 50 evaluations, no `ref` on any objective; HV w.r.t. each problem's "
               f"standard reference point, mean ± sample std (ddof 1) over the seeds. Selection rule, fixed before "
               f"the runs of each round: highest mean fraction of the maximum HV over the three problems on seeds "
               f"0-4; the winner of a round is reported on seeds 10-14 and on fresh seeds (20-24; round 5: 30-34) "
               f"(candidates, rounds and diagnostics: experiments/search/README.md). Round 5 reran its baseline in a "
               f"fresh environment (numpy 2.4.6, scipy 1.17.1), where the earlier rows do not reproduce to the last "
               f"digit, so its rows are tabled apart. Default policy: {DEFAULT_POLICY}, margin "
               f"{DEFAULT_MARGIN:g}. 'worst optimizer s' is the wall time of the proposals on a shared 2-core machine "
               f"(the first round's rows under a load of 15-29, the later ones with the run pinned to one core), not "
               f"CPU time; 'worst cpu s' is the process CPU time of a whole run (compilation included), recorded from "
               f"round 5's report runs on. Raw rows: {', '.join(f'`{r}`' for r in rel)}.\n\n{text}\n")
    write_section("search_reference", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--policies", nargs="+", required=True, help="name:margin, e.g. observed:0.1")
    run.add_argument("--problems", nargs="+", default=PROBLEMS)
    run.add_argument("--seeds", nargs="+", type=int, required=True)
    run.add_argument("--budget", type=int, default=50)
    run.add_argument("--jsonl", required=True)
    show = sub.add_parser("table")
    show.add_argument("jsonl", nargs="+")
    show.add_argument("--write", action="store_true", help="write the search_reference section of BENCHMARKS.md")
    args = parser.parse_args()
    if args.command == "table":
        text = tables(args.jsonl)
        print(text)
        if args.write:
            write_benchmarks(text, args.jsonl)
        return
    for text in args.policies:
        policy, margin = parse_policy(text)
        for name in args.problems:
            for seed in args.seeds:
                row = run_one(name, policy, margin, seed, args.budget)
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
