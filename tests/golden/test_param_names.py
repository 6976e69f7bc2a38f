"""Parameters saved in naming scheme 1 (before mt_vit, sparse_vit and moe_vit were built from the elastic model's
parts) load through the rename map and give the same logits; resuming from them is refused in one line.

`data/legacy_<case>.msgpack`: the golden case's parameters after its 20 training steps and their logits on the
golden's 8 test images, written by the code of commit f6b80b8 (scheme 1) in the test session's 8-device set-up.
"""

import dataclasses
import json
import os

import flax
import jax
import numpy as np
import pytest
from flax import serialization

from effjax.models import param_names
from effjax.subnet import SubnetConfig
from tests.golden.cases import GOLDEN_DIR, PRESETS, load

LEGACY_CASES = ("mt_vit", "sparse_vit", "moe_vit", "qat_int4")


def _legacy(name):
    with open(os.path.join(GOLDEN_DIR, f"legacy_{name}.msgpack"), "rb") as f:
        return serialization.msgpack_restore(f.read())


def _flat(tree):
    return flax.traverse_util.flatten_dict(tree, sep="/")


@pytest.mark.parametrize("name", LEGACY_CASES)
def test_scheme_1_parameters_give_the_same_logits_after_the_rename(name):
    from effjax.train.trainer import build

    spec, knobs = PRESETS[name]
    setup = build(load(spec), jax.devices()[:1])
    record = _legacy(name)
    assert param_names.is_legacy(record["params"])
    params = param_names.upgrade_params(record["params"])
    assert not param_names.is_legacy(params)
    images = np.asarray(setup.dataset.splits["test"]["image"][:8])
    abstract = jax.eval_shape(lambda: setup.model.init({"params": jax.random.PRNGKey(0)}, images))["params"]
    expected_shapes = {k: v.shape for k, v in _flat(flax.linen.unbox(abstract)).items()}
    assert {k: v.shape for k, v in _flat(params).items()} == expected_shapes
    for key, subnet in (("logits_full", None), ("logits_subnet", SubnetConfig(**knobs) if knobs else None)):
        if key not in record:
            continue
        kwargs = {} if subnet is None else {"subnet": subnet}
        out = jax.jit(lambda p, x: setup.model.apply({"params": p}, x, rngs={"params": jax.random.PRNGKey(0)},
                                                     **kwargs))(params, images)
        assert set(out) == set(record[key])
        for task, logits in record[key].items():
            np.testing.assert_allclose(np.asarray(out[task]), logits, rtol=2e-5, atol=2e-6, err_msg=f"{key}/{task}")


def test_rename_map_paths():
    up = param_names.upgrade_path
    assert up("patch_embed/kernel") == "embedding/patch_embed/kernel"
    assert up("cls") == "embedding/cls" and up("pos_embedding") == "embedding/pos_embedding"
    assert up("block3/ln_mlp/LayerNorm_0/scale") == "blocks_3/ln_mlp/scale"
    assert up("head_seg/block0/attention/query/kernel") == "heads_seg/block0/attention/query/kernel"
    assert up("head_depth/ln/LayerNorm_0/bias") == "heads_depth/ln/bias"
    for current in ("embedding/cls", "blocks_0/moe/wi", "heads_digit/out/kernel", "ln_final/scale"):
        assert up(current) == current


def test_resuming_from_scheme_1_is_refused_in_one_line(tmp_path):
    from effjax.train.checkpoint import Checkpointer

    legacy = jax.tree.map(np.asarray, _legacy("mt_vit")["params"])
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=1, async_save=False)
    ckpt.save(1, {"params": legacy, "step": np.int32(1)}, wait=True)
    current = param_names.upgrade_params(legacy)
    with pytest.raises(ValueError, match=r"naming scheme 1 .*Resuming is not supported") as err:
        ckpt.check_compatible({"params": current, "step": np.int32(1)})
    assert "\n" not in str(err.value)
    step, loaded = ckpt.latest_params()  # what load_run and train.init_from read: the renamed parameters
    ckpt.close()
    assert step == 1 and set(_flat(loaded)) == set(_flat(current))


def test_export_of_format_3_with_scheme_1_paths_loads(tmp_path):
    """An mt_vit export as version 3 wrote it (scheme 1 paths) predicts what the same export in version 4 does."""
    from effjax.compress import export as export_lib
    from effjax.train.trainer import build

    config = load(PRESETS["mt_vit"][0])
    setup = build(config, jax.devices()[:1])
    params = param_names.upgrade_params(_legacy("mt_vit")["params"])
    new_dir, old_dir = tmp_path / "v4", tmp_path / "v3"
    subnet = SubnetConfig(weight_bits=8)
    images = np.asarray(setup.dataset.splits["test"]["image"][:4])
    boxed = jax.eval_shape(lambda: setup.model.init(jax.random.PRNGKey(0), images[:1])["params"])
    export_lib.write(str(new_dir), jax.tree.map(np.asarray, params),
                     export_lib.plan(boxed, config.model, setup.dataset.tasks, subnet),
                     {"model_config": config.model.to_dict(), "subnet": subnet.to_dict(),
                      "tasks": [dataclasses.asdict(t) for t in setup.dataset.tasks]})
    old_dir.mkdir()
    meta = json.loads((new_dir / "model.json").read_text())
    inverse = {param_names.upgrade_path(p): p for p in _flat(_legacy("mt_vit")["params"])}
    meta["format_version"] = 3
    for p in meta["params"]:
        p["path"] = inverse[p["path"]]
    for a in meta["arrays"]:
        name, colon, suffix = a["name"].partition(":")
        a["name"] = inverse[name] + colon + suffix
    (old_dir / "model.json").write_text(json.dumps(meta))
    (old_dir / "model.bin").write_bytes((new_dir / "model.bin").read_bytes())
    new, old = export_lib.ExportedModel(str(new_dir)).predict(images), export_lib.ExportedModel(str(old_dir)).predict(images)
    for task in new:
        np.testing.assert_array_equal(np.asarray(old[task]), np.asarray(new[task]))
