"""A loaded export as a self-contained `jax.export` artifact (StableHLO) that runs with jax alone.

The exported function is `predict(images) -> {task: output}` of one subnet, with its batch
size symbolic. Its weights are constants inside the artifact at the precision the export
stores them: int8 codes, int4 codes packed two per byte (unpacked in the graph) and float32
per-column scales, dequantized in the graph as `q * scale`; float32 arrays as they are. PVQ
kernels are embedded as their decoded float32 values, since the decoder is a combinatorial
enumeration (Fischer 1986) better run once at export time.

The model itself is the export's own Flax module, called through its `apply` at the subnet.
A slimmable module declares every parameter at the supernet's shape and reads the prefix
`W[:c_in, :c_out]` it needs (Yu & Huang 2019). To hand it parameters of the subnet's true
widths, `predict` traces `apply` to a jaxpr with supernet-shaped parameter placeholders and
evaluates that jaxpr itself: a placeholder read by a prefix `slice` yields the true-width
array (cut further if the slice asks for less), a dtype conversion keeps it a placeholder,
and calls (`jit`, custom derivative rules, remat) are inlined. No parameter is padded to the
supernet's shape unless some other operation reads beyond its exported widths; those
parameters are zero-padded (exactly what `load` did before) and listed in
`StandaloneModel.padded`, so tests and the CLI can require it to be empty.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from effjax.quant import rtn

_INLINED = ("pjit", "jit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
            "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin")


@dataclasses.dataclass(frozen=True)
class _Prefix:
    """A supernet-shaped parameter of which only the leading `value.shape` block is nonzero."""

    value: Any
    full_shape: tuple[int, ...]


def _sub_jaxpr(params: Mapping[str, Any]):
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jcore.Jaxpr):
            return sub, ()
    return None


class _Evaluator:
    """Evaluates a jaxpr whose inputs may be `_Prefix` placeholders (see the module docstring)."""

    def __init__(self, names: Mapping[int, str]):
        self.names = names  # id of a placeholder's value -> parameter path, for `padded`
        self.padded: list[str] = []

    def materialize(self, x):
        if not isinstance(x, _Prefix):
            return x
        if tuple(x.value.shape) == x.full_shape:
            return x.value
        self.padded.append(self.names.get(id(x.value), "?"))
        return jnp.pad(x.value, [(0, f - a) for a, f in zip(x.value.shape, x.full_shape)])

    def on_prefix(self, eqn, invals):
        """The outputs of an equation that reads a placeholder, or None to fall back to padding."""
        name, params = eqn.primitive.name, eqn.params
        x = invals[0]
        if name == "slice" and isinstance(x, _Prefix):
            starts, limits, strides = params["start_indices"], params["limit_indices"], params["strides"]
            in_prefix = all(s == 0 for s in starts) and all(int(lim) <= a for lim, a in zip(limits, x.value.shape))
            if in_prefix and (strides is None or all(s == 1 for s in strides)):
                return [jax.lax.slice(x.value, (0,) * len(limits), tuple(limits))]
            return None
        if name == "convert_element_type" and isinstance(x, _Prefix):
            return [_Prefix(x.value.astype(params["new_dtype"]), x.full_shape)]
        if name in _INLINED:
            sub = _sub_jaxpr(params)
            if sub is not None:
                return self.run(sub[0], sub[1], invals)
        return None

    def run(self, jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list:
        env: dict = {}

        def read(v):
            return v.val if isinstance(v, jcore.Literal) else env[v]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = value
        for var, value in zip(jaxpr.invars, args):
            env[var] = value
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            outvals = None
            if any(isinstance(x, _Prefix) for x in invals):
                outvals = self.on_prefix(eqn, invals)
                if outvals is None:
                    invals = [self.materialize(x) for x in invals]
            if outvals is None:
                outvals = _bind(eqn, invals)
            for var, value in zip(eqn.outvars, outvals):
                if not isinstance(var, jcore.DropVar):
                    env[var] = value
        return [self.materialize(read(v)) for v in jaxpr.outvars]


def _bind(eqn, invals) -> list:
    """Runs one equation as `jax.core.eval_jaxpr` does (jax >= 0.10, the versions effjax supports)."""
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


@dataclasses.dataclass(frozen=True)
class Weight:
    """One parameter as the export stores it: `arrays` by role ("float", "q", "q4", "scale")."""

    path: str
    full_shape: tuple[int, ...]
    active_shape: tuple[int, ...]
    arrays: Mapping[str, np.ndarray]

    def value(self):
        """The true-width float32 value, computed in the graph from the stored codes."""
        if "float" in self.arrays:
            return jnp.asarray(self.arrays["float"], jnp.float32)
        q = self.arrays.get("q")
        codes = jnp.asarray(q) if q is not None else rtn.unpack_int4(self.arrays["q4"], self.active_shape, jnp)
        return codes.astype(jnp.float32) * jnp.expand_dims(jnp.asarray(self.arrays["scale"], jnp.float32), -2)


class StandaloneModel:
    """`predict(images)` of a subnet from true-width weights and the model's `apply`."""

    def __init__(self, apply: Callable, weights: Sequence[Weight], image_shape: tuple[int, ...] | None = None):
        self._apply = apply  # (params, images) -> {task: output}, params at supernet shapes
        self.weights = tuple(weights)
        self.image_shape = tuple(image_shape) if image_shape else None  # [H, W, C] of one example
        self.padded: tuple[str, ...] = ()  # parameters the model read beyond their widths (see module docstring)

    def predict(self, images):
        images = jnp.asarray(images, jnp.float32)
        full = flax.traverse_util.unflatten_dict(
            {w.path: jax.ShapeDtypeStruct(w.full_shape, jnp.float32) for w in self.weights}, sep="/")
        aval = jax.ShapeDtypeStruct(images.shape, images.dtype)
        closed, out_shapes = jax.make_jaxpr(self._apply, return_shape=True)(full, aval)
        out_tree = jax.tree.structure(out_shapes)
        order = jax.tree.leaves(flax.traverse_util.unflatten_dict({w.path: w.path for w in self.weights}, sep="/"))
        by_path = {w.path: w for w in self.weights}
        values = [by_path[p].value() for p in order]
        evaluator = _Evaluator({id(v): p for v, p in zip(values, order)})
        leaves = [_Prefix(v, by_path[p].full_shape) for v, p in zip(values, order)]
        outs = evaluator.run(closed.jaxpr, closed.consts, leaves + [images])
        self.padded = tuple(sorted(set(evaluator.padded)))
        return jax.tree.unflatten(out_tree, outs)

    def export(self, platforms: Sequence[str] | None = None) -> jax.export.Exported:
        """The `jax.export.Exported` of `predict` for a symbolic batch size `b`."""
        if self.image_shape is None:
            raise ValueError("the export's model.json has no input signature: image shape unknown")
        (batch,) = jax.export.symbolic_shape("b")
        aval = jax.ShapeDtypeStruct((batch,) + self.image_shape, jnp.float32)
        return jax.export.export(jax.jit(self.predict), platforms=platforms)(aval)

    def num_params(self) -> int:
        return int(sum(np.prod(w.active_shape) for w in self.weights))


def serialize(exported: jax.export.Exported) -> bytes:
    return bytes(exported.serialize())


# The analysis reads the optimized HLO, which LLVM's settings do not touch; the program is never run, so
# its machine code is built at the cheapest level (half the compile time of the shapes export on CPU).
ANALYSIS_ONLY_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def xla_flops_per_example(serialized: bytes, image_shape: tuple[int, ...], batch: int = 1) -> float:
    """XLA's cost analysis of the deserialized artifact compiled at `batch`, per example."""
    exported = jax.export.deserialize(bytearray(serialized))
    lowered = jax.jit(exported.call).lower(jax.ShapeDtypeStruct((batch,) + tuple(image_shape), jnp.float32))
    compiled = lowered.compile(compiler_options=ANALYSIS_ONLY_COMPILE)
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"]) / batch
