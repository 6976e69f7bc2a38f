"""Exact FLOPs of width configs: agree with XLA's cost analysis of the compiled sliced subnet."""

import jax
import jax.numpy as jnp
import pytest

from effjax.compress.cost import total_cost, vit_layers
from effjax.compress.cost_elastic import elastic_cost
from effjax.subnet import SubnetConfig, slim_widths

from .conftest import build, init_params, model_config


def _xla_flops_per_example(model, params, images, subnet):
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, subnet=subnet)).lower(params, images).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost["flops"] / images.shape[0]


@pytest.mark.parametrize("dataset, encoder, decoders, image_head, decoder_blocks", [
    ("digits", 1.0, (1.0, 1.0, 1.0), "class_token", 0),
    ("digits", 0.25, (0.25, 1.0, 0.5), "class_token", 0),
    ("shapes", 1.0, (0.25, 0.25, 0.25), "class_token", 0),
    ("shapes", 0.5, (1.0, 0.5, 0.25), "class_token", 0),
    ("shapes", 0.25, (0.25, 0.75, 1.0), "class_token", 0),
    ("shapes", 0.75, (0.75, 0.75, 0.75), "class_token", 0),
    ("digits", 1.0, (1.0, 1.0, 1.0), "mean_pool", 0),
    ("digits", 0.25, (1.0, 0.25, 1.0), "mean_pool", 0),
    ("digits", 0.5, (1.0, 0.25, 0.75), "class_token", 1),
    ("shapes", 0.25, (0.5, 1.0, 0.25), "class_token", 1),
])
def test_analytic_flops_match_xla_within_10_percent(request, dataset, encoder, decoders, image_head, decoder_blocks):
    ds = request.getfixturevalue(dataset)
    mc = model_config(hidden_dim=32, num_heads=4, mlp_dim=64, decoder_dim=32, num_layers=2,
                      patch_size=2 if dataset == "digits" else 4, width_menu=(0.25, 0.5, 0.75, 1.0),
                      image_head=image_head, decoder_blocks=decoder_blocks)
    model = build(ds.tasks, mc)
    images = jnp.asarray(ds.splits["val"]["image"][:4])
    params = init_params(model, images)
    subnet = SubnetConfig(encoder, tuple((t.name, d) for t, d in zip(ds.tasks, decoders)))
    analytic = elastic_cost(mc, ds.image_shape, ds.tasks, subnet).flops
    xla = _xla_flops_per_example(model, params, images, subnet)
    assert abs(analytic - xla) / xla < 0.10, (analytic, xla)


def test_full_width_prices_like_the_dense_vit(shapes):
    mc = model_config(hidden_dim=64, num_heads=4, mlp_dim=128, decoder_dim=64, num_layers=3)
    assert elastic_cost(mc, shapes.image_shape, shapes.tasks) == total_cost(vit_layers(mc, shapes.image_shape, shapes.tasks))


def test_flops_grow_with_every_width_and_params_count_the_slices(shapes):
    mc = model_config(hidden_dim=64, num_heads=4, mlp_dim=128, decoder_dim=64, num_layers=3)
    menu = (0.25, 0.5, 0.75, 1.0)
    cost = lambda e, d: elastic_cost(mc, shapes.image_shape, shapes.tasks,  # noqa: E731
                                      SubnetConfig(e, (("depth", d),)))
    flops = [[cost(e, d).flops for d in menu] for e in menu]
    assert all(flops[i][j] < flops[i + 1][j] for i in range(3) for j in range(4))
    assert all(flops[i][j] < flops[i][j + 1] for i in range(4) for j in range(3))
    widths = slim_widths(mc, shapes.tasks, SubnetConfig(0.5, (("depth", 0.25),)))
    assert (widths.heads, widths.hidden, widths.mlp, widths.decoder("depth"), widths.decoder("count")) == (2, 32, 64, 16, 64)
    small = cost(0.5, 0.25)
    assert small.params < cost(1.0, 1.0).params and small.weight_bits == 32 * small.params
