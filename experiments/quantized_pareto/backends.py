"""AQT vs qwix behind the same `dot_general` hook: QAT accuracy and served forward time, int8 and int4.

Each run is `configs/qat_digits.py:bits=<8|4>` (default widths: hidden 64, 4 blocks; the
config's 600 steps unless `--steps`) with `config.quant.backend` = aqt | qwix and
`config.seed` = seed; the provider comes from the config (`provider_from_config`).
After training, the model is converted to integer weights by its backend
(`effjax.quant.serving` / `effjax.quant.qwix_serving`) and the served model's test
metrics are recorded beside the quantized (TRAIN-mode) model's.

Speed (`--time`): the seed's checkpoints of every (bits, backend) are loaded, converted
and served in one process; the jitted forwards (and the float model of the same
weights as a reference) are called round-robin, `--rounds` rounds of `--calls` calls
each, at batch 256 and batch 1, and each model's median seconds per call is recorded.

  nice -n 5 python -m experiments.quantized_pareto.backends --seeds=0,1,2
  nice -n 5 python -m experiments.quantized_pareto.backends --time --seeds=0
  python -m experiments.quantized_pareto.backends --table      # prints the tables, rewrites the README section

Rows append to `results_backends.jsonl` (accuracy) and `results_backends_speed.jsonl`
(speed); a run already there (backend, bits, seed, steps) is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import numpy as np

from configs.qat_digits import get_config
from effjax.quant import aqt_config, qwix_serving, serving
from effjax.train import losses
from effjax.train.setup import build, init_params_from, init_state
from effjax.train.trainer import evaluate, train_and_evaluate

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results_backends.jsonl")
SPEED = os.path.join(HERE, "results_backends_speed.jsonl")
README = os.path.join(HERE, "README.md")
BACKENDS = ("aqt", "qwix")
CONVERTERS = {"aqt": serving.convert, "qwix": qwix_serving.convert}
TIMING_BATCHES = (256, 1)


def job_config(backend: str, bits: int, seed: int, steps: int | None):
    c = get_config(f"bits={bits}")
    c.quant.backend = backend
    c.seed = seed
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    if steps is not None:
        c.train.num_steps = steps
        c.eval.every_steps = min(c.eval.every_steps, steps)
        c.checkpoint.every_steps = min(c.checkpoint.every_steps, steps)
    return c


def workdir(root: str, backend: str, bits: int, seed: int, steps: int) -> str:
    return os.path.join(root, f"digits_{backend}_int{bits}_steps{steps}_s{seed}")


def served_model(c, setup, params):
    subnet = aqt_config.subnet_from_quant_config(c.quant)
    options = aqt_config.options_from_config(c.quant)
    convert = CONVERTERS[aqt_config.backend_from_config(c.quant)]
    return convert(c.model, setup.dataset.tasks, setup.dataset.image_shape, params, subnet, options)


def served_eval_step(served, tasks):
    def step(variables, batch):
        preds = served._forward(variables, batch["image"])
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in tasks}

    return jax.jit(step)


def train_one(backend: str, bits: int, seed: int, steps: int | None, root: str) -> dict:
    c = job_config(backend, bits, seed, steps)
    steps = int(c.train.num_steps)
    devices = jax.devices()[:1]
    start = time.perf_counter()
    result = train_and_evaluate(c, workdir(root, backend, bits, seed, steps), devices=devices)
    train_s = time.perf_counter() - start
    setup = build(c, devices)
    served = served_model(c, setup, result.state.params)
    return {
        "backend": backend, "bits": bits, "seed": seed, "steps": steps,
        "hidden_dim": int(c.model.hidden_dim), "num_layers": int(c.model.num_layers),
        "train_seconds": round(train_s, 1),
        "first_loss": float(result.train_losses[min(result.train_losses)]),
        "last_loss": float(result.train_losses[max(result.train_losses)]),
        "val": result.metrics["val"], "test": result.metrics["test"],
        "served_test": evaluate(setup, served.variables, "test", served_eval_step(served, setup.dataset.tasks)),
    }


def load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append(path: str, record: dict) -> None:
    print(json.dumps(record), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_training(args) -> None:
    for seed in args.seeds:
        for bits in args.bits:
            for backend in args.backends:
                steps = int(job_config(backend, bits, seed, args.steps).train.num_steps)
                done = {(r["backend"], r["bits"], r["seed"], r["steps"]) for r in load(RESULTS)}
                if (backend, bits, seed, steps) not in done:
                    append(RESULTS, train_one(backend, bits, seed, args.steps, args.workroot))


def time_served(args) -> None:
    """Median seconds per forward of every served model (and the float reference), round-robin in one process."""
    devices = jax.devices()[:1]
    for seed in args.seeds:
        models = {}
        for bits in args.bits:
            for backend in args.backends:
                c = job_config(backend, bits, seed, args.steps)
                steps = int(c.train.num_steps)
                setup = build(c, devices)
                params = init_params_from(setup, init_state(setup, jax.random.PRNGKey(0)).params,
                                          workdir(args.workroot, backend, bits, seed, steps))
                served = served_model(c, setup, params)
                models[f"{backend}_int{bits}"] = (served._apply, served.variables)
                if "float" not in models:
                    float_setup = build(job_config(backend, bits, seed, args.steps), devices,
                                        dot_general_provider=lambda group: None)
                    models["float"] = (jax.jit(lambda p, x, m=float_setup.model: m.apply({"params": p}, x)), params)
        image_shape = setup.dataset.image_shape
        for batch in TIMING_BATCHES:
            x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + tuple(image_shape))
            for fn, variables in models.values():
                jax.block_until_ready(fn(variables, x))  # compile
            per_call = {name: [] for name in models}
            for _ in range(args.rounds):
                for name, (fn, variables) in models.items():
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        out = fn(variables, x)
                    jax.block_until_ready(out)
                    per_call[name].append((time.perf_counter() - start) / args.calls)
            append(SPEED, {"seed": seed, "steps": steps, "batch": batch, "rounds": args.rounds, "calls": args.calls,
                           "median_seconds": {k: statistics.median(v) for k, v in per_call.items()},
                           "all_seconds": per_call})


def _mean_std(values) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f} (n=1)" if values else "-"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} (n={len(values)})"


def table() -> str:
    rows = load(RESULTS)
    tasks = sorted(rows[0]["test"]) if rows else []
    lines = ["| bits | backend | steps | " + " | ".join(f"test {t}" for t in tasks)
             + " | served = eval | train s (median) |",
             "|" + "---|" * (len(tasks) + 5)]
    for bits in sorted({r["bits"] for r in rows}, reverse=True):
        for backend in BACKENDS:
            group = [r for r in rows if r["bits"] == bits and r["backend"] == backend]
            for steps in sorted({r["steps"] for r in group}):
                g = sorted((r for r in group if r["steps"] == steps), key=lambda r: r["seed"])
                same = all(abs(r["served_test"][t] - r["test"][t]) <= 1e-6 for r in g for t in tasks)
                lines.append(f"| int{bits} | {backend} | {steps} | "
                             + " | ".join(_mean_std([r["test"][t] for r in g]) for t in tasks)
                             + f" | {'yes' if same else 'NO'} (seeds {[r['seed'] for r in g]}) | "
                             + f"{statistics.median(r['train_seconds'] for r in g):.0f} |")
    speed = load(SPEED)
    if speed:
        names = list(speed[-1]["median_seconds"])
        lines += ["", "| timing run | batch | " + " | ".join(f"{n} ms" for n in names)
                  + " | qwix/aqt int8 | qwix/aqt int4 |", "|" + "---|" * (len(names) + 4)]
        for batch in TIMING_BATCHES:
            for run, r in enumerate(r for r in speed if r["batch"] == batch):
                m = r["median_seconds"]
                ratios = [f"{m[f'qwix_int{b}'] / m[f'aqt_int{b}']:.2f}" if f"qwix_int{b}" in m and f"aqt_int{b}" in m
                          else "-" for b in (8, 4)]
                lines.append(f"| {run + 1} | {batch} | " + " | ".join(f"{m[n] * 1e3:.3f}" for n in names) + " | "
                             + " | ".join(ratios) + " |")
    return "\n".join(lines)


def write_readme_section(text: str, name: str = "backends") -> None:
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    with open(README) as f:
        content = f.read()
    if begin not in content or end not in content:
        raise ValueError(f"{README}: no {begin} / {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(README, "w") as f:
        f.write(f"{head}{begin}\n{text}\n{end}{tail}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--bits", default="8,4", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--backends", default=",".join(BACKENDS), type=lambda s: s.split(","))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's 600)")
    parser.add_argument("--workroot", default="/tmp/effjax_quant_backends")
    parser.add_argument("--time", action="store_true", help="time the served models of --seeds (trained first)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--table", action="store_true", help="print the tables and rewrite the README section")
    args = parser.parse_args()
    bad = [b for b in args.backends if b not in BACKENDS] + [str(b) for b in args.bits if b not in (4, 8)]
    if bad:
        parser.error(f"--backends / --bits: {bad} not allowed; backends {list(BACKENDS)}, bits 8, 4")
    if args.table:
        text = table()
        print(text)
        write_readme_section(text)
    elif args.time:
        time_served(args)
    else:
        run_training(args)


if __name__ == "__main__":
    main()
