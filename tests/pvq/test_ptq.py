"""Post-training PVQ of a Flax parameter tree: a digits MLP trained here, configs, checkpoints."""

import flax
import flax.linen as nn
import numpy as np
import pytest
from sklearn.datasets import load_digits

from effjax.quant.pvq import load_checkpoint, quantize_params, save_checkpoint
from effjax.quant.pvq.ptq import dequantize_into, kernel_paths
from effjax.train.full_batch import fit_classifier


class DigitsMLP(nn.Module):
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(10)(x)


def _accuracy(model, params, images, labels):
    return float((np.asarray(model.apply(params, images)).argmax(-1) == labels).mean())


@pytest.fixture(scope="module")
def digits_mlp():
    """A 64-64-64-10 MLP trained for 300 full-batch Adam steps on 1500 digits (seeded)."""
    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[:1500], order[1500:]
    model = DigitsMLP()
    params = fit_classifier(model, images[train], labels[train], steps=300, learning_rate=5e-3)
    return model, params, images, labels, train, test


def test_quantized_mlp_keeps_accuracy_at_3_25_bits(digits_mlp):
    model, params, images, labels, _, test = digits_mlp
    float_accuracy = _accuracy(model, params, images[test], labels[test])
    config = {"group_size": 8, "pulses": 12, "scale_bits": 4}
    quantized_params, report = quantize_params(params, config)
    assert float_accuracy > 0.93
    assert report["bits_per_weight"] == 3.25
    assert set(report["layers"]) == set(kernel_paths(params)) and len(report["layers"]) == 3
    assert all(layer["sqnr_db"] > 12 for layer in report["layers"].values())
    assert _accuracy(model, quantized_params, images[test], labels[test]) > float_accuracy - 0.03
    bias = quantized_params["params"]["Dense_0"]["bias"]
    np.testing.assert_array_equal(bias, params["params"]["Dense_0"]["bias"])


def test_overrides_skip_and_checkpoint(digits_mlp, tmp_path):
    _, params, *_ = digits_mlp
    config = {
        "group_size": 8, "pulses": 12, "scale_bits": 4, "rotate": True,
        "overrides": {r"Dense_1/": {"scale_bits": 2}, r"Dense_2/": {"skip": True}},
    }
    quantized_params, report = quantize_params(flax.core.freeze(params), config)
    assert isinstance(quantized_params, flax.core.FrozenDict)
    layers = report["layers"]
    assert "params/Dense_2/kernel" not in layers and layers["params/Dense_1/kernel"]["scale_bits"] == 2
    assert layers["params/Dense_0/kernel"]["scale_bits"] == 4 and layers["params/Dense_0/kernel"]["rotate"]
    assert layers["params/Dense_1/kernel"]["bits_per_weight"] == (22 + 2) / 8
    np.testing.assert_array_equal(quantized_params["params"]["Dense_2"]["kernel"], params["params"]["Dense_2"]["kernel"])
    path = str(tmp_path / "mlp.pvq")
    save_checkpoint(path, report["quantized"])
    reloaded = dequantize_into(params, load_checkpoint(path))
    for layer in ("Dense_0", "Dense_1", "Dense_2"):
        np.testing.assert_array_equal(
            np.asarray(reloaded["params"][layer]["kernel"]).view(np.uint32),
            np.asarray(quantized_params["params"][layer]["kernel"]).view(np.uint32),
        )


def test_calibration_uses_hessian_aware_path(digits_mlp):
    model, params, images, labels, train, test = digits_mlp
    hidden = np.asarray(nn.relu(images @ params["params"]["Dense_0"]["kernel"] + params["params"]["Dense_0"]["bias"]))
    config = {"group_size": 8, "pulses": 12, "scale_bits": 2, "calibration": {"params/Dense_1": hidden[train]}}
    hessian_params, report = quantize_params(params, config)
    plain_params, _ = quantize_params(params, {k: v for k, v in config.items() if k != "calibration"})
    assert report["layers"]["params/Dense_1/kernel"]["hessian_aware"]
    assert not report["layers"]["params/Dense_0/kernel"]["hessian_aware"]
    kernel = np.asarray(params["params"]["Dense_1"]["kernel"], np.float64)
    reference = hidden[test] @ kernel

    def output_error(quantized):
        return float(((hidden[test] @ np.asarray(quantized["params"]["Dense_1"]["kernel"], np.float64) - reference) ** 2).mean())

    assert output_error(hessian_params) < output_error(plain_params)


def test_conv_kernels_flatten_all_but_last_axis():
    params = {"params": {"Conv_0": {"kernel": np.random.default_rng(0).standard_normal((3, 3, 4, 6)).astype(np.float32)}}}
    quantized, report = quantize_params(params, {"group_size": 8, "pulses": 12})
    assert quantized["params"]["Conv_0"]["kernel"].shape == (3, 3, 4, 6)
    assert report["layers"]["params/Conv_0/kernel"]["sqnr_db"] > 10


def test_config_errors(digits_mlp):
    _, params, *_ = digits_mlp
    with pytest.raises(ValueError, match="unknown PTQ config keys"):
        quantize_params(params, {"pulse": 3})
    with pytest.raises(ValueError, match="match no kernel"):
        quantize_params(params, {"calibration": {"params/Dense_9": np.ones((2, 64))}})
    with pytest.raises(ValueError, match="unknown keys"):
        quantize_params(params, {"overrides": {"Dense": {"bits": 3}}})
