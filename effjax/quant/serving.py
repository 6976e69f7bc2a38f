"""AQT's TRAIN -> CONVERT -> SERVE path: integer weights on disk and in memory.

Abdolrashidi et al. (2021) train with fake-quantized matmuls; serving should then
keep only the integers. With AQT v2 (`effjax.quant.aqt_config`):

1. CONVERT: the model runs once with the weights' quant mode CONVERT; every
   quantized `AqtDotGeneral` writes its weight as an integer `QTensor` (int8 /
   int4 values and per-output-channel float scales) into the `aqt` collection.
2. The float kernels those integers replace are dropped; what is left of
   `params` (biases, LayerNorms, position embeddings, float layers) stays float.
3. SERVE: the model reads the integers from `aqt` and quantizes activations on the
   fly, so outputs equal the quantized (TRAIN-mode) model's outputs. The dropped
   kernels are only placeholders the `Dense` layers still declare: zeros created
   inside the jitted function, unused in SERVE mode, removed by XLA.

The serving checkpoint is one raw blob of `{"params", "aqt"}` (int4 packed two
values per byte, nothing compressed) plus `serving.json` (array index, subnet
bits, options, shapes of the dropped kernels), so its bytes on disk are the bytes
of the arrays plus a small index.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, ClassVar, Iterable, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from aqt.jax.v2 import aqt_tensor
from aqt.jax.v2.utils import QuantMode

from effjax.data.specs import TaskSpec
from effjax.models import build_model
from effjax.quant import rtn
from effjax.quant.aqt_config import MODES, QUANT_COLLECTION, QuantOptions, make_provider, model_subnet
from effjax.subnet import SubnetConfig

SERVING_METADATA = "serving.json"
_RNG = {"params": jax.random.PRNGKey(0)}  # AQT draws from a `params` rng; nearest rounding ignores it


def quantized_model(model_config, tasks: Sequence[TaskSpec], subnet: SubnetConfig,
                    options: QuantOptions = QuantOptions(), mode: QuantMode = QuantMode.TRAIN) -> nn.Module:
    """The registry's model with the subnet's bits injected into every dot_general."""
    return build_model(model_config, tasks, make_provider(subnet, options, mode))


def call_kwargs(subnet: SubnetConfig) -> dict:
    """The model call's keyword arguments for a subnet whose bits the provider already applies."""
    rest = model_subnet(subnet)
    return {} if rest is None else {"subnet": rest}


@dataclasses.dataclass
class ServingModel:
    """A converted model: integer weights in `variables[collection]` ("aqt" here), the rest in
    `variables["params"]`."""

    model: nn.Module  # built with the weights in SERVE mode
    variables: dict  # {"params": float leftovers, "aqt": {... "frozen": QTensor(int qvalue, [scale])}}
    dropped: dict  # flat param path (tuple) -> jax.ShapeDtypeStruct of the float kernel replaced by integers
    subnet: SubnetConfig
    options: QuantOptions
    collection: ClassVar[str] = QUANT_COLLECTION  # where the integer weights live

    def __post_init__(self):
        self._apply = jax.jit(self._forward)

    def _forward(self, variables, images):
        flat = flax.traverse_util.flatten_dict(variables["params"])
        for path, spec in self.dropped.items():
            flat[path] = jnp.zeros(spec.shape, spec.dtype)  # never read in SERVE mode
        full = {"params": flax.traverse_util.unflatten_dict(flat), self.collection: variables[self.collection]}
        return self.model.apply(full, images, train=False, rngs=_RNG, **call_kwargs(self.subnet))

    def __call__(self, images) -> dict[str, jax.Array]:
        return self._apply(self.variables, images)

    def integer_leaves(self) -> dict[str, jax.Array]:
        """Flat path -> integer weight array of every quantized layer."""
        flat = flax.traverse_util.flatten_dict(self.integer_tree(), sep="/")
        return {k: v for k, v in flat.items() if k.endswith("/qvalue")}

    def integer_tree(self) -> dict:
        """The integer weights as a plain nested dict of arrays."""
        return _plain_aqt(self.variables[self.collection])

    def nbytes(self) -> int:
        """Bytes of the serving variables in memory (int4 counted at half a byte)."""
        return int(sum(_array_bytes(x) for x in jax.tree.leaves(self.variables)))

    @classmethod
    def converted(cls, build: Callable[[str], nn.Module], frozen_kernels: Callable[[dict], Iterable[tuple]],
                  image_shape: Sequence[int], params, subnet: SubnetConfig, options: QuantOptions) -> "ServingModel":
        """TRAIN-mode `params` -> integer weights: one forward pass of `build("convert")` writes them into
        `cls.collection` (nothing when only activations are quantized), each float kernel they replace is dropped
        (`frozen_kernels(written)`: module path and shape of each integer weight), and `build("serve")` reads them."""
        params, converter = nn.unbox(params), build("convert")
        sample = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
        _, written = jax.jit(lambda p: converter.apply({"params": p}, sample, train=False, rngs=_RNG,
                                                       mutable=[cls.collection], **call_kwargs(subnet)))(params)
        frozen = flax.core.unfreeze(written).get(cls.collection, {})
        replaced = {(module, tuple(shape)) for module, shape in frozen_kernels(frozen)}
        flat = flax.traverse_util.flatten_dict(params)
        dropped = {p: jax.ShapeDtypeStruct(x.shape, x.dtype) for p, x in flat.items()
                   if (p[:-1], tuple(x.shape)) in replaced}
        kept = flax.traverse_util.unflatten_dict({p: x for p, x in flat.items() if p not in dropped})
        return cls(build("serve"), {"params": kept, cls.collection: frozen}, dropped, subnet, options)


def _array_bytes(x) -> float:
    bits = jnp.iinfo(x.dtype).bits if jnp.issubdtype(x.dtype, jnp.integer) else jnp.finfo(x.dtype).bits
    return x.size * bits / 8


def convert(model_config, tasks: Sequence[TaskSpec], image_shape: Sequence[int], params, subnet: SubnetConfig,
            options: QuantOptions = QuantOptions()) -> ServingModel:
    """TRAIN-mode parameters -> a ServingModel holding integer weights (AQT CONVERT)."""
    if subnet.weight_bits is None and subnet.activation_bits is None:
        raise ValueError(f"convert: subnet {subnet} quantizes nothing; set weight_bits and/or activation_bits")
    # frozen QTensors sit at (..module path.., "AqtDotGeneral_0", "qrhs", "frozen")
    return ServingModel.converted(
        lambda mode: quantized_model(model_config, tasks, subnet, options, MODES[mode]),
        lambda frozen: [(path[:-3], qt.qvalue.shape) for path, qt in flax.traverse_util.flatten_dict(frozen).items()
                        if isinstance(qt, aqt_tensor.QTensor)], image_shape, params, subnet, options)


def _plain_aqt(tree):
    """QTensors -> {"qvalue", "scale"} dicts (what is stored on disk)."""
    if isinstance(tree, aqt_tensor.QTensor):
        if len(tree.scale or []) != 1 or tree.bias or tree.sparsity_mask is not None:
            raise ValueError("serving: only QTensors with one scale, no bias and no sparsity mask are supported")
        return {"qvalue": tree.qvalue, "scale": tree.scale[0]}
    return {k: _plain_aqt(v) for k, v in tree.items()}


def _qtensor_tree(tree):
    if set(tree) == {"qvalue", "scale"} and not isinstance(tree["qvalue"], Mapping):
        scale = jnp.asarray(tree["scale"])
        return aqt_tensor.QTensor(qvalue=jnp.asarray(tree["qvalue"]), scale=[scale], scale_t=None, bias=[],
                                  dequant_dtype=scale.dtype)
    return {k: _qtensor_tree(v) for k, v in tree.items()}


INT4_TAG = "int4-offset"  # int4 arrays: two codes per byte as `effjax.quant.rtn.pack_int4` writes them


def _write_arrays(flat: Mapping[str, jax.Array], directory: str, stem: str) -> dict:
    """One raw little-endian blob `<stem>.bin` of every array back to back; returns the index."""
    index, offset = {}, 0
    with open(os.path.join(directory, stem + ".bin"), "wb") as f:
        for path in sorted(flat):
            x = np.asarray(flat[path])
            if x.dtype == jnp.int4:
                data, dtype = rtn.pack_int4(x).tobytes(), INT4_TAG
            else:
                data, dtype = np.ascontiguousarray(x).astype(x.dtype.newbyteorder("<")).tobytes(), str(x.dtype)
            f.write(data)
            index[path] = [dtype, list(x.shape), offset, len(data)]
            offset += len(data)
    return index


def _read_arrays(index: Mapping[str, list], directory: str, stem: str) -> dict[str, jax.Array]:
    with open(os.path.join(directory, stem + ".bin"), "rb") as f:
        blob = f.read()
    flat = {}
    for path, (dtype, shape, offset, nbytes) in index.items():
        raw = np.frombuffer(blob, np.uint8, count=nbytes, offset=offset)
        if dtype == "int4":
            raise ValueError(f"{os.path.join(directory, stem + '.bin')}: array {path!r} is int4 in the two's-complement "
                             f"nibble format of earlier effjax versions; export the serving model again")
        if dtype == INT4_TAG:
            flat[path] = jnp.asarray(rtn.unpack_int4(raw, shape)).astype(jnp.int4)
        else:
            flat[path] = jnp.asarray(raw.view(np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype))
    return flat


def save_serving(serving: ServingModel, directory: str) -> int:
    """Writes the serving checkpoint; returns its size in bytes on disk.

    `serving.bin` holds the arrays back to back with no padding or compression
    (int4 packed two per byte); `serving.json` holds the index, the subnet bits,
    the options and the shapes of the dropped kernels. (An Orbax checkpoint adds
    ~60 KB of metadata, which would swamp these small models.)
    """
    os.makedirs(directory, exist_ok=True)
    tree = {"params": serving.variables["params"], QUANT_COLLECTION: _plain_aqt(serving.variables[QUANT_COLLECTION])}
    index = _write_arrays(flax.traverse_util.flatten_dict(tree, sep="/"), directory, "serving")
    meta = {"subnet": serving.subnet.to_dict(), "options": serving.options.to_dict(), "arrays": index,
            "dropped": {"/".join(p): [list(s.shape), str(s.dtype)] for p, s in serving.dropped.items()}}
    with open(os.path.join(directory, SERVING_METADATA), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
    return _files_bytes(directory, ("serving.bin", SERVING_METADATA))


def load_serving(directory: str, model_config, tasks: Sequence[TaskSpec]) -> ServingModel:
    meta_path = os.path.join(directory, SERVING_METADATA)
    if not os.path.exists(meta_path):
        raise ValueError(f"load_serving: {directory} has no {SERVING_METADATA}; not a serving checkpoint")
    with open(meta_path) as f:
        meta = json.load(f)
    tree = flax.traverse_util.unflatten_dict(_read_arrays(meta["arrays"], directory, "serving"), sep="/")
    subnet = SubnetConfig.from_dict(meta["subnet"])
    options = QuantOptions(**meta["options"])
    dropped = {tuple(p.split("/")): jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
               for p, (shape, dtype) in meta["dropped"].items()}
    server = quantized_model(model_config, tasks, subnet, options, QuantMode.SERVE)
    return ServingModel(server, {"params": tree["params"], QUANT_COLLECTION: _qtensor_tree(tree[QUANT_COLLECTION])},
                        dropped, subnet, options)


def save_float_params(params, directory: str) -> int:
    """The float baseline on disk in the same format (`float.bin` + `float.json`); returns bytes."""
    os.makedirs(directory, exist_ok=True)
    index = _write_arrays(flax.traverse_util.flatten_dict({"params": nn.unbox(params)}, sep="/"), directory, "float")
    with open(os.path.join(directory, "float.json"), "w") as f:
        json.dump({"arrays": index}, f, separators=(",", ":"))
    return _files_bytes(directory, ("float.bin", "float.json"))


def _files_bytes(directory: str, names: Sequence[str]) -> int:
    return sum(os.path.getsize(os.path.join(directory, n)) for n in names)


def param_bytes(params) -> int:
    """Bytes of a float parameter tree in memory."""
    return int(sum(_array_bytes(x) for x in jax.tree.leaves(nn.unbox(params))))
