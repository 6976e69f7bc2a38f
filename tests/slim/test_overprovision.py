"""`wide=<f>` (model.width_overprovision): every served configuration keeps its absolute dims in the wider supernet."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import export as export_lib
from effjax.compress.cost import total_cost
from effjax.compress.cost_elastic import model_layers
from effjax.config.load import load_config
from effjax.data import load_dataset
from effjax.models import build_model
from effjax.subnet import SubnetConfig
from effjax.subnet.overprovision import served_subnet, widen

GRID = "experiments/supernet_vs_standalone/results/grid_{}_budgeta_seed0.json"


def grid_subnets(dataset: str = "digits") -> list[SubnetConfig]:
    """The K configurations of the supernet-vs-standalone study (the ones the wide study serves)."""
    with open(GRID.format(dataset)) as f:
        return [SubnetConfig.from_dict(r["config"]) for r in json.load(f)["records"]]


def configs(dataset: str):
    base, wide = load_config(f"configs/supernet.py:{dataset}"), load_config(f"configs/supernet.py:{dataset},wide=2")
    return base, wide, load_dataset(base.data)


@pytest.fixture(scope="module")
def pair():
    return configs("digits")


def test_wide_scales_the_dims_and_the_menu_and_keeps_the_served_expert_width(pair):
    base, wide, _ = pair
    assert (wide.model.num_heads, wide.model.hidden_dim, wide.model.mlp_dim, wide.model.decoder_dim) == (8, 128, 256, 128)
    assert tuple(wide.model.width_menu) == (0.125, 0.25, 0.375, 0.5, 1.0)
    assert wide.model.expert_dim == base.model.expert_dim == 64
    assert base.model.width_overprovision == 1 and wide.model.width_overprovision == 2


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_every_served_configuration_has_the_baseline_layers_and_export_shapes(name):
    base, wide, dataset = configs(name)
    tasks, shape = dataset.tasks, dataset.image_shape
    menu = tuple(base.model.width_menu)
    subnets = grid_subnets(name) + [SubnetConfig(encoder_width=e, decoder_widths=tuple(zip([t.name for t in tasks], d)))
                                for e, *d in itertools.product(menu, repeat=1 + len(tasks))]
    slots = [export_lib.param_slots(jax.eval_shape(lambda m=build_model(c.model, tasks): m.init(
        jax.random.PRNGKey(0), np.zeros((1,) + shape, np.float32))["params"]), tasks) for c in (base, wide)]
    for subnet in subnets:
        served = served_subnet(wide.model, subnet, tasks)
        a, b = model_layers(base.model, shape, tasks, subnet), model_layers(wide.model, shape, tasks, served)
        assert a == b, subnet
        assert total_cost(a, subnet) == total_cost(b, served)
        plans = [export_lib.plan_slots(slots[0], base.model, tasks, subnet),
                 export_lib.plan_slots(slots[1], wide.model, tasks, served)]
        assert [(p.path, p.active_shape, p.bits) for p in plans[0]] == [(p.path, p.active_shape, p.bits) for p in plans[1]]


def _embed(small, big, factor: int):
    """`big` with `small` written into the leading corner of every array (the slice a slimmable layer reads).

    The Sparsifiner predictor scales its logits by 1 / sqrt(max heads), f times more heads in the wide
    supernet; its learned query projection absorbs that: here it is multiplied by sqrt(f)."""
    def one(path, s, b):
        s = s * factor**0.5 if "query_reduce" in jax.tree_util.keystr(path) else s
        return b.at[tuple(slice(0, n) for n in s.shape)].set(s)
    return jax.tree_util.tree_map_with_path(one, small, big)


def test_a_served_configuration_computes_the_same_function_in_the_wide_supernet(pair):
    base, wide, dataset = pair
    tasks = dataset.tasks
    images = jnp.asarray(dataset.splits["val"]["image"][:4])
    small_model, big_model = build_model(base.model, tasks), build_model(wide.model, tasks)
    unbox = lambda p: jax.tree.map(lambda x: getattr(x, "value", x), p, is_leaf=lambda x: hasattr(x, "value"))  # noqa: E731
    small = unbox(small_model.init(jax.random.PRNGKey(0), images)["params"])
    big = _embed(small, unbox(big_model.init(jax.random.PRNGKey(1), images)["params"]), wide.model.width_overprovision)
    for subnet in grid_subnets():
        knobs = subnet.without_bits()
        want = small_model.apply({"params": small}, images, subnet=knobs)
        got = big_model.apply({"params": big}, images, subnet=served_subnet(wide.model, knobs, tasks))
        for task in want:
            np.testing.assert_allclose(got[task], want[task], atol=1e-4, err_msg=str(subnet))


def test_a_width_the_wide_menu_cannot_serve_and_a_bad_factor_are_refused(pair):
    base, wide, dataset = pair
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        widen(load_config("configs/supernet.py:digits").model, 1.5)
    with pytest.raises(ValueError, match="already widened"):
        widen(wide.model, 2)
    odd = load_config("configs/supernet.py:digits").model
    odd.mlp_dim = 100  # not a multiple of 8: served at width 1 the MLP keeps 100, the wide one would round to 104
    widen(odd, 2)
    with pytest.raises(ValueError, match="served"):
        served_subnet(odd, SubnetConfig(), dataset.tasks)
