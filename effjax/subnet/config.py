"""The subnet config: one frozen, hashable record of every compression knob.

It is the currency of effjax (see DESIGN.md): modules read the knobs they own at
call time, the cost model prices it, the search proposes it, the export freezes
it. Being hashable, it is a static argument under `jax.jit`; each distinct
config compiles once and is cached.
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Optional, Sequence

FLOAT_BITS = 32


@dataclasses.dataclass(frozen=True)
class SubnetConfig:
    encoder_width: float = 1.0  # slimmable encoder width multiplier in (0, 1]
    decoder_widths: tuple[tuple[str, float], ...] = ()  # (task, width multiplier); absent tasks use 1.0
    attention_keep_ratio: float = 1.0  # Sparsifiner rho: kept keys per query row; 1.0 is dense
    token_keep_ratio: float = 1.0  # fraction of patch tokens kept at the token-pruning layers
    moe_top_k: int = 0  # experts per token; 0 uses the model's default
    moe_top_p: float = 0.0  # cumulative router probability for top-p routing; 0 disables
    weight_bits: Optional[int] = None  # bits of weights in the body (AQT); None is float
    activation_bits: Optional[int] = None  # bits of activations in the body (AQT); None is float
    first_last_bits: Optional[int] = 8  # bits of the patch embedding and the task heads when quantizing

    def __post_init__(self):
        def check(cond, field, allowed):
            if not cond:
                raise ValueError(f"SubnetConfig.{field}={getattr(self, field)!r}: {allowed}")

        check(0 < self.encoder_width <= 1, "encoder_width", "must be in (0, 1]")
        check(all(0 < w <= 1 for _, w in self.decoder_widths), "decoder_widths", "each width must be in (0, 1]")
        check(0 < self.attention_keep_ratio <= 1, "attention_keep_ratio", "must be in (0, 1]")
        check(0 < self.token_keep_ratio <= 1, "token_keep_ratio", "must be in (0, 1]")
        check(self.moe_top_k >= 0, "moe_top_k", "must be >= 0 (0 = model default)")
        check(0 <= self.moe_top_p < 1, "moe_top_p", "must be in [0, 1) (0 disables top-p)")
        for field in ("weight_bits", "activation_bits", "first_last_bits"):
            bits = getattr(self, field)
            check(bits is None or bits in (2, 4, 8), field, "allowed: None (float), 2, 4, 8")

    def without_bits(self) -> "SubnetConfig":
        """The knobs a model reads at call time; the bits belong to the dot_general provider or the export."""
        return dataclasses.replace(self, weight_bits=None, activation_bits=None,
                                   first_last_bits=SubnetConfig.first_last_bits)

    def decoder_width(self, task: str) -> float:
        return dict(self.decoder_widths).get(task, 1.0)

    def non_default(self, ignore: Sequence[str] = ()) -> dict:
        """{knob: value} of the knobs not at their default, except those in `ignore`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ignore and getattr(self, f.name) != f.default}

    def check_tasks(self, tasks: Collection[str]) -> None:
        """Refuses decoder widths of tasks not in `tasks` (task names)."""
        unknown = [name for name, _ in self.decoder_widths if name not in tasks]
        if unknown:
            raise ValueError(f"SubnetConfig.decoder_widths: unknown tasks {unknown}; tasks: {sorted(tasks)}")

    def bits_for(self, group: str) -> tuple[int, int]:
        """(weight bits, activation bits) of a layer group; first/last layers are 'embed' and 'head'."""
        if self.weight_bits is None and self.activation_bits is None:
            return FLOAT_BITS, FLOAT_BITS
        if group in ("embed", "head") and self.first_last_bits is not None:
            return self.first_last_bits, self.first_last_bits
        return self.weight_bits or FLOAT_BITS, self.activation_bits or FLOAT_BITS

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["decoder_widths"] = dict(self.decoder_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SubnetConfig":
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"SubnetConfig: unknown knobs {sorted(unknown)}; allowed: {[f.name for f in dataclasses.fields(cls)]}")
        if "decoder_widths" in d:
            d["decoder_widths"] = tuple(sorted(dict(d["decoder_widths"]).items()))
        return cls(**d)
