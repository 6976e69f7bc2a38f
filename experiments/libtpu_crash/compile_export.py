"""Compiles a gzipped `jax.export` artifact for a TPU topology with libtpu on a CPU host; needs only JAX and libtpu.

    TPU_WORKER_HOSTNAMES=localhost python -m experiments.libtpu_crash.compile_export \
        --artifact=experiments/libtpu_crash/sandwich_step_no_barrier.jax_export.gz

Prints `compiled` and the temporaries' size on success; libtpu 0.0.42.1 kills the process with SIGSEGV (exit
status 139) on most compiles of the no-barrier artifact.
"""

from __future__ import annotations

import argparse
import gzip

import jax
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh


def load(path: str) -> jax.export.Exported:
    with gzip.open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))


def compile_exported(exported: jax.export.Exported, topology: str):
    topo = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="default",
                                        chips_per_host_bounds=(2, 2, 1), num_slices=1)
    exported_mesh = next(s.mesh for s in exported._in_named_shardings if s is not None)
    mesh = Mesh(np.array(topo.devices[:exported.nr_devices]).reshape(exported_mesh.axis_sizes),
                exported_mesh.axis_names)
    in_shardings, out_shardings = exported.in_shardings_jax(mesh), exported.out_shardings_jax(mesh)
    args = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s) for a, s in zip(exported.in_avals, in_shardings)]

    def call(*xs):
        positional, keywords = jax.tree.unflatten(exported.in_tree, xs)
        return jax.tree.leaves(exported.call(*positional, **keywords))

    return jax.jit(call, in_shardings=in_shardings, out_shardings=list(out_shardings)).lower(*args).compile()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True, help="a gzipped jax.export artifact")
    parser.add_argument("--topology", default="v5e:2x2", help="TPU topology it was exported for")
    args = parser.parse_args()
    compiled = compile_exported(load(args.artifact), args.topology)
    print(f"compiled: temporaries {compiled.memory_analysis().temp_size_in_bytes / 2**20:.1f} MiB per chip")


if __name__ == "__main__":
    main()
