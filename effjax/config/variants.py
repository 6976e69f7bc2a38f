"""One parser for the argument of every config file (`--config=configs/<file>.py:<argument>`).

The argument is a comma-separated list of variants, each `name` or `name=value`. A config file
declares the variants it accepts with their defaults (as big_vision's `parse_arg` does) and
reads the parsed values; anything else is refused in one line that lists what is allowed.

A declaration is one keyword per variant:
  - `False`: a flag, set by the bare `name` (or `name=true` / `name=false`);
  - an int, float or str: `name=value`, converted to the default's type;
  - the type `int`, `float` or `str`: `name=value` with no default (None when absent);
  - a tuple of strings: a choice, default the first; the bare value selects it (`shapes` for
    `dataset=("digits", "shapes")`), as does `name=value`.
"""

from __future__ import annotations

import ml_collections

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _describe(name, declared) -> str:
    if isinstance(declared, tuple):
        return "|".join(declared)
    if isinstance(declared, bool):
        return name
    kind = declared if isinstance(declared, type) else type(declared)
    return f"{name}=<{kind.__name__}>"


def _convert(config_file: str, name: str, declared, value: str):
    if isinstance(declared, tuple):
        if value not in declared:
            raise ValueError(f"{config_file}: {name}={value!r}: allowed {list(declared)}")
        return value
    if isinstance(declared, bool):
        if value.lower() not in _TRUE + _FALSE:
            raise ValueError(f"{config_file}: {name}={value!r}: a flag takes true or false")
        return value.lower() in _TRUE
    kind = declared if isinstance(declared, type) else type(declared)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{config_file}: {name}={value!r} is not {'an' if kind is int else 'a'} {kind.__name__}") from None


def parse_arg(arg: str | None, config_file: str, **declared) -> ml_collections.ConfigDict:
    """The variants of `arg` as a ConfigDict with one field per declared variant (see the module docstring)."""
    out = {name: (d[0] if isinstance(d, tuple) else None if isinstance(d, type) else d) for name, d in declared.items()}
    choice_of = {value: name for name, d in declared.items() if isinstance(d, tuple) for value in d}
    allowed = ", ".join(_describe(name, d) for name, d in declared.items())
    for part in (p.strip() for p in (arg or "").split(",")):
        if not part:
            continue
        name, has_value, value = part.partition("=")
        if not has_value and name in choice_of:
            out[choice_of[name]] = name
        elif not has_value and isinstance(declared.get(name), bool):
            out[name] = True
        elif has_value and name in declared:
            out[name] = _convert(config_file, name, declared[name], value)
        else:
            raise ValueError(f"{config_file}: unknown variant {part!r}; allowed: {allowed}")
    return ml_collections.ConfigDict(out)
