"""What every multi-task ViT shares: its constructor fields and the token <-> pixel helpers of its heads.

The network itself (Dosovitskiy et al., 2021, with one head per task) is
`effjax.models.elastic_vit.ElasticViT`; the Sparsifiner and M3ViT variants reuse its parts.
Heads: an image-level task reads the class token (or, with `image_head="mean_pool"`, averages
per-token hidden features); a dense task (segmentation, depth) decodes every patch token into
its p x p pixels ("linear unpatchify", as in SETR-naive / Segmenter-linear).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.specs import TaskSpec
from effjax.models.layers import DotGeneralProvider

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def config_reader(model_config):
    """`read(key, default)` of a `config.model` given as a ConfigDict (or dict) or as an object with attributes."""
    return model_config.get if hasattr(model_config, "get") else (lambda k, d: getattr(model_config, k, d))


def vit_fields(model_config, tasks, dot_general_provider=None) -> dict:
    """The constructor fields every multi-task ViT family shares, from `config.model`."""
    return dict(tasks=tuple(tasks), patch_size=model_config.patch_size, hidden_dim=model_config.hidden_dim,
                num_layers=model_config.num_layers, num_heads=model_config.num_heads, mlp_dim=model_config.mlp_dim,
                decoder_dim=model_config.decoder_dim, dtype=DTYPES[model_config.dtype],
                dot_general_provider=dot_general_provider)


def patchify(images: jax.Array, patch: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: jax.Array, patch: int, height: int, width: int) -> jax.Array:
    """[B, (H/p)*(W/p), p*p*C] -> [B, H, W, C]."""
    b, _, d = tokens.shape
    c = d // (patch * patch)
    x = tokens.reshape(b, height // patch, width // patch, patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


IMAGE_HEADS = ("class_token", "mean_pool")


def check_image_head(image_head: str) -> str:
    if image_head not in IMAGE_HEADS:
        raise ValueError(f"image_head={image_head!r}: must be one of {IMAGE_HEADS}")
    return image_head


def check_decoder_blocks(decoder_blocks) -> int:
    if int(decoder_blocks) != decoder_blocks or decoder_blocks < 0:
        raise ValueError(f"decoder_blocks={decoder_blocks!r}: must be an integer >= 0")
    return int(decoder_blocks)


class MultiTaskFields(nn.Module):
    """The constructor fields every multi-task ViT shares (`vit_fields` fills them from `config.model`)."""

    tasks: Sequence[TaskSpec]
    patch_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    decoder_dim: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
