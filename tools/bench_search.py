"""Benchmark of effjax.search (qLogNEHVI) against scrambled Sobol and NSGA-II.

Runs every method on BraninCurrin, DTLZ2 (d=6, M=2) and VehicleSafety (d=5, M=3) with a
budget of 50 evaluations over 5 seeds; reports the mean (and std) final hypervolume, the
log10 hypervolume gap to the known maximum, and the optimizer's time per proposal; then
times one proposal with 100 observations, 3 modeled objectives and 20 inputs. Writes the
"search" section of BENCHMARKS.md, experiments/search/README.md and
experiments/search/hv_vs_evals.png.

    python -m tools.bench_search                       # everything, sequentially
    python -m tools.bench_search --problems branincurrin --out /tmp/bc.json   # one part
    python -m tools.bench_search --report /tmp/bc.json /tmp/dtlz2.json ...    # merge parts

Peers (`--peers`, optional extra "bench": optuna, botorch, and torch for both): qLogNEHVI with
and without reference points, Sobol, Optuna TPE and GPSampler, and (named in --methods) BoTorch's qLogNEHVI with and
without the problem's reference point ("botorch-qLogNEHVI", "botorch-qLogNEHVI (no ref)", see
`_botorch`) on the three problems and on the mixed CompressionMixed, one JSON row per run appended
to experiments/search/peers.jsonl; then `--peers-report` writes the "search_peers" section of
BENCHMARKS.md:

    python -m tools.bench_search --peers --methods qLogNEHVI "qLogNEHVI (no ref)" Sobol optuna-TPE optuna-GP \
        --problems compression_mixed --seed-list 0 1 2 3 4
    python -m tools.bench_search --peers --methods "botorch-qLogNEHVI (no ref)" --problems dtlz2 \
        --seed-list 10 11 12 13 14 --jsonl experiments/search/peers_botorch.jsonl
    python -m tools.bench_search --peers-report experiments/search/peers.jsonl
    python -m tools.bench_search --peers-table <rows.jsonl> ...   # print the table only

XLA runs single-threaded here (set below, before JAX starts): the search's arrays are
small, and on a shared 2-core machine thread hand-offs cost more than they save.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effjax.search import Categorical, Float, Int, Objective, Optimizer, Ordinal, hypervolume, optimize  # noqa: E402
from effjax.search.reference import DEFAULT_POLICY  # noqa: E402
from effjax.search.nsga2 import nsga2_search, sobol_search  # noqa: E402
from effjax.search.problems import DTLZ2, get_problem  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT_DIR = os.path.join(REPO, "experiments", "search")
PROBLEMS = ["branincurrin", "dtlz2", "vehiclesafety"]
COMMAND = "python -m tools.bench_search"
NO_REF = "qLogNEHVI (no ref)"  # every objective without `ref`: the search infers the reference point
PEER_PROBLEMS = ["branincurrin", "dtlz2", "vehiclesafety", "compression_mixed"]
BOTORCH = "botorch-qLogNEHVI"
BOTORCH_NO_REF = "botorch-qLogNEHVI (no ref)"  # BoTorch's infer_reference_point on the observed front every round
PEER_METHODS = ["qLogNEHVI", NO_REF, "Sobol", "optuna-TPE", "optuna-GP"]  # BoTorch (2-10 min a run): name it in --methods
PEER_LABELS = {BOTORCH: "BoTorch qLogNEHVI", BOTORCH_NO_REF: "BoTorch qLogNEHVI (no ref)"}
PEERS_JSONL = os.path.join("experiments", "search", "peers.jsonl")


def hv_trace(problem, history) -> list[float]:
    names = problem.objective_names
    y = np.array([[e.values[n] for n in names] for e in history])
    return [hypervolume(y[: k + 1], problem.ref_point) for k in range(len(y))]


def search_objectives(problem, given_ref: bool):
    """The problem's objectives, with their standard reference points or with none (inferred)."""
    return problem.objectives if given_ref else [Objective(o.name, o.direction) for o in problem.objectives]


def run_method(method: str, problem, budget: int, seed: int, given_ref: bool = True,
               reference: str = DEFAULT_POLICY) -> dict:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    proposal_seconds: list[float] = []
    if method in ("qLogNEHVI", NO_REF):
        given_ref = given_ref and method == "qLogNEHVI"
        result = optimize(problem, problem.space, search_objectives(problem, given_ref), budget=budget, seed=seed,
                          progress=False, reference=reference)
        proposal_seconds = result.proposal_seconds
    elif method == "Sobol":
        result = sobol_search(problem, problem.space, problem.objectives, budget=budget, seed=seed)
    elif method == "NSGA-II":
        result = nsga2_search(problem, problem.space, problem.objectives, budget=budget, seed=seed)
    elif method in ("optuna-TPE", "optuna-GP"):
        result = _optuna(problem, budget, seed, method.split("-")[1])
    elif method in (BOTORCH, BOTORCH_NO_REF):
        given_ref = given_ref and method == BOTORCH
        reference = "botorch infer_reference_point"
        result = _botorch(problem, budget, seed, given_ref)
    else:
        raise ValueError(f"unknown method {method!r}")
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    trace = hv_trace(problem, result.history)
    # Proposals after the initial design (the design's asks take no model time).
    model_asks = [s for s in proposal_seconds if s > 0.02] or proposal_seconds
    inferred_by = None if given_ref or method not in ("qLogNEHVI", NO_REF, BOTORCH, BOTORCH_NO_REF) else reference
    return {"method": method, "problem": problem.name, "given_ref": given_ref, "reference": inferred_by,
            "seed": seed, "hv": trace[-1], "max_hv": problem.max_hv, "trace": trace, "wall_s": wall, "cpu_s": cpu,
            "optimizer_s": float(sum(proposal_seconds)), "first_proposal_s": float(model_asks[0]) if model_asks else 0.0,
            "proposal_s": float(np.median(model_asks)) if model_asks else 0.0}


def _suggest(trial, parameter):
    """One optuna suggestion for one effjax.search parameter."""
    if isinstance(parameter, Float):
        return trial.suggest_float(parameter.name, parameter.low, parameter.high, log=parameter.log)
    if isinstance(parameter, Int):
        return trial.suggest_int(parameter.name, parameter.low, parameter.high)
    return parameter.values[trial.suggest_int(parameter.name + "_index", 0, len(parameter.values) - 1)] \
        if isinstance(parameter, Ordinal) else trial.suggest_categorical(parameter.name, list(parameter.values))


def _optuna(problem, budget, seed, sampler_name: str):
    import optuna  # optional comparison (extra "bench")
    from effjax.search.optimizer import Evaluation, SearchResult, pareto_subset
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sampler_name == "GP":
        sampler = optuna.samplers.GPSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    study = optuna.create_study(directions=["minimize"] * problem.n_objectives, sampler=sampler)
    history = []
    space = problem.space

    def objective(trial):
        params = {p.name: _suggest(trial, p) for p in space.params}
        values = problem(params)
        history.append(Evaluation(len(history), params, values))
        return [values[n] for n in problem.objective_names]

    study.optimize(objective, n_trials=budget)
    return SearchResult(history, pareto_subset(history, problem.objectives), problem.objectives)


def _botorch(problem, budget, seed, given_ref: bool):
    """BoTorch's multi-objective recipe (its qNEHVI tutorial, with qLogNEHVI), q = 1, float64 on the CPU.

    Initial design: 2 (d + 1) scrambled Sobol points (seeded by `seed`) in the unit cube, one column per
    parameter: a Float maps linearly onto [low, high] (onto [log low, log high] with log=True); an Int,
    Ordinal or Categorical parameter with n values takes the value of the cell floor(u n). Then one
    proposal per round until `budget` evaluations. Model: a ModelListGP of one GP per objective, inputs
    normalized to the unit cube by a Normalize input transform with the space's bounds, outcomes
    Standardize-d, fitted with fit_gpytorch_mll; SingleTaskGP when no parameter is categorical, else
    MixedSingleTaskGP with the categorical columns (value indices) declared. Acquisition:
    qLogNoisyExpectedHypervolumeImprovement with prune_baseline=True and its default sampler (128 QMC
    samples). BoTorch maximizes: the objectives are multiplied by their signs (effjax's problems minimize
    all, so negated). Reference point: the problem's standard one (signed the same way) with `given_ref`,
    else `infer_reference_point` of the observed non-dominated points, recomputed every round.
    Optimization: all-Float spaces, optimize_acqf with the tutorial's num_restarts 10, raw_samples 512,
    options batch_limit 5 and maxiter 200; mixed spaces, optimize_acqf_mixed_alternating with Int
    (values low..high) and Ordinal (indices) columns as discrete dims and Categorical ones as cat dims,
    num_restarts 10, raw_samples 512 (below its defaults 20 and 1024, to match the continuous setting),
    its other options at their defaults. That optimizer returns members of the declared value lists, so
    decoding rounds only float noise; a Float is clipped to its bounds after exp (log parameters).
    """
    import torch  # optional comparison (extra "bench")
    from botorch import fit_gpytorch_mll
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.models import MixedSingleTaskGP, ModelListGP, SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated
    from botorch.utils.sampling import draw_sobol_samples
    from gpytorch.mlls import SumMarginalLogLikelihood

    from effjax.search.optimizer import Evaluation, SearchResult, pareto_subset

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    space = problem.space
    if space.constraints:
        raise NotImplementedError("the BoTorch peer does not handle constrained spaces")
    params = space.params
    dim = len(params)
    signs = np.array([o.sign for o in problem.objectives])
    names = [o.name for o in problem.objectives]
    value_lists = {i: list(p.values) for i, p in enumerate(params) if not isinstance(p, Float)}
    lows = [(math.log(p.low) if p.log else p.low) if isinstance(p, Float) else
            (p.low if isinstance(p, Int) else 0) for p in params]
    highs = [(math.log(p.high) if p.log else p.high) if isinstance(p, Float) else
             (p.high if isinstance(p, Int) else len(p.values) - 1) for p in params]
    bounds = torch.tensor([lows, highs], dtype=torch.float64)
    cat_dims = [i for i, p in enumerate(params) if isinstance(p, Categorical)]
    ordered_dims = [i for i in range(dim) if i not in cat_dims]
    discrete_dims = {i: [float(v) for v in (p.values if isinstance(p, Int) else range(len(p.values)))]
                     for i, p in enumerate(params) if isinstance(p, (Int, Ordinal))}

    def decode(column: torch.Tensor) -> dict:
        out = {}
        for i, p in enumerate(params):
            x = float(column[i])
            if isinstance(p, Float):
                x = min(max(x, lows[i]), highs[i])
                out[p.name] = min(max(math.exp(x), p.low), p.high) if p.log else x
            elif isinstance(p, Int):
                out[p.name] = round(x)
            else:
                out[p.name] = value_lists[i][round(x)]
        return out

    def encode_cells(u: torch.Tensor) -> torch.Tensor:
        x = bounds[0] + u * (bounds[1] - bounds[0])
        for i, p in enumerate(params):
            if not isinstance(p, Float):
                n = len(value_lists[i])
                x[:, i] = torch.clamp(torch.floor(u[:, i] * n), max=n - 1) + lows[i]
        return x

    history = []
    train_x, train_y = [], []

    def evaluate(x_row: torch.Tensor) -> None:
        point = decode(x_row)
        values = problem(point)
        history.append(Evaluation(len(history), point, values))
        train_x.append(x_row)
        train_y.append(torch.tensor([values[n] for n in names], dtype=torch.float64) * torch.from_numpy(signs))

    unit = torch.tensor([[0.0] * dim, [1.0] * dim], dtype=torch.float64)
    n_initial = min(2 * (dim + 1), budget)
    for x_row in encode_cells(draw_sobol_samples(unit, n=n_initial, q=1, seed=seed).squeeze(1)):
        evaluate(x_row)
    standard_ref = torch.from_numpy(np.asarray(problem.ref_point, dtype=np.float64) * signs)
    while len(history) < budget:
        x, y = torch.stack(train_x), torch.stack(train_y)
        models = []
        for j in range(y.shape[1]):
            normalize = Normalize(dim, indices=ordered_dims, bounds=bounds[:, ordered_dims])
            if cat_dims:
                models.append(MixedSingleTaskGP(x, y[:, j:j + 1], cat_dims=cat_dims, input_transform=normalize,
                                                outcome_transform=Standardize(m=1)))
            else:
                models.append(SingleTaskGP(x, y[:, j:j + 1], input_transform=normalize,
                                           outcome_transform=Standardize(m=1)))
        model = ModelListGP(*models)
        fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
        ref = standard_ref if given_ref else infer_reference_point(y[is_non_dominated(y)])
        acquisition = qLogNoisyExpectedHypervolumeImprovement(model, ref_point=ref.tolist(), X_baseline=x,
                                                              prune_baseline=True)
        if value_lists:
            candidate, _ = optimize_acqf_mixed_alternating(
                acquisition, bounds, discrete_dims=discrete_dims,
                cat_dims={i: [float(v) for v in range(len(value_lists[i]))] for i in cat_dims},
                q=1, num_restarts=10, raw_samples=512)
        else:
            candidate, _ = optimize_acqf(acquisition, bounds, q=1, num_restarts=10, raw_samples=512,
                                         options={"batch_limit": 5, "maxiter": 200}, sequential=True)
        evaluate(candidate[0].detach())
    return SearchResult(history, pareto_subset(history, problem.objectives), problem.objectives)


def run_peers(problems, methods, seeds, budget, jsonl: str) -> None:
    """Appends one JSON row per (problem, method, seed) run to `jsonl` (HV w.r.t. the standard reference point)."""
    for name in problems:
        problem = get_problem(name)
        for method in methods:
            for seed in seeds:
                r = run_method(method, problem, budget, seed, given_ref=method not in (NO_REF, BOTORCH_NO_REF))
                r.pop("trace")
                with open(jsonl, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{name:14s} {method:20s} seed {seed}: HV {r['hv']:.4f} cpu {r['cpu_s']:.1f}s "
                      f"wall {r['wall_s']:.1f}s", flush=True)


def peers_table(rows: list[dict]) -> str:
    """Mean ± sample std (ddof 1) of the final HV per problem and method, with CPU and wall seconds per run."""
    header = ("| problem | method | seeds | HV mean ± std | fraction of max HV | above Sobol on every seed | "
              "cpu s / run (mean, max) | wall s / run (mean) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sel = [r for r in rows if r["problem"] == problem]
        sobol = {r["seed"]: r["hv"] for r in sel if r["method"] == "Sobol"}
        for method, given_ref in dict.fromkeys((r["method"], r["given_ref"]) for r in sel):
            rs = [r for r in sel if r["method"] == method and r["given_ref"] == given_ref]
            hv = np.array([r["hv"] for r in rs])
            std = hv.std(ddof=1) if len(hv) > 1 else float("nan")
            above = "-" if method == "Sobol" or not all(r["seed"] in sobol for r in rs) else \
                ("yes" if all(r["hv"] > sobol[r["seed"]] for r in rs) else "no")
            cpu = [r["cpu_s"] for r in rs]
            seeds = ",".join(str(r["seed"]) for r in rs)
            lines.append(f"| {problem} | {peer_label(method, given_ref)} | {seeds} | {hv.mean():.4f} ± {std:.4f} | {hv.mean() / rs[0]['max_hv']:.4f} "
                         f"| {above} | {np.mean(cpu):.1f}, {np.max(cpu):.1f} | {np.mean([r['wall_s'] for r in rs]):.1f} |")
    return "\n".join(lines)


def peer_label(method: str, given_ref: bool) -> str:
    """The table's name of a method; a reference-using method run without reference points says so."""
    label = PEER_LABELS.get(method, method)
    if not given_ref and method in ("qLogNEHVI", BOTORCH) and "(no ref)" not in label:
        label += " (no ref)"
    return label


def read_peer_rows(paths: list[str]) -> list[dict]:
    """The rows of the jsonl files in order; a later row replaces an earlier one of the same problem, method,
    reference setting and seed (a re-measurement)."""
    rows = {}
    for path in paths:
        for line in open(path):
            if line.strip():
                r = json.loads(line)
                rows[(r["problem"], r["method"], r["given_ref"], r["seed"])] = r
    return list(rows.values())


def report_peers(paths: list[str]) -> None:
    from tools.bench_report import machine_line, write_section
    rows = read_peer_rows(paths)
    text = peers_table(rows)
    section = (f"## search_peers: effjax.search with and without reference points vs Sobol, Optuna and BoTorch\n\n"
               f"`{COMMAND} --peers --jsonl <rows.jsonl>` (methods, problems and seeds per file: "
               f"experiments/search/README.md) then `{COMMAND} --peers-report {' '.join(paths)}`\n\n"
               f"{machine_line()}\n\nBudget 50 evaluations; HV of all evaluations w.r.t. each problem's standard "
               f"reference point; '{NO_REF}': no objective has a `ref`, the search infers it every round (default "
               f"policy). Optuna {_optuna_version()} GPSampler (logEHVI, infers its own reference point) and "
               f"multivariate TPESampler, default settings. BoTorch {_botorch_version()} "
               f"qLogNEHVI, q = 1, following its multi-objective tutorial (2 (d + 1) Sobol points, one GP per "
               f"objective, num_restarts 10, raw_samples 512; mixed spaces with optimize_acqf_mixed_alternating), "
               f"with the problem's reference point or (no ref) infer_reference_point every round. CPU s = process CPU time of the whole run (the machine "
               f"is shared: wall times include waiting for the CPU). Raw rows: {', '.join(f'`{p}`' for p in paths)} (a later file's row "
               f"replaces an earlier one of the same problem, method and seed).\n\n{text}\n")
    write_section("search_peers", section)
    print(text)


def _optuna_version() -> str:
    try:
        import optuna
        return optuna.__version__
    except ImportError:
        return "(not installed)"


def _botorch_version() -> str:
    try:
        import botorch
        return botorch.__version__
    except ImportError:
        return "(not installed)"


def time_large_proposal(n_obs: int = 100, dim: int = 20, n_objectives: int = 3, repeats: int = 3) -> dict:
    """Seconds per proposal with n_obs observations of DTLZ2(dim, M=3), all objectives modeled."""
    problem = DTLZ2(dim, n_objectives)
    opt = Optimizer(problem.space, problem.objectives, seed=0, n_initial=n_obs)
    for trial in opt.ask(n_obs):
        opt.tell(trial, problem(trial.params))
    timings = []
    for i in range(repeats + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        (trial,) = opt.ask()
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
        opt.tell(trial, problem(trial.params))
    after = timings[1:]
    return {"compile_and_propose_s": timings[0][0], "wall_s": float(np.median([w for w, _ in after])),
            "cpu_s": float(np.median([c for _, c in after])), "n_obs": n_obs, "dim": dim, "n_objectives": n_objectives}


def methods_available() -> list[str]:
    methods = ["qLogNEHVI", "Sobol", "NSGA-II"]
    try:
        import optuna  # noqa: F401
        methods.append("optuna-TPE")
    except ImportError:
        pass
    return methods


def run(problems, seeds, budget, large: bool) -> dict:
    out = {"budget": budget, "seeds": seeds, "runs": {}, "large": None, "load": [os.getloadavg()[0]]}
    for name in problems:
        problem = get_problem(name)
        for method in methods_available():
            for seed in range(seeds):
                r = run_method(method, problem, budget, seed)
                out["runs"].setdefault(name, []).append(r)
                print(f"{name:14s} {method:10s} seed {seed}: HV {r['hv']:.4f} (max {problem.max_hv:.4f}) "
                      f"optimizer {r['optimizer_s']:.1f}s wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.1f}s", flush=True)
    if large:
        out["large"] = time_large_proposal()
        print("large proposal:", out["large"], flush=True)
    out["load"].append(os.getloadavg()[0])
    return out


def merge(parts: list[dict]) -> dict:
    merged = {"budget": parts[0]["budget"], "seeds": parts[0]["seeds"], "runs": {}, "large": None, "load": []}
    for p in parts:
        merged["runs"].update(p["runs"])
        merged["load"].extend(p.get("load", []))
        merged["large"] = merged["large"] or p.get("large")
    return merged


def table(results: dict) -> tuple[str, list[str]]:
    lines = ["| problem | method | HV mean ± std | log10 HV gap | optimizer s / run | s / proposal (median) | cpu s / run |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, runs in results["runs"].items():
        problem = get_problem(name)
        for method in dict.fromkeys(r["method"] for r in runs):
            rs = [r for r in runs if r["method"] == method]
            hv = np.array([r["hv"] for r in rs])
            gap = np.log10(np.maximum(problem.max_hv - hv, 1e-12)).mean()
            opt_s = np.mean([r["optimizer_s"] for r in rs])
            prop = np.mean([r["proposal_s"] for r in rs])
            cpu = np.mean([r["cpu_s"] for r in rs])
            timing = f"{opt_s:.1f}" if method == "qLogNEHVI" else "-"
            prop_s = f"{prop:.2f}" if method == "qLogNEHVI" else "-"
            lines.append(f"| {problem.name} | {method} | {hv.mean():.4f} ± {hv.std():.4f} | {gap:.2f} | {timing} | {prop_s} | {cpu:.1f} |")
            if method == "qLogNEHVI":
                if name == "branincurrin":
                    verdicts.append(f"BraninCurrin mean HV {hv.mean():.2f} (target >= 58.0): {'met' if hv.mean() >= 58.0 else 'MISSED'}")
                if name == "dtlz2":
                    verdicts.append(f"DTLZ2 d=6 mean HV {hv.mean():.4f} (target >= 0.34): {'met' if hv.mean() >= 0.34 else 'MISSED'}")
                worst = max(r["optimizer_s"] for r in rs)
                worst_cpu = max(r["cpu_s"] for r in rs)
                verdicts.append(f"{problem.name}: optimizer time per 50-evaluation run (target <= 30 s), mean {opt_s:.1f} s, "
                                f"worst {worst:.1f} s wall: {'met' if worst <= 30 else 'MISSED'} on wall time; process CPU "
                                f"time per whole run (an upper bound of the optimizer's), worst {worst_cpu:.1f} s: "
                                f"{'met' if worst_cpu <= 30 else 'MISSED'} on CPU time")
    lines += ["", "qLogNEHVI per seed (HV / optimizer wall s / process CPU s of the whole run; seed 0 runs first "
              "in its process and pays the compilation):", "",
              "| problem | " + " | ".join(f"seed {r['seed']}" for r in next(iter(results["runs"].values()))
                                        if r["method"] == "qLogNEHVI") + " |"]
    lines.append("|---" * (1 + sum(r["method"] == "qLogNEHVI" for r in next(iter(results["runs"].values())))) + "|")
    for name, runs in results["runs"].items():
        cells = [f"{r['hv']:.4f} / {r['optimizer_s']:.1f} / {r['cpu_s']:.1f}" for r in runs if r["method"] == "qLogNEHVI"]
        lines.append(f"| {get_problem(name).name} | " + " | ".join(cells) + " |")
    large = results.get("large")
    if large:
        lines.append("")
        lines.append(f"One proposal, {large['n_obs']} observations, {large['n_objectives']} modeled objectives, "
                     f"{large['dim']} inputs (DTLZ2): {large['wall_s']:.2f} s wall, {large['cpu_s']:.2f} s CPU after "
                     f"compilation (first proposal incl. compilation {large['compile_and_propose_s']:.1f} s).")
        verdicts.append(f"100 obs / 3 objectives / 20 dims proposal {large['wall_s']:.2f} s wall (target <= 2 s): "
                        f"{'met' if large['wall_s'] <= 2 else 'MISSED'}")
    return "\n".join(lines), verdicts


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in ("branincurrin", "dtlz2", "vehiclesafety") if n in results["runs"]]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        problem = get_problem(name)
        runs = results["runs"][name]
        for method in dict.fromkeys(r["method"] for r in runs):
            traces = np.array([r["trace"] for r in runs if r["method"] == method])
            gap = np.log10(np.maximum(problem.max_hv - traces, 1e-12))
            x = np.arange(1, traces.shape[1] + 1)
            ax.plot(x, gap.mean(0), label=method)
            ax.fill_between(x, gap.mean(0) - gap.std(0), gap.mean(0) + gap.std(0), alpha=0.2)
        ax.set_title(problem.name)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("log10(max HV - HV)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: dict) -> None:
    from tools.bench_report import machine_line, write_section
    text, verdicts = table(results)
    header = (f"Budget {results['budget']} evaluations, {results['seeds']} seeds; HV = final hypervolume of all "
              f"evaluations w.r.t. the standard reference point; gap = log10(max HV - HV), mean over seeds; "
              f"'s / proposal' = median wall time of one model-based `ask` (GP fit + acquisition build + "
              f"optimization); 'optimizer s / run' includes JIT compilation (of the first seed of each problem "
              f"mostly); 'cpu s / run' is the process CPU time of one whole run.")
    if results.get("load"):
        header += (f" 1-minute load average {', '.join(f'{x:.1f}' for x in results['load'])} at the start and end "
                   f"of the measurement (2 shared cores: wall times scale with the load, CPU times much less).")
    section = (f"## search: multi-objective BO (qLogNEHVI) vs Sobol vs NSGA-II\n\n`{COMMAND}`\n\n{machine_line()}\n\n"
               f"{header}\n\n{text}\n\nTargets:\n" + "\n".join(f"- {v}" for v in verdicts) + "\n")
    write_section("search", section)
    os.makedirs(EXPERIMENT_DIR, exist_ok=True)
    plot(results, os.path.join(EXPERIMENT_DIR, "hv_vs_evals.png"))
    with open(os.path.join(EXPERIMENT_DIR, "results.json"), "w") as f:
        json.dump({k: v for k, v in results.items()}, f)
    readme = os.path.join(EXPERIMENT_DIR, "README.md")
    notes = ""
    if os.path.exists(readme):
        existing = open(readme).read()
        if "<!-- notes -->" in existing:
            notes = existing[existing.index("<!-- notes -->"):]
    with open(readme, "w") as f:
        f.write(f"# Multi-objective Bayesian optimization benchmark (issue 3)\n\nCommand (from the repo root):\n\n"
                f"    {COMMAND}\n\n{machine_line()}\n\n{header}\n\n{text}\n\n![HV gap vs evaluations](hv_vs_evals.png)\n\n"
                f"Targets:\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n\n" + (notes or "<!-- notes -->\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="*", help=f"default: {PROBLEMS}; with --peers {PEER_PROBLEMS}")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--no-large", action="store_true", help="skip the 100-observation proposal timing")
    parser.add_argument("--out", help="write raw results to this JSON file and do not report")
    parser.add_argument("--report", nargs="*", help="merge these JSON files and write the reports")
    parser.add_argument("--peers", action="store_true", help="run the peers comparison, appending rows to --jsonl")
    parser.add_argument("--methods", nargs="*", default=PEER_METHODS)
    parser.add_argument("--seed-list", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--jsonl", default=PEERS_JSONL)
    parser.add_argument("--peers-report", nargs="*", help="write the search_peers section from these jsonl files")
    parser.add_argument("--peers-table", nargs="*", help="only print the peers table of these jsonl files")
    args = parser.parse_args()
    if args.peers:
        run_peers(args.problems or PEER_PROBLEMS, args.methods, args.seed_list,
                  args.budget, args.jsonl)
        return
    if args.peers_report:
        report_peers(args.peers_report)
        return
    if args.peers_table:
        print(peers_table(read_peer_rows(args.peers_table)))
        return
    if args.report:
        report(merge([json.load(open(p)) for p in args.report]))
        return
    results = run(args.problems or PROBLEMS, args.seeds, args.budget, large=not args.no_large)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f)
        return
    report(results)


if __name__ == "__main__":
    main()
