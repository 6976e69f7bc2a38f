"""The supernet recipe variants of configs/slim_vit.py set what experiments/supernet_recipes says they set."""

import pytest

from effjax.config.load import load_config
from effjax.train.sandwich import SandwichOptions


def test_bignas_distils_the_sub_configs_and_kd_depth_overrides_its_depth_loss_in_any_order():
    bignas = load_config("configs/supernet.py:shapes,bignas").slim
    assert bignas.inplace_kd_weight == 1.0 and bignas.cikd_weight == 0.0 and bignas.kd_depth == "std"
    for arg in ("shapes,bignas,kd_depth=l2std", "shapes,kd_depth=l2std,bignas"):
        slim = load_config(f"configs/supernet.py:{arg}").slim
        assert slim.kd_depth == "l2std" and slim.inplace_kd_weight == 1.0 and slim.kd_warmup_steps == bignas.kd_warmup_steps


def test_an_unknown_depth_loss_is_refused_in_one_line():
    config = load_config("configs/supernet.py:shapes,bignas,kd_depth=huber")
    with pytest.raises(ValueError, match=r"config.slim.kd_depth='huber': allowed") as err:
        SandwichOptions.from_config(config)
    assert "\n" not in str(err.value)


def test_kd_count_adds_count_distillation_to_the_labels_recipe_and_is_refused_without_a_count_task():
    slim = load_config("configs/supernet.py:shapes,kd_count").slim
    assert (slim.inplace_kd_weight, slim.label_weight_small, slim.cikd_weight, tuple(slim.kd_tasks)) == (
        1.0, 1.0, 0.0, ("count",))
    from effjax.data import load_dataset
    from effjax.models import build_model
    from effjax.train.sandwich import make_sandwich_step

    config = load_config("configs/supernet.py:digits,tiny,kd_count")
    dataset = load_dataset(config.data)
    with pytest.raises(ValueError, match=r"config.slim.kd_tasks: unknown tasks \['count'\]"):
        make_sandwich_step(build_model(config.model, dataset.tasks), None, dataset.tasks, {}, None,
                           SandwichOptions.from_config(config))


def test_the_shapes_supernet_trains_at_the_selected_learning_rate_and_digits_keeps_the_base_one():
    from effjax.config.base import base_config
    assert load_config("configs/supernet.py:shapes").train.learning_rate == 0.006
    assert load_config("configs/pipeline.py:shapes").train.learning_rate == 0.006
    assert load_config("configs/pipeline.py:digits").train.learning_rate == base_config().train.learning_rate
    assert load_config("configs/slim_vit.py:shapes").train.learning_rate == base_config().train.learning_rate
