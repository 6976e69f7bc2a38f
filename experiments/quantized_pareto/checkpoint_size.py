"""Serving-checkpoint bytes on disk vs float32, with their breakdown, across model widths.

Issue 7 asks for a serving checkpoint "about 4x (int8) / 8x (int4) smaller than
float32". The bytes do not depend on the trained values, so this converts freshly
initialized `configs/qat_digits.py` models (4 blocks, mlp = 2 x width, decoder =
width; widths 64 to 768, ViT-B's width) and splits the serving bytes into integer weights (body / first+last
layers), float32 scales, float32 leftovers (biases, LayerNorms, class / position
tokens) and the JSON index.

  python -m experiments.quantized_pareto.checkpoint_size   # prints the README table
"""

from __future__ import annotations

import os
import tempfile

import flax
import jax
import jax.numpy as jnp
import numpy as np

from effjax.data.digits import TASKS
from effjax.quant import serving
from effjax.quant.aqt_config import QUANT_COLLECTION
from effjax.subnet import SubnetConfig
from experiments.quantized_pareto.run import load_config

IMAGE_SHAPE = (8, 8, 1)
WIDTHS = (64, 128, 256, 512, 768)  # 768: ViT-B's width (here with 4 blocks, not ViT-B's 12)
SUBNETS = {
    "int8": SubnetConfig(weight_bits=8, activation_bits=8, first_last_bits=8),
    "int4 (first/last 8)": SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=8),
    "int4 (all 4)": SubnetConfig(weight_bits=4, activation_bits=4, first_last_bits=4),
}


def breakdown(width: int, name: str) -> dict:
    mc = load_config("digits", f"bits=float,width={width}").model
    subnet = SUBNETS[name]
    q_model = serving.quantized_model(mc, TASKS, subnet)
    params = flax.linen.unbox(q_model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1,) + IMAGE_SHAPE))["params"])
    served = serving.convert(mc, TASKS, IMAGE_SHAPE, params, subnet)
    with tempfile.TemporaryDirectory() as d:
        float_bytes = serving.save_float_params(params, os.path.join(d, "float"))
        served_bytes = serving.save_serving(served, os.path.join(d, "serve"))
        json_bytes = os.path.getsize(os.path.join(d, "serve", serving.SERVING_METADATA))
    nbytes = lambda q: int(np.ceil(q.size * jnp.iinfo(q.dtype).bits / 8))  # noqa: E731 (int4 packed)
    ints = served.integer_leaves()
    frozen = flax.traverse_util.flatten_dict(serving._plain_aqt(served.variables[QUANT_COLLECTION]), sep="/")
    return {
        "width": width, "precision": name, "float_bytes": float_bytes, "serving_bytes": served_bytes,
        "body_int_bytes": sum(nbytes(q) for p, q in ints.items() if p.startswith("block")),
        "first_last_int_bytes": sum(nbytes(q) for p, q in ints.items() if not p.startswith("block")),
        "scale_bytes": sum(x.size * 4 for p, x in frozen.items() if p.endswith("/scale")),
        "float_leftover_bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(served.variables["params"])),
        "json_bytes": json_bytes,
    }


def main():
    print("| width | precision | float32 B | serving B | ratio | int body B | int first/last B | scales B "
          "| float leftovers B | JSON B | float share of serving |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for width in WIDTHS:
        for name in SUBNETS:
            r = breakdown(width, name)
            overhead = r["scale_bytes"] + r["float_leftover_bytes"] + r["json_bytes"]
            print(f"| {width} | {name} | {r['float_bytes']} | {r['serving_bytes']} | "
                  f"{r['float_bytes'] / r['serving_bytes']:.2f}x | {r['body_int_bytes']} | {r['first_last_int_bytes']} | "
                  f"{r['scale_bytes']} | {r['float_leftover_bytes']} | {r['json_bytes']} | "
                  f"{overhead / r['serving_bytes']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
