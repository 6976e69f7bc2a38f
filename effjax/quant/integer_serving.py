"""Integer serving of an exported subnet: its int8 / int4 weight codes multiplied as integers.

An export (`effjax.compress.export`) stores every quantized Dense kernel as integer
codes q (8 or 4 bits, held in int8) with a float scale per output column s_w;
`ExportedModel.predict` dequantizes them and multiplies in float. Here the codes
stay integers and each such Dense layer runs integer-arithmetic inference (Jacob
et al., CVPR 2018, Sec. 2) with dynamic symmetric per-token activation scales:

  s_x = max_i |x_i| / (2^(a-1) - 1)             one scale per activation row (token)
  x_q = clip(round(x / s_x), +-(2^(a-1) - 1))    int8
  y   = (x_q . q)_int32 * s_x * s_w + b          int8 x int8 -> int32 dot_general

The only rounding added to `predict` is that of the activations (a = 8 bits by
default, whatever the weight bits), so outputs agree with `predict` within that
rounding; `simulate=True` computes the same formula in float (dequantized operands)
as the reference the integer path must equal up to float summation order.

Kernels that are not 2-D Dense kernels stored as integers (float kernels, MoE expert
kernels, the router, attention's activation x activation einsums) run in float
exactly as in `predict`.
"""

from __future__ import annotations

from typing import Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from effjax.compress import export as export_lib
from effjax.quant import rtn

INT_SCALES = "int_scales"  # collection of the per-column weight scales, one `scale` per integer Dense layer
INTEGER_DOT = "integer_dot"  # name of the injected module inside each Dense layer
FLOAT_GROUPS = ("attention_scores", "expert", "router")  # groups that stay float


def quantize_rows(x: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
    """Symmetric round-to-nearest (`effjax.quant.rtn`) per row of the last axis: (int8 codes, float32 scale [..., 1])."""
    return rtn.quantize(x, bits, axis=-1, xp=jnp)


class IntegerDot(nn.Module):
    """A Dense layer's dot_general: int8 activations x its integer kernel codes, int32 accumulation.

    The kernel arrives as the Dense layer's float cast of integer codes (a slimmable
    layer passes the prefix of its active columns); the column scales come from the
    INT_SCALES collection. A layer without scales there keeps
    its float kernel and plain `lax.dot_general`.
    """

    activation_bits: int = 8
    simulate: bool = False

    @nn.compact
    def __call__(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        if not self.has_variable(INT_SCALES, "scale"):
            return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision)
        (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
        if rhs.ndim != 2 or tuple(contract_r) != (0,) or tuple(contract_l) != (lhs.ndim - 1,) or batch_l or batch_r:
            raise ValueError(f"IntegerDot: only x[..., in] . kernel[in, out]; got dimension_numbers={dimension_numbers}")
        w_scale = self.get_variable(INT_SCALES, "scale")[:rhs.shape[1]]  # slimmable layers pass a prefix slice
        x_q, x_scale = quantize_rows(lhs, self.activation_bits)
        acc = _code_dot(x_q, rhs, dimension_numbers, self.simulate)
        return (acc * (x_scale * w_scale)).astype(lhs.dtype)


def _code_dot(lhs_codes, rhs_codes, dimension_numbers, simulate: bool) -> jax.Array:
    """dot_general of two integer code arrays as float32: int8 x int8 -> int32 accumulation, or with
    `simulate` the same product in float32 at full precision."""
    if simulate:
        return lax.dot_general(lhs_codes.astype(jnp.float32), rhs_codes.astype(jnp.float32), dimension_numbers,
                               precision=lax.Precision.HIGHEST)
    return lax.dot_general(lhs_codes.astype(jnp.int8), rhs_codes.astype(jnp.int8), dimension_numbers,
                           preferred_element_type=jnp.int32).astype(jnp.float32)


def integer_activation_dot(bits: int = 8, simulate: bool = False):
    """dot_general of two activations (attention's q.k and weights.v), both quantized per slice over
    their contracted axes; the product of the two scales is laid out by the same dot_general."""
    def dot(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        (contract_l, contract_r), _ = dimension_numbers
        lq, ls = rtn.quantize(lhs, bits, axis=tuple(contract_l), xp=jnp)
        rq, rs = rtn.quantize(rhs, bits, axis=tuple(contract_r), xp=jnp)
        acc = _code_dot(lq, rq, dimension_numbers, simulate)
        return (acc * lax.dot_general(ls, rs, dimension_numbers)).astype(lhs.dtype)

    return dot


def integer_provider(activation_bits: int = 8, simulate: bool = False, attention_scores: bool = False):
    """DotGeneralProvider: an IntegerDot in every Dense layer; attention's einsums integer too when
    `attention_scores`; the other FLOAT_GROUPS float."""
    def provider(group: str):
        if group == "attention_scores" and attention_scores:
            return lambda: integer_activation_dot(activation_bits, simulate)
        if group in FLOAT_GROUPS:
            return None
        return lambda: IntegerDot(activation_bits, simulate, name=INTEGER_DOT)

    return provider


def integer_variables(exported: export_lib.ExportedModel, directory: str) -> dict:
    """{"params", INT_SCALES} of an export: its integer 2-D kernels as codes (zero-padded to the full
    shapes, like `predict`), their column scales (padding columns 1), everything else as `predict` has it."""
    arrays = export_lib.read_arrays(directory, exported.meta["arrays"])
    flat = dict(flax.traverse_util.flatten_dict(exported.params, sep="/"))  # true widths
    scales = {}
    for p in exported.meta["params"]:
        path, bits, shape, full = p["path"], p["bits"], tuple(p["active_shape"]), tuple(p["full_shape"])
        if bits not in (4, 8) or len(full) != 2:
            flat[path] = export_lib.pad_to(np.asarray(flat[path]), full)
            continue
        codes = arrays[path + ":q"] if bits == 8 else rtn.unpack_int4(arrays[path + ":q4"], shape)
        flat[path] = export_lib.pad_to(np.asarray(codes, np.int8), full).astype(np.int8)
        scale = np.ones(full[-1], np.float32)
        scale[:shape[-1]] = arrays[path + ":scale"]
        scales[path.rsplit("/", 1)[0] + f"/{INTEGER_DOT}/scale"] = scale
    return {"params": flax.traverse_util.unflatten_dict(flat, sep="/"),
            INT_SCALES: flax.traverse_util.unflatten_dict(scales, sep="/")}


class IntegerExportedModel:
    """An export served with integer matmuls: `predict(images) -> {task: prediction}` like `ExportedModel`."""

    def __init__(self, directory: str, activation_bits: int = 8, simulate: bool = False,
                 exported: Optional[export_lib.ExportedModel] = None, attention_scores: bool = False):
        from effjax.models import build_model

        if activation_bits not in (4, 8):
            raise ValueError(f"activation_bits={activation_bits}: allowed 4 or 8")
        self.exported = exported or export_lib.load(directory)
        if not any(p["bits"] in (4, 8) for p in self.exported.meta["params"]):
            raise ValueError(f"{directory}: the export has no integer kernels (all float or PVQ); serve it with predict")
        self.variables = integer_variables(self.exported, directory)
        model = build_model(self.exported.model_config, self.exported.tasks,
                            integer_provider(activation_bits, simulate, attention_scores))
        subnet = self.exported.subnet.without_bits()
        self._apply = jax.jit(lambda variables, images: model.apply(variables, images, subnet=subnet))

    def integer_kernels(self) -> Mapping[str, jax.Array]:
        """Flat path -> int8 code array of every kernel served as integers."""
        flat = flax.traverse_util.flatten_dict(self.variables["params"], sep="/")
        return {k: v for k, v in flat.items() if np.asarray(v).dtype == np.int8}

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return jax.device_get(self._apply(self.variables, np.asarray(images, np.float32)))
