"""Token pruning by class attention (EViT, Liang et al., ICLR 2022; as used with Sparsifiner, Wei et al., CVPR 2023).

After a pruning block only the class token and the ceil(ratio x patches) patch tokens the class
token attends to most (its attention row averaged over heads) go on. Dropped tokens keep their
last value and are written back in place before the final LayerNorm, so dense task heads still
see every patch. `positions` carry each kept token's index in the full sequence, which the
connectivity predictor needs to pick its rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def prune_tokens(x: jax.Array, positions: jax.Array, cls_weights: jax.Array, keep: int) -> tuple[jax.Array, jax.Array]:
    """Keep the class token and the `keep` patch tokens with the highest head-averaged class attention
    (`cls_weights` [B, H, n]); returns the kept tokens and their positions."""
    importance = cls_weights[:, :, 1:].mean(axis=1)  # [B, n-1]
    chosen = jnp.sort(jax.lax.top_k(jax.lax.stop_gradient(importance), keep)[1], axis=-1)
    patches = jnp.take_along_axis(x[:, 1:], chosen[..., None], axis=1)
    kept_positions = jnp.take_along_axis(positions[:, 1:], chosen, axis=1)
    return (jnp.concatenate([x[:, :1], patches], axis=1),
            jnp.concatenate([positions[:, :1], kept_positions], axis=1))


def restore_tokens(full: jax.Array, x: jax.Array, positions: jax.Array) -> jax.Array:
    """Write the current tokens back into the full sequence at their positions."""
    return full.at[jnp.arange(x.shape[0])[:, None], positions].set(x)
