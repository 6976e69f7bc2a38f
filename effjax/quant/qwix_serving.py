"""qwix's TRAIN -> CONVERT -> SERVE path: a model served from integer weights.

The qwix counterpart of `effjax.quant.serving` (AQT): the model runs once with its
weights in CONVERT mode (`effjax.quant.qwix_backend.QwixDotGeneral` writes each
weight's integers and per-channel scales into the `qwix` collection), the float
kernels those integers replace are dropped from `params`, and the SERVE-mode model
reads the integers back and quantizes activations on the fly, so its outputs equal
the quantized (TRAIN-mode) model's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import flax
import flax.linen as nn

from effjax.data.specs import TaskSpec
from effjax.models import build_model
from effjax.quant.aqt_config import QuantOptions
from effjax.quant.qwix_backend import QWIX_COLLECTION, make_provider
from effjax.quant.serving import ServingModel
from effjax.subnet import SubnetConfig


def quantized_model(model_config, tasks: Sequence[TaskSpec], subnet: SubnetConfig,
                    options: QuantOptions | None = None, mode: str = "train") -> nn.Module:
    """The registry's model with the subnet's bits injected into every dot_general through qwix."""
    return build_model(model_config, tasks, make_provider(subnet, options or QuantOptions(), mode))


class QwixServingModel(ServingModel):
    """A converted model: integer weights in `variables["qwix"]` ({... "QwixDotGeneral_0": {"qvalue",
    "scale"}}), the rest in `variables["params"]`."""

    collection: ClassVar[str] = QWIX_COLLECTION

    def integer_tree(self) -> dict:
        return self.variables[QWIX_COLLECTION]


def convert(model_config, tasks: Sequence[TaskSpec], image_shape: Sequence[int], params, subnet: SubnetConfig,
            options: QuantOptions | None = None) -> QwixServingModel:
    """TRAIN-mode parameters -> a QwixServingModel holding integer weights."""
    options = options or QuantOptions()
    if subnet.weight_bits is None and subnet.activation_bits is None:
        raise ValueError(f"qwix convert: subnet {subnet} quantizes nothing; set weight_bits and/or activation_bits")
    # integer weights sit at (..module path.., "QwixDotGeneral_0", "qvalue")
    return QwixServingModel.converted(
        lambda mode: quantized_model(model_config, tasks, subnet, options, mode),
        lambda frozen: [(path[:-2], value.shape) for path, value in flax.traverse_util.flatten_dict(frozen).items()
                        if path[-1] == "qvalue"], image_shape, params, subnet, options)
