"""Benchmark: effjax's training loop vs a bare `jax.jit` + optax loop, side by side.

Same model, batch, optimizer and number of steps. Each loop's per-step time is
the median over windows of 10 steps after the first window (which holds
compilation): effjax's own `train/step_time_s` TensorBoard scalar (it includes
data loading, logging and the periodic bookkeeping) and the same windows timed
around the bare loop. Runs alternate between the two loops and the median ratio
is kept. Also reports examples/s and achieved FLOP/s (XLA's cost analysis of the
compiled step) against this machine's measured f32 matmul peak.

  python -m tools.bench_trainer [--config=configs/quickstart.py] [--steps=300] [--repeats=3]
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

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from effjax.config.load import load_config  # noqa: E402
from effjax.data import load_dataset  # noqa: E402
from effjax.models import build_model  # noqa: E402
from effjax.train import losses, optim  # noqa: E402
from effjax.train.trainer import train_and_evaluate  # noqa: E402
from tools.bench_report import machine_line, write_section  # noqa: E402


def matmul_peak_flops(n: int = 1024, reps: int = 20) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            out = f(a)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


WINDOW = 10


def effjax_run(config, steps: int) -> float:
    from tests.scale.procs import tensorboard_scalars

    c = config.copy_and_resolve_references()
    c.train.num_steps = steps
    c.eval.every_steps = c.checkpoint.every_steps = 10**9
    c.log.every_steps = WINDOW
    c.log.progress_bar = False
    with tempfile.TemporaryDirectory() as d:
        train_and_evaluate(c, d, devices=jax.devices()[:1])
        times = tensorboard_scalars(d, "train/step_time_s")
    return statistics.median(times[s] for s in sorted(times)[1:])


def bare_run(config, dataset, steps: int) -> tuple[float, float]:
    """A minimal loop: jit(value_and_grad + optax), numpy batches by shuffled index; (s / step, FLOPs / step)."""
    model = build_model(config.model, dataset.tasks)
    tx, _ = optim.make_optimizer(config.train)
    train = dataset.splits["train"]
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + dataset.image_shape))["params"]
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params, is_leaf=lambda x: hasattr(x, "names"))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            preds = model.apply({"params": p}, batch["image"], rngs={"params": rng})
            return losses.multitask_loss(dataset.tasks, preds, batch, {})[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    bs = config.train.batch_size
    order = np.random.default_rng(0).permutation(len(train["image"]))
    batch0 = {k: v[order[:bs]] for k, v in train.items()}
    flops = step.lower(params, opt_state, batch0, jax.random.PRNGKey(0)).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, (list, tuple)) else flops)["flops"]
    rng = jax.random.PRNGKey(1)
    windows, t = [], time.perf_counter()
    for i in range(steps):
        start = (i * bs) % (len(order) - bs)
        batch = {k: v[order[start:start + bs]] for k, v in train.items()}
        params, opt_state, loss = step(params, opt_state, batch, jax.random.fold_in(rng, i))
        if (i + 1) % WINDOW == 0:
            float(loss)  # the effjax loop also reads the loss back at every logging step
            windows.append((time.perf_counter() - t) / WINDOW)
            t = time.perf_counter()
    return statistics.median(windows[1:]), flops


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/quickstart.py")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    dataset = load_dataset(config.data)
    ratios, effjax_steps, bare_steps = [], [], []
    flops = 0.0
    for _ in range(args.repeats):
        e = effjax_run(config, args.steps)
        b, flops = bare_run(config, dataset, args.steps)
        effjax_steps.append(e)
        bare_steps.append(b)
        ratios.append(e / b)
        print(f"effjax {e * 1e3:.2f} ms/step, bare {b * 1e3:.2f} ms/step, ratio {e / b:.3f}")
    peak = matmul_peak_flops()
    e, b, r = statistics.median(effjax_steps), statistics.median(bare_steps), statistics.median(ratios)
    bs = config.train.batch_size
    table = (
        "## Trainer overhead (`tools/bench_trainer.py`)\n\n"
        f"Command: `python -m tools.bench_trainer --config={args.config} --steps={args.steps} --repeats={args.repeats}`  \n"
        f"{machine_line()}; model `{config.model.name}` on `{config.data.name}`, global batch {bs}, 1 device.\n\n"
        "| loop | ms / step (median) | examples / s | achieved GFLOP/s | % of matmul peak |\n|---|---|---|---|---|\n"
        f"| effjax `train_and_evaluate` | {e * 1e3:.2f} | {bs / e:.0f} | {flops / e / 1e9:.2f} | {100 * flops / e / peak:.1f} |\n"
        f"| bare `jax.jit` + optax | {b * 1e3:.2f} | {bs / b:.0f} | {flops / b / 1e9:.2f} | {100 * flops / b / peak:.1f} |\n\n"
        f"Step-time ratio effjax / bare: **{r:.3f}** (median of {args.repeats}; each: {', '.join(f'{x:.3f}' for x in ratios)}); "
        f"target <= 1.03. Measured f32 matmul peak (1024x1024): {peak / 1e9:.1f} GFLOP/s; "
        f"XLA cost analysis of one train step: {flops / 1e6:.1f} MFLOP.\n"
    )
    write_section("trainer", table)
    print(table)


if __name__ == "__main__":
    main()
