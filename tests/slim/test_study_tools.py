"""The controllable-MTL study's config variants and seed-gap arithmetic (experiments/controllable_mtl)."""

import numpy as np
import pytest

from configs.slim_vit import get_config
from effjax.data.specs import TaskSpec
from experiments.controllable_mtl.seeds import oriented_gap, summary_table


def test_variants_set_seed_steps_and_the_labels_objective():
    c = get_config("shapes,labels,seed=2,steps=1000")
    assert (c.seed, c.train.num_steps) == (2, 1000)
    assert (c.slim.inplace_kd_weight, c.slim.cikd_weight, c.slim.label_weight_small) == (0.0, 0.0, 1.0)
    default = get_config("shapes")
    assert (default.seed, default.slim.inplace_kd_weight, default.slim.cikd_weight) == (0, 1.0, 1.0)
    with pytest.raises(ValueError, match="unknown variant 'sed=2'.*seed=<int>"):
        get_config("shapes,sed=2")


def test_head_and_decoder_variants_reach_the_width_alone_baselines():
    alone = get_config("digits,alone=0.5,head=mean_pool,decoder=128")  # decoder is applied before alone slices it
    assert (alone.model.name, alone.model.image_head, alone.model.decoder_dim) == ("mt_vit", "mean_pool", 64)
    supernet = get_config("digits,labels,head=mean_pool,decoder=128")
    assert (supernet.model.image_head, supernet.model.decoder_dim) == ("mean_pool", 128)
    assert (get_config("digits").model.image_head, get_config("digits").model.decoder_blocks) == ("class_token", 0)
    blocks = get_config("digits,alone=0.25,layers=2,decoder_blocks=1")
    assert (blocks.model.name, blocks.model.num_layers, blocks.model.decoder_blocks, blocks.model.num_heads) == \
        ("mt_vit", 2, 1, 1)
    assert get_config("shapes,labels,private_norms").model.private_norms and not get_config("shapes").model.private_norms
    with pytest.raises(ValueError, match="decoder_blocks=-1"):
        get_config("digits,decoder_blocks=-1")
    with pytest.raises(ValueError, match="image_head='avg'"):
        get_config("digits,head=avg")


def test_gaps_are_positive_when_the_supernet_is_better():
    acc, depth = TaskSpec("digit", "classification", 10), TaskSpec("depth", "depth")
    assert oriented_gap(acc, 0.95, 0.93) == pytest.approx(2.0)
    assert oriented_gap(depth, 0.9, 1.0) == pytest.approx(10.0)  # lower RMSE = better, in % of alone
    assert oriented_gap(depth, 1.1, 1.0) == pytest.approx(-10.0)


def test_summary_table_reports_mean_and_sample_std_over_seeds():
    task = TaskSpec("digit", "classification", 10)
    gaps = [-1.0, 2.0, 5.0]
    results = {"seeds": {str(s): {"0.5": {"test": {"digit": {"gap": g}}}} for s, g in enumerate(gaps)}}
    table = summary_table(results, [task], [0.5])
    assert f"+2.0 ± {np.std(gaps, ddof=1):.1f} [-1.0, +2.0, +5.0]" in table


def test_mean_std_uses_the_sample_std_and_drops_it_for_one_seed():
    from experiments.seed_stats import mean_std

    assert mean_std([1.0, 2.0, 3.0], digits=2, signed=True) == "+2.00 ± 1.00"
    assert mean_std([-0.25], digits=1, signed=True) == "-0.2"
    assert mean_std([4.0, 6.0]) == f"5.0 ± {np.sqrt(2):.1f}"
    with pytest.raises(ValueError, match="no values"):
        mean_std([])
