"""Serving-time cost of quantizing the attention einsums: W8A8 with them int8 vs float, and float32.

A side check for the README (TRAIN-mode fake quantization of all operands, the same
models as `tools/bench_int8_serving`, interleaved rounds, median ms per batch of 256):

  python -m experiments.quantized_pareto.einsum_speed
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.digits import TASKS
from effjax.models import build_model
from effjax.models.layers import ATTENTION_SCORES_GROUP
from effjax.quant.aqt_config import make_provider
from effjax.subnet import SubnetConfig
from tools.bench_int8_serving import model_config, time_interleaved


def main():
    sn = SubnetConfig(weight_bits=8, activation_bits=8)
    for hidden in (64, 256):
        mc = model_config(hidden, 4)
        base = make_provider(sn)
        no_einsum = lambda g, base=base: None if g == ATTENTION_SCORES_GROUP else base(g)  # noqa: E731
        fm = build_model(mc, TASKS)
        params = nn.unbox(fm.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 8, 8, 1)))["params"])
        x = jax.random.uniform(jax.random.PRNGKey(1), (256, 8, 8, 1))
        rng = {"params": jax.random.PRNGKey(0)}
        runs = {"float32": (jax.jit(lambda v, x: fm.apply({"params": v}, x)), params)}
        for name, provider in (("W8A8, einsums int8", base), ("W8A8, einsums float", no_einsum)):
            m = build_model(mc, TASKS, provider)
            runs[name] = (jax.jit(lambda v, x, m=m: m.apply({"params": v}, x, rngs=rng)), params)
        latency = time_interleaved(runs, x, 5, 10 if hidden == 64 else 3)
        print(f"hidden {hidden}: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in latency.items()), flush=True)


if __name__ == "__main__":
    main()
