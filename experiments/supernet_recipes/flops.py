"""Training FLOPs per step of a sandwich recipe, from XLA's cost analysis of static-configuration steps.

One sandwich step runs the max configuration and `1 + num_random` sub-configurations (the min one and
random draws), each forward and backward. The fused step is one program with `lax.switch` and
`lax.scan`, which XLA's cost analysis does not price per executed branch or iteration, so each
configuration is priced alone: the compiled forward + backward of the labels' loss at that static
`SubnetConfig` on one training batch (`jax.jit(jax.value_and_grad(...)).lower(...).compile()
.cost_analysis()["flops"]`). The random configurations' mean is estimated on `--samples` draws from the
same menus (fixed seed). Progressive shrinking runs only the max configuration before its first menu
opens, and draws from the opened menus after; the per-step figure is the mean over the schedule.
Distillation terms (a softmax per output) are not priced; they are below 1% of a step here.

  python -m experiments.supernet_recipes.flops --config=configs/supernet.py:digits \
      --output=experiments/supernet_recipes/results/flops_digits.json
"""

from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags

_CONFIG = flags.DEFINE_string("config", None, "config file and argument (the recipes' common base)")
_SAMPLES = flags.DEFINE_integer("samples", 12, "random configurations drawn to estimate their mean cost")
_OUTPUT = flags.DEFINE_string("output", None, "json file to write")


def static_step_flops(setup, subnet, batch, params) -> float:
    """XLA's FLOPs of one forward + backward of the labels' loss at `subnet` (no optimizer update)."""
    from effjax.train import losses

    model, tasks = setup.model, setup.dataset.tasks

    def loss(params, batch):
        preds = model.apply({"params": params}, batch["image"], train=True, subnet=subnet,
                            rngs={"params": jax.random.PRNGKey(0)}, mutable=["aux_loss"])[0]
        return losses.multitask_loss(tasks, preds, batch, {})[0]

    cost = jax.jit(jax.value_and_grad(loss)).lower(params, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def subnet_of(tasks, widths, keep, top_k, bits):
    from effjax.subnet import SubnetConfig

    return SubnetConfig(encoder_width=widths[0], decoder_widths=tuple(sorted((t.name, w) for t, w in zip(tasks, widths[1:]))),
                        attention_keep_ratio=keep, moe_top_k=top_k, weight_bits=None)


def recipe_flops(setup, config, samples: int, cache: dict) -> dict:
    """Per-step and total training FLOPs of the sandwich recipe `config` (its `slim` options and steps);
    `setup` is built from any config with the same model and data (`cache`: SubnetConfig -> FLOPs)."""
    from effjax.train.sandwich import SandwichOptions, open_groups

    tasks = setup.dataset.tasks
    options = SandwichOptions.from_config(config)
    split = setup.dataset.splits["train"]
    batch = {k: np.asarray(v[:config.train.batch_size]) for k, v in split.items()}
    menu = sorted(float(w) for w in config.model.width_menu)
    top_ks = options.top_ks or (getattr(setup.model, "default_top_k", 0),)
    full = subnet_of(tasks, [menu[-1]] * (1 + len(tasks)), 1.0, max(top_ks), None)
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, setup.model.init(
        jax.random.PRNGKey(0), batch["image"][:1])["params"], is_leaf=lambda x: hasattr(x, "value"))

    def cost(subnet):
        if subnet not in cache:
            cache[subnet] = static_step_flops(setup, subnet, batch, params)
        return cache[subnet]

    def sub_configs_cost(is_open, rng) -> float:
        """Mean FLOPs of the min and random configurations with the menus `is_open` (closed: max value)."""
        pick = lambda values, group, i: values[i] if is_open[group] else values[-1]  # noqa: E731
        minimum = subnet_of(tasks, [pick(menu, 0, 0)] * (1 + len(tasks)), pick(options.keep_ratios, 1, 0),
                            pick(top_ks, 2, 0), None)
        draws = []
        for _ in range(samples):
            widths = [pick(menu, 0, rng.integers(len(menu))) for _ in range(1 + len(tasks))]
            draws.append(cost(subnet_of(tasks, widths, pick(options.keep_ratios, 1, rng.integers(len(options.keep_ratios))),
                                        pick(top_ks, 2, rng.integers(len(top_ks))), None)))
        return cost(minimum) + options.num_random * float(np.mean(draws))

    steps = int(config.train.num_steps)
    stages = {}
    for step in range(steps):
        key = tuple(bool(b) for b in np.asarray(open_groups(np.int32(step), options.progressive_opens, steps)))
        stages[key] = stages.get(key, 0) + 1
    per_stage = []
    for key, count in stages.items():
        sub = sub_configs_cost(key, np.random.default_rng(0)) if any(key) else 0.0
        per_stage.append({"open": dict(zip(("widths", "keep_ratios", "top_ks", "weight_bits"), key)), "steps": count,
                          "flops_per_step": cost(full) + sub})
    mean = sum(s["flops_per_step"] * s["steps"] for s in per_stage) / steps
    return {"full_config_step_flops": cost(full), "stages": per_stage, "mean_flops_per_step": mean,
            "total_flops": mean * steps, "num_steps": steps, "batch_size": int(config.train.batch_size)}


def main(_):
    from effjax.config.load import load_config
    from effjax.train.setup import build
    from experiments.supernet_recipes.recipes import RECIPES

    setup = build(load_config(_CONFIG.value), jax.devices()[:1])
    out, cache = {}, {}
    for name, recipe in RECIPES.items():
        config = load_config(_CONFIG.value + recipe.variant)
        out[name] = recipe_flops(setup, config, _SAMPLES.value, cache)
        print(name, f"{out[name]['mean_flops_per_step']:.4g} FLOPs/step, full config {out[name]['full_config_step_flops']:.4g}")
    with open(_OUTPUT.value, "w") as f:
        json.dump({"config": _CONFIG.value, "samples": _SAMPLES.value, "recipes": out}, f, indent=1)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "output"])
    app.run(main)
