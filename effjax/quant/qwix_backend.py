"""qwix wiring: bits per layer group -> a `dot_general` provider, the second backend beside AQT.

The same recipe as `effjax.quant.aqt_config` (Abdolrashidi et al., 2021, "Pareto-Optimal
Quantized ResNet Is Mostly 4-bit": first and last layers at 8 bits, symmetric
round-to-nearest, straight-through estimator), run by qwix instead of AQT:

- TRAIN: qwix's quantized-training dot_general (`dot_general_qt`, the op behind
  `qwix.QtProvider`). Weights (right-hand operand) are calibrated per output
  channel and activations (left-hand operand) per token, both by max|x| over the
  contracted axes; the forward multiplies the quantized operands, and the backward
  multiplies the incoming gradient by the quantized forward operands (the
  straight-through estimator; absmax calibration clips no gradient). `bwd_bits`
  quantizes the incoming gradient of both backward matmuls too.
- CONVERT: the weight is quantized once and its integers (`qvalue`, int8 or int4) and
  per-channel `scale` are written into the `qwix` collection.
- SERVE: the integers are read back as a `qwix.QArray` and multiplied by the
  activations quantized on the fly, so the outputs equal the TRAIN-mode outputs.

The attention einsums (group "attention_scores") quantize both operands as
activations at the body's activation bits in every mode; weight-only quantization
keeps them float, as with AQT.

Settings qwix does not offer here are refused: the `absmean` activation bound
(qwix calibrates absmax | rms | minmax | fixed ranges) and stochastic rounding of
gradients.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import qwix
from qwix._src.core.dot_general_qt import DotGeneralQtConfig, dot_general_qt

from effjax.models.layers import ATTENTION_SCORES_GROUP, DotGeneralProvider
from effjax.subnet import FLOAT_BITS, SubnetConfig

# Variables CONVERT writes and SERVE reads: per quantized layer {"qvalue": int, "scale": float}.
QWIX_COLLECTION = "qwix"
MODES = ("train", "convert", "serve")
QTYPES = {8: "int8", 4: "int4"}


def _qtype(bits: int | None) -> str | None:
    if bits is None or bits >= FLOAT_BITS:
        return None
    if bits not in QTYPES:
        raise ValueError(f"qwix backend: {bits} bits; allowed {sorted(QTYPES)} or {FLOAT_BITS} (float)")
    return QTYPES[bits]


def check_options(options) -> None:
    """Refuse the `config.quant` settings the qwix backend does not implement (one line each)."""
    if options.activation_calibration != "absmax":
        raise ValueError(f"quant.activation_calibration={options.activation_calibration!r} is not available with "
                         "quant.backend='qwix'; allowed: 'absmax'")
    if options.rounding != "nearest":
        raise ValueError(f"quant.rounding={options.rounding!r} is not available with quant.backend='qwix'; "
                         "allowed: 'nearest'")
    _qtype(options.bwd_bits)


def _free_axes(ndim: int, contracting) -> list[int]:
    return sorted(set(range(ndim)) - set(contracting))


class QwixDotGeneral(nn.Module):
    """A `lax.dot_general` replacement: lhs = activations, rhs = a weight (or a second activation)."""

    activation_qtype: str | None  # "int8" | "int4" | None (float activations)
    weight_qtype: str | None  # of the rhs; None keeps it float
    mode: str = "train"  # train | convert | serve (of the weight)
    rhs_is_activation: bool = False  # quantize the rhs on the fly in every mode (attention einsums)
    grad_qtype: str | None = None  # incoming gradient of both backward matmuls; None keeps it float

    def _qat_config(self) -> DotGeneralQtConfig:
        return DotGeneralQtConfig(lhs_qtype=self.activation_qtype, rhs_qtype=self.weight_qtype,
                                  dlhs_grad_qtype=self.grad_qtype, drhs_grad_qtype=self.grad_qtype)

    @nn.compact
    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        if self.mode == "train" or self.rhs_is_activation or self.weight_qtype is None:
            return dot_general_qt(lhs, rhs, dimension_numbers, self._qat_config())
        (lhs_contracting, rhs_contracting), _ = dimension_numbers
        if self.mode == "convert":
            # one scale per non-contracted axis (the output channels), as dot_general_qt calibrates in TRAIN
            quantized = qwix.quantize(rhs, self.weight_qtype,
                                      channelwise_axes=_free_axes(rhs.ndim, rhs_contracting))
            qvalue = self.variable(QWIX_COLLECTION, "qvalue", lambda: quantized.qvalue)
            scale = self.variable(QWIX_COLLECTION, "scale", lambda: quantized.scale)
            qvalue.value, scale.value = quantized.qvalue, quantized.scale
        else:
            if not self.has_variable(QWIX_COLLECTION, "qvalue"):
                raise ValueError(f"qwix serve: no converted weight for {'/'.join(self.scope.path)}; "
                                 "run the model in mode 'convert' first")
            qvalue = self.variable(QWIX_COLLECTION, "qvalue")
            scale = self.variable(QWIX_COLLECTION, "scale")
        weight = qwix.QArray(qvalue.value, scale.value, qtype=qvalue.value.dtype)
        if self.activation_qtype is not None:
            lhs = qwix.quantize(lhs, self.activation_qtype, channelwise_axes=_free_axes(lhs.ndim, lhs_contracting))
        return qwix.dot_general(lhs, weight, dimension_numbers)


def make_provider(subnet: SubnetConfig, options=None, mode: str = "train") -> DotGeneralProvider | None:
    """Group -> QwixDotGeneral factory (or None where the group stays float); None when nothing is quantized.

    `options` is the `config.quant` QuantOptions (checked by `check_options`); `mode`
    applies to the weights, activations are always quantized on the fly.
    """
    if not isinstance(subnet, SubnetConfig):
        raise TypeError(f"qwix make_provider: subnet must be a SubnetConfig, got {type(subnet).__name__}")
    if mode not in MODES:
        raise ValueError(f"qwix make_provider: mode={mode!r}; allowed {list(MODES)}")
    grad_qtype = None
    if options is not None:
        check_options(options)
        grad_qtype = _qtype(options.bwd_bits)
    if subnet.weight_bits is None and subnet.activation_bits is None:
        return None

    @functools.cache
    def provider(group: str):
        wq, aq = (_qtype(b) for b in subnet.bits_for(group))
        if group == ATTENTION_SCORES_GROUP:
            return None if aq is None else functools.partial(
                QwixDotGeneral, activation_qtype=aq, weight_qtype=aq, mode="train", rhs_is_activation=True,
                grad_qtype=grad_qtype)
        if wq is None and aq is None:
            return None
        return functools.partial(QwixDotGeneral, activation_qtype=aq, weight_qtype=wq, mode=mode, grad_qtype=grad_qtype)

    return provider
