"""Block-sparse attention: coarsened block selection, its token mask, and equality with the masked path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import block_sparse as bs
from effjax.models import sparse_attention as sa


def _qkv(n, seed=0, b=2, h=3, d=8):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(jax.random.normal(key, (b, h, n, d)) for key in keys)


def test_kept_block_count_is_ceil_rho_n_over_b_within_bounds():
    assert bs.kept_block_count(0.25, 1024, 64) == 4
    assert bs.kept_block_count(0.1, 1024, 64) == 2  # ceil(102.4 / 64)
    assert bs.kept_block_count(0.1, 257, 16) == 2  # ceil(25.7 / 16)
    assert bs.kept_block_count(1.0, 100, 128) == 1  # never more blocks than exist
    with pytest.raises(ValueError, match="keep_ratio"):
        bs.kept_block_count(0.0, 64, 16)
    with pytest.raises(ValueError, match="block"):
        bs.top_key_blocks(jnp.zeros((1, 1, 9, 10)), 0.5, 24)


def test_coarsened_scores_are_block_means_over_real_entries():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1, 2, 40, 41)).astype(np.float32)  # 41 tokens: rows 1..40, keys 0..40
    got = np.asarray(bs.coarsen_scores(jnp.asarray(scores), 16))
    assert got.shape == (1, 2, 3, 3)
    for i in range(3):
        for j in range(3):
            expected = scores[:, :, 16 * i:16 * (i + 1), 16 * j:16 * (j + 1)].mean((2, 3))
            np.testing.assert_allclose(got[:, :, i, j], expected, rtol=1e-5, atol=1e-6)


def test_top_key_blocks_pick_the_highest_block_means():
    scores = jnp.zeros((1, 1, 63, 64)).at[:, :, :, 32:48].set(5.0).at[:, :, 16:32, 0:16].set(9.0)
    idx = np.asarray(bs.top_key_blocks(scores, 0.25, 16))  # kb = ceil(16 / 16) = 1
    assert idx.shape == (1, 1, 4, 1)
    np.testing.assert_array_equal(idx[0, 0, :, 0], [2, 0, 2, 2])


@pytest.fixture(params=["one_gather", "backward_loop", "loop"])
def loop(request, monkeypatch):
    """Every way the block path runs, forced here at every size: one gather of all query blocks' key blocks
    differentiated by JAX (small gathers); one gather forward and, for the block sizes of `RECOMPUTED_BLOCK_SIZES`,
    the recomputing loop backward (past `BACKWARD_LOOP_ABOVE_BYTES`); a forward loop (past `LOOP_ABOVE_BYTES` too),
    whose backward is JAX's with each step rematerialized or, for those block sizes, the recomputing loop."""
    if request.param != "one_gather":
        monkeypatch.setattr(bs, "BACKWARD_LOOP_ABOVE_BYTES", 0)
    if request.param == "loop":
        monkeypatch.setattr(bs, "LOOP_ABOVE_BYTES", 0)
    return request.param


@pytest.mark.parametrize("n,block,rho", [(64, 16, 0.25), (50, 16, 0.3), (130, 32, 0.1), (97, 64, 0.5), (300, 128, 0.4),
                                         (200, 16, 0.2)])
def test_block_path_equals_masked_path_under_the_same_block_mask(n, block, rho, loop):
    q, k, v = _qkv(n, seed=n)
    scores = jax.random.normal(jax.random.PRNGKey(1), (2, 3, n - 1, n))
    idx = bs.top_key_blocks(scores, rho, block)
    mask = bs.block_connectivity_mask(idx, n, block)
    scale = 8 ** -0.5
    ref_out, ref_weights = jax.jit(sa.attention_with_mask, static_argnums=4)(q, k, v, mask, scale)
    out, cls_weights, full = jax.jit(sa.sparse_attention, static_argnums=(4, 5), static_argnames="block")(
        q, k, v, idx, scale, "block_sparse", block=block)
    assert full is None
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=2e-5)
    np.testing.assert_allclose(np.asarray(cls_weights), np.asarray(ref_weights[:, :, 0]), atol=1e-6)
    # every row keeps exactly the real keys of its query block's kb chosen key blocks
    real_keys = np.minimum(block, n - block * np.arange(-(-n // block)))
    expected = real_keys[np.asarray(idx)].sum(-1)  # [B, H, nq]
    kept = np.asarray(mask[:, :, 1:]).sum(-1)
    np.testing.assert_array_equal(kept, expected[:, :, np.arange(n - 1) // block])


@pytest.mark.parametrize("n,block", [(70, 16), (300, 64)])  # 5 query blocks: 2 loop steps of 4, the last padded
def test_block_path_gradients_equal_the_masked_path(n, block, loop):
    q, k, v = _qkv(n, seed=3)
    idx = bs.random_key_blocks(jax.random.PRNGKey(2), (2, 3), n, 0.3, block)
    mask = bs.block_connectivity_mask(idx, n, block)
    scale = 0.3

    def loss(fn, q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v)))

    masked = jax.grad(lambda q, k, v: loss(lambda *a: sa.attention_with_mask(*a, mask, scale)[0], q, k, v),
                      argnums=(0, 1, 2))
    blocked = jax.grad(lambda q, k, v: loss(lambda *a: bs.block_sparse_attention(*a, idx, scale, block)[0], q, k, v),
                       argnums=(0, 1, 2))
    forward = lambda q, k, v: bs.block_sparse_attention(q, k, v, idx, scale, block)[0]  # noqa: E731
    recomputed = loop == "backward_loop" and block in bs.RECOMPUTED_BLOCK_SIZES
    assert ("scan[" in str(jax.make_jaxpr(forward)(q, k, v))) == (loop == "loop")  # lax.map is a scan
    assert ("scan[" in str(jax.make_jaxpr(blocked)(q, k, v))) == (loop == "loop" or recomputed)
    for a, b in zip(jax.jit(blocked)(q, k, v), jax.jit(masked)(q, k, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)


def test_recomputing_backward_keeps_bfloat16_and_matches_float32(monkeypatch):
    monkeypatch.setattr(bs, "BACKWARD_LOOP_ABOVE_BYTES", 0)
    n, block = 90, 16
    q, k, v = _qkv(n, seed=4)
    idx = bs.random_key_blocks(jax.random.PRNGKey(5), (2, 3), n, 0.4, block)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(jnp.sin(bs.block_sparse_attention(q, k, v, idx, 0.35, block)[0])),
                            argnums=(0, 1, 2)))
    low = grad(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    for a, b in zip(low, grad(q, k, v)):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b), atol=0.1, rtol=0.05)


def test_full_selection_is_dense_attention():
    n, block = 48, 16
    q, k, v = _qkv(n, seed=5)
    idx = bs.top_key_blocks(jnp.zeros((2, 3, n - 1, n)), 1.0, block)
    out, _ = bs.block_sparse_attention(q, k, v, idx, 0.5, block)
    np.testing.assert_allclose(np.asarray(out), np.asarray(sa.dense_attention(q, k, v, 0.5)[0]), atol=2e-5)


def test_wrong_block_indices_shape_is_one_clear_error():
    q, k, v = _qkv(40)
    with pytest.raises(ValueError, match=r"block_indices shape"):
        bs.block_sparse_attention(q, k, v, jnp.zeros((2, 3, 2, 1), jnp.int32), 1.0, 16)
