"""Export of a slimmable multi-task ViT subnet with the study's head options: the standalone model
computes what the supernet computes (decoder blocks are sliced at their task's widths)."""

import dataclasses

import jax
import numpy as np
import pytest

from effjax.compress import export as export_lib
from effjax.subnet import SubnetConfig

from .conftest import build, init_params, model_config


@pytest.mark.parametrize("image_head, decoder_blocks", [("class_token", 1), ("mean_pool", 0)])
def test_float_export_predicts_what_the_supernet_computes(digits, tmp_path, image_head, decoder_blocks):
    mc = model_config(hidden_dim=32, num_heads=4, mlp_dim=64, decoder_dim=32, patch_size=2,
                      width_menu=(0.25, 0.5, 0.75, 1.0), image_head=image_head, decoder_blocks=decoder_blocks)
    model = build(digits.tasks, mc)
    images = np.asarray(digits.splits["val"]["image"][:8])
    params = init_params(model, images)
    # decoders wider and narrower than the encoder
    subnet = SubnetConfig(0.5, (("digit", 1.0), ("parity", 0.25), ("ge5", 0.75)))
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images[:1])["params"])
    plan = export_lib.plan(boxed, mc, digits.tasks, subnet)
    host = jax.tree.map(np.asarray, params)
    export_lib.write(str(tmp_path), host, plan, {"model_config": mc.to_dict(),
                                                 "tasks": [dataclasses.asdict(t) for t in digits.tasks],
                                                 "subnet": subnet.to_dict()})
    exported = export_lib.load(str(tmp_path)).predict(images)
    reference = jax.jit(lambda p: model.apply({"params": p}, images, subnet=subnet))(params)
    for task in reference:
        np.testing.assert_allclose(exported[task], reference[task], rtol=1e-4, atol=1e-5)


def test_decoder_block_kernels_take_the_body_bits_like_the_cost_model():
    assert export_lib.layer_group("heads_digit/block0/attention/query/kernel") == "attention"
    assert export_lib.layer_group("heads_digit/block0/mlp/wi/kernel") == "mlp"
    assert export_lib.layer_group("heads_digit/hidden/kernel") == "head"
    assert export_lib.layer_group("blocks_0/attention/query/kernel") == "attention"
