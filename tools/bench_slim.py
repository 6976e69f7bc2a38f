"""Benchmark of the slimmable multi-task ViT: per-width FLOPs (analytic and XLA) and forward latency,
and the sandwich step against the plain multi-task step, side by side in one run.

  python -m tools.bench_slim            # writes the "slim" section of BENCHMARKS.md
  python -m tools.bench_slim --quick    # fewer repeats, prints only
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from configs.slim_vit import get_config
from effjax.compress.cost_elastic import elastic_cost
from effjax.data import pipeline
from effjax.subnet import SubnetConfig
from effjax.train import objectives, trainer
from tools.bench_report import machine_line, write_section


def _median_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def bench_widths(dataset: str, repeats: int, batch: int = 64) -> list[str]:
    config = get_config(dataset)
    setup = trainer.build(config, jax.devices()[:1])
    params = trainer.init_state(setup, jax.random.PRNGKey(0)).params
    images = jax.numpy.asarray(setup.dataset.splits["val"]["image"][:batch])
    tasks = setup.dataset.tasks
    rows, full = [], None
    for w in sorted(config.model.width_menu, reverse=True):
        subnet = SubnetConfig(w, tuple((t.name, w) for t in tasks))
        forward = jax.jit(lambda p, x, s=subnet: setup.model.apply({"params": p}, x, subnet=s))
        compiled = forward.lower(params, images).compile()
        seconds = _median_seconds(lambda: compiled(params, images), repeats)
        analytic = elastic_cost(config.model, setup.dataset.image_shape, tasks, subnet).flops
        full = full or (analytic, seconds)
        rows.append(f"| {dataset} | {w} | {analytic / 1e6:.3f} | {_xla_flops(compiled) / batch / 1e6:.3f} | "
                    f"{full[0] / analytic:.2f}x | {1e3 * seconds:.2f} | {full[1] / seconds:.2f}x |")
    return rows


def bench_steps(dataset: str, repeats: int) -> str:
    times = {}
    for objective in ("multitask", "sandwich"):
        config = get_config(dataset)
        config.train.objective = objective
        setup = trainer.build(config, jax.devices()[:1])
        state = trainer.init_state(setup, jax.random.PRNGKey(0))
        step = jax.jit(objectives.build_train_step(setup, config))
        batch = pipeline.to_global(next(pipeline.train_iterator(setup.dataset, config.train.batch_size, 0)),
                                   setup.batch_sharding, config.train.batch_size)
        rng = jax.random.PRNGKey(1)
        start = time.perf_counter()
        compiled = step.lower(state, batch, rng).compile()
        compile_s = time.perf_counter() - start
        times[objective] = (compile_s, _median_seconds(lambda: compiled(state, batch, rng)[1]["loss"], repeats))
    (c0, t0), (c1, t1) = times["multitask"], times["sandwich"]
    return (f"| {dataset} | {1e3 * t0:.1f} | {1e3 * t1:.1f} | {t1 / t0:.2f}x | {c0:.1f} | {c1:.1f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    load_start = os.getloadavg()[0]
    width_rows = [r for d in ("digits", "shapes") for r in bench_widths(d, repeats)]
    step_rows = [bench_steps(d, max(3, repeats // 4)) for d in ("digits", "shapes")]
    md = "\n".join([
        "## Slimmable multi-task ViT (`python -m tools.bench_slim`)", "", machine_line(),
        f"(1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end: "
        "latencies are noisy when it is high; the FLOPs columns are exact)", "",
        "Forward pass of one width config (encoder and every decoder at width w), batch 64, jitted, median:", "",
        "| data | width | analytic MFLOPs/img | XLA MFLOPs/img | FLOPs saving | latency (ms) | speed-up |",
        "|---|---|---|---|---|---|---|", *width_rows, "",
        "One train step (configs/slim_vit.py; sandwich = max + min + 2 random configs, K*(1+T) switch branches):", "",
        "| data | multitask step (ms) | sandwich step (ms) | ratio | multitask compile (s) | sandwich compile (s) |",
        "|---|---|---|---|---|---|", *step_rows])
    print(md)
    if not args.quick:
        write_section("slim", md)


if __name__ == "__main__":
    main()
