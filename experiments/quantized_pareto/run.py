"""Trains a family of ViT widths at float, int8 and int4 (first/last layers 8-bit) with AQT QAT, over seeds.

For each run: val and test metrics of the quantized (TRAIN-mode) model, test
metrics of the served integer model (AQT CONVERT -> SERVE), the cost (shared
`elastic_cost`: every matmul and both attention einsums at their bits, as they run;
biases / norms / tokens and scales at 32 bits, as served), and the bytes of the
saved float / serving checkpoints. Besides training from scratch, int4 can start
from the float checkpoint of the same width and seed (recipes below; the float run
is trained first when its workdir has no checkpoint). Results append to
`results.jsonl`; a run is identified by (name, seed, steps), runs already there are
skipped (rows without a seed are seed 0), so the script resumes. A recipe run at
float precision (`--recipe_precisions=float`) is the control for the int4 one: the
same continuation of the float checkpoint without quantization, so the int4 recipe
can be compared at equal training steps.

  nice -n 5 python -m experiments.quantized_pareto.run --only=digits --seeds=0,1,2
  nice -n 5 python -m experiments.quantized_pareto.run --only=shapes --seeds=0,1
  nice -n 5 python -m experiments.quantized_pareto.run --only=digits --seeds=0,1,2 \
      --precisions= --recipes=from_float_full     # int4 recipes only
  nice -n 5 python -m experiments.quantized_pareto.run --only=shapes --seeds=0,1,2 --widths=32 \
      --precisions= --recipes=from_float --recipe_precisions=float   # float control of a recipe
  python -m experiments.quantized_pareto.run --backfill_val=/tmp/effjax_quantized_pareto

`--backfill_val` adds val metrics to rows recorded before val was kept, from
the final checkpoint in <root>/<name>; a row is filled only if that checkpoint
reproduces the recorded test metrics exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import jax

from effjax.compress.cost_elastic import elastic_cost
from effjax.data import load_dataset
from effjax.quant import aqt_config, serving
from effjax.train import losses
from effjax.train.trainer import build, evaluate, init_params_from, init_state, train_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.jsonl")
CONFIGS = {"digits": "configs.qat_digits", "shapes": "configs.qat_shapes"}
# hidden_dim family (mlp = 2x, decoder = 1x). Both datasets train their config's full schedule
# (digits 600 steps, shapes 600 steps on 1,000 scenes).
WIDTHS = {"digits": (16, 32, 64), "shapes": (16, 32)}
PRECISIONS = ("float", "8", "4")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How an int4 run starts and trains, relative to the config's schedule."""

    from_float: bool = False  # start from the float run of the same width and seed
    steps_fraction: float = 1.0
    lr_divisor: float = 1.0
    warmup: bool = True
    calibration: str = ""  # overrides config.quant.activation_calibration when set


RECIPES = {
    "scratch": Recipe(),
    # QAT from the float checkpoint: half the schedule at a third of the learning rate, no warm-up.
    "from_float": Recipe(from_float=True, steps_fraction=0.5, lr_divisor=3.0, warmup=False),
    # The same start with the whole schedule ("enough steps").
    "from_float_full": Recipe(from_float=True, steps_fraction=1.0, lr_divisor=3.0, warmup=False),
    # The paper's activation bound 3 * mean|x| (per batch), from scratch and from the float checkpoint.
    "absmean": Recipe(calibration="absmean"),
    "from_float_full_absmean": Recipe(from_float=True, steps_fraction=1.0, lr_divisor=3.0, warmup=False,
                                      calibration="absmean"),
}


@dataclasses.dataclass(frozen=True)
class Job:
    dataset: str
    width: int
    precision: str
    seed: int
    recipe: str = "scratch"

    @property
    def name(self) -> str:
        return f"{self.dataset}_w{self.width}_{self.precision}" + ("" if self.recipe == "scratch" else f"_{self.recipe}")

    def workdir(self, workroot: str) -> str:
        return os.path.join(workroot, f"{self.name}_s{self.seed}")

    def float_job(self) -> "Job":
        return Job(self.dataset, self.width, "float", self.seed)


def load_config(dataset: str, variant: str):
    module = __import__(CONFIGS[dataset], fromlist=["get_config"])
    c = module.get_config(variant)
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    return c


def job_config(job: Job):
    c = load_config(job.dataset, f"bits={job.precision},width={job.width}")
    c.seed = job.seed
    recipe = RECIPES[job.recipe]
    c.train.num_steps = int(c.train.num_steps * recipe.steps_fraction)
    c.eval.every_steps = min(c.eval.every_steps, c.train.num_steps)
    c.checkpoint.every_steps = min(c.checkpoint.every_steps, c.train.num_steps)
    c.train.learning_rate = c.train.learning_rate / recipe.lr_divisor
    if not recipe.warmup:
        c.train.warmup_steps = 0
    if recipe.calibration:
        c.quant.activation_calibration = recipe.calibration
    return c


def run_cost(dataset: str, width: int, precision: str) -> dict:
    """The shared cost of one run's config (recomputed, so records follow the current cost model)."""
    c = load_config(dataset, f"bits={precision},width={width}")
    ds = load_dataset(c.data)
    return elastic_cost(c.model, ds.image_shape, ds.tasks, aqt_config.subnet_from_quant_config(c.quant)).to_dict()


def serving_eval_step(model: serving.ServingModel, tasks):
    def step(variables, batch):
        preds = model._forward(variables, batch["image"])
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in tasks}

    return jax.jit(step)


def run_one(job: Job, workroot: str) -> dict:
    c = job_config(job)
    recipe = RECIPES[job.recipe]
    if recipe.from_float:
        c.train.init_from = job.float_job().workdir(workroot)
    workdir = job.workdir(workroot)
    devices = jax.devices()[:1]
    provider = aqt_config.provider_from_config(c)
    start = time.perf_counter()
    result = train_and_evaluate(c, workdir, devices=devices, dot_general_provider=provider)
    train_s = time.perf_counter() - start
    setup = build(c, devices, dot_general_provider=provider)
    subnet = aqt_config.subnet_from_quant_config(c.quant)
    params = result.state.params
    record = {
        "name": job.name, "dataset": job.dataset, "width": job.width, "precision": job.precision,
        "from_float": recipe.from_float, "recipe": job.recipe, "seed": job.seed,
        "steps": int(c.train.num_steps), "learning_rate": float(c.train.learning_rate),
        "activation_calibration": c.quant.activation_calibration,
        "train_seconds": round(train_s, 1), "val": result.metrics["val"], "test": result.metrics["test"],
        "cost": elastic_cost(c.model, setup.dataset.image_shape, setup.dataset.tasks, subnet).to_dict(),
        "float_checkpoint_bytes": serving.save_float_params(params, os.path.join(workdir, "float_export")),
        "float_param_bytes": serving.param_bytes(params),
    }
    if job.precision != "float":
        options = aqt_config.options_from_config(c.quant)
        served = serving.convert(c.model, setup.dataset.tasks, setup.dataset.image_shape, params, subnet, options)
        record["serving_checkpoint_bytes"] = serving.save_serving(served, os.path.join(workdir, "serving"))
        record["serving_memory_bytes"] = served.nbytes()
        record["served_test"] = evaluate(setup, served.variables, "test",
                                         serving_eval_step(served, setup.dataset.tasks))
    return record


def load_records() -> list[dict]:
    if not os.path.exists(RESULTS):
        return []
    with open(RESULTS) as f:
        return [json.loads(line) for line in f if line.strip()]


def record_key(r: dict) -> tuple:
    return r["name"], r.get("seed", 0), r["steps"]


def job_key(job: Job) -> tuple:
    return job.name, job.seed, int(job_config(job).train.num_steps)


def has_checkpoint(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and bool(os.listdir(directory))


def jobs_for(args) -> list[Job]:
    seeds = [int(s) for s in args.seeds.split(",")]
    precisions = [p for p in args.precisions.split(",") if p]
    recipes = [r for r in args.recipes.split(",") if r]
    recipe_precisions = [p for p in args.recipe_precisions.split(",") if p]
    for value, allowed, flag in ((precisions, PRECISIONS, "--precisions"), (recipes, RECIPES, "--recipes"),
                                 (recipe_precisions, PRECISIONS, "--recipe_precisions")):
        bad = [v for v in value if v not in allowed]
        if bad:
            raise ValueError(f"{flag}: {bad} not allowed; allowed {list(allowed)}")
    jobs = []
    for seed in seeds:
        for d in ([args.only] if args.only else sorted(CONFIGS)):
            widths = [int(w) for w in args.widths.split(",")] if args.widths else WIDTHS[d]
            for w in widths:
                jobs += [Job(d, w, p, seed) for p in precisions if "scratch" in recipes]
                jobs += [Job(d, w, p, seed, r) for r in recipes if r != "scratch" for p in recipe_precisions]
    return jobs


def append(record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_jobs(args) -> None:
    for job in jobs_for(args):
        done = {record_key(r) for r in load_records()}
        if job_key(job) in done:
            continue
        if RECIPES[job.recipe].from_float and not has_checkpoint(job.float_job().workdir(args.workroot)):
            float_record = run_one(job.float_job(), args.workroot)
            if job_key(job.float_job()) not in done:
                append(float_record)
            else:
                previous = next(r for r in load_records() if record_key(r) == job_key(job.float_job()))
                same = all(abs(previous["test"][t] - v) < 1e-6 for t, v in float_record["test"].items())
                print(f"retrained {job.float_job().name} seed {job.seed} for its checkpoint; "
                      f"test metrics {'reproduce' if same else 'DIFFER from'} the recorded ones", flush=True)
        append(run_one(job, args.workroot))


def backfill_val(root: str) -> None:
    """Adds `val` to recorded rows without it, from <root>/<name>/checkpoints (old workdir layout)."""
    records = load_records()
    for r in records:
        if "val" in r or not has_checkpoint(os.path.join(root, r["name"])):
            continue
        job = Job(r["dataset"], r["width"], r["precision"], r.get("seed", 0), "from_float" if r["from_float"] else "scratch")
        c = job_config(job)
        devices = jax.devices()[:1]
        setup = build(c, devices, dot_general_provider=aqt_config.provider_from_config(c))
        params = init_state(setup, jax.random.PRNGKey(0)).params
        params = init_params_from(setup, params, os.path.join(root, r["name"]))
        test = evaluate(setup, params, "test")
        if all(abs(test[t] - r["test"][t]) < 1e-6 for t in test):
            r["val"] = evaluate(setup, params, "val")
            print(f"{r['name']}: val {r['val']}", flush=True)
        else:
            print(f"{r['name']}: checkpoint in {root} gives test {test}, recorded {r['test']}: not filled", flush=True)
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, RESULTS)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--workroot", default="/tmp/effjax_quantized_pareto")
    parser.add_argument("--widths", default="", help="comma-separated hidden_dims (default: WIDTHS of the dataset)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="subset of float,8,4 trained from scratch")
    parser.add_argument("--recipes", default="scratch,from_float",
                        help=f"subset of {','.join(RECIPES)}; every recipe but scratch runs at --recipe_precisions")
    parser.add_argument("--recipe_precisions", default="4",
                        help="precisions the recipes other than scratch run at (float: the control of an int4 recipe)")
    parser.add_argument("--seeds", default="0", help="comma-separated config.seed values")
    parser.add_argument("--backfill_val", default="", help="old workroot (<root>/<name>) to fill missing val metrics")
    args = parser.parse_args()
    if args.backfill_val:
        backfill_val(args.backfill_val)
    else:
        run_jobs(args)


if __name__ == "__main__":
    main()
