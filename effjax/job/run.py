"""The main job the launcher runs.

Without a `search` section in the config: train the config and evaluate it.
With one: train the supernet once, search its accuracy-FLOPs-bits Pareto front
zero-shot, write `pareto.json`, `pareto.png`, `report.md` and the TensorBoard
plots/hparams, and export the best point per FLOPs budget (`python -m effjax.job.export`
exports any other).
"""

from __future__ import annotations

import os
import threading
import time

import jax

from effjax.job import json_safe
from effjax.train.trainer import build, train_and_evaluate


def _summary(result, workdir: str) -> dict:
    return {
        "workdir": os.path.abspath(workdir),
        "interrupted": result.interrupted,
        "start_step": int(result.start_step),
        "steps": int(result.state.step),
        "skipped_steps": int(result.state.skipped_total),
        "final_train_loss": result.train_losses[max(result.train_losses)] if result.train_losses else None,
        "metrics": result.metrics,
        "tensorboard": os.path.join(os.path.abspath(workdir), "tensorboard"),
        "checkpoints": os.path.join(os.path.abspath(workdir), "checkpoints"),
    }


def run_main_job(config, workdir: str, devices=None) -> dict:
    setup = programs = None
    lowered = threading.Event()
    start = time.perf_counter()
    if "search" in config:
        from effjax.job.subnet_search import cost_limits, precompile_knob_steps, pvq_menu

        pvq_menu(config)  # a bad config.search.pvq (or cost limit) fails before training
        cost_limits(config.search)
        setup = build(config, devices)
        # the search's programs need only shapes: they compile while the train step compiles (after its trace,
        # which runs Python on one core and is on the critical path)
        programs = precompile_knob_steps(setup, sorted(config.model.width_menu, reverse=True), start=lowered)
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json(indent=2))
    try:
        result = train_and_evaluate(config, workdir, devices, setup=setup, on_lowered=lowered.set)
    finally:
        lowered.set()
    summary = _summary(result, workdir)
    summary["wall_seconds"] = {"train": time.perf_counter() - start}
    if "search" in config and not result.interrupted:
        summary.update(search_and_export(config, workdir, result, devices, summary["wall_seconds"], setup, programs))
    summary["wall_seconds"]["job"] = time.perf_counter() - start
    if jax.process_index() == 0:
        json_safe.dump(summary, os.path.join(workdir, "summary.json"))
    return summary


def search_and_export(config, workdir: str, result, devices=None, wall_seconds: dict | None = None, setup=None,
                      programs=None) -> dict:
    """Search the trained supernet, write the front's files and export the budget picks. `wall_seconds`, when
    given, receives the search's wall time (zero-shot evaluations of the searched points and the optimizer);
    `setup` and `programs` (`precompile_knob_steps` on that setup), when given, are reused."""
    from effjax.job import report as report_lib
    from effjax.job import subnet_search as ss
    from effjax.train.metrics import MetricWriter, eval_tags, train_hparams

    workdir = os.path.abspath(workdir)  # every path in summary.json and report.md derives from it
    setup = build(config, devices) if setup is None else setup
    evaluator = ss.SubnetEvaluator(setup, result.state.params, dict(config.search.score_weights), programs=programs)
    start = time.perf_counter()
    search_result = ss.run_search(evaluator, config.search, workdir, seed=config.seed)
    if wall_seconds is not None:
        wall_seconds["search"] = time.perf_counter() - start
    points = ss.pareto_points(evaluator, search_result)
    full = ss.full_point(evaluator, config)
    outputs = {}
    if jax.process_index() == 0:
        outputs["pareto_json"] = os.path.join(workdir, "pareto.json")
        ss.write_pareto_json(points, outputs["pareto_json"], full)
        outputs["pareto_png"] = os.path.join(workdir, "pareto.png")
        image = ss.plot_pareto(points, outputs["pareto_png"], f"{config.data.name}: zero-shot subnets of one supernet",
                               ss.score_definition(evaluator.tasks, dict(config.search.score_weights)))
        writer = MetricWriter(os.path.join(workdir, "tensorboard"))
        writer.image(int(result.state.step), "search/pareto", image)
        best = max(points, key=lambda p: p["metrics"]["score"])
        for n, hv, best_score in report_lib.search_trace(points):
            writer.scalars(n, {"search/hypervolume": hv, "search/best_score": best_score})
        writer.hparams({**train_hparams(config), "search_budget": int(config.search.budget),
                        "bits_menu": str(ss.bits_values(config.search.bits, evaluator.pvq_settings)),
                        "width_menu": str(list(config.model.width_menu)),
                        **{f"{name}_menu": str(values) for name, values in ss.knob_menus(config).items()}},
                       {**eval_tags(config.eval.final_split, result.metrics[config.eval.final_split], evaluator.tasks),
                        "search/best_val_score": best["metrics"]["score"], "search/front_size": sum(p["pareto"] for p in points),
                        "search/full_supernet_val_score": full["metrics"]["score"]})
        writer.close()
        exports = {}
        for p in report_lib.budget_picks(points):
            directory = os.path.join(workdir, "export", f"point_{p['id']}")
            export_point(evaluator, p, directory, config)
            exports[p["id"]] = directory
        outputs["report_md"] = os.path.join(workdir, "report.md")
        with open(outputs["report_md"], "w") as f:
            f.write(report_lib.render(points, full, config, exports, workdir))
        outputs["exports"] = exports
        outputs["front_size"] = sum(p["pareto"] for p in points)
        outputs["full_supernet_val_score"] = full["metrics"]["score"]
        outputs["full_supernet_test_score"] = full["metrics"]["test_score"]
        outputs["best_val_score"] = best["metrics"]["score"]
    return outputs


def export_point(evaluator, point: dict, directory: str, config, platforms=None) -> dict:
    from effjax.compress import artifacts
    from effjax.compress import export as export_lib
    from effjax.subnet import SubnetConfig
    from effjax.job.subnet_search import pvq_from_point

    subnet, pvq = SubnetConfig.from_dict(point["config"]), pvq_from_point(point)
    meta = artifacts.metadata(config, evaluator.setup.dataset, evaluator.tasks, subnet, point)
    export_lib.write(directory, evaluator.host_params, evaluator.plan(subnet, pvq), meta, evaluator.pvq_cache)
    return artifacts.write_standalone(directory, platforms or artifacts.PLATFORMS)
