"""The Pallas block-sparse attention kernel, run in interpret mode on CPU, against the XLA path and the masked path."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from effjax.kernels import block_sparse_attention as kernel
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


_TPU_COMPILE = """
import jax, jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import SingleDeviceSharding
from effjax.kernels import block_sparse_attention as kernel
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
