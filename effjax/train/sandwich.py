"""Sandwich-rule train step for a slimmable multi-task supernet (objective "sandwich").

One jitted step, one optimizer update, following Universally Slimmable Networks
(Yu & Huang, ICCV 2019, Sec. 3.2-3.3) and ECMT (Aich et al., ICCV 2023):
  1. the max config (full encoder, full decoders) trains on the labels
     (the weighted multi-task loss);
  2. the min config and `num_random` random configs train on
       inplace_kd_weight  * in-place distillation to the max config's detached
                            predictions (soft cross-entropy to its softmax for
                            classification / segmentation, L1 for depth),
     + cikd_weight        * Configuration-Invariant KD: mean squared distance between
                            the config's encoder output tokens and the max encoder's
                            detached tokens on the channels both have,
     + label_weight_small * the labels' loss (0 in US-Nets);
  3. the gradients of all configs are summed into one update.

Recipe options (`config.slim`, documented in effjax/config/base.py): BigNAS-style distillation (Yu et
al., ECCV 2020) with a softmax temperature (loss times T^2, Hinton et al. 2015), depth distilled in
units of its std (L1 or half squared error), a subset of tasks distilled, and a linear KD warm-up;
NASViT's gradient projection (Gong et al., ICLR 2022, Sec. 3.2): where the sub-configs' summed
gradient conflicts with the max config's, its component along the max config's gradient is removed
(one projection over all parameters, not per layer); a weight on the max config's label loss
(MatFormer, Devvrit et al. 2023, sums the nested models' losses with optional weights); and OFA
progressive shrinking (Cai et al., ICLR 2020): the menus open at fractions of the steps, in the
order widths, keep ratios, top-k, bits, as a function of the traced step (before the first opens,
`lax.cond` skips the sub-configs and only the full config trains; a closed menu draws its max value).

The supernet's other knobs (`super_vit`) join the same rule: each config
also draws an attention keep ratio, an MoE top-k and a weight-bits value from the
menus `config.slim.keep_ratios`, `top_ks` and `weight_bits` (the max config takes
keep 1, the largest top-k and float weights; the min config the smallest of each).
These do not change shapes, so they enter the encoder branch as traced scalars; the
bits are applied by fake-quantizing the parameters with a straight-through gradient
(`effjax.compress.qat`) before the config runs. Auxiliary losses the model sows (MoE
load balance and z-loss, the Sparsifiner predictor's distillation in the max pass)
are added to each config's loss.

Random configs: each draws its encoder width and every task's decoder width
uniformly from the model's width menu with `fold_in(rng, step)`, inside the jitted
step, so a resumed run replays the same draws. Widths fix shapes, so a traced choice
needs `lax.switch`; the switch is factored: one switch over the encoder menu (K
branches, output zero-padded to the max token width) and one per task over its
decoder menu (K branches each, reading the padded tokens with the traced active
width), i.e. K * (1 + T) compiled branches instead of K^(1+T) joint configs. The min
and random configs run in one `lax.scan` whose body computes one config's gradient,
so compile size does not grow with `num_random`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effjax.compress.qat import fake_quantize_params
from effjax.config.base import base_config
from effjax.data.specs import TaskSpec
from effjax.models.elastic_vit import ElasticViT
from effjax.models.layers import AUX_LOSS_COLLECTION
from effjax.subnet import FLOAT_BITS, SubnetConfig, encoder_widths
from effjax.train import losses
from effjax.train.state import TrainState
from effjax.train.step import aux_total, update


DEPTH_TARGETS = ("l1", "std", "l2std")
KNOB_GROUPS = ("widths", "keep_ratios", "top_ks", "weight_bits")  # the order progressive shrinking opens them in


_SLIM = base_config().slim  # the defaults and their meaning are written once, in effjax/config/base.py


@dataclasses.dataclass(frozen=True)
class SandwichOptions:
    """The `config.slim` fields the step reads, validated; unset fields take `config/base.py`'s defaults."""

    num_random: int = _SLIM.num_random
    inplace_kd_weight: float = _SLIM.inplace_kd_weight
    cikd_weight: float = _SLIM.cikd_weight
    label_weight_small: float = _SLIM.label_weight_small
    keep_ratios: tuple[float, ...] = tuple(_SLIM.keep_ratios)
    top_ks: tuple[int, ...] = tuple(_SLIM.top_ks)
    weight_bits: tuple[int, ...] = tuple(_SLIM.weight_bits)
    kd_temperature: float = _SLIM.kd_temperature
    kd_depth: str = _SLIM.kd_depth
    kd_tasks: tuple[str, ...] = tuple(_SLIM.kd_tasks)
    kd_warmup_steps: int = _SLIM.kd_warmup_steps
    progressive_opens: tuple[float, ...] = tuple(_SLIM.progressive_opens)
    gradient_projection: bool = _SLIM.gradient_projection
    max_loss_weight: float = _SLIM.max_loss_weight

    def __post_init__(self):
        if not isinstance(self.num_random, int) or self.num_random < 0:
            raise ValueError(f"config.slim.num_random={self.num_random!r}: must be an integer >= 0")
        for field in ("inplace_kd_weight", "cikd_weight", "label_weight_small", "max_loss_weight"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"config.slim.{field}={value!r}: must be a finite number >= 0")
        object.__setattr__(self, "keep_ratios", tuple(sorted(float(r) for r in self.keep_ratios)))
        object.__setattr__(self, "top_ks", tuple(sorted(int(k) for k in self.top_ks)))
        object.__setattr__(self, "weight_bits", tuple(sorted(int(b) for b in self.weight_bits)))
        if not self.keep_ratios or any(not 0 < r <= 1 for r in self.keep_ratios) or self.keep_ratios[-1] != 1.0:
            raise ValueError(f"config.slim.keep_ratios={self.keep_ratios!r}: need ratios in (0, 1] including 1.0")
        if any(k < 1 for k in self.top_ks):
            raise ValueError(f"config.slim.top_ks={self.top_ks!r}: each must be an integer >= 1")
        if not self.weight_bits or any(b not in (2, 4, 8, FLOAT_BITS) for b in self.weight_bits):
            raise ValueError(f"config.slim.weight_bits={self.weight_bits!r}: allowed values 2, 4, 8, 32 (float)")
        if not (isinstance(self.kd_temperature, (int, float)) and np.isfinite(self.kd_temperature)
                and self.kd_temperature > 0):
            raise ValueError(f"config.slim.kd_temperature={self.kd_temperature!r}: must be a finite number > 0")
        if self.kd_depth not in DEPTH_TARGETS:
            raise ValueError(f"config.slim.kd_depth={self.kd_depth!r}: allowed {DEPTH_TARGETS}")
        object.__setattr__(self, "kd_tasks", tuple(str(t) for t in self.kd_tasks))
        if not isinstance(self.kd_warmup_steps, int) or self.kd_warmup_steps < 0:
            raise ValueError(f"config.slim.kd_warmup_steps={self.kd_warmup_steps!r}: must be an integer >= 0")
        if not isinstance(self.gradient_projection, bool):
            raise ValueError(f"config.slim.gradient_projection={self.gradient_projection!r}: must be True or False")
        opens = tuple(float(f) for f in self.progressive_opens)
        object.__setattr__(self, "progressive_opens", opens)
        if opens and (len(opens) != len(KNOB_GROUPS) or any(not 0 <= f < 1 for f in opens)
                      or any(a > b for a, b in zip(opens, opens[1:]))):
            raise ValueError(f"config.slim.progressive_opens={opens!r}: () or {len(KNOB_GROUPS)} non-decreasing "
                             f"fractions in [0, 1), one per menu group {KNOB_GROUPS}")

    @property
    def quantizes(self) -> bool:
        """Whether any sampled config trains with quantized weights (QAT)."""
        return self.weight_bits[0] < FLOAT_BITS

    @classmethod
    def from_config(cls, config) -> "SandwichOptions":
        slim = config.get("slim", None) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(slim) - known)
        if unknown:
            raise ValueError(f"config.slim: unknown fields {unknown}; allowed: {sorted(known)}")
        return cls(**{k: slim[k] for k in known if k in slim})


def distillation_loss(task: TaskSpec, student: jax.Array, teacher: jax.Array, temperature: float = 1.0,
                      depth: str = "l1") -> jax.Array:
    """In-place distillation to a detached teacher prediction.

    Classes (image-level or per pixel): soft cross-entropy to the teacher's softmax at `temperature`,
    times temperature**2 so the gradient's scale does not depend on it (Hinton et al. 2015).
    Depth: L1 to the teacher's depth, in raw units ("l1") or in units of the training set's depth
    std ("std", so the term does not depend on the unit the depth is measured in); or half the squared
    error in std units ("l2std"), whose gradient vanishes as the student reaches the teacher (L1's
    keeps its size at every pixel)."""
    teacher = jax.lax.stop_gradient(teacher)
    if task.kind in ("classification", "segmentation"):
        t = float(temperature)
        return t * t * optax.softmax_cross_entropy(student / t, jax.nn.softmax(teacher / t, axis=-1)).mean()
    if depth == "l2std":
        return 0.5 * jnp.square((student - teacher) / task.value_std).mean()
    scale = 1.0 / task.value_std if depth == "std" else 1.0
    return jnp.abs(student - teacher).mean() * scale


def feature_distillation_loss(student: jax.Array, teacher: jax.Array, active: jax.Array) -> jax.Array:
    """CIKD: mean squared distance on the first `active` channels (student is zero-padded beyond)."""
    keep = (jnp.arange(student.shape[-1]) < active).astype(student.dtype)
    count = jnp.maximum(active, 1).astype(jnp.float32) * student.shape[0] * student.shape[1]
    return jnp.sum(jnp.square(student - jax.lax.stop_gradient(teacher)) * keep) / count


def sample_configs(rng: jax.Array, num_random: int, num_tasks: int, menu_size: int,
                   lowest: jax.Array | int = 0) -> jax.Array:
    """Menu indices [1 + num_random, 1 + num_tasks]: row 0 the min config, then random ones;
    column 0 the encoder, then one column per task's decoder (all from index `lowest` up)."""
    return sample_knob_indices(rng, num_random, (menu_size,) * (1 + num_tasks),
                               jnp.full((1 + num_tasks,), lowest, jnp.int32))


def sample_knob_indices(rng: jax.Array, num_random: int, menu_sizes: Sequence[int],
                        lowest: jax.Array | None = None) -> jax.Array:
    """Menu indices [1 + num_random, len(menu_sizes)], one column per knob: row 0 the min config
    (index `lowest` of every ascending menu, default 0), then `num_random` uniform draws from
    [lowest, size). A closed menu (progressive shrinking) has lowest = size - 1: its max value only."""
    sizes = jnp.asarray(menu_sizes, jnp.int32)
    lowest = jnp.zeros_like(sizes) if lowest is None else jnp.asarray(lowest, jnp.int32)
    random = jax.random.randint(rng, (num_random, len(menu_sizes)), lowest, sizes, jnp.int32)
    return jnp.concatenate([lowest[None, :], random], axis=0)


def open_groups(step: jax.Array, opens: Sequence[float], num_steps: int) -> jax.Array:
    """Progressive shrinking (OFA): bool [len(KNOB_GROUPS)], which menu groups are open at `step`
    (traced); group g opens at step round(opens[g] * num_steps). No `opens`: every group is open."""
    if not opens:
        return jnp.ones((len(KNOB_GROUPS),), bool)
    starts = jnp.asarray([int(round(f * num_steps)) for f in opens], jnp.int32)
    return step >= starts


def kd_ramp(step: jax.Array, warmup_steps: int) -> jax.Array:
    """The KD / CIKD weight multiplier: linear from 0 at step 0 to 1 at `warmup_steps` (1 throughout when 0)."""
    if not warmup_steps:
        return jnp.ones((), jnp.float32)
    return jnp.minimum(step.astype(jnp.float32) / warmup_steps, 1.0)


def tree_dot(a, b) -> jax.Array:
    return sum((jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32)) for x, y in
                zip(jax.tree.leaves(a), jax.tree.leaves(b))), jnp.zeros((), jnp.float32))


def gradient_cosine(small, large) -> jax.Array:
    """Cosine between two gradient trees over all parameters (0 when either is zero)."""
    return tree_dot(small, large) / jnp.maximum(jnp.sqrt(tree_dot(large, large) * tree_dot(small, small)), 1e-30)


def project_conflict(small, large):
    """NASViT's gradient projection: when the sub-configs' summed gradient `small` points against the max
    config's `large` (negative dot product over all parameters), drop its component along `large`; returns
    the projected gradient and the cosine before projection."""
    dot, large_sq = tree_dot(small, large), tree_dot(large, large)
    cosine = gradient_cosine(small, large)
    coef = jnp.where(dot < 0, dot / jnp.maximum(large_sq, 1e-30), 0.0)
    return jax.tree.map(lambda s, g: s - (coef * g).astype(s.dtype), small, large), cosine


def make_sandwich_step(model, tx: optax.GradientTransformation, tasks: Sequence[TaskSpec],
                       task_weights: Mapping[str, float], schedule: optax.Schedule, options: SandwichOptions,
                       num_steps: int = 0) -> Callable:
    if not isinstance(model, ElasticViT):
        raise ValueError(f"config.train.objective='sandwich' needs the elastic model (config.model.name 'slim_vit' or "
                         f"'super_vit'); got {type(model).__name__}")
    if len(options.keep_ratios) > 1 and not model.sparse_layers:
        raise ValueError("config.slim.keep_ratios: the model has no Sparsifiner blocks to sample them for "
                         "(model.sparse_layers is empty)")
    if options.top_ks and not model.moe_every:
        raise ValueError("config.slim.top_ks: the model has no MoE blocks to sample them for (model.moe_every=0)")
    menu = tuple(sorted(model.width_menu))
    active_widths = jnp.asarray([encoder_widths(model.hidden_dim, model.num_heads, model.mlp_dim, w)[1] for w in menu])
    weights = {t.name: float(task_weights.get(t.name, 1.0)) for t in tasks}
    keep_menu = jnp.asarray(options.keep_ratios, jnp.float32)
    top_ks = options.top_ks or ((model.default_top_k,) if model.moe_every else (0,))
    top_k_menu = jnp.asarray(top_ks, jnp.int32)
    bits_menu = jnp.asarray(options.weight_bits, jnp.int32)
    knob_sizes = (len(options.keep_ratios), len(top_ks), len(options.weight_bits))
    teacher_subnet = SubnetConfig(moe_top_k=max(top_ks)) if model.moe_every else None
    unknown = sorted(set(options.kd_tasks) - {t.name for t in tasks})
    if unknown:
        raise ValueError(f"config.slim.kd_tasks: unknown tasks {unknown}; allowed: {[t.name for t in tasks]}")
    distilled = {t.name: not options.kd_tasks or t.name in options.kd_tasks for t in tasks}
    if options.progressive_opens and num_steps < 1:
        raise ValueError("config.slim.progressive_opens needs config.train.num_steps >= 1")

    def encoder_branch(width: float, params, images, keep_ratio, top_k):
        tokens, mutated = model.apply({"params": params}, images, width, keep_ratio, top_k, max(top_ks),
                                      method="encode", mutable=[AUX_LOSS_COLLECTION])
        return jnp.pad(tokens, ((0, 0), (0, 0), (0, model.hidden_dim - tokens.shape[-1]))), aux_total(mutated)

    def decoder_branch(task: str, width: float, image_hw, params, tokens, active):
        return model.apply({"params": params}, tokens, task, width, image_hw, active, method="decode")

    def config_loss(params, batch, row, knobs, teacher_preds, teacher_tokens, ramp):
        images = batch["image"]
        hw = images.shape[1:3]
        if options.quantizes:
            params = fake_quantize_params(params, bits_menu[knobs[2]])
        tokens, aux = jax.lax.switch(row[0], [functools.partial(encoder_branch, w) for w in menu], params, images,
                                     keep_menu[knobs[0]], top_k_menu[knobs[1]])
        active = active_widths[row[0]]
        preds = {t.name: jax.lax.switch(row[1 + i], [functools.partial(decoder_branch, t.name, w, hw) for w in menu],
                                        params, tokens, active)
                 for i, t in enumerate(tasks)}
        kd_task = {t.name: distillation_loss(t, preds[t.name], teacher_preds[t.name], options.kd_temperature,
                                             options.kd_depth) for t in tasks}
        kd = sum(weights[t.name] * kd_task[t.name] for t in tasks if distilled[t.name])
        cikd = feature_distillation_loss(tokens, teacher_tokens, active)
        total = ramp * (options.inplace_kd_weight * kd + options.cikd_weight * cikd) + aux
        label, label_task = losses.multitask_loss(tasks, preds, batch, weights)
        if options.label_weight_small:
            total = total + options.label_weight_small * label
        return total, {"kd": kd, "cikd": cikd, "label": label,
                       **{f"kd/{k}": v for k, v in kd_task.items()}, **{f"label/{k}": v for k, v in label_task.items()}}

    def max_loss(params, batch):
        (preds, tokens), mutated = model.apply({"params": params}, batch["image"], train=True, subnet=teacher_subnet,
                                               return_features=True, mutable=[AUX_LOSS_COLLECTION])
        total, per_task = losses.multitask_loss(tasks, preds, batch, weights)
        if options.max_loss_weight != 1.0:
            total = options.max_loss_weight * total
        aux = aux_total(mutated)
        return total + aux, (per_task, preds, tokens, aux)

    def train_step(state: TrainState, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        (loss_max, (per_task, teacher_preds, teacher_tokens, aux_max)), grads = jax.value_and_grad(
            max_loss, has_aux=True)(state.params, batch)
        teacher_preds, teacher_tokens = jax.lax.stop_gradient((teacher_preds, teacher_tokens))
        is_open = open_groups(state.step, options.progressive_opens, num_steps)

        def closed_lowest(group, size):
            return jnp.where(is_open[KNOB_GROUPS.index(group)], 0, size - 1)

        rows = sample_configs(rng, options.num_random, len(tasks), len(menu), closed_lowest("widths", len(menu)))
        knob_lowest = jnp.stack([closed_lowest(g, n) for g, n in zip(KNOB_GROUPS[1:], knob_sizes)])
        knob_rows = sample_knob_indices(jax.random.fold_in(rng, 1), options.num_random, knob_sizes, knob_lowest)
        ramp = kd_ramp(state.step, options.kd_warmup_steps)

        def one_config(grads_sum, row_and_knobs):
            row, knobs = row_and_knobs
            (loss, parts), g = jax.value_and_grad(config_loss, has_aux=True)(
                state.params, batch, row, knobs, teacher_preds, teacher_tokens, ramp)
            return jax.tree.map(jnp.add, grads_sum, g), (loss, parts)

        def sub_configs(grads_max):
            return jax.lax.scan(one_config, grads_max, (rows, knob_rows))

        grads_max = grads
        if options.gradient_projection:  # the sub-configs' gradient is summed apart, then projected
            grads = jax.tree.map(jnp.zeros_like, grads)
        if options.progressive_opens:  # before the first menu opens only the full config trains
            skipped = jax.eval_shape(sub_configs, grads)
            grads, (config_losses, parts) = jax.lax.cond(
                is_open.any(), sub_configs,
                lambda g: (g, jax.tree.map(jnp.zeros_like, skipped[1])), grads)
        else:
            grads, (config_losses, parts) = sub_configs(grads)
        if options.gradient_projection:
            grads_small, cosine = project_conflict(grads, grads_max)
            grads = jax.tree.map(jnp.add, grads_max, grads_small)
        else:
            grads_small = jax.tree.map(jnp.subtract, grads, grads_max)
            cosine = gradient_cosine(grads_small, grads_max)
        new_state, metrics = update(state, grads, loss_max + config_losses.sum(), tx, schedule, {
            "max": loss_max, "min": config_losses[0], "aux_max": aux_max, "kd": parts["kd"].mean(),
            "cikd": parts["cikd"].mean(), "label_small": parts["label"].mean(),
            **{f"{k}_small": v.mean() for k, v in parts.items() if "/" in k}, **per_task})
        metrics.update({"grad_norm/max": optax.tree.norm(grads_max), "grad_norm/small": optax.tree.norm(grads_small),
                        "grad_cosine/small_max": cosine, "kd_ramp": ramp, "menus_open": is_open.sum()})
        if options.num_random:
            metrics["loss/random"] = config_losses[1:].mean()
        return new_state, metrics

    return train_step
