"""The example of docs/your_model.md, run from the page's own text: a model of your own (the elastic ViT
with a two-layer patch stem) registered with `register_model`, priced, exported and (slow) trained,
searched and exported by the main job."""

import json
import os
import re
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.compress import export as export_lib
from effjax.compress.cost import total_cost
from effjax.compress.cost_elastic import elastic_layers, model_layers
from effjax.config.load import load_config
from effjax.config.validate import ConfigError, validate_static
from effjax.job import run as pipeline
from effjax.job import subnet_search as ss
from effjax.models import build_model, model_names, register_model
from effjax.models.elastic_vit import ElasticViT, build
from effjax.subnet import SubnetConfig
from tests.foundation.helpers import REPO, untrained_evaluator

DOC = os.path.join(REPO, "docs", "your_model.md")
SLIM = {"encoder_width": 0.5, "decoder_width_digit": 0.5, "decoder_width_parity": 0.25, "decoder_width_ge5": 1.0,
        "weight_bits": 4}


def examples() -> dict[str, str]:
    with open(DOC) as f:
        text = f.read()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S))


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    """`my_models/` (the page's two files) on sys.path, imported as the main job would; cwd = the checkout."""
    root = tmp_path_factory.mktemp("user")
    package = root / "my_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "stem_vit.py").write_text(examples()["model_module"])
    (package / "stem_vit_config.py").write_text(examples()["config"])
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        mp.chdir(REPO)
        yield package


def _config(package, arg="digits,tiny"):
    config = load_config(f"{package / 'stem_vit_config.py'}:{arg}")
    config.log.progress_bar = False
    config.checkpoint.async_save = False
    return config


@pytest.fixture(scope="module")
def evaluator(user_package):
    return untrained_evaluator(_config(user_package))


def test_both_examples_are_found():
    assert set(examples()) == {"model_module", "config"}


def test_the_config_builds_the_registered_subclass_with_logical_axis_names(user_package, evaluator):
    config = _config(user_package)
    validate_static(config)
    assert "stem_vit" in model_names() and config.model.module == "my_models.stem_vit"
    model = evaluator.setup.model
    assert isinstance(model, ElasticViT) and type(model).__name__ == "StemViT" and model.stem_dim == 32
    boxed = flax.traverse_util.flatten_dict(evaluator.boxed, sep="/")
    assert boxed["embedding/patch_embed/kernel"].names == ("patch", "stem")
    assert boxed["embedding/stem_out/kernel"].names == ("stem", "embed")
    assert all(export_lib.layer_group(p) == "embed" for p in boxed if p.startswith("embedding/"))


@pytest.mark.parametrize("subnet", [SubnetConfig(), SubnetConfig(encoder_width=0.5, decoder_widths=(("digit", 0.25),))])
def test_registered_cost_matches_xla_within_10_percent(evaluator, subnet):
    setup = evaluator.setup
    images = jnp.asarray(setup.dataset.splits["val"]["image"][:8])
    compiled = jax.jit(lambda p, x: setup.model.apply({"params": p}, x, subnet=subnet)).lower(
        evaluator.host_params, images).compile()
    analysis = compiled.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"] / images.shape[0]
    layers = model_layers(setup.config.model, setup.dataset.image_shape, setup.dataset.tasks, subnet)
    ours = total_cost(layers).flops
    assert ours == pytest.approx(xla, rel=0.10), (ours, xla)
    # the stem is priced: the elastic walker alone would miss its second layer
    plain = total_cost(elastic_layers(setup.config.model, setup.dataset.image_shape, setup.dataset.tasks, subnet))
    assert ours > plain.flops and {lay.name for lay in layers} >= {"stem/patch_embed", "stem/stem_out"}


def test_int4_export_has_true_widths_and_predicts_like_the_model(evaluator, tmp_path):
    subnet = ss.subnet_from_params(SLIM, evaluator.tasks)
    point = {"id": 3, "config": subnet.to_dict(), "cost": evaluator.cost(subnet)}
    directory = str(tmp_path / "point")
    pipeline.export_point(evaluator, point, directory, evaluator.setup.config)
    with open(os.path.join(directory, "model.json")) as f:
        meta = json.load(f)
    assert meta["standalone"]["padded_params"] == []
    assert meta["payload_bits"] == point["cost"]["bits"]
    assert meta["standalone"]["flops_per_example"] == pytest.approx(meta["standalone"]["xla_flops_per_example"],
                                                                    rel=0.10)
    loaded = export_lib.load(directory)
    shapes = {p: v.shape for p, v in flax.traverse_util.flatten_dict(loaded.params, sep="/").items()}
    model_config, channels = evaluator.setup.config.model, evaluator.setup.dataset.image_shape[-1]
    hidden, patch_dim = model_config.hidden_dim, model_config.patch_size**2 * channels
    assert shapes["embedding/patch_embed/kernel"] == (patch_dim, 32)  # the stem's hidden width stays whole
    assert shapes["embedding/stem_out/kernel"] == (32, hidden // 2)  # its output follows the encoder width
    images = evaluator.setup.dataset.splits["test"]["image"][:32]
    plans = evaluator.plan(subnet)
    reference = jax.jit(lambda p, x: evaluator.setup.model.apply({"params": p}, x, subnet=subnet.without_bits()))(
        export_lib.quantized_params(evaluator.host_params, plans), images)
    got = loaded.predict(images)
    for task in reference:
        np.testing.assert_allclose(got[task], np.asarray(reference[task]), rtol=1e-5, atol=1e-5)


def _refused(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_registrations_and_model_configs_are_refused_in_one_line(user_package, evaluator):
    build_fn = lambda *a: None  # noqa: E731
    _refused(lambda: register_model("super_vit", build_fn), "'super_vit' is a built-in model")
    _refused(lambda: register_model("stem-vit", build_fn), "must be a Python identifier")
    _refused(lambda: register_model("my_net", "build"), "builder='build' is not callable")
    _refused(lambda: register_model("stem_vit", build_fn), "already registered by module 'my_models.stem_vit'")
    config = _config(user_package)
    _refused(lambda: build(config.model, evaluator.tasks, model_class=dict), "is not a subclass of ElasticViT")
    config.model.name = "stem_vitt"
    with pytest.raises(ConfigError, match=r"config.model.name='stem_vitt': unknown model; allowed: \[.*'stem_vit'\]"):
        validate_static(config)
    config.model.name, config.model.module = "stem_vit", "my_models.no_such_module"
    with pytest.raises(ConfigError, match=r"config.model.module='my_models.no_such_module': cannot import it"):
        validate_static(config)
    config.model.name, config.model.module = "nothing_registered", ""
    _refused(lambda: build_model(config.model, evaluator.tasks), "config.model.name='nothing_registered': unknown")


@pytest.mark.slow
def test_main_job_trains_searches_and_exports_the_users_model(user_package, tmp_path):
    """The main job on the model of your own: sandwich training, the search and its exports, reloaded from disk
    in a fresh process that imports `config.model.module` from config.json."""
    config = _config(user_package)
    assert config.train.objective == "sandwich"
    summary = pipeline.run_main_job(config, str(tmp_path / "run"), devices=jax.devices()[:1])
    assert summary["front_size"] >= 1 and summary["exports"]
    with open(tmp_path / "run" / "pareto.json") as f:
        points = json.load(f)["points"]
    assert len(points) == config.search.budget
    assert len({p["cost"]["flops"] for p in points}) > 1  # the search moved through the menus
    for directory in summary["exports"].values():
        with open(os.path.join(directory, "model.json")) as f:
            meta = json.load(f)
        assert meta["standalone"]["padded_params"] == []
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(user_package.parent), REPO]))
    proc = subprocess.run([sys.executable, "-m", "effjax.job.export", f"--workdir={tmp_path / 'run'}",
                           f"--point={points[0]['id']}", f"--output={tmp_path / 'cli_export'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = export_lib.load(str(tmp_path / "cli_export"))
    assert exported.predict(np.zeros((2, 8, 8, 1), np.float32))["digit"].shape == (2, 10)
