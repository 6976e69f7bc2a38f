"""Export a searched subnet as a standalone model:

  python -m effjax.job.export --workdir=<pipeline workdir> --point=<id>
  python -m effjax.job.export --workdir=<pipeline workdir> --max_flops=2e6   # best front point within a budget

Writes `<workdir>/export/point_<id>/` (or `--output`): `model.bin` (sliced weights, integer-
or, for a PVQ point of `config.search.pvq`, PVQ-coded) and `model.json`; then loads it back with `effjax.compress.export.load`,
measures its test metrics and prints them beside the `pareto.json` entry.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a finished `effjax.main` pipeline run.")
_POINT = flags.DEFINE_integer("point", None, "Id of the pareto.json point to export.")
_MAX_FLOPS = flags.DEFINE_float("max_flops", None, "Export the best-scoring Pareto point with at most these FLOPs.")
_OUTPUT = flags.DEFINE_string("output", None, "Export directory (default <workdir>/export/point_<id>).")


def evaluate_exported(model, dataset, split: str, batch_size: int = 256) -> dict[str, float]:
    """Every task's metric of a loaded export over a split."""
    import numpy as np

    from effjax.data import pipeline
    from effjax.train import losses

    totals = None
    for batch in pipeline.eval_batches(dataset, split, batch_size):
        preds = model.predict(batch["image"])
        sums = {t.name: {k: np.asarray(v) for k, v in losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]).items()}
                for t in dataset.tasks}
        totals = sums if totals is None else {t: {k: totals[t][k] + v for k, v in s.items()} for t, s in sums.items()}
    metrics = {t.name: losses.finalize_metric(t, totals[t.name]) for t in dataset.tasks}
    return metrics


def choose_point(points, point_id=None, max_flops=None) -> dict:
    if point_id is not None:
        for p in points:
            if p["id"] == point_id:
                return p
        raise ValueError(f"--point={point_id}: no such id in pareto.json; ids: {[p['id'] for p in points]}")
    if max_flops is not None:
        within = [p for p in points if p["pareto"] and p["cost"]["flops"] <= max_flops]
        if not within:
            smallest = min(p["cost"]["flops"] for p in points)
            raise ValueError(f"--max_flops={max_flops:g}: no Pareto point that small; the smallest has {smallest:g} FLOPs")
        return max(within, key=lambda p: p["metrics"]["score"])
    raise ValueError("give --point=<id> or --max_flops=<FLOPs>")


def export_from_workdir(workdir: str, point_id=None, max_flops=None, output=None) -> dict:
    import jax
    import ml_collections

    from effjax.job import run, subnet_search
    from effjax.compress import export as export_lib
    from effjax.data import load_dataset
    from effjax.train.checkpoint import Checkpointer
    from effjax.train.trainer import build

    paths = {name: os.path.join(workdir, name) for name in ("pareto.json", "config.json", "checkpoints")}
    for name, path in paths.items():
        if not os.path.exists(path):
            raise ValueError(f"--workdir={workdir!r}: {name} not found; run `python -m effjax.main` with a search config first")
    with open(paths["pareto.json"]) as f:
        points = json.load(f)["points"]
    point = choose_point(points, point_id, max_flops)
    with open(paths["config.json"]) as f:
        config = ml_collections.ConfigDict(json.load(f))
    setup = build(config, jax.devices()[:1])
    ckpt = Checkpointer(paths["checkpoints"], keep=config.checkpoint.keep, async_save=False)
    _, params = ckpt.latest_params()
    ckpt.close()
    evaluator = subnet_search.SubnetEvaluator(setup, params, dict(config.search.score_weights))
    directory = output or os.path.join(workdir, "export", f"point_{point['id']}")
    meta = run.export_point(evaluator, point, directory, config)
    model = export_lib.load(directory)
    dataset = load_dataset(config.data)
    measured = evaluate_exported(model, dataset, "test")
    measured["score"] = subnet_search.score(dataset.tasks, measured, dict(config.search.score_weights))
    return {"directory": directory, "point": point, "measured_test": measured, "bin_bytes": meta["bin_bytes"],
            "payload_bits": meta["payload_bits"], "bits_objective": point["cost"]["bits"]}


def main(argv) -> int:
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    if not _WORKDIR.value:
        print("effjax.job.export: error: --workdir is required", file=sys.stderr)
        return 2
    try:
        out = export_from_workdir(_WORKDIR.value, _POINT.value, _MAX_FLOPS.value, _OUTPUT.value)
    except ValueError as e:
        print(f"effjax.job.export: error: {e}", file=sys.stderr)
        return 2
    reported = {k[len("test_"):]: v for k, v in out["point"]["metrics"].items() if k.startswith("test_")}
    print(json.dumps({"export": out["directory"], "point": out["point"]["id"], "config": out["point"]["config"],
                      "pvq": out["point"].get("pvq"),
                      "measured_test": out["measured_test"], "reported_test": reported or "(not on the front: not measured)",
                      "size_bytes_on_disk": out["bin_bytes"], "bits_objective_bytes": out["bits_objective"] / 8}, indent=2))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
