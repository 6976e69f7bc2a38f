"""Benchmark: 2 processes vs 1 process on the same global batch, and checkpoint save/restore times.

Step times come from each run's TensorBoard `train/step_time_s` (median over the
logging windows after the first, which holds compilation). Runs alternate between
the two set-ups. Checkpoint figures use the quickstart model's train state: the
blocking part of an async save, the full save (until committed) and a restore.

  python -m tools.bench_scale [--steps=200] [--repeats=2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
logging.getLogger("absl").setLevel(logging.WARNING)

from tests.scale.procs import run, run_two_processes, tensorboard_scalars  # noqa: E402
from tools.bench_report import machine_line, write_section  # noqa: E402


def step_time(workdir) -> float:
    times = tensorboard_scalars(workdir, "train/step_time_s")
    steps = sorted(times)[1:]
    return statistics.median(times[s] for s in steps)


def checkpoint_times(repeats: int = 3) -> dict[str, float]:
    import jax

    from effjax.config.load import load_config
    from effjax.train.checkpoint import Checkpointer
    from effjax.train.trainer import build, init_state

    config = load_config("configs/quickstart.py")
    setup = build(config, jax.devices()[:1])
    state = init_state(setup, jax.random.PRNGKey(0))
    n_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    blocking, total, restore = [], [], []
    with tempfile.TemporaryDirectory() as d:
        ckpt = Checkpointer(d, keep=repeats + 1, async_save=True)
        for i in range(repeats):
            t = time.perf_counter()
            ckpt.save(i + 1, state)
            blocking.append(time.perf_counter() - t)
            ckpt.wait()
            total.append(time.perf_counter() - t)
        for _ in range(repeats):
            t = time.perf_counter()
            ckpt.restore_latest(setup.abstract_state)
            restore.append(time.perf_counter() - t)
        ckpt.close()
    return {"bytes": n_bytes, "blocking": statistics.median(blocking), "total": statistics.median(total),
            "restore": statistics.median(restore)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    common = ["--config.mesh.data=2", "--config.mesh.fsdp=4", f"--config.train.num_steps={args.steps}",
              "--config.log.every_steps=20", "--config.eval.every_steps=100000", "--config.checkpoint.every_steps=100000"]
    one, two = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            run(a, *common, devices=8, timeout=900)
            run_two_processes(b, *common, timeout=900)
            one.append(step_time(a))
            two.append(step_time(b))
            print(f"1 process x 8 devices: {one[-1] * 1e3:.2f} ms/step; 2 processes x 4 devices: {two[-1] * 1e3:.2f} ms/step")
    ck = checkpoint_times()
    o, t = statistics.median(one), statistics.median(two)
    table = (
        "## Scale-out and checkpoints (`tools/bench_scale.py`)\n\n"
        f"Command: `python -m tools.bench_scale --steps={args.steps} --repeats={args.repeats}`  \n"
        f"{machine_line()}. Quickstart `tiny` model, global batch 32, mesh data=2 x fsdp=4 over 8 simulated CPU devices.\n\n"
        "| set-up | ms / step (median) | ratio to 1 process |\n|---|---|---|\n"
        f"| 1 process x 8 devices | {o * 1e3:.2f} | 1.00 |\n"
        f"| 2 processes x 4 devices (gloo over localhost) | {t * 1e3:.2f} | {t / o:.2f} |\n\n"
        f"Checkpoint of the quickstart train state ({ck['bytes'] / 1e6:.2f} MB, params + Adam moments): "
        f"blocking part of the async save {ck['blocking'] * 1e3:.1f} ms, save until committed {ck['total'] * 1e3:.1f} ms, "
        f"restore {ck['restore'] * 1e3:.1f} ms (medians of 3).\n"
    )
    write_section("scale", table)
    print(table)


if __name__ == "__main__":
    main()
