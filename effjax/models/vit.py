"""Multi-task Vision Transformer: a shared pre-norm ViT encoder and one head per task.

Encoder (Dosovitskiy et al., 2021): non-overlapping patches -> linear embedding,
a class token, learned position embeddings, `num_layers` pre-norm blocks
(x + MHA(LN(x)); x + MLP(LN(x))) and a final LayerNorm.
Heads: an image-level task reads the class token through a small MLP decoder (or,
with `image_head="mean_pool"`, runs that MLP's hidden layer on every token and averages
before the output layer, so that decoder width acts on all tokens); a dense task
(segmentation, depth) decodes every patch token into its p x p pixels ("linear
unpatchify", as in SETR-naive/Segmenter-linear), so dense multi-task learning runs at
CPU scale. `decoder_blocks` > 0 puts that many task-specific encoder blocks between the
shared encoder and each head (a study option for the controllable-MTL experiments).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.specs import TaskSpec
from effjax.models.layers import Dense, DotGeneralProvider, LayerNorm, Mlp, MultiHeadAttention, constrain
from effjax.subnet import SubnetConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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


def embed_tokens(module: nn.Module, images: jax.Array, hidden_dim: int, patch_size: int, dtype,
                 dot_general_provider: Optional[DotGeneralProvider]) -> jax.Array:
    """Patch embedding, class token and learned positions, as parameters of `module`
    (`patch_embed`, `cls`, `pos_embedding`); call it from `module`'s compact `__call__`."""
    x = Dense(hidden_dim, ("patch", "embed"), "embed", dtype=dtype, dot_general_provider=dot_general_provider,
              name="patch_embed")(patchify(images.astype(dtype), patch_size))
    cls = module.param("cls", nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")), (1, 1, hidden_dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, hidden_dim)).astype(dtype), x], axis=1)
    pos = module.param("pos_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "position", "embed")),
                       (1, x.shape[1], hidden_dim))
    return constrain(x + pos.astype(dtype), ("activation_batch", "activation_length", "activation_embed"))


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, x):
        x = x + MultiHeadAttention(self.num_heads, self.dtype, self.dot_general_provider, name="attention")(
            LayerNorm(self.dtype, name="ln_attention")(x))
        x = x + Mlp(self.mlp_dim, self.dtype, self.dot_general_provider, name="mlp")(LayerNorm(self.dtype, name="ln_mlp")(x))
        return constrain(x, ("activation_batch", "activation_length", "activation_embed"))


IMAGE_HEADS = ("class_token", "mean_pool")


def check_image_head(image_head: str) -> str:
    if image_head not in IMAGE_HEADS:
        raise ValueError(f"image_head={image_head!r}: must be one of {IMAGE_HEADS}")
    return image_head


def check_decoder_blocks(decoder_blocks) -> int:
    if int(decoder_blocks) != decoder_blocks or decoder_blocks < 0:
        raise ValueError(f"decoder_blocks={decoder_blocks!r}: must be an integer >= 0")
    return int(decoder_blocks)


HEAD_DEFAULTS = {"image_head": "class_token", "decoder_blocks": 0}  # the task-head options of mt_vit / slim_vit


def head_fields(model_config) -> dict:
    """`image_head` and `decoder_blocks` of a model config, validated (defaults where absent)."""
    return dict(image_head=check_image_head(model_config.get("image_head", HEAD_DEFAULTS["image_head"])),
                decoder_blocks=check_decoder_blocks(model_config.get("decoder_blocks", HEAD_DEFAULTS["decoder_blocks"])))


def head_input(tokens: jax.Array, task: TaskSpec, image_head: str) -> jax.Array:
    """The tokens a task head reads: patch tokens (dense task), the class token, or all tokens (mean_pool)."""
    if task.is_dense:
        return tokens[:, 1:]
    return tokens if check_image_head(image_head) == "mean_pool" else tokens[:, 0]


def pool_hidden(hidden: jax.Array, task: TaskSpec, image_head: str) -> jax.Array:
    """Average the per-token hidden features of an image-level task under `mean_pool`."""
    return hidden.mean(axis=1) if not task.is_dense and image_head == "mean_pool" else hidden


class TaskHead(nn.Module):
    """[`num_blocks` task-specific encoder blocks on all tokens ->] LN -> Dense(decoder_dim) -> GELU ->
    Dense(outputs), per token or on the class token (image-level tasks under `mean_pool`: per token,
    averaged before the output layer)."""

    task: TaskSpec
    decoder_dim: int
    patch_size: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    image_head: str = "class_token"
    num_blocks: int = 0  # task decoder blocks (heads / MLP width below)
    block_heads: int = 0
    block_mlp: int = 0

    @nn.compact
    def __call__(self, tokens: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
        for j in range(self.num_blocks):
            tokens = EncoderBlock(self.block_heads, self.block_mlp, self.dtype, self.dot_general_provider,
                                  name=f"block{j}")(tokens)
        x = LayerNorm(self.dtype, name="ln")(head_input(tokens, self.task, self.image_head))
        x = nn.gelu(Dense(self.decoder_dim, ("embed", "decoder"), "head", dtype=self.dtype,
                          dot_general_provider=self.dot_general_provider, name="hidden")(x))
        x = pool_hidden(x, self.task, self.image_head)
        outputs = self.task.out_channels * (self.patch_size**2 if self.task.is_dense else 1)
        y = Dense(outputs, ("decoder", "classes"), "head", dtype=self.dtype,
                  dot_general_provider=self.dot_general_provider, name="out")(x)
        if self.task.is_dense:
            y = unpatchify(y, self.patch_size, *image_hw)
            if self.task.kind == "depth":
                y = y[..., 0] * self.task.value_std + self.task.value_mean
        return y.astype(jnp.float32)


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


class MultiTaskViT(MultiTaskFields):
    image_head: str = "class_token"  # how image-level heads read the tokens (IMAGE_HEADS)
    decoder_blocks: int = 0  # transformer blocks per task between the encoder and its head (num_heads, mlp_dim)

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None) -> dict[str, jax.Array]:
        """Predictions per task. The baseline reads no knob itself: a `subnet` may only set bits, which the
        dot_general provider (AQT) applies."""
        del train  # no dropout / batch statistics in this model
        if subnet is not None and subnet.without_bits() != SubnetConfig():
            raise ValueError(f"model mt_vit has no width/sparsity/MoE knobs; got {subnet}")
        _, h, w, _ = images.shape
        x = embed_tokens(self, images, self.hidden_dim, self.patch_size, self.dtype, self.dot_general_provider)
        for i in range(self.num_layers):
            x = EncoderBlock(self.num_heads, self.mlp_dim, self.dtype, self.dot_general_provider, name=f"block{i}")(x)
        x = LayerNorm(self.dtype, name="ln_final")(x)
        return {t.name: TaskHead(t, self.decoder_dim, self.patch_size, self.dtype, self.dot_general_provider,
                                 self.image_head, self.decoder_blocks, self.num_heads, self.mlp_dim,
                                 name=f"head_{t.name}")(x, (h, w)) for t in self.tasks}
