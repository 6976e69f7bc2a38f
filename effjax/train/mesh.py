"""Device mesh from the config, and the shardings derived from logical axis names.

Shardings follow the flax/MaxText recipe: `eval_shape` of the (boxed) train state
-> `nn.get_partition_spec` -> `nn.logical_to_mesh_sharding` with the config's
rules table. The batch sharding comes from the same table (`activation_batch`),
so data sharding and the batch rule cannot drift apart.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from effjax.config.base import MESH_AXES
from effjax.config.validate import ConfigError


class MeshError(ConfigError):
    """The mesh in the config does not fit the devices."""


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    for axis, size in zip(MESH_AXES, sizes):
        if size == 0 or size < -1:
            raise MeshError(f"config.mesh.{axis}={size}: must be a positive size or -1 (fill)")
    if sizes.count(-1) > 1:
        raise MeshError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise MeshError(
                f"config.mesh: fixed axes {dict(zip(MESH_AXES, sizes))} use {fixed} devices, which does not divide the {num_devices} available")
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshError(
            f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {fixed} devices but {num_devices} are available; set one axis to -1 to fill")
    return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices) if devices is not None else jax.devices()
    shape = mesh_shape(mesh_config, len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == jax.device_count():
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    if devices[0].platform == "cpu":
        return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)
    from jax.experimental import mesh_utils  # topology-aware order for accelerators (and AOT topologies)

    return Mesh(mesh_utils.create_device_mesh(shape, devices), MESH_AXES, axis_types=axis_types)


def rules_tuple(rules) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Sharding of every input array: batch axis over the data axes, the rest replicated."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes(("activation_batch",), rules_tuple(rules)))


def data_parallel_size(mesh: Mesh, rules) -> int:
    spec = batch_sharding(mesh, rules).spec[0]
    axes = (spec,) if isinstance(spec, str) else (spec or ())
    return math.prod(mesh.shape[a] for a in axes)


def tree_shardings(boxed_abstract_tree, mesh: Mesh, rules):
    specs = nn.get_partition_spec(boxed_abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules_tuple(rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
