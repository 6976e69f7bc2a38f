"""`train_and_evaluate(config, workdir)`: the sharded training loop.

Mesh from the config; train state created by `jit(init, out_shardings=...)` from
the logical-axis rules; one jitted, donated train step; periodic evaluation of
every task; Orbax checkpoints with the data iterator's state, auto-resume and
fall-back; SIGTERM or SIGINT saves and returns cleanly (a second one exits at
once); a resume below the checkpoint's step or with another learning-rate schedule
is refused (`schedule_record`); TensorBoard scalars including step time,
examples/s and achieved FLOP/s (XLA's cost analysis of the compiled step); an
optional jax.profiler trace.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from tqdm import tqdm

from effjax.config import validate
from effjax.data import pipeline
from effjax.train import losses, objectives, schedule_record
from effjax.train import mesh as mesh_lib
from effjax.train import preemption as preemption_lib
from effjax.train import step as step_lib
from effjax.train.checkpoint import Checkpointer
from effjax.train import metrics as metrics_lib
from effjax.train.metrics import MetricWriter
from effjax.train.setup import Setup, build, init_params_from, init_state

log = logging.getLogger("effjax")


class TrainingDiverged(RuntimeError):
    pass


@dataclasses.dataclass
class TrainResult:
    state: Any  # final TrainState (global jax arrays)
    metrics: dict[str, dict[str, float]]  # split -> task -> metric
    train_losses: dict[int, float]  # step -> loss at logged steps
    interrupted: bool = False
    start_step: int = 0


def _stop_requested(guard) -> bool:
    """True on every process when any process received SIGTERM/SIGINT (see `effjax.train.preemption`)."""
    if jax.process_count() == 1:
        return guard.requested
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.array([guard.requested]))).any())


def _save_for_signal(ckpt, step, state, data_iter, guard, is_main) -> bool:
    ckpt.save(step, state, data_iter, wait=True)
    if is_main:
        log.warning("%s received: saved step %d to %s; exiting (run the same command to resume)",
                    preemption_lib.signal_name(guard.received), step, ckpt.directory)
    return True


def evaluate(setup: Setup, params, split: str, eval_step=None, subnet=None) -> dict[str, float]:
    """Every task's metric over a whole split (padded last batch masked out)."""
    if eval_step is None:
        eval_step = jax.jit(step_lib.make_eval_step(setup.model, setup.dataset.tasks, subnet),
                            in_shardings=(setup.state_shardings.params, setup.batch_sharding))
    bs = setup.config.eval.batch_size
    totals = None
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        for local in pipeline.eval_batches(setup.dataset, split, bs):
            sums = jax.device_get(eval_step(params, pipeline.to_global(local, setup.batch_sharding, bs)))
            totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return {t.name: losses.finalize_metric(t, totals[t.name]) for t in setup.dataset.tasks}


def _fresh_state(setup: Setup, rng):
    state = init_state(setup, rng)
    if setup.config.train.init_from:
        state = state.replace(params=init_params_from(setup, state.params, setup.config.train.init_from))
    return state


def step_flops(lowered) -> float:
    """FLOPs of one global step from the lowered program, before partitioning and backend rewrites.

    The compiled program's analysis misses matmuls that a backend hands to a library (on GPU, the
    cuBLAS custom calls: a ViT-B/16 train step counted 0.63 of its 13.8 TFLOP there).
    """
    try:
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", 0.0))
    except Exception:  # cost analysis is best-effort on some backends
        return 0.0


def train_and_evaluate(config, workdir: str, devices: Sequence[jax.Device] | None = None,
                       dot_general_provider=None, setup: Setup | None = None, on_lowered=None) -> TrainResult:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates it; `setup`, when
    given, is `build(config, devices, ...)` made by the caller; `on_lowered()`, when given, is called once the
    train step is traced, before it compiles."""
    if setup is None:
        setup = build(config, devices, dot_general_provider=dot_general_provider)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(os.path.join(workdir, "tensorboard"))
    tc = config.train

    init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    data_iter = pipeline.train_iterator(setup.dataset, tc.batch_size, seed=config.seed)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint.keep, config.checkpoint.async_save)
    try:  # another model's checkpoint, or a resume below its step or with another schedule: a config error
        ckpt.check_compatible(setup.abstract_state)
        start, state = ckpt.restore_latest(setup.abstract_state, data_iter)
        schedule_record.check(workdir, tc, start, write=is_main)
    except ValueError as e:
        ckpt.close()
        raise validate.ConfigError(str(e)) from None
    train_losses: dict[int, float] = {}
    initializing = None
    # a worker thread: XLA compiles the initializer there while this thread traces the train step; later
    # it counts the step's FLOPs (for TensorBoard's TFLOP/s) while the first steps run
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    if state is None:
        start = 0
        initializing = worker.submit(_fresh_state, setup, init_rng)
    else:
        if is_main:
            log.info("resumed from step %d in %s", start, ckpt.directory)
        if start >= tc.num_steps and "train_loss" in ckpt.progress:  # a finished run: nothing to train
            logged_step, loss = ckpt.progress["train_loss"]
            train_losses[int(logged_step)] = float(loss)

    train_step = jax.jit(
        objectives.build_train_step(setup, config),
        in_shardings=(setup.state_shardings, setup.batch_sharding, mesh_lib.replicated(setup.mesh)),
        out_shardings=(setup.state_shardings, mesh_lib.replicated(setup.mesh)),
        donate_argnums=(0,),
    )
    eval_step = jax.jit(step_lib.make_eval_step(setup.model, setup.dataset.tasks),
                        in_shardings=(setup.state_shardings.params, setup.batch_sharding))
    step_rng = jax.device_put(step_rng, mesh_lib.replicated(setup.mesh))

    metrics: dict[str, dict[str, float]] = {}
    counting_flops = compiled_step = None
    interrupted = False
    profiling_until = None
    window_start, window_steps = time.perf_counter(), 0
    bar = tqdm(total=tc.num_steps, initial=start, disable=not (is_main and config.log.progress_bar),
               desc="train", dynamic_ncols=True)
    on_second = f"exiting at once; steps after the last committed checkpoint in {ckpt.directory} are lost"
    with preemption_lib.deferred(on_second) as preemption, jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        step = start
        while step < tc.num_steps:
            batch = pipeline.to_global(next(data_iter), setup.batch_sharding, tc.batch_size)
            if compiled_step is None:
                lowered = train_step.lower(setup.abstract_state, batch, step_rng)
                if on_lowered is not None:
                    on_lowered()
                compiled_step = lowered.compile()
                counting_flops = worker.submit(step_flops, lowered)
                worker.shutdown(wait=False)
            if state is None:
                state = initializing.result()
            if config.profile_steps and profiling_until is None and step >= start + 2:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
                profiling_until = step + config.profile_steps
            state, step_metrics = compiled_step(state, batch, step_rng)
            step += 1
            window_steps += 1
            bar.update(1)
            if profiling_until is not None and step == profiling_until:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
            if step % config.log.every_steps == 0 or step == tc.num_steps:
                m = jax.device_get(step_metrics)
                skipped_in_a_row, skipped_total = int(state.skipped_in_a_row), int(state.skipped_total)
                elapsed = time.perf_counter() - window_start
                step_time = elapsed / window_steps
                scalars = {k: float(v) for k, v in m.items()}
                scalars.update({"step_time_s": step_time, "examples_per_s": tc.batch_size / step_time,
                                "tflops_per_s": counting_flops.result() / step_time / 1e12, "skipped_steps": skipped_total})
                writer.scalars(step, metrics_lib.train_tags(scalars, [t.name for t in setup.dataset.tasks]))
                train_losses[step] = scalars["loss"]
                ckpt.progress["train_loss"] = [step, scalars["loss"]]
                bar.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
                window_start, window_steps = time.perf_counter(), 0
                if skipped_in_a_row >= tc.max_skipped_steps:
                    ckpt.close()
                    writer.close()
                    bar.close()
                    raise TrainingDiverged(
                        f"training diverged: the last {skipped_in_a_row} steps (up to step {step}) produced non-finite "
                        f"loss or gradients and were skipped; lower config.train.learning_rate "
                        f"(now {tc.learning_rate}) or check the data")
            if step % config.eval.every_steps == 0 or step == tc.num_steps:
                metrics["val"] = evaluate(setup, state.params, "val", eval_step)
                writer.scalars(step, metrics_lib.eval_tags("val", metrics["val"], setup.dataset.tasks))
            if step % config.checkpoint.every_steps == 0 or step == tc.num_steps:
                ckpt.save(step, state, data_iter)
            if tc.halt_after_steps and step - start >= tc.halt_after_steps and step < tc.num_steps:
                ckpt.save(step, state, data_iter, wait=True)
                interrupted = True
                break
            if _stop_requested(preemption):
                interrupted = _save_for_signal(ckpt, step, state, data_iter, preemption, is_main)
                break
        if profiling_until is not None and step < profiling_until:
            jax.profiler.stop_trace()
        if preemption.requested and not interrupted and jax.process_count() == 1:  # arrived after the last check
            interrupted = _save_for_signal(ckpt, step, state, data_iter, preemption, is_main)
    bar.close()
    worker.shutdown(wait=False)
    if state is None:
        state = initializing.result()
    if not interrupted:
        split = config.eval.final_split
        metrics[split] = evaluate(setup, state.params, split, eval_step)
    if not interrupted and step > start:  # a rerun of a finished workdir logged these already
        writer.scalars(step, metrics_lib.eval_tags(split, metrics[split], setup.dataset.tasks))
        if "search" not in config:  # a search run writes its one hparams session after the search
            writer.hparams(metrics_lib.train_hparams(config),
                           metrics_lib.eval_tags(split, metrics[split], setup.dataset.tasks))
    ckpt.close()
    writer.close()
    return TrainResult(state, metrics, train_losses, interrupted, start)
