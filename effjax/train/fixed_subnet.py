"""Train step of one static subnet configuration alone (objective "fixed_subnet").

The baseline the supernet's promise is measured against: the same module as the sandwich
step trains (`slim_vit` / `super_vit`), run at ONE `SubnetConfig` given in
`config.train.subnet`, one pass per step. The loss is the labels' weighted multi-task loss
at that configuration plus the auxiliary losses the model sows on the way (MoE load balance
and router z-loss; the Sparsifiner predictor's distillation to the dense attention), and
the configuration's weight bits train by straight-through fake quantization with the
quantizer the sandwich step and the export use (`effjax.compress.qat`). Only the active
prefix of every kernel enters the computation, so parameters outside it receive a zero
gradient and the trained function is exactly the subnet's architecture.

The predictor of a sparse configuration (keep ratio < 1) learns as in Sparsifiner's stage 1
(Wei et al., CVPR 2023): by distillation to the detached dense attention of a second,
dense encoder pass at the configuration's own width and bits, whose only contribution to
the loss is that distillation term (its inputs are detached, so it never pulls on the
backbone). At keep ratio 1 the model sows the same term in the one pass.

At the full float configuration with the supernet's most experts this is the max-config
part of the sandwich step (`effjax.train.sandwich`), term for term.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import flax
import jax
import optax

from effjax.compress.qat import fake_quantize_params
from effjax.data.specs import TaskSpec
from effjax.models.elastic_vit import ElasticViT
from effjax.models.layers import AUX_LOSS_COLLECTION
from effjax.subnet import FLOAT_BITS, SubnetConfig
from effjax.train import losses
from effjax.train.state import TrainState
from effjax.train.step import aux_total, update

PREDICTOR_LOSS = "predictor_distillation"  # the name super_vit sows the Sparsifiner stage-1 loss under


def subnet_from_config(config) -> SubnetConfig:
    """The `SubnetConfig` of `config.train.subnet` (its `to_dict()` fields; empty: the full float network)."""
    fields = config.train.get("subnet", None) or {}
    fields = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields)
    try:
        return SubnetConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.train.subnet={fields!r}: {e}") from None


def _predictor_aux(mutated) -> jax.Array:
    flat = flax.traverse_util.flatten_dict(dict(mutated.get(AUX_LOSS_COLLECTION, {})))
    return aux_total({AUX_LOSS_COLLECTION: {k: v for k, v in flat.items() if PREDICTOR_LOSS in k}})


def make_fixed_subnet_loss(model, tasks: Sequence[TaskSpec], task_weights: Mapping[str, float], subnet: SubnetConfig,
                           predictor_pass: bool = True) -> Callable:
    """`loss(params, batch) -> (total, (per-task losses, aux))` of one static configuration.

    `predictor_pass=False` leaves out the dense pass that trains a sparse configuration's
    predictor (the sandwich's non-max configurations have none; `tools.standalone_grid`
    prices them with it off)."""
    if not isinstance(model, ElasticViT):
        raise ValueError(f"config.train.objective='fixed_subnet' needs the elastic model (config.model.name 'slim_vit' "
                         f"or 'super_vit'); got {type(model).__name__}")
    bits = subnet.weight_bits or FLOAT_BITS
    call_subnet = subnet.without_bits()
    sparse_pass = predictor_pass and bool(model.sparse_layers) and subnet.attention_keep_ratio < 1

    def loss_fn(params, batch):
        params = fake_quantize_params(params, bits)
        preds, mutated = model.apply({"params": params}, batch["image"], train=True, subnet=call_subnet,
                                     mutable=[AUX_LOSS_COLLECTION])
        total, per_task = losses.multitask_loss(tasks, preds, batch, task_weights)
        aux = aux_total(mutated)
        if sparse_pass:
            _, dense = model.apply({"params": params}, batch["image"], subnet.encoder_width, 1.0,
                                   subnet.moe_top_k or None, method="encode", path="masked", distill=True,
                                   mutable=[AUX_LOSS_COLLECTION])
            aux = aux + _predictor_aux(dense)
        return total + aux, (per_task, aux)

    return loss_fn


def make_fixed_subnet_step(model, tx: optax.GradientTransformation, tasks: Sequence[TaskSpec],
                           task_weights: Mapping[str, float], schedule: optax.Schedule,
                           subnet: SubnetConfig) -> Callable:
    loss_fn = make_fixed_subnet_loss(model, tasks, task_weights, subnet)

    def train_step(state: TrainState, batch, rng):
        del rng  # one static configuration: nothing is drawn
        (loss, (per_task, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        return update(state, grads, loss, tx, schedule, {"aux": aux, **per_task})

    return train_step
