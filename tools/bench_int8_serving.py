"""Serving latency and memory of an AQT int8 model vs float32 on this CPU, side by side in one run.

Rows: float32; W8A8 (int8 weights and int8 activations: an int8 x int8 -> int32
matmul, the two attention einsums int8 x int8 too); W8 weight-only (int8 weights dequantized into a float matmul: smaller,
not faster); W4A4 (int4 storage; AQT upcasts int4 to int8 for the CPU matmul).
Plus a bare 1024^3 matmul, f32 vs int8 -> int32, to show what XLA's CPU backend
does with integer operands. Timings interleave the variants round by round so
machine noise hits all of them alike; the figure is the median per batch.

  python -m tools.bench_int8_serving            # writes the `int8_serving` section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.digits import TASKS
from effjax.models import build_model
from effjax.quant import serving
from effjax.subnet import SubnetConfig
from tools.bench_report import interleaved_seconds, machine_line, write_section

VARIANTS = {
    "float32": None,
    "W8A8 int8": SubnetConfig(weight_bits=8, activation_bits=8, first_last_bits=8),
    "W8 weight-only": SubnetConfig(weight_bits=8, activation_bits=None, first_last_bits=None),
    "W4A4 int4 (first/last 8)": SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=8),
}


def model_config(hidden: int, layers: int):
    from configs.quickstart import get_config

    c = get_config().model
    c.hidden_dim, c.mlp_dim, c.decoder_dim, c.num_layers = hidden, 4 * hidden, hidden, layers
    c.num_heads = 4
    return c


def compiled_memory(fn, *args) -> int:
    """Bytes XLA allocates for the arguments plus temporaries of the compiled forward."""
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.argument_size_in_bytes + m.temp_size_in_bytes) if m is not None else -1


def build_variants(mc, batch: int):
    image_shape = (8, 8, 1)
    float_model = build_model(mc, TASKS)
    params = nn.unbox(float_model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1,) + image_shape))["params"])
    x = jax.random.uniform(jax.random.PRNGKey(1), (batch,) + image_shape)
    runs = {}
    for name, subnet in VARIANTS.items():
        if subnet is None:
            fn = lambda v, x: float_model.apply({"params": v}, x)  # noqa: E731
            runs[name] = (jax.jit(fn), params, serving.param_bytes(params), compiled_memory(fn, params, x))
        else:
            served = serving.convert(mc, TASKS, image_shape, params, subnet)
            runs[name] = (served._apply, served.variables, served.nbytes(),
                          compiled_memory(served._forward, served.variables, x))
    return runs, x


def time_interleaved(runs: dict, x, rounds: int, iters: int) -> dict[str, float]:
    calls = {name: functools.partial(fn, variables, x) for name, (fn, variables, *_) in runs.items()}
    for call in calls.values():
        jax.block_until_ready(call())  # compile + warm up
    return {name: statistics.median(s) for name, s in interleaved_seconds(calls, rounds, iters).items()}


def bare_matmul(n: int, rounds: int) -> dict[str, float]:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
    ai = jnp.clip(jnp.round(a * 30), -127, 127).astype(jnp.int8)
    f32 = jax.jit(lambda a, b: a @ b)
    i8 = jax.jit(lambda a, b: jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32))
    jax.block_until_ready((f32(a, a), i8(ai, ai)))
    samples = interleaved_seconds({"f32": functools.partial(f32, a, a), "int8": functools.partial(i8, ai, ai)}, rounds)
    return {k: statistics.median(v) for k, v in samples.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    lines = [
        "## AQT int8 serving vs float32 (CPU)",
        "",
        "Written by `python -m tools.bench_int8_serving`. " + machine_line() + ".",
        "Multi-task ViT on 8x8 digits inputs (patch 2, 17 tokens), untrained weights, jitted forward of one batch;",
        "median of interleaved rounds (shuffled order, an untimed call before each timed one). `weights` = bytes of the parameter tree that serving holds (int4 at half a byte);",
        "`XLA args+temp` = the compiled forward's argument plus temporary buffers (`memory_analysis`).",
        "In W8A8 and W4A4 every Dense and both attention einsums (q.k, weights.v) are integer x integer matmuls;",
        "W8 weight-only dequantizes into float matmuls and keeps the attention einsums float.",
        "",
    ]
    for hidden, layers, batch in ((64, 4, 256), (256, 4, 256)):
        mc = model_config(hidden, layers)
        runs, x = build_variants(mc, batch)
        iters = 3 if hidden >= 256 else 10
        latency = time_interleaved(runs, x, args.rounds, iters)
        base = latency["float32"]
        lines += [f"**hidden {hidden}, mlp {4 * hidden}, {layers} blocks, batch {batch}**", "",
                  "| variant | latency ms / batch | vs float32 | weights KiB | vs float32 | XLA args+temp KiB |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, (_, _, nbytes, xla_bytes) in runs.items():
            lines.append(f"| {name} | {1e3 * latency[name]:.2f} | {base / latency[name]:.2f}x | {nbytes / 1024:.1f} | "
                         f"{runs['float32'][2] / nbytes:.2f}x | {xla_bytes / 1024:.0f} |")
        lines.append("")
    mm = bare_matmul(1024, args.rounds)
    lines += ["**bare 1024 x 1024 x 1024 matmul**: "
              f"f32 {1e3 * mm['f32']:.1f} ms, int8 x int8 -> int32 {1e3 * mm['int8']:.1f} ms "
              f"({mm['f32'] / mm['int8']:.2f}x).", "",
              f"1-minute load average on this shared machine: {load_before:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end; the ratios come from interleaved rounds of the same run.", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("int8_serving", text)


if __name__ == "__main__":
    main()
