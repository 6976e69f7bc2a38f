"""The slimmable multi-task ViT: equals the dense model of the sliced widths; encode/decode split; subnet checks."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import build_model
from effjax.models.elastic_vit import ElasticViT
from effjax.subnet import SubnetConfig, slim_widths

from .conftest import apply, build, init_params, model_config


def _dense_params_from_slim(slim_params, dense_shapes):
    """The smaller model's parameters as the prefix slices of the slim parameters (same paths)."""
    slim = flax.traverse_util.flatten_dict(slim_params, sep="/")
    return flax.traverse_util.unflatten_dict(
        {path: slim[path][tuple(slice(0, n) for n in shape.shape)]
         for path, shape in flax.traverse_util.flatten_dict(dense_shapes, sep="/").items()}, sep="/")


@pytest.mark.parametrize("dataset, width, decoders, image_head, decoder_blocks", [
    ("digits", 1.0, 1.0, "class_token", 0), ("digits", 0.5, 0.5, "class_token", 0), ("shapes", 0.5, 1.0, "class_token", 0),
    ("shapes", 1.0, 0.5, "class_token", 0), ("digits", 0.5, 0.5, "mean_pool", 0), ("shapes", 0.5, 1.0, "mean_pool", 0),
    ("digits", 0.5, 0.5, "class_token", 1), ("shapes", 1.0, 1.0, "class_token", 2)])
def test_subnet_equals_a_plain_vit_with_sliced_weights(request, dataset, width, decoders, image_head, decoder_blocks):
    """Decoder blocks: uniform widths only, where a plain ViT of that width has the same block heads / MLP."""
    ds = request.getfixturevalue(dataset)
    mc = model_config(num_layers=2, patch_size=4 if dataset == "shapes" else 2, image_head=image_head,
                      decoder_blocks=decoder_blocks)
    model = build(ds.tasks, mc)
    images = jnp.asarray(ds.splits["val"]["image"][:4])
    params = init_params(model, images)
    subnet = SubnetConfig(width, tuple((t.name, decoders) for t in ds.tasks))
    w = slim_widths(mc, ds.tasks, subnet)
    dense = ElasticViT(ds.tasks, mc.patch_size, w.hidden, mc.num_layers, w.heads, w.mlp, w.decoder(ds.tasks[0].name),
                       image_head=image_head, decoder_blocks=decoder_blocks)  # mt_vit at the sliced widths
    shapes = jax.eval_shape(lambda: nn.unbox(dense.init(jax.random.PRNGKey(0), images[:1])["params"]))
    expected = apply(dense, _dense_params_from_slim(params, shapes), images)
    got = apply(model, params, images, subnet=subnet)
    for t in ds.tasks:
        np.testing.assert_allclose(got[t.name], expected[t.name], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("image_head, decoder_blocks", [("class_token", 0), ("mean_pool", 0), ("class_token", 1)])
def test_padded_encode_decode_equals_the_sliced_forward(digits, image_head, decoder_blocks):
    mc = model_config(image_head=image_head, decoder_blocks=decoder_blocks)
    model = build(digits.tasks, mc)
    images = jnp.asarray(digits.splits["val"]["image"][:4])
    params = init_params(model, images)
    subnet = SubnetConfig(0.5, (("digit", 0.5), ("parity", 1.0), ("ge5", 0.5)))
    expected = apply(model, params, images, subnet=subnet)
    tokens = apply(model, params, images, 0.5, method="encode")
    padded = jnp.pad(tokens, ((0, 0), (0, 0), (0, mc.hidden_dim - tokens.shape[-1])))
    for t in digits.tasks:
        got = apply(model, params, padded, t.name, subnet.decoder_width(t.name), (8, 8),
                          jnp.int32(tokens.shape[-1]), method="decode")
        np.testing.assert_allclose(got, expected[t.name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("decoder_blocks", [0, 1])
def test_a_task_prediction_depends_only_on_its_own_decoder_width(digits, decoder_blocks):
    """What lets the controller look mixed configs up in a (encoder width, decoder width) table."""
    model = build(digits.tasks, model_config(decoder_blocks=decoder_blocks))
    images = jnp.asarray(digits.splits["val"]["image"][:4])
    params = init_params(model, images)
    mixed = apply(model, params, images, subnet=SubnetConfig(0.5, (("digit", 0.5), ("parity", 1.0), ("ge5", 0.5))))
    uniform = apply(model, params, images, subnet=SubnetConfig(0.5, (("digit", 1.0), ("parity", 1.0), ("ge5", 1.0))))
    np.testing.assert_allclose(mixed["parity"], uniform["parity"], rtol=1e-6)
    assert not np.allclose(mixed["digit"], uniform["digit"])


def test_subnet_knobs_are_checked(digits):
    model = build(digits.tasks, model_config())
    images = jnp.zeros((1, 8, 8, 1))
    params = init_params(model, images)
    with pytest.raises(ValueError, match="attention_keep_ratio"):
        model.apply({"params": params}, images, subnet=SubnetConfig(attention_keep_ratio=0.5))
    with pytest.raises(ValueError, match="unknown tasks"):
        model.apply({"params": params}, images, subnet=SubnetConfig(decoder_widths=(("depth", 0.5),)))


def test_registry_builds_it_with_logical_axis_names_everywhere(digits):
    mc = model_config()
    model = build_model(mc, digits.tasks)
    boxed = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
    assert tuple(model.width_menu) == (0.5, 1.0)
    with pytest.raises(ValueError, match="width_menu"):
        build_model(model_config(width_menu=(0.25, 0.5)), digits.tasks)
    with pytest.raises(ValueError, match="image_head='avg'"):
        build_model(model_config(image_head="avg"), digits.tasks)
    with pytest.raises(ValueError, match="image_head='avg'"):
        build_model(model_config(name="mt_vit", image_head="avg"), digits.tasks)
    for option in ({"decoder_blocks": 1}, {"image_head": "mean_pool"}, {"private_norms": True}):
        build_model(model_config(name="super_vit", **option), digits.tasks)  # the same elastic model
        for feature in ({"sparse_layers": (0,)}, {"moe_every": 1}):
            with pytest.raises(ValueError, match="super_vit: .* study options, not supported with model.sparse_layers"):
                build_model(model_config(name="super_vit", **option, **feature), digits.tasks)


def test_private_norms_pick_their_width_row_and_equal_shared_norms_when_rows_agree(digits):
    images = jnp.asarray(digits.splits["val"]["image"][:4])
    menu = (0.5, 1.0)
    shared = build(digits.tasks, model_config(width_menu=menu))
    private = build(digits.tasks, model_config(width_menu=menu, private_norms=True))
    shared_params = init_params(shared, images)

    def tiled(params):  # every LayerNorm scale / bias of the encoder, one identical row per width
        flat = flax.traverse_util.flatten_dict(params, sep="/")
        encoder_norm = lambda k: k.startswith("ln_final/") or "/ln_" in k  # noqa: E731
        out = {k: (jnp.stack([v] * len(menu)) if encoder_norm(k) and not k.startswith("heads_") else v)
               for k, v in flat.items()}
        return flax.traverse_util.unflatten_dict(out, sep="/")

    private_params = tiled(shared_params)
    shapes = jax.eval_shape(lambda: nn.unbox(private.init(jax.random.PRNGKey(0), images[:1])["params"]))
    assert jax.tree.map(lambda a: a.shape, private_params) == jax.tree.map(lambda a: a.shape, shapes)
    for width in menu:
        subnet = SubnetConfig(width, tuple((t.name, width) for t in digits.tasks))
        expected = apply(shared, shared_params, images, subnet=subnet)
        got = apply(private, private_params, images, subnet=subnet)
        for t in digits.tasks:
            np.testing.assert_allclose(got[t.name], expected[t.name], rtol=1e-5, atol=1e-6)
    # changing the 0.5 row of the final norm moves only the 0.5-wide subnet
    bumped = flax.traverse_util.flatten_dict(private_params, sep="/")
    # a ramp, not a constant: the heads' LayerNorm would remove a constant shift
    bumped["ln_final/bias"] = bumped["ln_final/bias"].at[0].add(jnp.linspace(-1.0, 1.0, 16))
    bumped = flax.traverse_util.unflatten_dict(bumped, sep="/")
    for width, moved in ((0.5, True), (1.0, False)):
        subnet = SubnetConfig(width, tuple((t.name, width) for t in digits.tasks))
        before = apply(private, private_params, images, subnet=subnet)["digit"]
        after = apply(private, bumped, images, subnet=subnet)["digit"]
        assert (not np.allclose(before, after)) == moved
    with pytest.raises(ValueError, match="private norms exist only for the menu widths"):
        apply(private, private_params, images, 0.75, method="encode")
