"""Search spaces: typed parameters, constraints, and their encoding into the unit cube.

A `Space` holds `Float` (linear or log scale), `Int`, `Ordinal` and `Categorical`
parameters plus feasibility constraints (callables `params -> bool`). The surrogate and
the acquisition work on a relaxed encoding in [0, 1]^D:

- Float: one dimension, (v - low) / (high - low), or the same on log(v) when `log=True`;
- Int and Ordinal: one dimension, index / (count - 1) over the allowed values;
- Categorical: one dimension per value (one-hot); decoding takes the arg-max.

`decode` rounds every discrete dimension, so `encode(decode(x))` is the canonical
point nearest to a relaxed `x` ("rounding for discrete dimensions", as in the
mixed-space treatment of Daulton et al., 2022, "Bayesian optimization over discrete and
mixed spaces via probabilistic reparameterization", Section 3, which we simplify to
plain rounding).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

Params = dict[str, Any]
Constraint = Callable[[Params], bool]


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{kind} parameter name must be a non-empty string, got {name!r}")


def _check_values(kind: str, name: str, values: Sequence[Any]) -> tuple:
    values = tuple(values)
    if len(values) == 0:
        raise ValueError(f"{kind} {name!r}: values must be a non-empty sequence, got {values!r}")
    for i, a in enumerate(values):
        if any(a == b for b in values[i + 1:]):
            raise ValueError(f"{kind} {name!r}: values must be distinct, {a!r} appears twice")
    return values


def _index_of(values: tuple, value: Any) -> int | None:
    for i, v in enumerate(values):
        if v == value or (isinstance(v, tuple) and isinstance(value, list) and v == tuple(value)):
            return i
    return None


@dataclasses.dataclass(frozen=True)
class Float:
    """A real number in [low, high]; `log=True` searches log(value) uniformly (needs low > 0)."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self):
        _check_name("Float", self.name)
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError(f"Float {self.name!r}: need finite low < high, got low={self.low!r}, high={self.high!r}")
        if self.log and low <= 0:
            raise ValueError(f"Float {self.name!r}: log=True needs low > 0, got low={self.low!r}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    n_dims = 1
    is_discrete = False
    cardinality = math.inf

    def _bounds(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)

    def encode(self, value: Any) -> np.ndarray:
        lo, hi = self._bounds()
        v = math.log(value) if self.log else float(value)
        return np.array([(v - lo) / (hi - lo)])

    def decode(self, x: np.ndarray) -> float:
        lo, hi = self._bounds()
        v = lo + float(np.clip(x[0], 0.0, 1.0)) * (hi - lo)
        return float(min(max(math.exp(v) if self.log else v, self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float, np.integer, np.floating)) and self.low <= float(value) <= self.high

    def canonical(self, value: Any) -> float:
        return float(value)


class _Indexed:
    """Shared behaviour of parameters with a finite ordered list of values."""

    values: tuple
    name: str

    n_dims = 1
    is_discrete = True

    @property
    def cardinality(self) -> int:
        return len(self.values)

    def index(self, value: Any) -> int:
        i = _index_of(self.values, value)
        if i is None:
            raise ValueError(f"{type(self).__name__} {self.name!r}: value {value!r} is not one of {list(self.values)}")
        return i

    def contains(self, value: Any) -> bool:
        return _index_of(self.values, value) is not None

    def canonical(self, value: Any) -> Any:
        return self.values[self.index(value)]

    def encode_index(self, i: int) -> np.ndarray:
        n = len(self.values)
        return np.array([i / (n - 1) if n > 1 else 0.0])

    def encode(self, value: Any) -> np.ndarray:
        return self.encode_index(self.index(value))

    def decode_index(self, x: np.ndarray) -> int:
        top = len(self.values) - 1
        return int(round(min(max(float(x[0]) * top, 0.0), float(top))))  # half to even, as np.rint

    def decode(self, x: np.ndarray) -> Any:
        return self.values[self.decode_index(x)]

    def neighbour_indices(self, i: int) -> list[int]:
        return [j for j in (i - 1, i + 1) if 0 <= j < len(self.values)]


@dataclasses.dataclass(frozen=True)
class Int(_Indexed):
    """An integer in [low, high], both ends included."""

    name: str
    low: int
    high: int

    def __post_init__(self):
        _check_name("Int", self.name)
        if int(self.low) != self.low or int(self.high) != self.high or self.low >= self.high:
            raise ValueError(f"Int {self.name!r}: need integers low < high, got low={self.low!r}, high={self.high!r}")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    @property
    def values(self) -> range:  # type: ignore[override]
        return range(self.low, self.high + 1)

    def index(self, value: Any) -> int:
        if not isinstance(value, (int, np.integer, float, np.floating)) or int(value) != value or not (self.low <= value <= self.high):
            raise ValueError(f"Int {self.name!r}: value {value!r} is not an integer in [{self.low}, {self.high}]")
        return int(value) - self.low

    def contains(self, value: Any) -> bool:
        try:
            self.index(value)
            return True
        except (ValueError, TypeError):
            return False

    def canonical(self, value: Any) -> int:
        return int(value)


@dataclasses.dataclass(frozen=True)
class _Choice(_Indexed):
    """Fields and checks shared by `Ordinal` and `Categorical`: a name and distinct values."""

    name: str
    values: tuple

    def __post_init__(self):
        kind = type(self).__name__
        _check_name(kind, self.name)
        object.__setattr__(self, "values", _check_values(kind, self.name, self.values))


@dataclasses.dataclass(frozen=True)
class Ordinal(_Choice):
    """One of an ordered list of values (e.g. widths 0.25, 0.5, 1.0); neighbours are adjacent values."""


@dataclasses.dataclass(frozen=True)
class Categorical(_Choice):
    """One of an unordered set of values, encoded one-hot; every other value is a neighbour."""

    @property
    def n_dims(self) -> int:  # type: ignore[override]
        return len(self.values)

    def encode_index(self, i: int) -> np.ndarray:
        out = np.zeros(len(self.values))
        out[i] = 1.0
        return out

    def decode_index(self, x: np.ndarray) -> int:
        return int(np.argmax(x))

    def neighbour_indices(self, i: int) -> list[int]:
        return [j for j in range(len(self.values)) if j != i]


Parameter = Float | Int | Ordinal | Categorical


class Space:
    """An ordered collection of parameters plus constraints that every proposal satisfies.

    `constraints` are callables `params -> bool` (True = feasible), e.g.
    `lambda p: flops(p) <= budget`; infeasible configurations are never proposed.
    """

    def __init__(self, params: Sequence[Parameter], constraints: Sequence[Constraint] = ()):
        params = list(params)
        if not params:
            raise ValueError("Space: needs at least one parameter, got an empty list")
        names = set()
        for p in params:
            if not isinstance(p, (Float, Int, Ordinal, Categorical)):
                raise ValueError(f"Space: parameters must be Float, Int, Ordinal or Categorical, got {p!r}")
            if p.name in names:
                raise ValueError(f"Space: parameter name {p.name!r} appears twice")
            names.add(p.name)
        for c in constraints:
            if not callable(c):
                raise ValueError(f"Space: constraints must be callables params -> bool, got {c!r}")
        self.params: list[Parameter] = params
        self.constraints: list[Constraint] = list(constraints)
        self.names = [p.name for p in params]
        offsets = np.cumsum([0] + [p.n_dims for p in params])
        self.slices = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        self.dim = int(offsets[-1])
        self.is_discrete = all(p.is_discrete for p in params)
        self.continuous = np.concatenate([np.full(p.n_dims, not p.is_discrete) for p in params])  # per dimension
        self.cardinality = math.prod(p.cardinality for p in params) if self.is_discrete else math.inf
        self._codes: dict[tuple, tuple[np.ndarray, tuple]] = {}  # discrete values -> (encoding, key)

    def __repr__(self) -> str:
        return f"Space({self.params!r}, constraints={len(self.constraints)})"

    def describe(self) -> list[dict]:
        """A JSON-able description, used to check that a resumed search has the same space."""
        out = []
        for p in self.params:
            d = {"kind": type(p).__name__, "name": p.name}
            if isinstance(p, Float):
                d.update(low=p.low, high=p.high, log=p.log)
            elif isinstance(p, Int):
                d.update(low=p.low, high=p.high)
            else:
                d.update(values=[repr(v) for v in p.values])
            out.append(d)
        return out

    def validate(self, params: Params) -> Params:
        """Checks that `params` names every parameter with an allowed value; returns canonical values."""
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict of {self.names}, got {type(params).__name__}")
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in self.names]
        if missing or extra:
            raise ValueError(f"params must have exactly the keys {self.names}; missing {missing}, unknown {extra}")
        for p in self.params:
            if not p.contains(params[p.name]):
                raise ValueError(f"parameter {p.name!r}: value {params[p.name]!r} is outside its domain {p}")
        return {p.name: p.canonical(params[p.name]) for p in self.params}

    def encode(self, params: Params) -> np.ndarray:
        """The point of the unit cube for `params` (read-only: a discrete space returns a cached array)."""
        return self._code(params)[0]

    def _code(self, params: Params) -> tuple[np.ndarray, tuple]:
        """(encoding, key) of `params`, cached for a discrete space (the acquisition optimizer asks for the same
        configurations thousands of times per proposal)."""
        signature = tuple(params.get(n) for n in self.names) if self.is_discrete else None
        try:
            if signature in self._codes:
                return self._codes[signature]
        except TypeError:  # an unhashable value (a list given for a tuple choice): not cached
            signature = None
        x = np.concatenate([p.encode(params[p.name]) for p in self.params])
        x.flags.writeable = False
        code = (x, tuple(np.round(x, 12).tolist()))
        if signature is not None:
            self._codes[signature] = code
        return code

    def encode_many(self, params_list: Sequence[Params]) -> np.ndarray:
        if not params_list:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(p) for p in params_list])

    def decode(self, x: np.ndarray) -> Params:
        x = np.asarray(x, dtype=np.float64)
        return {p.name: p.decode(x[s]) for p, s in zip(self.params, self.slices)}

    def round(self, x: np.ndarray) -> np.ndarray:
        """The canonical encoding nearest to relaxed points `x` (..., dim)."""
        x = np.asarray(x, dtype=np.float64)
        flat = x.reshape(-1, self.dim)
        out = np.stack([self.encode(self.decode(row)) for row in flat]) if len(flat) else flat
        return out.reshape(x.shape)

    def is_feasible(self, params: Params) -> bool:
        return all(bool(c(params)) for c in self.constraints)

    def key(self, params: Params) -> tuple:
        """A hashable identity of a configuration (duplicates share a key)."""
        return self._code(params)[1]

    def iter_all(self) -> Iterator[Params]:
        """Every configuration of a discrete space, in lexicographic order."""
        if not self.is_discrete:
            raise ValueError("Space.iter_all: only discrete spaces can be enumerated (this one has a Float)")
        for combo in itertools.product(*[p.values for p in self.params]):
            yield dict(zip(self.names, combo))

    def neighbours(self, params: Params) -> list[Params]:
        """Configurations that differ from `params` in one discrete parameter by one step."""
        return [{**params, p.name: p.values[j]} for p in self.params if p.is_discrete
                for j in p.neighbour_indices(p.index(params[p.name]))]

    def random_params(self, rng: np.random.Generator) -> Params:
        return self.decode(rng.random(self.dim))
