"""Slimmable multi-task ViT: a shared slimmable encoder and a slimmable decoder per task.

Efficient Controllable Multi-Task Architectures (Aich et al., ICCV 2023) train one
multi-task supernet whose subnet c = (encoder width, decoder width per task) is chosen
at inference. Here the subnet is a `SubnetConfig`: `encoder_width` slims the whole
encoder globally (attention heads with a fixed head size, hence the token width, and
the MLP hidden width); `decoder_widths` slims each task head's hidden width and, in a
model with `decoder_blocks` > 0, the heads and MLP width of that task's decoder blocks
(transformer blocks between the shared encoder and the head). Normalization is LayerNorm
over the active slice; with `private_norms` the encoder's LayerNorms keep one affine
(scale, bias) per menu width, the LayerNorm analogue of switchable BatchNorm. Integer
widths come from `effjax.compress.cost_slim.slim_widths`, the same rounding the cost
model prices.

The architecture is that of `effjax.models.vit.MultiTaskViT` (patch embedding, class
token, learned positions, pre-norm blocks, final LayerNorm; class-token heads for
image-level tasks, per-token "linear unpatchify" heads for dense tasks), with every
layer replaced by its slimmable version. At full width it computes exactly what
MultiTaskViT computes with the same weights.

Besides `__call__`, two methods expose the encoder/decoder split that the sandwich
step needs: `encode(images, encoder_width)` and `decode(tokens, task, decoder_width,
image_hw, active)`, where `active` (a traced channel count) lets a decoder read a
zero-padded encoder output as if it were sliced.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.data.specs import TaskSpec
from effjax.models.layers import DotGeneralProvider, constrain
from effjax.models.slimmable import SlimAttention, SlimDense, SlimLayerNorm, SlimMlp
from effjax.models.vit import (check_decoder_blocks, check_image_head, head_fields, head_input, patchify, pool_hidden,
                               unpatchify, vit_fields)
from effjax.subnet import SubnetConfig, decoder_width, encoder_widths, slim_widths

DEFAULT_WIDTH_MENU = (0.25, 0.5, 0.75, 1.0)


def check_width_menu(menu: Sequence[float]) -> tuple[float, ...]:
    menu = tuple(float(w) for w in menu)
    if not menu or any(not 0 < w <= 1 for w in menu) or len(set(menu)) != len(menu) or 1.0 not in menu:
        raise ValueError(f"width_menu={menu!r}: need distinct widths in (0, 1] including 1.0")
    return tuple(sorted(menu))


class SlimEmbedding(nn.Module):
    """Patch embedding + class token + learned positions, sliced to the active token width."""

    max_dim: int
    patch_size: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    @nn.compact
    def __call__(self, images: jax.Array, width: int) -> jax.Array:
        patches = patchify(images.astype(self.dtype), self.patch_size)
        x = SlimDense(patches.shape[-1], self.max_dim, ("patch", "embed"), "embed", dtype=self.dtype,
                      dot_general_provider=self.dot_general_provider, name="patch_embed")(patches, width)
        cls = self.param("cls", nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
                         (1, 1, self.max_dim))[..., :width]
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, width)).astype(self.dtype), x], axis=1)
        pos = self.param("pos_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "position", "embed")),
                         (1, x.shape[1], self.max_dim))[..., :width]
        return constrain(x + pos.astype(self.dtype), ("activation_batch", "activation_length", "activation_embed"))


class SlimEncoderBlock(nn.Module):
    max_dim: int
    max_heads: int
    max_mlp: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    num_widths: int = 0  # > 0: private LayerNorm affine per menu width (`width_index` picks the row)

    @nn.compact
    def __call__(self, x: jax.Array, heads: int, mlp: int, active: Optional[jax.Array] = None,
                 width_index: Optional[int] = None) -> jax.Array:
        """`active`: only the first `active` channels of `x` are real (zero padding after them); the
        block normalizes over those and keeps the padding at zero."""
        keep = None if active is None else (jnp.arange(x.shape[-1]) < active).astype(x.dtype)
        masked = (lambda y: y) if keep is None else (lambda y: y * keep)  # noqa: E731
        attention = SlimAttention(self.max_dim, self.max_heads, self.max_dim // self.max_heads, self.dtype,
                                  self.dot_general_provider, name="attention")
        norm = lambda name: SlimLayerNorm(self.max_dim, self.dtype, num_widths=self.num_widths, name=name)  # noqa: E731
        x = x + masked(attention(norm("ln_attention")(x, active, width_index), heads))
        x = x + masked(SlimMlp(self.max_dim, self.max_mlp, self.dtype, self.dot_general_provider, name="mlp")(
            norm("ln_mlp")(x, active, width_index), mlp))
        return constrain(x, ("activation_batch", "activation_length", "activation_embed"))


class SlimTaskHead(nn.Module):
    """[task decoder blocks on all tokens ->] LN -> Dense(decoder width) -> GELU -> Dense(outputs), per token
    (dense tasks) or on the class token (image-level tasks under `mean_pool`: per token, averaged before the
    output layer)."""

    task: TaskSpec
    max_in: int
    max_decoder: int
    patch_size: int
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    image_head: str = "class_token"
    num_blocks: int = 0  # task decoder blocks before the head (max heads / MLP width below)
    max_heads: int = 0
    max_mlp: int = 0

    @nn.compact
    def __call__(self, tokens: jax.Array, hidden: int, image_hw: tuple[int, int],
                 active: Optional[jax.Array] = None, block_heads: int = 0, block_mlp: int = 0) -> jax.Array:
        for j in range(self.num_blocks):
            tokens = SlimEncoderBlock(self.max_in, self.max_heads, self.max_mlp, self.dtype, self.dot_general_provider,
                                      name=f"block{j}")(tokens, block_heads, block_mlp, active)
        x = SlimLayerNorm(self.max_in, self.dtype, name="ln")(head_input(tokens, self.task, self.image_head), active)
        x = nn.gelu(SlimDense(self.max_in, self.max_decoder, ("embed", "decoder"), "head", dtype=self.dtype,
                              dot_general_provider=self.dot_general_provider, name="hidden")(x, hidden))
        x = pool_hidden(x, self.task, self.image_head)
        outputs = self.task.out_channels * (self.patch_size**2 if self.task.is_dense else 1)
        y = SlimDense(self.max_decoder, outputs, ("decoder", "classes"), "head", dtype=self.dtype,
                      dot_general_provider=self.dot_general_provider, name="out")(x)
        if self.task.is_dense:
            y = unpatchify(y, self.patch_size, *image_hw)
            if self.task.kind == "depth":  # heads predict normalized depth, as MultiTaskViT
                y = y[..., 0] * self.task.value_std + self.task.value_mean
        return y.astype(jnp.float32)


class SlimMultiTaskViT(nn.Module):
    tasks: Sequence[TaskSpec]
    patch_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    decoder_dim: int
    width_menu: Sequence[float] = DEFAULT_WIDTH_MENU  # widths the sandwich step samples and the controller picks from
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None
    image_head: str = "class_token"  # how image-level heads read the tokens (vit.IMAGE_HEADS)
    decoder_blocks: int = 0  # slimmable transformer blocks per task before its head, slimmed by the decoder width
    private_norms: bool = False  # encoder LayerNorms keep one affine (scale, bias) per menu width

    def setup(self):
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads}: must divide hidden_dim={self.hidden_dim}")
        check_width_menu(self.width_menu)
        check_image_head(self.image_head)
        check_decoder_blocks(self.decoder_blocks)
        self.embedding = SlimEmbedding(self.hidden_dim, self.patch_size, self.dtype, self.dot_general_provider)
        self.blocks = self.make_blocks()
        self.ln_final = SlimLayerNorm(self.hidden_dim, self.dtype, num_widths=self.norm_widths)
        self.heads = {t.name: SlimTaskHead(t, self.hidden_dim, self.decoder_dim, self.patch_size, self.dtype,
                                           self.dot_general_provider, self.image_head, self.decoder_blocks,
                                           self.num_heads, self.mlp_dim) for t in self.tasks}

    def make_blocks(self) -> list[nn.Module]:
        """The encoder blocks (called in `setup`; subclasses swap the block type here)."""
        return [SlimEncoderBlock(self.hidden_dim, self.num_heads, self.mlp_dim, self.dtype, self.dot_general_provider,
                                 self.norm_widths) for _ in range(self.num_layers)]

    @property
    def norm_widths(self) -> int:
        """Rows of the encoder LayerNorms' affine parameters: the menu size with private norms, else 0 (shared)."""
        return len(self.width_menu) if self.private_norms else 0

    def width_index(self, encoder_width: float) -> Optional[int]:
        """The private-norm row of an encoder width (None with shared norms)."""
        if not self.private_norms:
            return None
        menu = sorted(float(w) for w in self.width_menu)
        if float(encoder_width) not in menu:
            raise ValueError(f"encoder_width={encoder_width!r}: private norms exist only for the menu widths {menu}")
        return menu.index(float(encoder_width))

    def encode(self, images: jax.Array, encoder_width: float = 1.0) -> jax.Array:
        """Encoder output tokens [B, N, d(encoder_width)] after the final LayerNorm."""
        heads, hidden, mlp = encoder_widths(self.hidden_dim, self.num_heads, self.mlp_dim, encoder_width)
        x = self.embedding(images, hidden)
        row = self.width_index(encoder_width)
        for block in self.blocks:
            x = block(x, heads, mlp, None, row)
        return self.ln_final(x, None, row)

    def decode(self, tokens: jax.Array, task: str, width: float, image_hw: tuple[int, int],
               active: Optional[jax.Array] = None) -> jax.Array:
        """Task `task`'s prediction from encoder tokens at decoder width multiplier `width`.

        `active`: when given, only the first `active` channels of `tokens` are real (the
        rest are zero padding), and the head's LayerNorm normalizes over those.
        """
        if task not in self.heads:
            raise ValueError(f"task={task!r}: unknown; tasks: {[t.name for t in self.tasks]}")
        block_heads, _, block_mlp = encoder_widths(self.hidden_dim, self.num_heads, self.mlp_dim, width)
        return self.heads[task](tokens, decoder_width(self.decoder_dim, width), image_hw, active, block_heads, block_mlp)

    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None,
                 return_features: bool = False):
        """Predictions per task of the subnet `subnet` (default: full width); with
        `return_features`, also the encoder output tokens."""
        del train  # no dropout / batch statistics in this model
        subnet = subnet or SubnetConfig()
        slim_widths(self, self.tasks, subnet)  # validates the knobs and task names
        tokens = self.encode(images, subnet.encoder_width)
        hw = images.shape[1:3]
        preds = {t.name: self.decode(tokens, t.name, subnet.decoder_width(t.name), hw) for t in self.tasks}
        return (preds, tokens) if return_features else preds


def build(model_config, tasks, dot_general_provider=None) -> SlimMultiTaskViT:
    """The registry's builder (`config.model.name = "slim_vit"`); `config.model.width_menu` is optional."""
    return SlimMultiTaskViT(
        **vit_fields(model_config, tasks, dot_general_provider),
        width_menu=check_width_menu(model_config.get("width_menu", DEFAULT_WIDTH_MENU)),
        **head_fields(model_config),
        private_norms=bool(model_config.get("private_norms", False)),
    )
