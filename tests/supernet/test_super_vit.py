"""The main job's supernet: knob paths agree, the cost model matches XLA, QAT and export see the same weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import export as export_lib
from effjax.compress.cost_elastic import elastic_cost, elastic_layers
from effjax.compress.qat import fake_quantize, fake_quantize_params
from effjax.quant.rtn import fake_quantize as numpy_fake_quantize
from effjax.config.base import base_config
from effjax.config.load import load_config
from effjax.data import load_dataset
from effjax.models import build_model
from effjax.models.elastic_vit import kept_key_mask
from effjax.subnet import SubnetConfig


@pytest.fixture(scope="module")
def supernet():
    config = load_config("configs/supernet.py:digits")
    config.model.hidden_dim, config.model.mlp_dim, config.model.decoder_dim = 32, 64, 32
    config.model.expert_dim = 32
    dataset = load_dataset(config.data)
    model = build_model(config.model, dataset.tasks)
    images = jnp.asarray(dataset.splits["val"]["image"][:8])
    params = model.init(jax.random.PRNGKey(0), images)["params"]
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                          is_leaf=lambda x: hasattr(x, "value"))
    # random predictor/basis weights so the approximate attention has no ties
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)
    return config, dataset, model, params, images


SUBNETS = [SubnetConfig(),
           SubnetConfig(encoder_width=0.5, attention_keep_ratio=0.5, moe_top_k=1),
           SubnetConfig(encoder_width=0.25, decoder_widths=(("digit", 0.5),), attention_keep_ratio=0.25, moe_top_k=2),
           SubnetConfig(encoder_width=0.75, attention_keep_ratio=1.0, moe_top_k=1)]


@pytest.mark.parametrize("subnet", SUBNETS[1:])
def test_masked_gathered_and_traced_knobs_agree(supernet, subnet):
    _, _, model, params, images = supernet
    encode = lambda path: model.apply({"params": params}, images, subnet.encoder_width, subnet.attention_keep_ratio,  # noqa: E731
                                      subnet.moe_top_k, method="encode", path=path)
    masked, gathered = encode("masked"), encode("gathered")
    traced = jax.jit(lambda p, rho, k: model.apply({"params": p}, images, subnet.encoder_width, rho, k, 2,
                                                   method="encode"))(params, subnet.attention_keep_ratio, subnet.moe_top_k)
    np.testing.assert_allclose(masked, gathered, atol=2e-5)
    np.testing.assert_allclose(traced, masked, atol=2e-5)
    # the knobs matter: the dense full model gives other tokens
    assert float(jnp.abs(masked[..., :8] - encode_dense(model, params, images)[..., :8]).max()) > 1e-3


def encode_dense(model, params, images):
    return model.apply({"params": params}, images, 1.0, 1.0, 2, method="encode")


def test_kept_key_mask_keeps_ceil_rho_n_keys_per_row():
    scores = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 16, 17))
    for rho, count in ((0.25, 5), (0.5, 9), (1.0, 17)):
        mask = np.asarray(kept_key_mask(scores, rho))
        assert mask.shape == (2, 3, 17, 17) and mask[:, :, 0].all()
        assert (mask[:, :, 1:].sum(-1) == count).all()


@pytest.mark.parametrize("subnet", SUBNETS)
def test_cost_flops_match_xla_within_10_percent(supernet, subnet):
    config, dataset, model, params, images = supernet
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, subnet=subnet)).lower(params, images).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    xla = analysis["flops"] / images.shape[0]
    ours = elastic_cost(config.model, dataset.image_shape, dataset.tasks, subnet).flops
    assert ours == pytest.approx(xla, rel=0.10), (ours, xla)


def test_cost_falls_with_every_knob(supernet):
    config, dataset, *_ = supernet
    cost = lambda **kw: elastic_cost(config.model, dataset.image_shape, dataset.tasks, SubnetConfig(**kw))  # noqa: E731
    full = cost()
    assert cost(encoder_width=0.5).flops < full.flops
    core = lambda cost_: sum(2 * layer.macs for layer in elastic_layers(  # noqa: E731
        config.model, dataset.image_shape, dataset.tasks, SubnetConfig(attention_keep_ratio=cost_))
        if layer.name.endswith(("attention_logits", "attention_mix")))
    assert core(0.25) < 0.5 * core(1.0)
    # at 17 tokens the predictor and the gathers cost more than the pairs they save
    assert cost(attention_keep_ratio=0.25).flops > full.flops
    assert cost(moe_top_k=1).flops < full.flops
    assert cost(weight_bits=4).weight_bits < cost(weight_bits=8).weight_bits < full.weight_bits


def test_fake_quantization_equals_the_export_quantizer_and_passes_gradients():
    w = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 8))
    for bits in (4, 8):
        np.testing.assert_allclose(fake_quantize(w, bits), numpy_fake_quantize(np.asarray(w), bits), atol=1e-6)
        traced = jax.jit(fake_quantize)(w, jnp.int32(bits))
        np.testing.assert_allclose(traced, fake_quantize(w, bits), atol=1e-6)
    np.testing.assert_array_equal(jax.jit(fake_quantize)(w, jnp.int32(32)), w)
    grad = jax.grad(lambda x: jnp.sum(fake_quantize(x, 4) * 3.0))(w)
    np.testing.assert_allclose(grad, 3.0 * np.ones_like(w))  # straight-through


def test_qat_params_equal_the_evaluation_params(supernet):
    config, dataset, model, params, _ = supernet
    subnet = SubnetConfig(encoder_width=0.5, moe_top_k=1, weight_bits=4, first_last_bits=8)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1,) + dataset.image_shape, np.float32))["params"])
    plan = export_lib.plan(boxed, config.model, dataset.tasks, subnet)
    host = jax.tree.map(np.asarray, params)
    evaluated = export_lib.quantized_params(host, plan)
    trained = fake_quantize_params(params, 4)
    for got, want in zip(jax.tree.leaves(trained), jax.tree.leaves(evaluated)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    quantized = [p for p in plan if p.bits < 32]
    assert any(p.path.endswith("moe/wi") and p.bits == 4 for p in quantized)
    assert any("patch_embed" in p.path and p.bits == 8 for p in quantized)


def test_export_of_a_supernet_config_predicts_what_the_supernet_computes(supernet, tmp_path):
    config, dataset, model, params, images = supernet
    subnet = SubnetConfig(encoder_width=0.5, attention_keep_ratio=0.5, moe_top_k=1, weight_bits=8, first_last_bits=8)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1,) + dataset.image_shape, np.float32))["params"])
    plan = export_lib.plan(boxed, config.model, dataset.tasks, subnet)
    host = jax.tree.map(np.asarray, params)
    meta = export_lib.write(str(tmp_path), host, plan, {"model_config": config.model.to_dict(),
                                                         "tasks": [dataclasses.asdict(t) for t in dataset.tasks],
                                                         "subnet": subnet.to_dict()})
    assert meta["bin_bytes"] * 8 - meta["payload_bits"] < 8 * len(plan)
    exported = export_lib.load(str(tmp_path)).predict(np.asarray(images))
    reference = model.apply({"params": export_lib.quantized_params(host, plan)}, images, subnet=subnet.without_bits())
    for task in reference:
        np.testing.assert_allclose(exported[task], reference[task], atol=1e-4)


def test_bad_knobs_are_refused_in_one_line(supernet):
    _, _, model, params, images = supernet
    with pytest.raises(ValueError, match="moe_top_k"):
        model.apply({"params": params}, images, subnet=SubnetConfig(moe_top_k=5))
    with pytest.raises(ValueError, match="without_bits"):
        model.apply({"params": params}, images, subnet=SubnetConfig(weight_bits=4))


def test_knob_eval_step_equals_the_static_eval_step(supernet):
    """The search's one-program-per-encoder-width evaluation gives the metric sums of the static program."""
    from effjax.job.subnet_search import make_knob_eval_step
    from effjax.train import step as step_lib

    config, dataset, model, params, images = supernet
    arrays = dataset.splits["val"]
    batch = {k: jnp.asarray(v[:32]) for k, v in arrays.items()}
    batch["mask"] = jnp.ones((32,), jnp.float32)
    menu = tuple(sorted(config.model.width_menu))
    steps = {}
    for subnet in SUBNETS:
        decoder_index = np.asarray([menu.index(subnet.decoder_width(t.name)) for t in dataset.tasks], np.int32)
        if subnet.encoder_width not in steps:
            steps[subnet.encoder_width] = jax.jit(make_knob_eval_step(model, dataset.tasks, subnet.encoder_width, menu, 2))
        traced = steps[subnet.encoder_width](params, batch, decoder_index, np.float32(subnet.attention_keep_ratio),
                                             np.int32(subnet.moe_top_k or model.default_top_k))
        static = step_lib.make_eval_step(model, dataset.tasks, subnet)(params, batch)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(traced), jax.tree.leaves(static)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=f"{subnet} {path}")
    for width, step in steps.items():
        assert step._cache_size() == 1, f"encoder width {width}: {step._cache_size()} compiled programs"


def test_builder_and_cost_model_read_one_set_of_defaults():
    """A config that leaves the MoE and predictor fields out gets the defaults of effjax/config/base.py in both
    the model and the cost model: the parameter counts agree."""
    config = load_config("configs/supernet.py:digits")
    for key in ("num_experts", "expert_dim", "top_k", "capacity_factor", "predictor_channels",
                "predictor_token_reduction"):
        del config.model[key]
    dataset = load_dataset(config.data)
    model = build_model(config.model, dataset.tasks)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + dataset.image_shape))["params"])
    stored = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(boxed))
    priced = elastic_cost(config.model, dataset.image_shape, dataset.tasks).params
    predictor_basis = sum(x.params for x in elastic_layers(config.model, dataset.image_shape, dataset.tasks)
                          if x.name.endswith("/predictor_basis"))
    defaults = base_config().model
    assert (model.num_experts, model.expert_dim, model.default_top_k, model.predictor_channels) == (
        defaults.num_experts, defaults.expert_dim, defaults.top_k, defaults.predictor_channels)
    assert model.num_experts != load_config("configs/supernet.py:digits").model.num_experts  # the default is in use
    assert predictor_basis > 0
    assert priced == stored


def test_kept_block_mask_is_the_block_connectivity_mask_of_the_top_blocks():
    from effjax.models import block_sparse as bs
    from effjax.models.elastic_vit import kept_block_mask

    scores = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 40, 41))
    for rho in (0.1, 0.5, 1.0):
        expected = bs.block_connectivity_mask(bs.top_key_blocks(scores, rho, 16), 41, 16)
        np.testing.assert_array_equal(kept_block_mask(scores, rho, 16), expected)
        traced = jax.jit(lambda s, r: kept_block_mask(s, r, 16))(scores, jnp.float32(rho))
        np.testing.assert_array_equal(traced, expected)


@pytest.fixture(scope="module")
def block_supernet(supernet):
    config, dataset, _, params, images = supernet
    config = config.copy_and_resolve_references()
    config.model.attention_block = 16
    return config, dataset, build_model(config.model, dataset.tasks), params, images


def test_block_sparse_option_paths_agree_and_are_priced(block_supernet):
    """`model.attention_block`: evaluation runs block-sparse attention, training and traced knobs the same
    block mask; the cost model prices the block path within 10% of XLA."""
    config, dataset, model, params, images = block_supernet
    subnet = SubnetConfig(encoder_width=0.5, attention_keep_ratio=0.5, moe_top_k=1)
    encode = lambda path: model.apply({"params": params}, images, subnet.encoder_width, 0.5, 1,  # noqa: E731
                                      method="encode", path=path)
    traced = jax.jit(lambda p, rho: model.apply({"params": p}, images, 0.5, rho, 1, 2, method="encode"))(params, 0.5)
    np.testing.assert_allclose(encode("gathered"), encode("masked"), atol=2e-5)
    np.testing.assert_allclose(traced, encode("masked"), atol=2e-5)
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x, subnet=subnet)).lower(params, images).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    ours = elastic_cost(config.model, dataset.image_shape, dataset.tasks, subnet).flops
    assert ours == pytest.approx(analysis["flops"] / images.shape[0], rel=0.10)
    with pytest.raises(ValueError, match="block=12"):
        config.model.attention_block = 12
        build_model(config.model, dataset.tasks).init(jax.random.PRNGKey(0), images)
