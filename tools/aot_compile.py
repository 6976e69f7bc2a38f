"""Compile the real effjax train step for a TPU topology on a CPU machine (ahead of time).

Needs libtpu (`pip install 'effjax[tpu]'`); no TPU is used. Prints, per chip, the
memory of the arguments, outputs and temporaries from XLA's memory analysis, the
FLOPs estimate from its cost analysis, and whether the step fits the chip's HBM.

  python tools/aot_compile.py --config=configs/shapes_vit.py --topology=v5e:16x16 \
      --config.train.batch_size=1024
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# HBM per chip in GiB, by the generation prefix of the topology name.
HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}

_CONFIG = config_flags.DEFINE_config_file("config", None, "effjax config file[:variant].")
_TOPOLOGY = flags.DEFINE_string("topology", "v5e:2x2", "TPU topology, e.g. v5e:16x16 or v4:2x2x2.")
_CHIPS_PER_HOST = flags.DEFINE_string("chips_per_host", "2,2,1", "Chips per host bounds (x,y,z).")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 0.0, "Per-chip HBM in GiB; 0 looks it up from the topology name.")
_JSON = flags.DEFINE_string("json", "", "Also write the report to this JSON file.")


def compile_for_topology(config, topology: str, chips_per_host=(2, 2, 1), hbm_gib: float = 0.0) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax.experimental import topologies

    from effjax.train import mesh as mesh_lib, objectives
    from effjax.train.trainer import build

    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="default",
                                        chips_per_host_bounds=tuple(chips_per_host), num_slices=1)
    devices = topo.devices
    setup = build(config, devices)
    step = objectives.build_train_step(setup, config)
    replicated = mesh_lib.replicated(setup.mesh)
    h, w, c = setup.dataset.image_shape
    bs = config.train.batch_size
    batch = {"image": jax.ShapeDtypeStruct((bs, h, w, c), jnp.float32, sharding=setup.batch_sharding)}
    for t in setup.dataset.tasks:
        shape = (bs, h, w) if t.is_dense else (bs,)
        batch[t.name] = jax.ShapeDtypeStruct(shape, jnp.float32 if t.kind == "depth" else jnp.int32, sharding=setup.batch_sharding)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
    with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
        compiled = jax.jit(step, in_shardings=(setup.state_shardings, setup.batch_sharding, replicated),
                           out_shardings=(setup.state_shardings, replicated), donate_argnums=(0,)
                           ).lower(setup.abstract_state, batch, rng).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    generation = topology.split(":")[0]
    hbm = hbm_gib or HBM_GIB.get(generation, 0.0)
    arguments, outputs = mem.argument_size_in_bytes, mem.output_size_in_bytes
    temporaries, aliased = mem.temp_size_in_bytes, mem.alias_size_in_bytes
    peak = arguments + outputs - aliased + temporaries
    return {
        "topology": topology, "chips": len(devices), "device_kind": devices[0].device_kind,
        "mesh": dict(setup.mesh.shape), "global_batch": bs,
        "per_chip_bytes": {"arguments": arguments, "outputs": outputs, "aliased": aliased, "temporaries": temporaries,
                           "peak_estimate": peak},
        "hbm_bytes": int(hbm * 2**30), "fits": bool(hbm) and peak <= hbm * 2**30,
        "flops_per_chip": float(cost.get("flops", 0.0)),
    }


def _gib(x):
    return f"{x / 2**30:.3f} GiB"


def main(argv):
    del argv
    from effjax.config.validate import ConfigError

    if _CONFIG.value is None:
        print("aot_compile: error: --config is required", file=sys.stderr)
        return 2
    try:
        report = compile_for_topology(_CONFIG.value, _TOPOLOGY.value,
                                      [int(x) for x in _CHIPS_PER_HOST.value.split(",")], _HBM_GIB.value)
    except ConfigError as e:
        print(f"aot_compile: error: {e}", file=sys.stderr)
        return 2
    m = report["per_chip_bytes"]
    print(f"topology {report['topology']}: {report['chips']} x {report['device_kind']}, mesh {report['mesh']}, "
          f"global batch {report['global_batch']}")
    print(f"per chip: arguments {_gib(m['arguments'])}, outputs {_gib(m['outputs'])} (aliased {_gib(m['aliased'])}), "
          f"temporaries {_gib(m['temporaries'])}, peak ~{_gib(m['peak_estimate'])} of {_gib(report['hbm_bytes'])} HBM")
    print(f"XLA FLOPs estimate per chip per step: {report['flops_per_chip']:.4g}")
    verdict = "fits" if report["fits"] else "DOES NOT FIT"
    print(f"verdict: {verdict} ({_gib(m['peak_estimate'])} needed, {_gib(report['hbm_bytes'])} per chip)")
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["fits"] else 1


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
