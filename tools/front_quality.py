"""How good is the main job's search front? qLogNEHVI vs Sobol vs random on a trained supernet.

    python -m tools.front_quality --workdir=<main job workdir> [--n_reference=1000] [--seeds=5]
        [--sample_seconds=S]
    python -m tools.front_quality --workdir=<main job workdir> --report   # re-print from results.json
    python -m tools.front_quality --report=<path of a results.json>

Takes the supernet that `python -m effjax.main` trained in `--workdir` and the search space
its search uses (widths, bits, and the supernet's other knobs). A reference front comes
from evaluating every configuration, or a uniform random sample of `--n_reference` of them
when the space is larger, together with every configuration any search below evaluates.
Then, for each of `--seeds` search seeds and at the job's budget (`config.search.budget`):
qLogNEHVI as the job runs it (same objectives, first points and batch size), the first
`budget` distinct feasible points of a scrambled Sobol sequence, and `budget` configurations
drawn uniformly without replacement. Each front's hypervolume in (score: max, FLOPs: min,
bits: min) is measured against one fixed reference point, (0, FLOPs and bits of the full
float supernet), the most expensive configuration; the table gives it as a fraction of
the reference front's.

Scores are cached in `<workdir>/front_quality/scores.jsonl`, so an interrupted run resumes
and the methods share evaluations. Results: `<workdir>/front_quality/results.json`.

The random sample is a prefix of one fixed permutation of the feasible configurations, scored
in that order, so a smaller `--n_reference` reuses the cached scores of a larger one and
`--sample_seconds` (stop the sample after that many seconds; the reference is then the scored
prefix, reported as such) leaves a consistent result. The reference front is built from
every cached score of the space, so it can include points of earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np
import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effjax import search  # noqa: E402
from effjax.search.pareto import non_dominated_mask  # noqa: E402

METHODS = ("qLogNEHVI", "Sobol", "random")


class CachedScores:
    """`score(params)` evaluated once per configuration, appended to a jsonl file as it goes."""

    def __init__(self, score_fn: Callable[[dict], float], space: search.Space, path: str | None):
        self.score_fn, self.space, self.path = score_fn, space, path
        self.scores: dict[tuple, float] = {}
        self.params: dict[tuple, dict] = {}
        self.n_new, self.seconds = 0, 0.0  # evaluations made by this process and their wall time
        self.row_seconds: list[float] = []  # wall time of every cached evaluation that recorded one
        self.log_every = 0  # > 0: a progress line on stderr every that many new evaluations
        if path and os.path.exists(path):
            with open(path) as f:
                for i, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        params = space.validate(row["params"])
                        value = float(row["score"])
                    except (ValueError, KeyError, TypeError) as e:
                        raise ValueError(f"{path}: row {i + 1} is not a cached score of this search space ({e})") from None
                    self.scores[space.key(params)], self.params[space.key(params)] = value, params
                    if isinstance(row.get("seconds"), (int, float)):
                        self.row_seconds.append(float(row["seconds"]))

    def __call__(self, params: dict) -> float:
        key = self.space.key(params)
        if key not in self.scores:
            start = time.perf_counter()
            value = float(self.score_fn(dict(params)))
            seconds = time.perf_counter() - start
            self.seconds += seconds
            self.row_seconds.append(seconds)
            self.n_new += 1
            if self.log_every and self.n_new % self.log_every == 0:
                print(f"front_quality: {self.n_new} new evaluations, {self.seconds / self.n_new:.3f} s each, "
                      f"{len(self.scores) + 1} cached", file=sys.stderr, flush=True)
            if not np.isfinite(value):
                raise ValueError(f"score of {params} is {value}; scores must be finite")
            self.scores[key], self.params[key] = value, dict(params)
            if self.path:
                with open(self.path, "a") as f:
                    f.write(json.dumps({"params": params, "score": value, "seconds": seconds}) + "\n")
        return self.scores[key]


def sobol_configs(space: search.Space, budget: int, seed: int) -> list[dict]:
    """The first `budget` distinct feasible configurations of a scrambled Sobol sequence."""
    sobol = scipy.stats.qmc.Sobol(d=space.dim, scramble=True, rng=seed)
    out, keys = [], set()
    for _ in range(64):
        for x in sobol.random(256):
            p = space.decode(x)
            if space.key(p) not in keys and space.is_feasible(p):
                out.append(p)
                keys.add(space.key(p))
                if len(out) == budget:
                    return out
    return out


def random_configs(feasible: Sequence[dict], budget: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [feasible[i] for i in rng.choice(len(feasible), size=min(budget, len(feasible)), replace=False)]


def reference_sample(feasible: Sequence[dict], n: int, seed: int) -> list[dict]:
    """The first `n` of one fixed random permutation of `feasible` (all of them, permuted, when n >= len):
    the sample of a smaller n is a prefix of the sample of a larger one."""
    order = np.random.default_rng(seed).permutation(len(feasible))
    return [feasible[i] for i in order[:n]]


def front_hypervolume(points: np.ndarray, ref_point: Sequence[float]) -> float:
    """HV of rows (score, flops, bits) w.r.t. ref_point, score maximized and costs minimized."""
    return search.hypervolume(np.asarray(points).reshape(-1, 3), list(ref_point), ["max", "min", "min"])


def compare(score: CachedScores, cost_fn: Callable[[dict], tuple[float, float]], space: search.Space,
            ref_point: Sequence[float], budget: int, seeds: Sequence[int], n_reference: int,
            initial_params: Sequence[dict] = (), batch_size: int = 1, reference_seed: int = 12345,
            sample_seconds: float | None = None) -> dict:
    """Runs every method for every seed and scores them against the reference front (see the module docstring).

    `sample_seconds`: stop scoring the reference sample after that many seconds (the searches are not
    limited); the reference sample is then the scored prefix and `sample_stopped` says so."""
    feasible = [p for p in space.iter_all() if space.is_feasible(p)]
    sample = reference_sample(feasible, n_reference, reference_seed)
    objectives = [search.Objective("score", "max"),
                  search.Objective("flops", "min", fn=lambda p: cost_fn(p)[0]),
                  search.Objective("bits", "min", fn=lambda p: cost_fn(p)[1])]

    def row(p):
        return [score(p), *cost_fn(p)]

    runs = []
    for seed in seeds:
        for method in METHODS:
            start, eval_seconds = time.perf_counter(), score.seconds
            if method == "qLogNEHVI":
                result = search.optimize(lambda p: {"score": score(p)}, space, objectives, budget=budget, seed=seed,
                                         batch_size=batch_size, progress=False, initial_params=initial_params)
                configs = [e.params for e in result.history]
            elif method == "Sobol":
                configs = sobol_configs(space, budget, seed)
            else:
                configs = random_configs(feasible, budget, seed)
            values = [row(p) for p in configs]
            hv = front_hypervolume(values, ref_point)
            wall = time.perf_counter() - start
            runs.append({"method": method, "seed": seed, "configs": configs, "values": values, "hv": hv, "seconds": wall,
                         "seconds_without_new_evaluations": wall - (score.seconds - eval_seconds)})
    start, n_sampled, stopped = time.perf_counter(), 0, False
    for p in sample:
        if sample_seconds is not None and time.perf_counter() - start > sample_seconds:
            stopped = True
            break
        score(p)
        n_sampled += 1
    every = [score.params[k] for k in score.scores if space.is_feasible(score.params[k])]
    values = np.array([row(p) for p in every])
    front = non_dominated_mask(values * np.array([1.0, -1.0, -1.0]))
    reference_hv = front_hypervolume(values[front], ref_point)
    # diagnostic: the same fractions with the score coordinate of the reference point raised to the worst
    # evaluated score, so that the score axis weighs as much as the costs (with score 0, most of the HV is
    # the box below the worst score, which any set of cheap points covers)
    worst_ref = [float(values[:, 0].min()), *ref_point[1:]]
    worst_hv = front_hypervolume(values[front], worst_ref)
    for r in runs:
        r["fraction"] = r["hv"] / reference_hv
        r["fraction_worst_score_ref"] = front_hypervolume(r["values"], worst_ref) / worst_hv
    return {"runs": runs, "reference_hv": reference_hv, "n_evaluated": len(every), "n_feasible": len(feasible),
            "n_reference_sample": n_sampled, "n_reference_requested": min(n_reference, len(feasible)),
            "sample_stopped": stopped, "n_new_evaluations": score.n_new,
            "seconds_per_new_evaluation": score.seconds / score.n_new if score.n_new else None,
            "n_timed_evaluations": len(score.row_seconds),
            "seconds_per_timed_evaluation": float(np.mean(score.row_seconds)) if score.row_seconds else None,
            "ref_point": list(ref_point), "budget": budget, "ref_point_worst_score": worst_ref,
            "reference_hv_worst_score": worst_hv,
            "reference_front": [{"params": p, "score": float(v[0]), "flops": float(v[1]), "bits": float(v[2])}
                                for p, v, f in zip(every, values, front) if f]}


def table(results: dict) -> str:
    seeds = sorted({r["seed"] for r in results["runs"]})
    summary = (f"Reference front: {results['n_evaluated']} evaluated configurations of {results['n_feasible']} "
               f"(random sample of {results['n_reference_sample']} plus every searched one); its HV "
               f"{results['reference_hv']:.6g} w.r.t. (score, FLOPs, bits) = {tuple(results['ref_point'])}; "
               f"budget {results['budget']} per search.")
    if results.get("sample_stopped"):
        summary += (f" The sample was stopped by --sample_seconds after {results['n_reference_sample']} of "
                    f"{results['n_reference_requested']}.")
    if results.get("seconds_per_new_evaluation") is not None:
        summary += (f" This process made {results['n_new_evaluations']} new evaluations, "
                    f"{results['seconds_per_new_evaluation']:.3f} s each (wall).")
    if results.get("seconds_per_timed_evaluation") is not None:
        summary += (f" Over the {results['n_timed_evaluations']} cached evaluations that recorded a time: "
                    f"{results['seconds_per_timed_evaluation']:.3f} s each (wall).")
    lines = [summary, "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std fraction of the reference HV |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for method in METHODS:
        fr = np.array([r["fraction"] for s in seeds for r in results["runs"] if r["method"] == method and r["seed"] == s])
        std = fr.std(ddof=1) if len(fr) > 1 else float("nan")
        lines.append(f"| {method} | " + " | ".join(f"{f:.4f}" for f in fr) + f" | {fr.mean():.4f} ± {std:.4f} |")
    if all("seconds_without_new_evaluations" in r for r in results["runs"]):
        times = [r["seconds_without_new_evaluations"] for r in results["runs"] if r["method"] == "qLogNEHVI"]
        lines += ["", f"qLogNEHVI time per search without its new evaluations: {np.mean(times):.1f} s mean, "
                      f"{max(times):.1f} s max (wall)."]
    if all("fraction_worst_score_ref" in r for r in results["runs"]):
        lines += ["", "Diagnostic, not the target: fractions against (worst evaluated score, FLOPs, bits) = "
                      f"{tuple(round(v, 6) for v in results['ref_point_worst_score'])}.", "",
                  "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
                  "|---|" + "---|" * len(seeds) + "---|"]
        for method in METHODS:
            fr = np.array([r["fraction_worst_score_ref"] for s in seeds for r in results["runs"]
                           if r["method"] == method and r["seed"] == s])
            std = fr.std(ddof=1) if len(fr) > 1 else float("nan")
            lines.append(f"| {method} | " + " | ".join(f"{f:.4f}" for f in fr) + f" | {fr.mean():.4f} ± {std:.4f} |")
    bo = {r["seed"]: r["hv"] for r in results["runs"] if r["method"] == "qLogNEHVI"}
    ahead = all(bo[r["seed"]] > r["hv"] for r in results["runs"] if r["method"] != "qLogNEHVI")
    worst = min(r["fraction"] for r in results["runs"] if r["method"] == "qLogNEHVI")
    lines += ["", f"- qLogNEHVI ahead of Sobol and random on every seed: {'met' if ahead else 'MISSED'}",
              (f"- qLogNEHVI >= 95% of the reference front's HV on every seed (worst {worst:.4f}): "
               f"{'met' if worst >= 0.95 else 'MISSED'}")]
    return "\n".join(lines)


def load_job(workdir: str):
    """(config, evaluator) of a finished main-job workdir."""
    from effjax.job import subnet_search
    from effjax.train.setup import load_run

    for name in ("config.json", "checkpoints"):
        if not os.path.exists(os.path.join(workdir, name)):
            raise ValueError(f"--workdir={workdir!r}: {name} not found; train with `python -m effjax.main` first")
    run = load_run(workdir)
    config = run.config
    return config, subnet_search.SubnetEvaluator(run.setup, run.params, dict(config.search.score_weights))


def run_on_workdir(workdir: str, n_reference: int, seeds: Sequence[int], sample_seconds: float | None = None) -> dict:
    from effjax.job import subnet_search as ss

    config, evaluator = load_job(workdir)
    tasks = evaluator.tasks
    space = ss.search_space(config.model.width_menu, tasks, config.search.bits, ss.knob_menus(config),
                            evaluator.pvq_settings)
    costs: dict[tuple, tuple[float, float]] = {}

    def cost_fn(p):
        key = space.key(p)
        if key not in costs:
            c = evaluator.cost(*evaluator.candidate(p))
            costs[key] = (float(c["flops"]), float(c["bits"]))
        return costs[key]

    def score_fn(p):
        subnet, pvq = evaluator.candidate(p)
        return evaluator.metrics(subnet, "val", pvq)["score"]

    out_dir = os.path.join(workdir, "front_quality")
    os.makedirs(out_dir, exist_ok=True)
    score = CachedScores(score_fn, space, os.path.join(out_dir, "scores.jsonl"))
    score.log_every = 50
    full = space.validate(ss.full_params(config, tasks))
    bits = sorted(int(b) for b in config.search.bits)
    corners = [space.validate(dict(full, weight_bits=b)) for b in dict.fromkeys((bits[-1], bits[0]))]
    ref_point = (0.0, *cost_fn(full))
    results = compare(score, cost_fn, space, ref_point, int(config.search.budget), seeds, n_reference,
                      initial_params=corners, batch_size=int(config.search.batch_size), sample_seconds=sample_seconds)
    results["workdir"] = os.path.abspath(workdir)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir")
    parser.add_argument("--n_reference", type=int, default=1000, help="random sample size when the space is larger")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sample_seconds", type=float, default=None,
                        help="stop scoring the reference sample after this many seconds (default: no limit)")
    parser.add_argument("--report", nargs="?", const="", default=None, metavar="RESULTS_JSON",
                        help="only print the table of RESULTS_JSON (default <workdir>/front_quality/results.json)")
    args = parser.parse_args()
    if args.report is None and not args.workdir:
        print("front_quality: error: --workdir is required (except with --report=<results.json>)", file=sys.stderr)
        return 2
    if args.report is not None:
        if not args.report and not args.workdir:
            print("front_quality: error: --report needs a results.json path or --workdir", file=sys.stderr)
            return 2
        path = args.report or os.path.join(args.workdir, "front_quality", "results.json")
        if not os.path.exists(path):
            print(f"front_quality: error: {path} not found; run without --report first", file=sys.stderr)
            return 2
        with open(path) as f:
            print(table(json.load(f)))
        return 0
    if args.n_reference < 1 or args.seeds < 1:
        print("front_quality: error: --n_reference and --seeds must be >= 1", file=sys.stderr)
        return 2
    if args.sample_seconds is not None and not args.sample_seconds >= 0:
        print("front_quality: error: --sample_seconds must be >= 0", file=sys.stderr)
        return 2
    try:
        results = run_on_workdir(args.workdir, args.n_reference, list(range(args.seeds)), args.sample_seconds)
    except ValueError as e:
        print(f"front_quality: error: {e}", file=sys.stderr)
        return 2
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
