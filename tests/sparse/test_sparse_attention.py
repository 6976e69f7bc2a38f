"""Sparsifiner attention paths and connectivity predictor (effjax.models.sparse_attention)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import sparse_attention as sa
from effjax.subnet import kept_key_count


def _qkv(seed, b=2, h=3, n=11, d=8):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return [jax.random.normal(k, (b, h, n, d)) for k in keys]


@pytest.mark.parametrize("n, keep", [(11, 1), (11, 4), (17, 9), (11, 11)])
def test_masked_and_gathered_paths_give_the_same_outputs(n, keep):
    q, k, v = _qkv(n * 7 + keep, n=n)
    idx = sa.random_key_indices(jax.random.PRNGKey(keep), (2, 3, n - 1, n), keep / n)
    assert idx.shape == (2, 3, n - 1, keep)
    masked, masked_cls, weights = sa.sparse_attention(q, k, v, idx, 0.35, "masked")
    gathered, gathered_cls, none = sa.sparse_attention(q, k, v, idx, 0.35, "gathered")
    assert none is None
    np.testing.assert_allclose(masked, gathered, atol=2e-6)
    np.testing.assert_allclose(masked_cls, gathered_cls, atol=2e-6)
    # exactly `keep` keys per non-class row, the class row dense
    nonzero = np.asarray(weights > 0).sum(-1)
    assert (nonzero[:, :, 0] == n).all() and (nonzero[:, :, 1:] == keep).all()


def test_keeping_every_key_is_dense_attention():
    q, k, v = _qkv(1)
    idx = jnp.broadcast_to(jnp.arange(11), (2, 3, 10, 11))
    dense, _ = sa.dense_attention(q, k, v, 0.35)
    for path in sa.ATTENTION_PATHS:
        np.testing.assert_allclose(sa.sparse_attention(q, k, v, idx, 0.35, path)[0], dense, atol=2e-6)


def test_a_fully_masked_row_gives_zeros_not_nan():
    q, k, v = _qkv(2)
    mask = jnp.ones((2, 3, 11, 11), bool).at[0, 1, 4].set(False)
    out, weights = sa.attention_with_mask(q, k, v, mask, 0.35)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_array_equal(out[0, 1, 4], 0.0)
    np.testing.assert_array_equal(weights[0, 1, 4], 0.0)
    grad = jax.grad(lambda q: sa.attention_with_mask(q, k, v, mask, 0.35)[0].sum())(q)
    assert np.isfinite(np.asarray(grad)).all()


def test_the_mask_carries_no_gradient_and_attention_gradients_are_finite():
    q, k, v = _qkv(3)
    scores = jax.random.normal(jax.random.PRNGKey(9), (2, 3, 10, 11))

    def loss(scores, q):
        return sa.sparse_attention(q, k, v, sa.top_key_indices(scores, 4), 0.35, "masked")[0].sum()

    g_scores, g_q = jax.grad(loss, argnums=(0, 1))(scores, q)
    np.testing.assert_array_equal(g_scores, 0.0)
    assert np.isfinite(np.asarray(g_q)).all() and np.abs(np.asarray(g_q)).sum() > 0


def test_invalid_path_is_a_one_line_error():
    q, k, v = _qkv(4)
    with pytest.raises(ValueError, match="path='sparse'"):
        sa.sparse_attention(q, k, v, None, 0.35, "sparse")


@pytest.mark.parametrize("rho, n, expected", [(0.25, 65, 17), (0.2, 17, 4), (1.0, 17, 17), (0.01, 17, 1), (0.5, 10, 5)])
def test_kept_key_count_is_ceil_rho_n(rho, n, expected):
    assert kept_key_count(rho, n) == expected


def _predictor(b=2, h=4, n=17, d=8):
    """A small connectivity predictor with its parameters, q, k and positions 0..n-1."""
    predictor = sa.ConnectivityPredictor(num_heads=h, num_tokens=n, reduced_channels=4, token_rank=4,
                                         basis_coefficients=2, basis_threshold=0.02)
    q, k, _ = _qkv(5, b, h, n, d)
    positions = jnp.broadcast_to(jnp.arange(n), (b, n))
    return predictor, predictor.init(jax.random.PRNGKey(0), q, k, positions, reconstruct=True), q, k, positions


def test_predictor_shapes_sparse_map_and_mask():
    b, h, n = 2, 4, 17
    predictor, params, q, k, positions = _predictor(b, h, n)
    full = predictor.apply(params, q, k, positions, reconstruct=True)
    sparse = predictor.apply(params, q, k, positions)
    assert full.shape == sparse.shape == (b, h, n - 1, n)
    assert not np.allclose(full, sparse)  # top-2 of 4 coefficients and the thresholded basis differ from C B
    idx = sa.predicted_key_indices(sparse, 0.25)
    assert idx.shape == (b, h, n - 1, 5)
    mask = sa.connectivity_mask(idx, n)
    assert mask[:, :, 0].all() and (np.asarray(mask[:, :, 1:]).sum(-1) == 5).all()
    # after token pruning the predictor reads its projections at the kept positions
    kept = jnp.array([[0, 2, 3, 5, 8, 9, 13], [0, 1, 4, 6, 7, 10, 16]])
    out = predictor.apply(params, q[:, :, :7], k[:, :, :7], kept)
    assert out.shape == (b, h, 6, 7) and np.isfinite(np.asarray(out)).all()


def test_predictor_keeps_its_channel_reductions_apart_from_the_coefficient_dot_on_tpu_only():
    """The optimization barrier that keeps libtpu 0.0.42.1 from fusing the predictor's small dots into one nested
    convolution fusion (which it crashes emitting; tests/scale/test_aot_compile.py compiles the real step where
    libtpu is installed) is lowered for TPU, and only there: both reductions go through it."""
    b, h, n = 2, 4, 17
    predictor, params, q, k, positions = _predictor(b, h, n)
    traced = jax.jit(lambda p: predictor.apply(p, q, k, positions)).trace(params)
    barriers = {platform: re.findall(r"stablehlo.optimization_barrier .*? : (.*)",
                                     traced.lower(lowering_platforms=(platform,)).as_text())
                for platform in ("tpu", "cpu", "cuda")}
    assert barriers["cpu"] == barriers["cuda"] == []
    assert len(barriers["tpu"]) == 1
    assert barriers["tpu"][0].count(f"tensor<{b}x{h}x{n - 1}x4xf32>") == 1  # q_red [B, H, n-1, c]
    assert barriers["tpu"][0].count(f"tensor<{b}x{h}x4x4xf32>") == 1  # k_low [B, H, M, c]


def test_query_blocks_do_not_change_the_gathered_outputs():
    q, k, v = _qkv(6, n=17)
    idx = sa.random_key_indices(jax.random.PRNGKey(3), (2, 3, 16, 17), 0.3)
    whole, cls = sa.gathered_attention(q, k, v, idx, 0.35)
    blocked, cls_blocked = jax.jit(lambda q, k, v, i: sa.gathered_attention(q, k, v, i, 0.35, query_block=5))(q, k, v, idx)
    np.testing.assert_allclose(blocked, whole, atol=2e-6)
    np.testing.assert_allclose(cls_blocked, cls, atol=2e-6)
