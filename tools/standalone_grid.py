"""Standalone grid baseline: train K configurations of a finished main job each alone, and compare.

  python -m tools.standalone_grid --workdir=<main job workdir> --out=<dir> --budget=a --seed=0
      [--configs_from=<another run's pareto.json>]

Selection rule (fixed before any result was looked at; validation metrics only), from the
main job's `pareto.json` (or `--configs_from`, so every seed of a study trains the same K):
  1. the per-budget export picks (`effjax.job.report.budget_picks`);
  2. the front's two extremes: its fewest-FLOPs and its most-FLOPs point (ties: higher val score);
  3. the best-val-score int4 front point and the best-val-score int8 front point, unless one is
     already chosen;
  4. while fewer than 5: the best-val-score front point not yet chosen.
Duplicates (the same SubnetConfig) count once; PVQ points are skipped.

Each configuration is trained alone with the `fixed_subnet` objective (`effjax.train.fixed_subnet`:
the supernet module at that static configuration, labels + sown auxiliary losses, QAT at its bits)
with the main job's data, model and optimizer config and the given seed, then evaluated on val and
test by the search's own `SubnetEvaluator` (weights quantized by the export plan). The main job's
supernet is evaluated zero-shot at the same configurations by the same evaluator.

Budgets: (a) the supernet's number of steps; (b) the supernet's total training FLOPs split evenly
over the K models: steps_b = floor(supernet_total_flops / K / standalone_step_flops).

Training FLOPs are XLA's cost analysis of compiled steps. XLA's count of the sandwich step is not
what runs: it mis-counts `lax.switch` branches and `lax.scan` trip counts. So the supernet's FLOPs
per step are a sum of static-configuration costs: the max configuration's gradient (full float
network, most experts) + the min configuration's + num_random x the mean over a fixed sample of
random configurations (drawn with the sandwich's own sampler), each the compiled
`value_and_grad` of the fixed-configuration loss without the predictor's extra dense pass (the
sandwich's non-max configurations have none), plus one optimizer update (the full fixed step's
cost minus its gradient's). The static costs differ a little from the traced ones the sandwich
runs (a static top-k routes k experts where the traced one routes the most and masks; a static
keep ratio 1 takes the dense path); the sandwich step's own cost analysis is reported beside it
as `sandwich_xla_step_flops` with the ratio. A standalone step's FLOPs are its compiled
`fixed_subnet` step's. Evaluation FLOPs are not counted on either side.

Writes `<out>/grid_<dataset>_budget<b>_seed<N>.json` (one record per configuration) and trains in
`<out>/runs/...` (a rerun resumes finished trainings from their checkpoints).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
MIN_CONFIGS = 5
RANDOM_SAMPLE = 6  # random configurations averaged for the sandwich's expected random-config cost
SAMPLE_SEED = 1234  # their draw's seed (fixed: every run prices the same sample)


def _define_flags():
    flags.DEFINE_string("workdir", None, "a finished main job's workdir (config.json, checkpoints; pareto.json unless --configs_from)")
    flags.DEFINE_string("out", None, "directory for the results json and the standalone runs")
    flags.DEFINE_enum("budget", "a", ["a", "b"], "a: the supernet's steps; b: its total training FLOPs / K")
    flags.DEFINE_integer("seed", 0, "seed of every standalone run (parameter init, data order)")
    flags.DEFINE_string("configs_from", None, "pareto.json to take the K configurations from (default: the workdir's)")
    flags.DEFINE_bool("sandwich_xla", True, "also compile the sandwich step for XLA's own FLOPs count (minutes; only "
                      "the printed ratio to the static-configuration sum uses it)")


def _key(point) -> str:
    return json.dumps(point["config"], sort_keys=True)


def select_points(points) -> list[dict]:
    """The K >= 5 configurations of the module docstring's rule, each with `roles` (why it was chosen)."""
    from effjax.job.report import budget_picks

    front = [p for p in points if p["pareto"] and not p.get("pvq")]
    if not front:
        raise ValueError("pareto.json has no Pareto point to train")
    chosen: dict[str, dict] = {}

    def add(point, role):
        entry = chosen.setdefault(_key(point), {"point": point, "roles": []})
        entry["roles"].append(role)

    for p in budget_picks(front):
        add(p, "budget_pick")
    add(min(front, key=lambda p: (p["cost"]["flops"], -p["metrics"]["score"])), "front_fewest_flops")
    add(max(front, key=lambda p: (p["cost"]["flops"], p["metrics"]["score"])), "front_most_flops")
    for bits in (4, 8):
        if not any(e["point"]["config"]["weight_bits"] == bits for e in chosen.values()):
            with_bits = [p for p in front if p["config"]["weight_bits"] == bits]
            if with_bits:
                add(max(with_bits, key=lambda p: p["metrics"]["score"]), f"best_int{bits}")
    for p in sorted(front, key=lambda p: -p["metrics"]["score"]):
        if len(chosen) >= MIN_CONFIGS:
            break
        if _key(p) not in chosen:
            add(p, "best_remaining")
    return [{**e["point"], "roles": e["roles"]} for e in chosen.values()]


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


class StepCosts:
    """XLA cost analysis of compiled static-configuration steps on one device, cached by configuration
    (in memory, and in `cache_path` when given: the figures depend on the model, data and batch, not on
    the seed or the weights, so every grid of a study compiles each step once)."""

    def __init__(self, setup, config, cache_path: str | None = None):
        import jax
        import numpy as np

        from effjax.data import pipeline

        self.setup, self.config = setup, config
        self.state = setup.abstract_state
        batch = next(pipeline.train_iterator(setup.dataset, config.train.batch_size, seed=0))
        self.batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in batch.items()}
        self.rng = jax.ShapeDtypeStruct((2,), jax.numpy.uint32)
        self.cache_path = cache_path
        self.prefix = json.dumps({"model": config.model.to_dict(), "data": config.data.to_dict(),
                                  "batch": int(config.train.batch_size), "slim": config.get("slim", {}).to_dict()
                                  if config.get("slim", None) is not None else {}}, sort_keys=True, default=str)
        self.stored: dict[str, float] = {}
        if cache_path and os.path.isfile(cache_path):
            with open(cache_path) as f:
                self.stored = json.load(f)
        self.cache = _DiskBacked(self)

    def _compile(self, fn, *args) -> float:
        import flax.linen as nn
        import jax

        with jax.set_mesh(self.setup.mesh), nn.logical_axis_rules(self.setup.rules):
            return _flops(jax.jit(fn).lower(*args).compile())

    def step(self, subnet) -> float:
        """One `fixed_subnet` training step (forward, backward, predictor pass, optimizer update)."""
        from effjax.train.fixed_subnet import make_fixed_subnet_step

        key = ("step", subnet)
        if key not in self.cache:
            s = self.setup
            fn = make_fixed_subnet_step(s.model, s.tx, s.dataset.tasks, dict(self.config.loss.task_weights),
                                        s.schedule, subnet)
            self.cache[key] = self._compile(fn, self.state, self.batch, self.rng)
        return self.cache[key]

    def grad(self, subnet, predictor_pass: bool) -> float:
        """The gradient of one configuration's loss (no optimizer update)."""
        import jax

        from effjax.train.fixed_subnet import make_fixed_subnet_loss

        key = ("grad", subnet, predictor_pass)
        if key not in self.cache:
            s = self.setup
            loss = make_fixed_subnet_loss(s.model, s.dataset.tasks, dict(self.config.loss.task_weights), subnet,
                                          predictor_pass)
            self.cache[key] = self._compile(jax.value_and_grad(loss, has_aux=True), self.state.params, self.batch)
        return self.cache[key]

    def sandwich_xla(self) -> float:
        """XLA's own count of the compiled sandwich step (mis-counts switch / scan; for the ratio only)."""
        from effjax.train.objectives import build_train_step

        key = ("sandwich_xla",)
        if key not in self.cache:
            self.cache[key] = self._compile(build_train_step(self.setup, self.config), self.state, self.batch,
                                            self.rng)
        return self.cache[key]


class _DiskBacked(dict):
    """The cost cache of a StepCosts: keys are (kind, SubnetConfig, ...) tuples, stored as strings on disk."""

    def __init__(self, owner: StepCosts):
        super().__init__()
        self.owner = owner

    def _name(self, key) -> str:
        return self.owner.prefix + "|" + repr(key)

    def __contains__(self, key) -> bool:
        return super().__contains__(key) or self._name(key) in self.owner.stored

    def __getitem__(self, key):
        if super().__contains__(key):
            return super().__getitem__(key)
        return self.owner.stored[self._name(key)]

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.owner.stored[self._name(key)] = value
        if self.owner.cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.owner.cache_path)), exist_ok=True)
            with open(self.owner.cache_path + ".tmp", "w") as f:
                json.dump(self.owner.stored, f)
            os.replace(self.owner.cache_path + ".tmp", self.owner.cache_path)


def sandwich_configs(setup, config):
    """(max, min, sampled random configurations) of the sandwich step, as static SubnetConfigs."""
    import jax
    import numpy as np

    from effjax.subnet import FLOAT_BITS, SubnetConfig
    from effjax.train.sandwich import SandwichOptions, sample_configs, sample_knob_indices

    options = SandwichOptions.from_config(config)
    model, tasks = setup.model, setup.dataset.tasks
    menu = tuple(sorted(model.width_menu))
    top_ks = options.top_ks or (model.default_top_k,)

    def make(row, knobs):
        bits = options.weight_bits[knobs[2]]
        return SubnetConfig(encoder_width=menu[row[0]],
                            decoder_widths=tuple(sorted((t.name, menu[row[1 + i]]) for i, t in enumerate(tasks))),
                            attention_keep_ratio=options.keep_ratios[knobs[0]], moe_top_k=int(top_ks[knobs[1]]),
                            weight_bits=None if bits >= FLOAT_BITS else int(bits),
                            first_last_bits=None if bits >= FLOAT_BITS else max(int(bits), 8))

    rng = jax.random.PRNGKey(SAMPLE_SEED)
    rows = np.asarray(sample_configs(rng, RANDOM_SAMPLE, len(tasks), len(menu)))
    knobs = np.asarray(sample_knob_indices(jax.random.fold_in(rng, 1), RANDOM_SAMPLE,
                                           (len(options.keep_ratios), len(top_ks), len(options.weight_bits))))
    configs = [make(r, k) for r, k in zip(rows, knobs)]
    return SubnetConfig(moe_top_k=max(top_ks)), configs[0], configs[1:], options.num_random


def supernet_step_flops(costs: StepCosts, setup, config, with_xla: bool = True) -> dict:
    """The sandwich step's FLOPs as the module docstring says; `with_xla=False` skips XLA's own count of the
    sandwich step (its compile takes minutes; it is only the printed ratio)."""
    full, smallest, randoms, num_random = sandwich_configs(setup, config)
    update = costs.step(full) - costs.grad(full, True)
    random_mean = sum(costs.grad(c, False) for c in randoms) / len(randoms)
    per_step = costs.grad(full, True) + costs.grad(smallest, False) + num_random * random_mean + update
    xla = costs.sandwich_xla() if with_xla else None
    return {"per_step": per_step, "max_grad": costs.grad(full, True), "min_grad": costs.grad(smallest, False),
            "random_grad_mean": random_mean, "num_random": num_random, "random_sample": len(randoms),
            "optimizer_update": update, "sandwich_xla_step_flops": xla,
            "static_sum_over_xla": per_step / xla if xla else None}


def _train_config(main_config, subnet, steps: int, seed: int):
    config = copy.deepcopy(main_config)
    if "search" in config:
        del config["search"]
    config.train.objective = "fixed_subnet"
    config.train.subnet = subnet.to_dict()
    config.train.num_steps = int(steps)
    config.train.warmup_steps = min(int(config.train.warmup_steps), max(int(steps) // 10, 1))
    config.seed = int(seed)
    config.eval.every_steps = config.checkpoint.every_steps = int(steps)  # evaluated once, by the search's evaluator
    config.log.every_steps = min(int(config.log.every_steps), int(steps))
    config.log.progress_bar = False
    return config


def run_grid(workdir: str, out: str, budget: str, seed: int, configs_from: str | None = None,
             progress: bool = True, sandwich_xla: bool = True) -> dict:
    import jax
    import numpy as np
    from tqdm import tqdm

    from effjax.job.subnet_search import SubnetEvaluator, config_score_weights
    from effjax.subnet import SubnetConfig
    from effjax.train.setup import load_run
    from effjax.train.trainer import train_and_evaluate

    pareto_path = configs_from or os.path.join(workdir, "pareto.json")
    if not os.path.isfile(pareto_path):
        raise ValueError(f"--workdir={workdir!r}: no pareto.json (not a finished main job: "
                         "python -m effjax.main --config=configs/pipeline.py:<dataset> --workdir=...; "
                         "or name the configurations' pareto.json with --configs_from)")
    with open(pareto_path) as f:
        points = select_points(json.load(f)["points"])
    run = load_run(workdir)
    config = run.config
    weights = config_score_weights(config)
    supernet_eval = SubnetEvaluator(run.setup, run.params, weights)
    # the standalone models share the supernet's module and shapes, so one evaluator scores them all with
    # the same compiled programs; its weights are swapped per configuration
    alone_eval = SubnetEvaluator(run.setup, run.params, weights)
    alone_eval._eval_steps = supernet_eval._eval_steps
    costs = StepCosts(run.setup, config, os.path.join(out, "step_flops_cache.json"))
    sandwich = supernet_step_flops(costs, run.setup, config, with_xla=sandwich_xla)
    supernet_steps = int(run.step)
    supernet_total = sandwich["per_step"] * supernet_steps
    k = len(points)
    records = []
    os.makedirs(out, exist_ok=True)
    for p in tqdm(points, desc=f"standalone grid (budget {budget}, seed {seed})", disable=not progress):
        subnet = SubnetConfig.from_dict(p["config"])
        step_flops = costs.step(subnet)
        steps = supernet_steps if budget == "a" else int(math.floor(supernet_total / k / step_flops))
        train_config = _train_config(config, subnet, steps, seed)
        run_dir = os.path.join(out, "runs", f"{config.data.name}_budget{budget}_seed{seed}_point{p['id']}")
        start = time.perf_counter()
        result = train_and_evaluate(train_config, run_dir, jax.devices()[:1])
        wall = time.perf_counter() - start
        alone_eval.host_params = jax.tree.map(np.asarray, jax.device_get(result.state.params))
        records.append({
            "point_id": p["id"], "roles": p["roles"], "config": p["config"],
            "cost_flops_per_example": p["cost"]["flops"], "steps": steps,
            "standalone_step_flops": step_flops, "standalone_total_flops": step_flops * steps,
            "train_wall_s": wall, "run_dir": os.path.relpath(run_dir, out),
            "alone": {split: alone_eval.metrics(subnet, split) for split in ("val", "test")},
            "supernet": {split: supernet_eval.metrics(subnet, split) for split in ("val", "test")},
        })
    result = {
        "dataset": config.data.name, "budget": budget, "seed": seed, "workdir": os.path.abspath(workdir),
        "configs_from": os.path.abspath(pareto_path), "k": k, "supernet_steps": supernet_steps,
        "supernet_flops": {**sandwich, "total": supernet_total},
        "standalone_total_flops": sum(r["standalone_total_flops"] for r in records),
        "tasks": [t.name for t in run.tasks], "records": records,
    }
    path = os.path.join(out, f"grid_{config.data.name}_budget{budget}_seed{seed}.json")
    from effjax.job import json_safe

    json_safe.dump(result, path)
    result["path"] = path
    return result


def main(argv):
    del argv
    if not FLAGS.workdir or not FLAGS.out:
        sys.exit("error: --workdir and --out are required")
    try:
        result = run_grid(FLAGS.workdir, FLAGS.out, FLAGS.budget, FLAGS.seed, FLAGS.configs_from,
                          sandwich_xla=FLAGS.sandwich_xla)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(result["path"])


if __name__ == "__main__":
    _define_flags()
    app.run(main)
