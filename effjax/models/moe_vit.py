"""Multi-task MoE ViT with task-conditioned routing (M3ViT, Liang et al., NeurIPS 2022).

The dense multi-task ViT (the elastic model's parts at full width: `elastic_vit.Embedding`,
`Block`, `Attention`, `TaskHead`) with the MLP of every other block (blocks 1, 3, ... by
default) replaced by a `MoeMlp`; a thin variant of the elastic model because the per-task
passes below do not fit its single encoder pass. With `task_routing="per_task"` each MoE
layer owns one router per task (M3ViT Sec. 3.2): the encoder runs once per task,
routed for that task, and each task's head reads its own pass; the dense blocks
before the first MoE block and that block's attention are shared by all passes
and computed once. Training runs
every task's pass in one step (the losses are summed, one update), so the generic
multi-task train step works unchanged. `task="name"` at call time runs one pass and
one head: single-task inference activates only that task's experts.
`task_routing="shared"` is one router for all tasks (one encoder pass).

Knobs read from the SubnetConfig at call time: `moe_top_p` > 0 routes top-p;
`moe_top_k` > 0 routes top-k with that k; with both 0 the model's defaults apply
(`top_p` if > 0, else `top_k`). Auxiliary losses are sown by the
MoE layers; routing statistics go to `MOE_STATS_COLLECTION` when it is mutable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from effjax.config.base import base_config
from effjax.models.elastic_vit import Attention, Block, Embedding, TaskHead
from effjax.models.layers import DotGeneralProvider, LayerNorm, constrain
from effjax.models.moe import DISPATCH_METHODS, MoeMlp
from effjax.models.vit import MultiTaskFields, config_reader, vit_fields
from effjax.subnet import SubnetConfig, moe_block_indices

TASK_ROUTING = ("per_task", "shared")
_MOE_KNOBS = ("moe_top_k", "moe_top_p")
_MODEL = base_config().model


class MoeEncoderBlock(nn.Module):
    """Pre-norm block x + MHA(LN(x)); x + MoE(LN(x)); `moe` is an unbound MoeMlp that the block adopts.

    `attend` and `mix` are the two halves, so the task passes can share the attention
    half of the first MoE block (its input is the same for every task).
    """

    hidden_dim: int
    num_heads: int
    moe: MoeMlp
    dtype: Any = jnp.float32
    dot_general_provider: Optional[DotGeneralProvider] = None

    def setup(self):
        self.attention = Attention(self.hidden_dim, self.num_heads, self.hidden_dim // self.num_heads, dtype=self.dtype,
                                   dot_general_provider=self.dot_general_provider)
        self.ln_attention = LayerNorm(self.dtype)
        self.ln_mlp = LayerNorm(self.dtype)

    def attend(self, x):
        return x + self.attention(self.ln_attention(x))

    def mix(self, x, router_index: int, top_k: int, top_p: float):
        x = x + self.moe(self.ln_mlp(x), router_index, top_k, top_p)
        return constrain(x, ("activation_batch", "activation_length", "activation_embed"))

    def __call__(self, x, router_index: int, top_k: int, top_p: float):
        return self.mix(self.attend(x), router_index, top_k, top_p)


class MoeMultiTaskViT(MultiTaskFields):  # the fields' meanings and defaults: effjax/config/base.py, `model.*`
    num_experts: int = _MODEL.num_experts
    expert_dim: int = _MODEL.expert_dim
    moe_every: int = _MODEL.moe_every
    top_k: int = _MODEL.top_k
    top_p: float = _MODEL.top_p
    capacity_factor: float = _MODEL.capacity_factor
    dispatch: str = _MODEL.dispatch
    task_routing: str = _MODEL.task_routing
    renormalize_gates: bool = _MODEL.renormalize_gates
    balance_weight: float = _MODEL.balance_weight
    z_loss_weight: float = _MODEL.z_loss_weight
    entropy_weight: float = _MODEL.entropy_weight
    router_groups: Optional[tuple[tuple[int, ...], ...]] = None  # None or per MoE layer (`model.router_groups`)

    def _check(self, subnet: SubnetConfig, task: Optional[str]):
        names = [t.name for t in self.tasks]
        if task is not None and task not in names:
            raise ValueError(f"task={task!r}: unknown task; allowed: {names}")
        if self.task_routing not in TASK_ROUTING:
            raise ValueError(f"task_routing={self.task_routing!r}: allowed: {list(TASK_ROUTING)}")
        if self.dispatch not in DISPATCH_METHODS:
            raise ValueError(f"dispatch={self.dispatch!r}: allowed: {list(DISPATCH_METHODS)}")
        if self.moe_every < 1:
            raise ValueError(f"moe_every={self.moe_every}: must be >= 1")
        changed = sorted(subnet.non_default(_MOE_KNOBS))
        if changed:
            raise ValueError(f"model moe_vit owns only the knobs {list(_MOE_KNOBS)}; got non-default {changed}")
        moe_layers = moe_block_indices(self.num_layers, self.moe_every)
        if self.router_groups is not None and len(self.router_groups) != len(moe_layers):
            raise ValueError(f"router_groups has {len(self.router_groups)} entries; the model has {len(moe_layers)} MoE layers")

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, subnet: Optional[SubnetConfig] = None,
                 task: Optional[str] = None) -> dict[str, jax.Array]:
        """Predictions per task, or only `task`'s when given (single-task inference)."""
        del train  # no dropout / batch statistics in this model
        subnet = subnet or SubnetConfig()
        self._check(subnet, task)
        _, h, w, _ = images.shape
        x = Embedding(self.hidden_dim, self.patch_size, self.dtype, self.dot_general_provider, name="embedding")(
            images, self.hidden_dim)

        moe_layers = moe_block_indices(self.num_layers, self.moe_every)
        blocks = []
        for i in range(self.num_layers):
            if i in moe_layers:
                j = moe_layers.index(i)
                moe = MoeMlp(
                    num_experts=self.num_experts, expert_dim=self.expert_dim,
                    num_routers=len(self.tasks) if self.task_routing == "per_task" else 1,
                    top_k=self.top_k, capacity_factor=self.capacity_factor, dispatch=self.dispatch,
                    renormalize_gates=self.renormalize_gates, balance_weight=self.balance_weight,
                    z_loss_weight=self.z_loss_weight, entropy_weight=self.entropy_weight,
                    router_groups=None if self.router_groups is None else tuple(self.router_groups[j]),
                    dtype=self.dtype, dot_general_provider=self.dot_general_provider, parent=None)
                blocks.append(MoeEncoderBlock(self.hidden_dim, self.num_heads, moe, self.dtype, self.dot_general_provider,
                                              name=f"blocks_{i}"))
            else:
                blocks.append(Block(self.hidden_dim, self.num_heads, self.mlp_dim, dtype=self.dtype,
                                    dot_general_provider=self.dot_general_provider, name=f"blocks_{i}"))
        first_moe = moe_layers[0] if moe_layers else self.num_layers
        for block in blocks[:first_moe]:
            x = block(x)
        shared = blocks[first_moe].attend(x) if moe_layers else x
        final_norm = LayerNorm(self.dtype, name="ln_final")
        heads = {t.name: TaskHead(t, self.hidden_dim, self.decoder_dim, self.patch_size, self.dtype,
                                  self.dot_general_provider, name=f"heads_{t.name}") for t in self.tasks}

        def encode(router_index: int) -> jax.Array:
            y = shared
            for i in range(first_moe, self.num_layers):
                if i == first_moe:
                    y = blocks[i].mix(y, router_index, top_k, top_p)
                elif i in moe_layers:
                    y = blocks[i](y, router_index, top_k, top_p)
                else:
                    y = blocks[i](y)
            return final_norm(y)

        top_k, top_p = subnet.moe_top_k, subnet.moe_top_p
        if not top_k and not top_p:
            top_p = self.top_p

        shared_tokens = encode(0) if self.task_routing == "shared" else None  # one pass serves every task
        return {t.name: heads[t.name](encode(n) if shared_tokens is None else shared_tokens, self.decoder_dim, (h, w))
                for n, t in enumerate(self.tasks) if task is None or t.name == task}


_SHARED = tuple(f.name for f in dataclasses.fields(MultiTaskFields)) + ("parent", "name")


def moe_fields(model_config) -> dict:
    """Every MoeMultiTaskViT field `config.model` may set: the config's value, else the field's default
    (`effjax/config/base.py`); the builder and the cost model (`effjax.compress.cost_elastic`) read them here."""
    read = config_reader(model_config)
    out = {f.name: read(f.name, f.default) for f in dataclasses.fields(MoeMultiTaskViT) if f.name not in _SHARED}
    groups = out["router_groups"]
    out["router_groups"] = None if not groups else tuple(tuple(int(e) for e in g) for g in groups)
    return out


def build(model_config, tasks, dot_general_provider=None) -> MoeMultiTaskViT:
    """The registry's builder: `config.model`'s shared fields plus the MoE fields of configs/moe_*.py."""
    return MoeMultiTaskViT(**vit_fields(model_config, tasks, dot_general_provider), **moe_fields(model_config))
