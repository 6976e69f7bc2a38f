"""One variant parser for every config file: declared variants parse to their types, anything else is refused
in one line that lists what is allowed, and every config file in configs/ goes through it."""

import glob
import os

import pytest

from effjax.config.load import load_config
from effjax.config.variants import parse_arg

SPEC = dict(dataset=("digits", "shapes"), tiny=False, seed=int, rho=float, tokens=1.0, kd_depth=str)


def test_declared_variants_parse_to_their_types_and_defaults():
    v = parse_arg("shapes,tiny,seed=3,rho=0.25,kd_depth=l2std", "configs/x.py", **SPEC)
    assert (v.dataset, v.tiny, v.seed, v.rho, v.tokens, v.kd_depth) == ("shapes", True, 3, 0.25, 1.0, "l2std")
    assert isinstance(v.seed, int) and isinstance(v.rho, float)
    default = parse_arg(None, "configs/x.py", **SPEC)
    assert (default.dataset, default.tiny, default.seed, default.rho, default.tokens) == ("digits", False, None, None, 1.0)
    assert parse_arg("dataset=shapes,tiny=false", "configs/x.py", **SPEC).to_dict()["dataset"] == "shapes"
    assert parse_arg(" digits , , tokens=0.5", "configs/x.py", **SPEC).tokens == 0.5


@pytest.mark.parametrize("arg, message", [
    ("huge", "configs/x.py: unknown variant 'huge'; allowed: digits|shapes, tiny, seed=<int>, rho=<float>, "
             "tokens=<float>, kd_depth=<str>"),
    ("seed=two", "configs/x.py: seed='two' is not an int"),
    ("rho=", "configs/x.py: rho='' is not a float"),
    ("dataset=cifar", "configs/x.py: dataset='cifar': allowed ['digits', 'shapes']"),
    ("tiny=maybe", "configs/x.py: tiny='maybe': a flag takes true or false"),
    ("seed", "configs/x.py: unknown variant 'seed'"),
])
def test_anything_else_is_refused_in_one_line(arg, message):
    with pytest.raises(ValueError) as err:
        parse_arg(arg, "configs/x.py", **SPEC)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


CONFIG_FILES = sorted(p for p in glob.glob("configs/*.py") if os.path.basename(p) not in ("__init__.py", "qat_common.py"))


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_config_file_refuses_an_unknown_variant_through_the_one_parser(path):
    with pytest.raises(ValueError, match=rf"^{path}: unknown variant 'no_such_variant'; allowed: .*tiny"):
        load_config(f"{path}:tiny,no_such_variant")
