"""The Pallas block-sparse attention kernel, run in interpret mode on CPU: against the XLA and masked paths, its
custom VJP (gradients of the XLA path) and the block-sparse path's choice between the kernel and the XLA path."""

import functools
import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import block_sparse_kernel as kernel
from effjax.models import block_sparse as bs
from effjax.models import sparse_attention as sa
from tests.foundation.helpers import REPO


@pytest.mark.parametrize("platform", ["gpu", "tpu"])  # the index layout of each backend, interpreted
@pytest.mark.parametrize("n,block,rho", [(64, 16, 0.25), (50, 16, 0.5), (97, 32, 0.3)])
def test_interpreted_kernel_equals_xla_and_masked_paths(n, block, rho, platform):
    keys = jax.random.split(jax.random.PRNGKey(n), 4)
    q, k, v = (jax.random.normal(key, (1, 2, n, 16)) for key in keys[:3])
    idx = bs.top_key_blocks(jax.random.normal(keys[3], (1, 2, n - 1, n)), rho, block)
    scale = 0.25
    out, cls_weights = jax.jit(lambda q, k, v, i: kernel.block_sparse_attention_pallas(
        q, k, v, i, scale, block, interpret=True, platform=platform))(q, k, v, idx)
    xla_out, _ = bs.block_sparse_attention(q, k, v, idx, scale, block)
    masked_out, masked_weights = sa.attention_with_mask(q, k, v, bs.block_connectivity_mask(idx, n, block), scale)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(masked_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(masked_weights[:, :, 0]), atol=1e-6)


def test_backend_choice():
    assert kernel.backend_path("tpu") == "pallas"
    assert kernel.backend_path("gpu") == "pallas"
    assert kernel.backend_path("cpu") == "xla"
    assert kernel.interpreted_here("gpu") and not kernel.interpreted_here(None)  # these tests run on CPU


def _inputs(n, block, rho, d=16, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed + n), 4)
    q, k, v = (jax.random.normal(key, (1, 2, n, d)) for key in keys[:3])
    return q, k, v, bs.top_key_blocks(jax.random.normal(keys[3], (1, 2, n - 1, n)), rho, block)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("n,block,rho", [(50, 16, 0.5), (64, 32, 0.5)])
def test_trainable_kernel_outputs_and_gradients_equal_the_xla_path(n, block, rho, platform):
    q, k, v, idx = _inputs(n, block, rho)
    scale = 0.3
    cotangent = jax.random.normal(jax.random.PRNGKey(7), q.shape)
    cls_cotangent = jax.random.normal(jax.random.PRNGKey(8), (1, 2, n))

    def loss(attention, q, k, v):
        out, cls_weights = attention(q, k, v, idx, scale, block)
        return jnp.sum(out * cotangent) + jnp.sum(cls_weights * cls_cotangent)

    trainable = functools.partial(kernel.block_sparse_attention_trainable, platform=platform, interpret=True)
    out, cls_weights = jax.jit(trainable, static_argnums=(4, 5))(q, k, v, idx, scale, block)
    xla_out, xla_cls_weights = bs.block_sparse_attention(q, k, v, idx, scale, block)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(xla_cls_weights), atol=1e-6)
    grads = jax.jit(jax.grad(functools.partial(loss, trainable), argnums=(0, 1, 2)))(q, k, v)
    xla_grads = jax.jit(jax.grad(functools.partial(loss, bs.block_sparse_attention), argnums=(0, 1, 2)))(q, k, v)
    for grad, xla_grad in zip(grads, xla_grads):
        assert float(jnp.abs(xla_grad).max()) > 0
        np.testing.assert_allclose(np.asarray(grad), np.asarray(xla_grad), atol=2e-5)


def test_kernel_supports():
    assert kernel.kernel_supports((2, 3, 197, 64), 4, 16, jnp.bfloat16, "gpu")
    assert not kernel.kernel_supports((2, 3, 197, 48), 4, 16, jnp.float32, "gpu")  # Triton: head width 2^k
    assert not kernel.kernel_supports((2, 3, 197, 8), 4, 16, jnp.float32, "gpu")  # Triton: dots at least 16 wide
    assert kernel.kernel_supports((2, 3, 197, 48), 4, 16, jnp.float32, "tpu")
    assert not kernel.kernel_supports((1024, 12, 197, 64), 4, 16, jnp.float32, "tpu")  # indices beyond SMEM
    assert not kernel.kernel_supports((1, 1, 16384, 128), 4, 64, jnp.float32, "tpu")  # keys beyond VMEM
    assert not kernel.kernel_supports((2, 3, 197, 64), 4, 24, jnp.float32, "gpu")  # not a block size
    assert not kernel.kernel_supports((2, 3, 197, 64), 14, 16, jnp.float32, "gpu")  # more blocks than there are
    assert not kernel.kernel_supports((2, 3, 197, 64), 4, 16, jnp.int8, "gpu")


def _int8_dot_general(lhs, rhs, dimension_numbers, precision=None):
    """Symmetric per-tensor int8 fake quantization of both operands, as a quantizing dot_general hook."""
    def quantize(x):
        step = jnp.abs(x).max() / 127
        return jnp.round(x / step) * step
    return jax.lax.dot_general(quantize(lhs), quantize(rhs), dimension_numbers, precision=precision)


def _runs_the_kernel(fn, *args) -> bool:
    return "pallas_call" in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_block_sparse_path_runs_the_kernel_on_accelerators_with_float_einsums(platform):
    n, block = 50, 16
    q, k, v, idx = _inputs(n, block, 0.5)
    scale = 0.25

    def attention(q, k, v):
        return sa.sparse_attention(q, k, v, idx, scale, "block_sparse", block=block, platform=platform)

    assert sa.uses_block_sparse_kernel(q, idx, block, platform=platform)
    assert _runs_the_kernel(attention, q, k, v)
    out, cls_weights, weights = jax.jit(attention)(q, k, v)
    xla_out, xla_cls_weights = bs.block_sparse_attention(q, k, v, idx, scale, block)
    assert weights is None
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(xla_cls_weights), atol=1e-6)
    grad = jax.grad(lambda q: jnp.sum(jnp.sin(attention(q, k, v)[0])))(q)
    xla_grad = jax.grad(lambda q: jnp.sum(jnp.sin(bs.block_sparse_attention(q, k, v, idx, scale, block)[0])))(q)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(xla_grad), atol=2e-5)


@pytest.mark.parametrize("case", ["quantized", "head_width", "cpu", "running_backend"])
def test_block_sparse_path_keeps_xla_for_quantized_einsums_unsupported_shapes_and_cpu(case):
    n, block = 50, 16
    q, k, v, idx = _inputs(n, block, 0.5, d=24 if case == "head_width" else 16)
    dots = (_int8_dot_general, _int8_dot_general) if case == "quantized" else sa.NO_DOT_GENERALS
    platform = {"cpu": "cpu", "running_backend": None}.get(case, "gpu")

    def attention(q, k, v):
        return sa.sparse_attention(q, k, v, idx, 0.25, "block_sparse", block=block, dot_generals=dots,
                                   platform=platform)[:2]

    assert not sa.uses_block_sparse_kernel(q, idx, block, dots, platform)
    assert not _runs_the_kernel(attention, q, k, v)
    xla = bs.block_sparse_attention(q, k, v, idx, 0.25, block, dot_generals=dots)
    for got, want in zip(attention(q, k, v), xla):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


_TPU_COMPILE = """
import jax, jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import SingleDeviceSharding
from effjax.models import block_sparse_kernel as kernel
from effjax.models import block_sparse as bs
topo = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2", chip_config_name="default",
                                    chips_per_host_bounds=(2, 2, 1), num_slices=1)
sh = SingleDeviceSharding(topo.devices[0])
n, block, d = 1024, 128, 64
nq, _ = bs.block_counts(n, block)
q = jax.ShapeDtypeStruct((1, 4, n, d), jnp.float32, sharding=sh)
idx = jax.ShapeDtypeStruct((1, 4, nq, bs.kept_block_count(0.25, n, block)), jnp.int32, sharding=sh)
f = jax.jit(lambda q, k, v, i: kernel.block_sparse_attention_pallas(q, k, v, i, 0.125, block, platform="tpu")[0])
text = f.lower(q, q, q, idx).compile().as_text()
print("COMPILED", topo.devices[0].device_kind, "tpu_custom_call" in text)
"""


@pytest.mark.slow  # a TPU compilation through libtpu: about a minute here
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install 'effjax[tpu]')")
def test_kernel_compiles_for_a_tpu_topology_with_mosaic():
    env = dict(os.environ, TPU_WORKER_HOSTNAMES="localhost", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run([sys.executable, "-c", _TPU_COMPILE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "COMPILED TPU v5 lite True" in proc.stdout


def _jaxpr_text(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("heads,expect_spec", [(4, (("data", "fsdp", "expert"), "tensor")),
                                              (3, (("data", "fsdp", "expert"), None))])
def test_kernel_runs_per_device_share_under_a_mesh(heads, expect_spec):
    """Inside a mesh (data 2 x tensor 2 x expert 2 of the 8 simulated devices, the default rules) the kernel runs
    under shard_map on each device's examples and heads (heads only where they divide), with the XLA path's
    outputs and gradients."""
    import flax.linen as nn
    from effjax.config.base import DEFAULT_LOGICAL_AXIS_RULES
    from effjax.train.mesh import rules_tuple

    n, block, scale = 50, 16, 0.25
    keys = jax.random.split(jax.random.PRNGKey(heads), 4)
    q, k, v = (jax.random.normal(key, (4, heads, n, 16)) for key in keys[:3])
    idx = bs.top_key_blocks(jax.random.normal(keys[3], (4, heads, n - 1, n)), 0.5, block)
    mesh = jax.make_mesh((2, 1, 2, 2), ("data", "fsdp", "tensor", "expert"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 4)  # as effjax.train.mesh builds it

    def loss(q, k, v):
        out, cls_weights, _ = sa.sparse_attention(q, k, v, idx, scale, "block_sparse", block=block, platform="gpu")
        return jnp.sum(jnp.sin(out)) + jnp.sum(cls_weights ** 2), (out, cls_weights)

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(DEFAULT_LOGICAL_AXIS_RULES)):
        spec = sa.kernel_shard_spec(q.shape)
        text = _jaxpr_text(loss, q, k, v)
        grads, (out, cls_weights) = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    assert sa.kernel_shard_spec(q.shape) is None  # outside the mesh: one call on the whole arrays
    assert tuple(spec) == expect_spec
    assert "shard_map" in text and "pallas_call" in text

    def xla_loss(q, k, v):
        out, cls_weights = bs.block_sparse_attention(q, k, v, idx, scale, block)
        return jnp.sum(jnp.sin(out)) + jnp.sum(cls_weights ** 2), (out, cls_weights)

    xla_grads, (xla_out, xla_cls) = jax.grad(xla_loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(xla_cls), atol=1e-6)
    for grad, xla_grad in zip(grads, xla_grads):
        np.testing.assert_allclose(np.asarray(grad), np.asarray(xla_grad), atol=2e-5)
