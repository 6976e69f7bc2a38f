"""Export a searched subnet, or a plain training run, as a standalone model:

  python -m effjax.job.export --workdir=<pipeline workdir> --point=<id>
  python -m effjax.job.export --workdir=<pipeline workdir> --max_flops=2e6   # best front point within a budget
  python -m effjax.job.export --workdir=<workdir of a run without search>    # the trained model itself

Writes `<workdir>/export/point_<id>/` (`<workdir>/export/trained/` for a plain run; or `--output`,
which must be empty or absent unless `--overwrite`): `model.bin` (sliced weights, integer- or, for
a PVQ point of `config.search.pvq`, PVQ-coded), `model.json` (config, subnet, input/output
signature), `model.safetensors` (the same arrays) and `predict.jaxexport` (a `jax.export`
artifact that runs with jax alone); then loads it back with `effjax.compress.export.load`,
measures its test metrics and prints them beside the `pareto.json` entry.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags


def define_flags() -> None:
    """The command line's flags; defined only when this module runs as a program, so importing it beside
    `effjax.main` (which defines some of the same names) never clashes."""
    global _WORKDIR, _POINT, _MAX_FLOPS, _OUTPUT, _OVERWRITE, _PLATFORMS
    _WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a finished `effjax.main` pipeline run.")
    _POINT = flags.DEFINE_integer("point", None, "Id of the pareto.json point to export.")
    _MAX_FLOPS = flags.DEFINE_float("max_flops", None, "Export the best-scoring Pareto point with at most these FLOPs.")
    _OUTPUT = flags.DEFINE_string("output", None, "Export directory (default <workdir>/export/point_<id>).")
    _OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the files of an existing export in --output.")
    _PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "cuda", "tpu"], "Platforms the jax.export artifact is lowered for.")


def evaluate_exported(model, dataset, split: str, batch_size: int = 256) -> dict[str, float]:
    """Every task's metric of a loaded export over a split."""
    import jax
    import numpy as np

    from effjax.data import pipeline
    from effjax.train import losses

    totals = None
    for batch in pipeline.eval_batches(dataset, split, batch_size):
        preds = model.predict(batch["image"])
        sums = jax.tree.map(np.asarray, {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"])
                                         for t in dataset.tasks})
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return {t.name: losses.finalize_metric(t, totals[t.name]) for t in dataset.tasks}


def choose_point(points, point_id=None, max_flops=None) -> dict:
    if point_id is not None and max_flops is not None:
        raise ValueError(f"--point={point_id} and --max_flops={max_flops:g}: give one of them, not both")
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


def check_output(directory: str, overwrite: bool) -> None:
    """An export directory must be absent, empty, or (with --overwrite) a directory."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"--output={directory!r}: is a file, not a directory")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise ValueError(f"--output={directory!r}: directory not empty ({len(os.listdir(directory))} entries); "
                         "pass --overwrite to replace an export there")


def trained_point(evaluator, config) -> dict:
    """A plain run's model as a pareto.json-like point: the full-width float configuration."""
    from effjax.job import subnet_search
    from effjax.subnet import SubnetConfig

    subnet = SubnetConfig()
    test = evaluator.metrics(subnet, "test")
    return {"id": "trained", "config": subnet.to_dict(), "cost": evaluator.cost(subnet), "pareto": False,
            "metrics": {**{f"test_{k}": v for k, v in test.items() if k != "score"},
                        "score": subnet_search.score(evaluator.tasks, test, {})}}


def export_from_workdir(workdir: str, point_id=None, max_flops=None, output=None, overwrite: bool = False,
                        platforms=None) -> dict:
    from effjax.compress import artifacts
    from effjax.compress import export as export_lib
    from effjax.job import run, subnet_search
    from effjax.train.setup import load_run, read_run_config

    paths = {name: os.path.join(workdir, name) for name in ("pareto.json", "config.json", "checkpoints")}
    for name in ("config.json", "checkpoints"):
        if not os.path.exists(paths[name]):
            raise ValueError(f"--workdir={workdir!r}: {name} not found; run `python -m effjax.main` there first")
    config = read_run_config(workdir)
    searched = "search" in config
    if searched and not os.path.exists(paths["pareto.json"]):
        raise ValueError(f"--workdir={workdir!r}: pareto.json not found; the search of this run did not finish")
    if searched:
        with open(paths["pareto.json"]) as f:
            point = choose_point(json.load(f)["points"], point_id, max_flops)
    elif point_id is not None or max_flops is not None:
        flag = f"--point={point_id}" if point_id is not None else f"--max_flops={max_flops:g}"
        raise ValueError(f"{flag}: {workdir!r} is a training run without a search; it exports the trained model only")
    directory = os.path.abspath(output or os.path.join(workdir, "export", f"point_{point['id']}" if searched else "trained"))
    check_output(directory, overwrite)
    loaded = load_run(workdir, config)
    setup, params = loaded.setup, loaded.params
    weights = subnet_search.config_score_weights(config) if searched else {}
    evaluator = subnet_search.SubnetEvaluator(setup, params, weights)
    if not searched:
        point = trained_point(evaluator, config)
    for name in ("model.bin", "model.json", artifacts.ARTIFACT, artifacts.SAFETENSORS):
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))  # --overwrite: none of the old export's files survives
    meta = run.export_point(evaluator, point, directory, config, platforms or artifacts.PLATFORMS)
    model = export_lib.load(directory)
    measured = evaluate_exported(model, setup.dataset, "test")
    measured["score"] = subnet_search.score(setup.dataset.tasks, measured, weights)
    return {"directory": directory, "point": point, "measured_test": measured, "bin_bytes": meta["bin_bytes"],
            "payload_bits": meta["payload_bits"], "bits_objective": point["cost"]["bits"],
            "standalone": meta["standalone"]}


def main(argv) -> int:
    del argv
    logging.getLogger("absl").setLevel(logging.WARNING)
    if not _WORKDIR.value:
        print("effjax.job.export: error: --workdir is required", file=sys.stderr)
        return 2
    try:
        out = export_from_workdir(_WORKDIR.value, _POINT.value, _MAX_FLOPS.value, _OUTPUT.value, _OVERWRITE.value,
                                  tuple(_PLATFORMS.value))
    except ValueError as e:
        print(f"effjax.job.export: error: {e}", file=sys.stderr)
        return 2
    reported = {k[len("test_"):]: v for k, v in out["point"]["metrics"].items() if k.startswith("test_")}
    print(json.dumps({"export": out["directory"], "point": out["point"]["id"], "config": out["point"]["config"],
                      "pvq": out["point"].get("pvq"),
                      "measured_test": out["measured_test"], "reported_test": reported or "(not on the front: not measured)",
                      "size_bytes_on_disk": out["bin_bytes"], "bits_objective_bytes": out["bits_objective"] / 8,
                      "standalone": {k: out["standalone"][k] for k in ("artifact", "bytes", "platforms", "params", "padded_params",
                                                                        "flops_per_example", "xla_flops_per_example")}},
                     indent=2))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
