"""Zero-shot search of a trained supernet's accuracy-FLOPs-bits Pareto front.

Every candidate is a `SubnetConfig` (encoder width, one decoder width per task,
weight bits, and for the `super_vit` supernet the attention keep ratio and MoE
top-k it was trained on). It is evaluated on the validation split with no retraining: the
supernet's weights sliced to the subnet and quantized after training (per-channel
symmetric weights, `weight_quant`). FLOPs come from the shared cost model and bits
from the export plan (exactly what an export writes), so only the score is
modeled by the search's GP; FLOPs and bits are computed objectives.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from effjax import search
from effjax.compress import export as export_lib
from effjax.compress.cost import total_cost
from effjax.compress.cost_slim import slim_vit_layers
from effjax.compress.cost_super import super_vit_layers
from effjax.compress.subnet import SubnetConfig
from effjax.data.specs import TaskSpec
from effjax.train import step as step_lib
from effjax.train.trainer import Setup, evaluate

FLOAT_BITS = 32


def task_score(task: TaskSpec, value: float) -> float:
    """A task metric on a higher-is-better [0, 1] scale: accuracy and mIoU as they are; depth RMSE
    as 1 - RMSE / std (the RMSE of predicting the mean is about 1 std)."""
    if task.kind == "depth":
        return max(0.0, 1.0 - value / task.value_std)
    return value


def score(tasks, metrics: Mapping[str, float], weights: Mapping[str, float]) -> float:
    total = sum(float(weights.get(t.name, 1.0)) for t in tasks)
    return sum(float(weights.get(t.name, 1.0)) * task_score(t, metrics[t.name]) for t in tasks) / total


def subnet_from_params(params: Mapping[str, Any], tasks) -> SubnetConfig:
    bits = int(params["weight_bits"])
    return SubnetConfig(
        encoder_width=float(params["encoder_width"]),
        decoder_widths=tuple(sorted((t.name, float(params[f"decoder_width_{t.name}"])) for t in tasks)),
        attention_keep_ratio=float(params.get("attention_keep_ratio", 1.0)),
        moe_top_k=int(params.get("moe_top_k", 0)),
        weight_bits=None if bits >= FLOAT_BITS else bits,
        first_last_bits=None if bits >= FLOAT_BITS else max(bits, 8),
    )


def knob_menus(config) -> dict[str, list]:
    """The searched menus beyond widths and bits: the supernet's keep ratios and top-k (those it was trained on)."""
    if config.model.name != "super_vit":
        return {}
    slim = config.get("slim", None) or {}
    menus = {"attention_keep_ratio": sorted(float(r) for r in slim.get("keep_ratios", (1.0,))),
             "moe_top_k": sorted(int(k) for k in slim.get("top_ks", ()))}
    return {name: values for name, values in menus.items() if len(values) > 1}


def search_space(menu, tasks, bits_menu, extra_menus: Mapping[str, Sequence] | None = None) -> search.Space:
    params = [search.Ordinal("encoder_width", list(menu))]
    params += [search.Ordinal(f"decoder_width_{t.name}", list(menu)) for t in tasks]
    params += [search.Ordinal(name, list(values)) for name, values in (extra_menus or {}).items()]
    params.append(search.Ordinal("weight_bits", sorted(int(b) for b in bits_menu)))
    return search.Space(params)


def full_params(config, tasks) -> dict:
    """The search parameters of the full supernet (every width 1, dense, most experts, float)."""
    params = {"encoder_width": 1.0, "weight_bits": FLOAT_BITS, **{f"decoder_width_{t.name}": 1.0 for t in tasks}}
    params.update({name: max(values) for name, values in knob_menus(config).items()})
    return params


@dataclasses.dataclass
class SubnetEvaluator:
    """Prices and scores subnets of one trained supernet; caches one compiled eval per width config."""

    setup: Setup
    params: Any  # supernet parameters (global arrays)
    score_weights: Mapping[str, float]

    def __post_init__(self):
        self.tasks = self.setup.dataset.tasks
        self.boxed = jax.eval_shape(lambda: self.setup.model.init(
            jax.random.PRNGKey(0), np.zeros((1,) + self.setup.dataset.image_shape, np.float32))["params"])
        self.host_params = jax.tree.map(np.asarray, jax.device_get(self.params))
        self._eval_steps: dict[SubnetConfig, Callable] = {}

    def plan(self, subnet: SubnetConfig):
        return export_lib.plan(self.boxed, self.setup.config.model, self.tasks, subnet)

    def cost(self, subnet: SubnetConfig) -> dict[str, float]:
        layers_of = super_vit_layers if self.setup.config.model.name == "super_vit" else slim_vit_layers
        layers = layers_of(self.setup.config.model, self.setup.dataset.image_shape, self.tasks, subnet.without_bits())
        c = total_cost(layers, dataclasses.replace(subnet, activation_bits=None))
        return {"flops": c.flops, "params": c.params, "bits": export_lib.total_bits(self.plan(subnet)), "bops": c.bops}

    def metrics(self, subnet: SubnetConfig, split: str) -> dict[str, float]:
        widths_only = subnet.without_bits()
        if widths_only not in self._eval_steps:
            self._eval_steps[widths_only] = jax.jit(
                step_lib.make_eval_step(self.setup.model, self.tasks, widths_only),
                in_shardings=(self.setup.state_shardings.params, self.setup.batch_sharding))
        params = export_lib.quantized_params(self.host_params, self.plan(subnet))
        params = jax.device_put(params, self.setup.state_shardings.params)
        values = evaluate(self.setup, params, split, self._eval_steps[widths_only])
        values["score"] = score(self.tasks, values, self.score_weights)
        return values


def run_search(evaluator: SubnetEvaluator, search_config, workdir: str, seed: int) -> search.SearchResult:
    tasks = evaluator.tasks
    space = search_space(evaluator.setup.config.model.width_menu, tasks, search_config.bits,
                         knob_menus(evaluator.setup.config))
    cache: dict[SubnetConfig, dict] = {}

    def cost_of(params):
        subnet = subnet_from_params(params, tasks)
        if subnet not in cache:
            cache[subnet] = evaluator.cost(subnet)
        return cache[subnet]

    def fn(params):
        return {"score": evaluator.metrics(subnet_from_params(params, tasks), "val")["score"]}

    objectives = [search.Objective("score", "max"),
                  search.Objective("flops", "min", fn=lambda p: cost_of(p)["flops"]),
                  search.Objective("bits", "min", fn=lambda p: cost_of(p)["bits"])]
    return search.optimize(fn, space, objectives, budget=int(search_config.budget), seed=seed,
                           workdir=os.path.join(workdir, "search"), batch_size=int(search_config.batch_size),
                           progress=jax.process_index() == 0)


def pareto_points(evaluator: SubnetEvaluator, result: search.SearchResult) -> list[dict]:
    """Every evaluated config with val (and, for the front, test) metrics, cost and the Pareto flag."""
    tasks = evaluator.tasks
    history = list(result.history)
    values = np.array([[e.values["score"], -e.values["flops"], -e.values["bits"]] for e in history])
    front = search.non_dominated_mask(values, deduplicate=True) if len(history) else np.zeros(0, bool)
    points = []
    for e, on_front in zip(history, front):
        subnet = subnet_from_params(e.params, tasks)
        metrics = {f"val_{k}": v for k, v in evaluator.metrics(subnet, "val").items()}
        if on_front:
            metrics.update({f"test_{k}": v for k, v in evaluator.metrics(subnet, "test").items()})
        metrics["score"] = metrics["val_score"]
        points.append({"id": int(e.id), "config": subnet.to_dict(), "params": dict(e.params), "metrics": metrics,
                       "cost": evaluator.cost(subnet), "pareto": bool(on_front)})
    return points


def write_pareto_json(points, path: str) -> None:
    with open(path, "w") as f:
        json.dump({"points": points}, f, indent=2)


def plot_pareto(points, path: str, title: str) -> np.ndarray:
    """accuracy vs FLOPs and accuracy vs bits, the front highlighted; returns the image as HWC uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "flops", "FLOPs per example"), (axes[1], "bits", "model size (bits)")):
        rest = [p for p in points if not p["pareto"]]
        front = sorted((p for p in points if p["pareto"]), key=lambda p: p["cost"][key])
        ax.scatter([p["cost"][key] for p in rest], [p["metrics"]["score"] for p in rest], s=18, c="0.6", label="evaluated")
        ax.scatter([p["cost"][key] for p in front], [p["metrics"]["score"] for p in front], s=36, c="C3",
                   label="Pareto front (3 objectives)")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation score")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
