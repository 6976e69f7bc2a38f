"""AQT wiring: bits per layer group -> a `dot_general` provider for every effjax model.

Follows "Pareto-Optimal Quantized ResNet Is Mostly 4-bit" (Abdolrashidi et al.,
2021) through AQT v2 (`aqt.jax.v2`), injected as in MaxText: each `Dense` asks the
provider for its group ("embed", "attention", "mlp", "head", "expert", ...) and the
provider answers with a factory of `AqtDotGeneral` modules, or None for float.

- Bits per group come from `SubnetConfig.bits_for(group)`, so the first layer
  (patch embedding, group "embed") and the last layers (task heads, group "head")
  take `first_last_bits` (Sec. 3: first and last layers at 8 bits) and the body
  takes `weight_bits` / `activation_bits`. 32 bits means float.
- Weights (the right-hand operand) are quantized symmetrically per output channel
  with the scale from max|w| (Sec. 3.1); the forward rounds to nearest and the
  backward is the straight-through estimator (AQT's custom VJP).
- The activation x activation einsums of attention (group "attention_scores":
  q.k logits and softmax-weights.v mixing, `layers.einsum`) quantize *both*
  operands as activations, at the body's activation bits (weight bits do not apply:
  there is no weight); they freeze nothing, so CONVERT / SERVE leave them dynamic.
  Weight-only quantization (activation bits None) keeps them float.
- Activations (the left-hand operand) are quantized per token, dynamically, with
  either the abs-max bound or a clipped bound `clip_scale * mean|x|` (the paper's
  3 * mean|x| bound, computed per batch rather than as an EMA: a static EMA needs a
  mutable collection the shared train step does not thread).
- `bwd_bits` optionally quantizes the two backward matmuls too (AQT's fully
  quantized training); `rounding="stochastic"` then rounds those gradients
  stochastically (AQT applies stochastic rounding to the backward pass only).
- `config.quant.backend` chooses the library: "aqt" (this module, the default) or
  "qwix" (`effjax.quant.qwix_backend`, the same recipe through qwix).
- `QuantMode`: TRAIN (fake-quant forward, used for QAT and evaluation), CONVERT
  (writes the integer weights and scales into the `aqt` collection), SERVE (reads
  them; see `effjax.quant.serving`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

from aqt.jax.v2 import calibration as aqt_calibration
from aqt.jax.v2 import config as aqt_config
from aqt.jax.v2.flax import aqt_flax
from aqt.jax.v2.utils import QuantMode

from effjax.models.layers import ATTENTION_SCORES_GROUP, DotGeneralProvider
from effjax.subnet import FLOAT_BITS, SubnetConfig

# Groups whose right-hand operand is an activation too (no weight to convert).
ACTIVATION_ONLY_GROUPS = (ATTENTION_SCORES_GROUP,)

# Variables the CONVERT mode writes (integer weights and their scales).
QUANT_COLLECTION = "aqt"
CALIBRATIONS = ("absmax", "absmean")
ROUNDINGS = ("nearest", "stochastic")
MODES = {"train": QuantMode.TRAIN, "convert": QuantMode.CONVERT, "serve": QuantMode.SERVE}
# Libraries that can run `config.quant` (`quant.backend`); the first is the default.
BACKENDS = ("aqt", "qwix")


@dataclasses.dataclass(frozen=True)
class QuantOptions:
    """How to quantize; *which bits* come from the SubnetConfig."""

    activation_calibration: str = "absmax"  # absmax | absmean (bound = activation_clip_scale * mean|x|)
    activation_clip_scale: float = 3.0  # multiplier of mean|x| for absmean calibration (paper: 3)
    bwd_bits: Optional[int] = None  # bits of the backward matmuls (gradients); None keeps them float
    rounding: str = "nearest"  # nearest | stochastic (of quantized gradients; needs bwd_bits)

    def __post_init__(self):
        if self.activation_calibration not in CALIBRATIONS:
            raise ValueError(f"quant.activation_calibration={self.activation_calibration!r}: allowed {list(CALIBRATIONS)}")
        if not self.activation_clip_scale > 0:
            raise ValueError(f"quant.activation_clip_scale={self.activation_clip_scale!r}: must be > 0")
        if self.bwd_bits not in (None, 4, 8):
            raise ValueError(f"quant.bwd_bits={self.bwd_bits!r}: allowed None (float gradients), 4, 8")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"quant.rounding={self.rounding!r}: allowed {list(ROUNDINGS)}")
        if self.rounding == "stochastic" and self.bwd_bits is None:
            raise ValueError("quant.rounding='stochastic': rounds quantized gradients, so quant.bwd_bits must be 4 or 8")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _optional_bits(bits: int) -> Optional[int]:
    return None if bits >= FLOAT_BITS else bits


def aqt_dot_general_config(weight_bits: Optional[int], activation_bits: Optional[int],
                           options: QuantOptions = QuantOptions(), rhs_is_activation: bool = False):
    """The AQT `DotGeneral` config of one layer: lhs = activations, rhs = weights
    (or, with `rhs_is_activation`, a second activation quantized like the lhs at `weight_bits`)."""
    # use_fwd_quant: the backward multiplies by the *quantized* forward operands (straight-through estimator)
    cfg = aqt_config.dot_general_make(lhs_bits=activation_bits, rhs_bits=weight_bits, bwd_bits=options.bwd_bits,
                                      use_fwd_quant=True)
    if options.activation_calibration == "absmean":
        quantizers = [(cfg.fwd.dg_quantizer.lhs, activation_bits)]
        if rhs_is_activation:
            quantizers.append((cfg.fwd.dg_quantizer.rhs, weight_bits))
        for quantizer, bits in quantizers:
            if bits is not None:
                quantizer.calibration = functools.partial(
                    aqt_calibration.AbsMeanCalibration, clipping_scale=options.activation_clip_scale, p=1.0)
                # values beyond the clipped bound get no gradient (the clip is part of the forward)
                quantizer.numerics.clip_gradient = True
    if options.bwd_bits is not None and options.rounding == "stochastic":
        aqt_config.set_stochastic_rounding(cfg, vjp_lhs_stochastic_rounding=True, vjp_rhs_stochastic_rounding=False,
                                           implementation="jax.uniform")
    return cfg


def make_provider(subnet: SubnetConfig, options: QuantOptions = QuantOptions(),
                  mode: QuantMode = QuantMode.TRAIN) -> Optional[DotGeneralProvider]:
    """Group -> AqtDotGeneral factory (or None where the group stays float).

    Returns None when the subnet quantizes nothing, so float models stay plain
    `lax.dot_general`. Activations are always quantized on the fly (their lhs
    mode stays TRAIN); `mode` applies to the weights.
    """
    if not isinstance(subnet, SubnetConfig):
        raise ValueError(f"make_provider: subnet must be a SubnetConfig, got {type(subnet).__name__}")
    if subnet.weight_bits is None and subnet.activation_bits is None:
        return None

    def aqt_dot(cfg, rhs_quant_mode, rhs_freeze_mode):
        return functools.partial(aqt_flax.AqtDotGeneral, cfg, lhs_quant_mode=QuantMode.TRAIN,
                                 rhs_quant_mode=rhs_quant_mode, rhs_freeze_mode=rhs_freeze_mode,
                                 use_legacy_freezer=False, quant_collection=QUANT_COLLECTION)

    @functools.cache
    def provider(group: str):
        wb, ab = (_optional_bits(b) for b in subnet.bits_for(group))
        if group in ACTIVATION_ONLY_GROUPS:
            # the rhs is an activation: quantized on the fly in every mode, nothing to freeze
            return None if ab is None else aqt_dot(aqt_dot_general_config(ab, ab, options, rhs_is_activation=True),
                                                   QuantMode.TRAIN, aqt_flax.FreezerMode.NONE)
        if wb is None and ab is None:
            return None
        return aqt_dot(aqt_dot_general_config(wb, ab, options), mode if wb is not None else QuantMode.TRAIN,
                       aqt_flax.FreezerMode.CALIBRATION_AND_VALUE)

    return provider


def subnet_from_quant_config(quant_config) -> SubnetConfig:
    """The bits of `config.quant` as a SubnetConfig (other knobs at their defaults)."""
    return SubnetConfig(weight_bits=quant_config.get("weight_bits", None),
                        activation_bits=quant_config.get("activation_bits", None),
                        first_last_bits=quant_config.get("first_last_bits", SubnetConfig().first_last_bits))


def options_from_config(quant_config) -> QuantOptions:
    known = {f.name for f in dataclasses.fields(QuantOptions)}
    return QuantOptions(**{k: quant_config[k] for k in known if k in quant_config})


def provider_from_config(config, mode: str = "train") -> Optional[DotGeneralProvider]:
    """The provider `config.quant` asks for; None when the config has no `quant` section or quantizes nothing."""
    if mode not in MODES:
        raise ValueError(f"provider_from_config: mode={mode!r}; allowed {list(MODES)}")
    quant = config.get("quant", None)
    if quant is None:
        return None
    allowed = ({"backend", "weight_bits", "activation_bits", "first_last_bits"}
               | {f.name for f in dataclasses.fields(QuantOptions)})
    unknown = set(quant.keys()) - allowed
    if unknown:
        raise ValueError(f"config.quant: unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    backend = backend_from_config(quant)
    if backend == "qwix":
        try:
            from effjax.quant import qwix_backend  # qwix loads only for runs that ask for it
        except ImportError as e:
            raise ValueError(f"quant.backend='qwix' needs the qwix package ({e}); pip install 'effjax[qwix]'") from None
        return qwix_backend.make_provider(subnet_from_quant_config(quant), options_from_config(quant), mode)
    return make_provider(subnet_from_quant_config(quant), options_from_config(quant), MODES[mode])


def backend_from_config(quant_config) -> str:
    """`quant.backend` ("aqt" when absent); anything else is refused in one line."""
    backend = quant_config.get("backend", BACKENDS[0])
    if backend not in BACKENDS:
        raise ValueError(f"quant.backend={backend!r}: allowed {list(BACKENDS)}")
    return backend


def model_subnet(subnet: Optional[SubnetConfig]) -> Optional[SubnetConfig]:
    """The part of a subnet a model reads at call time: everything but the bits (the provider owns them).

    None when nothing else is set, so models without compression knobs accept it.
    """
    if subnet is None:
        return None
    rest = subnet.without_bits()
    return None if rest == SubnetConfig() else rest
