import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from effjax.compress.cost import layer_weight_bits, vit_layers
from effjax.compress.cost_elastic import elastic_cost
from effjax.data import load_dataset
from effjax.models import build_model
from effjax.subnet import SubnetConfig
from tests.foundation.helpers import tiny


def _xla_forward_flops(model, params, images):
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(params, images).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost["flops"] / images.shape[0]


@pytest.mark.parametrize("name, overrides", [
    ("quickstart", {}),
    ("quickstart", {"hidden_dim": 48, "num_heads": 3, "mlp_dim": 96, "num_layers": 3}),
    ("shapes_vit", {}),
    ("shapes_vit", {"patch_size": 8, "decoder_dim": 16}),
])
def test_analytic_cost_matches_xla(name, overrides):
    c = tiny(name)
    c.data.num_train = c.data.num_val = c.data.num_test = 4
    for k, v in overrides.items():
        c.model[k] = v
    ds = load_dataset(c.data)
    model = build_model(c.model, ds.tasks)
    images = jnp.zeros((2,) + ds.image_shape)
    boxed = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    params = nn.unbox(boxed)
    cost = elastic_cost(c.model, ds.image_shape, ds.tasks)
    assert cost.params == sum(x.size for x in jax.tree.leaves(params))
    xla = _xla_forward_flops(model, params, images)
    assert abs(cost.flops - xla) / xla < 0.10, (cost.flops, xla)


def test_every_parameter_has_logical_axis_names():
    c = tiny("shapes_vit")
    c.data.num_train = c.data.num_val = c.data.num_test = 4
    ds = load_dataset(c.data)
    model = build_model(c.model, ds.tasks)
    boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + ds.image_shape))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim


def test_dense_heads_have_pixel_resolution():
    c = tiny("shapes_vit")
    c.data.num_train = c.data.num_val = c.data.num_test = 4
    ds = load_dataset(c.data)
    model = build_model(c.model, ds.tasks)
    x = jnp.zeros((2,) + ds.image_shape)
    params = model.init(jax.random.PRNGKey(0), x)
    out = model.apply(params, x)
    assert out["segmentation"].shape == (2, 32, 32, 4)
    assert out["depth"].shape == (2, 32, 32)
    assert out["count"].shape == (2, 4)


def test_dot_general_hook_reaches_every_layer_group():
    c = tiny()
    ds = load_dataset(c.data)
    seen = []

    def provider(group):
        seen.append(group)
        return None

    model = build_model(c.model, ds.tasks, dot_general_provider=provider)
    model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + ds.image_shape))
    assert {"embed", "attention", "mlp", "head"} <= set(seen)


def test_subnet_bits_price_weight_bits_and_bops():
    c = tiny()
    ds = load_dataset(c.data)
    full = elastic_cost(c.model, ds.image_shape, ds.tasks)
    int8 = elastic_cost(c.model, ds.image_shape, ds.tasks, SubnetConfig(weight_bits=8, activation_bits=8))
    int4 = elastic_cost(c.model, ds.image_shape, ds.tasks, SubnetConfig(weight_bits=4, activation_bits=4))
    assert full.flops == int8.flops == int4.flops
    assert full.weight_bits == 32 * full.params
    # kernels at 8 bits (first/last layers too); biases, norms, tokens and the scales stay float32
    assert int8.weight_bits == sum(layer_weight_bits(layer, 8) for layer in vit_layers(c.model, ds.image_shape, ds.tasks))
    assert 8 * full.params < int8.weight_bits < 12 * full.params
    assert int4.weight_bits < int8.weight_bits and int4.bops < int8.bops < full.bops


def test_subnet_config_rejects_bad_knobs():
    with pytest.raises(ValueError, match="encoder_width"):
        SubnetConfig(encoder_width=1.5)
    with pytest.raises(ValueError, match="weight_bits"):
        SubnetConfig(weight_bits=3)
    with pytest.raises(ValueError, match="unknown knobs"):
        SubnetConfig.from_dict({"widht": 0.5})
    roundtrip = SubnetConfig.from_dict(SubnetConfig(decoder_widths=(("a", 0.5),)).to_dict())
    assert roundtrip.decoder_width("a") == 0.5
