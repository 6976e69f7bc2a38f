"""Writes the toy supernet's sandwich train step, lowered for TPU v5e:2x2, as a serialized `jax.export` artifact.

The artifact is the reproducer of a libtpu 0.0.42.1 segfault for an upstream report: compiling it needs only
JAX and libtpu (`compile_export.py`), not effjax. `--no_barrier` lowers the connectivity predictor without its
TPU-only optimization barrier (`effjax.models.sparse_attention._kept_apart`), which is the program that crashes.
Run from the repository root with libtpu importable:

    python -m experiments.libtpu_crash.export_step --out=/tmp/step.jax_export.gz --no_barrier
"""

from __future__ import annotations

import argparse
import gzip

import flax.linen as nn
import jax
from jax.experimental import topologies

from effjax.config.load import load_config
from effjax.models import sparse_attention
from effjax.train import mesh as mesh_lib
from effjax.train import objectives
from effjax.train.setup import build
from tools.aot_compile import abstract_step_inputs

TOPOLOGY = "v5e:2x2"
# 4 examples per chip, parameters sharded over 4 chips: the smallest setting found to crash
OVERRIDES = {"train.batch_size": 16, "mesh.data": 1, "mesh.fsdp": 4}


def export_step(barrier: bool) -> jax.export.Exported:
    config = load_config("configs/supernet.py:shapes")
    for path, value in OVERRIDES.items():
        section, field = path.split(".")
        config[section][field] = value
    topo = topologies.get_topology_desc(platform="tpu", topology_name=TOPOLOGY, chip_config_name="default",
                                        chips_per_host_bounds=(2, 2, 1), num_slices=1)
    setup = build(config, topo.devices)
    replicated = mesh_lib.replicated(setup.mesh)
    batch, rng = abstract_step_inputs(setup, config.train.batch_size)
    leaves, treedef = jax.tree.flatten((setup.abstract_state, batch, rng))
    step = objectives.build_train_step(setup, config)

    def flat_step(*xs):  # flat arguments and results: the artifact carries no effjax or optax pytree types
        return jax.tree.leaves(step(*jax.tree.unflatten(treedef, xs)))

    state_leaves = len(jax.tree.leaves(setup.abstract_state))
    metrics = jax.eval_shape(flat_step, *leaves)[state_leaves:]
    in_shardings = jax.tree.leaves(setup.state_shardings) + [setup.batch_sharding] * len(batch) + [replicated]
    out_shardings = jax.tree.leaves(setup.state_shardings) + [replicated] * len(metrics)
    kept_apart = sparse_attention._kept_apart
    if not barrier:
        sparse_attention._kept_apart = lambda q, k: (q, k)
    try:
        with jax.set_mesh(setup.mesh), nn.logical_axis_rules(setup.rules):
            jitted = jax.jit(flat_step, in_shardings=in_shardings, out_shardings=out_shardings,
                             donate_argnums=tuple(range(state_leaves)))
            return jax.export.export(jitted, platforms=("tpu",))(*leaves)
    finally:
        sparse_attention._kept_apart = kept_apart


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the gzipped artifact")
    parser.add_argument("--no_barrier", action="store_true", help="lower the predictor without its TPU barrier")
    args = parser.parse_args()
    exported = export_step(barrier=not args.no_barrier)
    with gzip.open(args.out, "wb", compresslevel=9) as f:
        f.write(exported.serialize())
    print(f"wrote {args.out}: {len(exported.in_avals)} inputs, {exported.nr_devices} devices, "
          f"platforms {exported.platforms}")


if __name__ == "__main__":
    main()
