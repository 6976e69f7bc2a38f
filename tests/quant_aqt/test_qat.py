"""End-to-end QAT through the trainer: from scratch and from a float checkpoint, then convert and serve."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs.qat_digits import get_config
from effjax.quant import aqt_config, serving
from effjax.train import losses
from effjax.train.trainer import build, evaluate, train_and_evaluate


def _config(bits):
    c = get_config(f"tiny,bits={bits}")
    c.log.progress_bar = False
    c.checkpoint.async_save = False
    c.train.num_steps = 30
    return c


@pytest.mark.slow
def test_qat_from_scratch_and_from_float_then_serve(tmp_path):
    devices = jax.devices()[:1]
    float_run = train_and_evaluate(_config("float"), str(tmp_path / "float"), devices=devices)

    c = _config("4")
    c.train.init_from = str(tmp_path / "float")
    provider = aqt_config.provider_from_config(c)
    finetuned = train_and_evaluate(c, str(tmp_path / "int4_ft"), devices=devices, dot_general_provider=provider)
    scratch = train_and_evaluate(_config("4"), str(tmp_path / "int4"), devices=devices, dot_general_provider=provider)
    for run in (float_run, finetuned, scratch):
        steps = sorted(run.train_losses)
        assert run.train_losses[steps[-1]] < run.train_losses[steps[0]]
    # starting from the float weights beats starting from scratch after the same 30 steps
    assert finetuned.train_losses[5] < scratch.train_losses[5]

    setup = build(c, devices, dot_general_provider=provider)
    subnet = aqt_config.subnet_from_quant_config(c.quant)
    served = serving.convert(c.model, setup.dataset.tasks, setup.dataset.image_shape, finetuned.state.params, subnet)

    def eval_step(variables, batch):
        preds = served._forward(variables, batch["image"])
        return {t.name: losses.metric_sums(t, preds[t.name], batch[t.name], batch["mask"]) for t in setup.dataset.tasks}

    served_metrics = evaluate(setup, served.variables, "test", jax.jit(eval_step))
    for task, value in finetuned.metrics["test"].items():
        np.testing.assert_allclose(served_metrics[task], value, rtol=0, atol=1e-6)
