"""The Pallas block-sparse attention kernel, run in interpret mode on CPU, against the XLA path and the masked path."""

import jax
import numpy as np
import pytest

from effjax.kernels import block_sparse_attention as kernel
from effjax.models import block_sparse as bs
from effjax.models import sparse_attention as sa


@pytest.mark.parametrize("n,block,rho", [(64, 16, 0.25), (50, 16, 0.5), (97, 32, 0.3)])
def test_interpreted_kernel_equals_xla_and_masked_paths(n, block, rho):
    keys = jax.random.split(jax.random.PRNGKey(n), 4)
    q, k, v = (jax.random.normal(key, (1, 2, n, 16)) for key in keys[:3])
    idx = bs.top_key_blocks(jax.random.normal(keys[3], (1, 2, n - 1, n)), rho, block)
    scale = 0.25
    out, cls_weights = jax.jit(lambda q, k, v, i: kernel.block_sparse_attention_pallas(
        q, k, v, i, scale, block, interpret=True))(q, k, v, idx)
    xla_out, xla_cls = bs.block_sparse_attention(q, k, v, idx, scale, block)
    masked_out, masked_weights = sa.attention_with_mask(q, k, v, bs.block_connectivity_mask(idx, n, block), scale)
    np.testing.assert_allclose(np.asarray(out), np.asarray(xla_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(masked_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(masked_weights[:, :, 0]), atol=1e-6)


def test_backend_choice():
    assert kernel.backend_path("tpu") == "pallas"
    assert kernel.backend_path("gpu") == "pallas"
    assert kernel.backend_path("cpu") == "xla"
