"""Trains a family of ViT widths at float, int8 and int4 (first/last layers 8-bit) with AQT QAT.

For each run: test metrics of the quantized (TRAIN-mode) model, of the served
integer model (AQT CONVERT -> SERVE), the cost (shared `vit_cost`: every matmul
and both attention einsums at their bits, as they run; biases / norms / tokens and
scales at 32 bits, as served), and the bytes of the saved float / serving checkpoints. On digits, also int4 QAT
started from the float checkpoint of the same width. Results append to `results.jsonl`
(runs already there are skipped), so the script resumes.

  nice -n 5 python -m experiments.quantized_pareto.run --only=digits
  nice -n 5 python -m experiments.quantized_pareto.run --only=shapes
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

from effjax.compress.cost import vit_cost
from effjax.data.specs import load_dataset
from effjax.quant import aqt_config, serving
from effjax.train import losses
from effjax.train.trainer import build, evaluate, train_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.jsonl")
CONFIGS = {"digits": "configs.qat_digits", "shapes": "configs.qat_shapes"}
# hidden_dim family (mlp = 2x, decoder = 1x). shapes is cut to 300 steps: on the shared
# 2-core machine (load ~27) one 600-step shapes run took ~20 minutes.
WIDTHS = {"digits": (16, 32, 64), "shapes": (16, 32)}
STEPS = {"shapes": 300}  # overrides the config's schedule
FROM_FLOAT_WIDTH = {"digits": 32, "shapes": 32}  # width of the int4-from-float-checkpoint run, per dataset
PRECISIONS = ("float", "8", "4")
FINETUNE_STEPS_FRACTION = 0.5  # int4 QAT from the float checkpoint trains this fraction of the schedule


def load_config(dataset: str, variant: str):
    module = __import__(CONFIGS[dataset], fromlist=["get_config"])
    c = module.get_config(variant)
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    if dataset in STEPS:
        c.train.num_steps = STEPS[dataset]
        c.eval.every_steps = c.checkpoint.every_steps = STEPS[dataset]
    return c


def run_cost(dataset: str, width: int, precision: str) -> dict:
    """The shared cost of one run's config (recomputed, so records follow the current cost model)."""
    c = load_config(dataset, f"bits={precision},width={width}")
    ds = load_dataset(c.data)
    return vit_cost(c.model, ds.image_shape, ds.tasks, aqt_config.subnet_from_quant_config(c.quant)).to_dict()


def serving_eval_step(model: serving.ServingModel, tasks):
    def step(variables, batch):
        preds = model._forward(variables, batch["image"])
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in tasks}

    return jax.jit(step)


def run_one(dataset: str, width: int, precision: str, workroot: str, init_from: str = "") -> dict:
    variant = f"bits={precision},width={width}"
    c = load_config(dataset, variant)
    name = f"{dataset}_w{width}_{precision}" + ("_from_float" if init_from else "")
    if init_from:
        c.train.init_from = init_from
        c.train.num_steps = int(c.train.num_steps * FINETUNE_STEPS_FRACTION)
        c.train.warmup_steps = 0
        c.train.learning_rate = c.train.learning_rate / 3
    workdir = os.path.join(workroot, name)
    devices = jax.devices()[:1]
    provider = aqt_config.provider_from_config(c)
    start = time.perf_counter()
    result = train_and_evaluate(c, workdir, devices=devices, dot_general_provider=provider)
    train_s = time.perf_counter() - start
    setup = build(c, devices, dot_general_provider=provider)
    subnet = aqt_config.subnet_from_quant_config(c.quant)
    params = result.state.params
    record = {
        "name": name, "dataset": dataset, "width": width, "precision": precision, "from_float": bool(init_from),
        "steps": int(c.train.num_steps), "train_seconds": round(train_s, 1), "test": result.metrics["test"],
        "cost": vit_cost(c.model, setup.dataset.image_shape, setup.dataset.tasks, subnet).to_dict(),
        "float_checkpoint_bytes": serving.save_float_params(params, os.path.join(workdir, "float_export")),
        "float_param_bytes": serving.param_bytes(params),
    }
    if precision != "float":
        options = aqt_config.options_from_config(c.quant)
        served = serving.convert(c.model, setup.dataset.tasks, setup.dataset.image_shape, params, subnet, options)
        record["serving_checkpoint_bytes"] = serving.save_serving(served, os.path.join(workdir, "serving"))
        record["serving_memory_bytes"] = served.nbytes()
        record["served_test"] = evaluate(setup, served.variables, "test",
                                         serving_eval_step(served, setup.dataset.tasks))
    return record


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--workroot", default="/tmp/effjax_quantized_pareto")
    parser.add_argument("--widths", default="", help="comma-separated hidden_dims (default: WIDTHS of the dataset)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="subset of float,8,4")
    args = parser.parse_args()
    done = set()
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            done = {json.loads(line)["name"] for line in f if line.strip()}
    datasets = [args.only] if args.only else sorted(CONFIGS)
    jobs = []
    for d in datasets:
        widths = [int(w) for w in args.widths.split(",")] if args.widths else WIDTHS[d]
        jobs += [(d, w, p, False) for w in widths for p in args.precisions.split(",")]
        jobs += [(d, FROM_FLOAT_WIDTH[d], "4", True)] if d in FROM_FLOAT_WIDTH else []
    for dataset, width, precision, from_float in jobs:
        name = f"{dataset}_w{width}_{precision}" + ("_from_float" if from_float else "")
        if name in done:
            continue
        init_from = os.path.join(args.workroot, f"{dataset}_w{width}_float") if from_float else ""
        record = run_one(dataset, width, precision, args.workroot, init_from)
        print(json.dumps(record), flush=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
