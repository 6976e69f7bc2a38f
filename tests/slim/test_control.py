"""Zero-shot control: budget respected, decoders monotone in preference, best validation score chosen."""

import itertools

import numpy as np
import pytest

from effjax.compress.control import TaskMetricTable, normalize_preference, preference_decoder_widths, select_subnet
from effjax.compress.cost_elastic import elastic_cost
from effjax.data.specs import TaskSpec
from effjax.subnet import SubnetConfig

from .conftest import model_config

TASKS = (TaskSpec("segmentation", "segmentation", 4), TaskSpec("depth", "depth"), TaskSpec("count", "classification", 4))
MENU = (0.25, 0.5, 0.75, 1.0)
MC = model_config(hidden_dim=64, num_heads=4, mlp_dim=128, decoder_dim=64, num_layers=3, width_menu=MENU)


def flops_of(subnet):
    return elastic_cost(MC, (16, 16, 3), TASKS, subnet).flops


def synthetic_table():
    """Metrics that improve with encoder and decoder width (depth RMSE falls)."""
    values = {}
    for e, t, d in itertools.product(MENU, TASKS, MENU):
        quality = 0.6 * e + 0.4 * d
        values[(e, t.name, d)] = 3.0 - quality if t.name == "depth" else 0.3 + 0.5 * quality
    return TaskMetricTable(TASKS, MENU, values)


def test_every_budget_is_respected_and_too_small_budgets_raise():
    table = synthetic_table()
    lo = flops_of(SubnetConfig(0.25, tuple((t.name, 0.25) for t in TASKS)))
    hi = flops_of(SubnetConfig())
    previous_score = -np.inf
    for budget in np.linspace(lo, hi, 9):
        sel = select_subnet(float(budget), [1, 1, 1], tasks=TASKS, menu=MENU, flops_of=flops_of, table=table)
        assert sel.flops <= budget and sel.flops == flops_of(sel.subnet)
        assert sel.score >= previous_score  # a larger budget never picks a worse config
        previous_score = sel.score
    assert select_subnet(hi, [1, 1, 1], tasks=TASKS, menu=MENU, flops_of=flops_of, table=table).subnet.encoder_width == 1.0
    with pytest.raises(ValueError, match="budget_flops"):
        select_subnet(lo * 0.99, [1, 1, 1], tasks=TASKS, menu=MENU, flops_of=flops_of, table=table)


@pytest.mark.parametrize("seed", range(5))
def test_decoder_widths_are_monotone_in_preference(seed):
    rng = np.random.default_rng(seed)
    pref = normalize_preference(rng.dirichlet(np.ones(3)), TASKS)
    for level in MENU:
        widths = dict(preference_decoder_widths(pref, TASKS, MENU, level))
        for a, b in itertools.permutations(TASKS, 2):
            if pref[a.name] >= pref[b.name]:
                assert widths[a.name] >= widths[b.name]
    sel = select_subnet(flops_of(SubnetConfig(0.5)), pref, tasks=TASKS, menu=MENU, flops_of=flops_of,
                        table=synthetic_table())
    for a, b in itertools.permutations(TASKS, 2):
        if pref[a.name] >= pref[b.name]:
            assert sel.subnet.decoder_width(a.name) >= sel.subnet.decoder_width(b.name)


def test_searched_level_maximizes_the_weighted_validation_score():
    table = synthetic_table()
    budget = flops_of(SubnetConfig(0.75, tuple((t.name, 0.5) for t in TASKS)))
    sel = select_subnet(budget, {"depth": 1.0}, tasks=TASKS, menu=MENU, flops_of=flops_of, table=table)
    assert sel.subnet.decoder_width("depth") >= max(sel.subnet.decoder_width("segmentation"), sel.subnet.decoder_width("count"))
    # with all preference on depth the score is depth's relative gain: brute force the best RMSE
    pref = normalize_preference({"depth": 1.0}, TASKS)
    candidates = [SubnetConfig(e, preference_decoder_widths(pref, TASKS, MENU, level)) for level in MENU for e in MENU]
    best_rmse = min(table.metrics(s)["depth"] for s in candidates if flops_of(s) <= budget)
    assert table.metrics(sel.subnet)["depth"] == pytest.approx(best_rmse)


@pytest.mark.parametrize("preference", [[1, 1, 1], [0.2, 0.6, 0.2], [1.0, 0.0, 0.0], [0.0, 0.3, 0.7]])
def test_largest_level_takes_the_widest_fitting_decoders_and_the_best_encoder_for_them(preference):
    table = synthetic_table()
    pref = normalize_preference(preference, TASKS)
    # reversed quality on the encoder axis, so the best encoder is not simply the widest that fits
    flipped = TaskMetricTable(TASKS, MENU, {(e, t, d): table.values[(1.25 - e, t, d)] for (e, t, d) in table.values})
    for budget in np.linspace(flops_of(SubnetConfig(0.25, tuple((t.name, 0.25) for t in TASKS))), flops_of(SubnetConfig()), 7):
        sel = select_subnet(float(budget), pref, tasks=TASKS, menu=MENU, flops_of=flops_of, table=flipped,
                            decoder_level="largest")
        fitting = {level: [SubnetConfig(e, preference_decoder_widths(pref, TASKS, MENU, level)) for e in MENU
                           if flops_of(SubnetConfig(e, preference_decoder_widths(pref, TASKS, MENU, level))) <= budget]
                   for level in MENU}
        level = max(lv for lv in MENU if fitting[lv])
        assert sel.subnet.decoder_widths == preference_decoder_widths(pref, TASKS, MENU, level)
        score = lambda s: sum(pref[t.name] * (1 if t.name != "depth" else -1) * flipped.metrics(s)[t.name]  # noqa: E731
                              / abs(flipped.metrics(SubnetConfig())[t.name]) for t in TASKS)
        assert score(sel.subnet) == pytest.approx(max(score(s) for s in fitting[level]))
    with pytest.raises(ValueError, match="decoder_level"):
        select_subnet(1e9, pref, tasks=TASKS, menu=MENU, flops_of=flops_of, table=table, decoder_level="widest")


def test_bad_preferences_and_measure_calls():
    with pytest.raises(ValueError, match="preference"):
        normalize_preference([1, -1, 1], TASKS)
    with pytest.raises(ValueError, match="preference"):
        normalize_preference([1, 1], TASKS)
    with pytest.raises(ValueError, match="unknown tasks"):
        normalize_preference({"digit": 1.0}, TASKS)
    calls = []

    def evaluate(subnet):
        calls.append(subnet)
        return {t.name: subnet.encoder_width + subnet.decoder_width(t.name) for t in TASKS}

    table = TaskMetricTable.measure(evaluate, TASKS, MENU)
    assert len(calls) == len(MENU) ** 2
    mixed = SubnetConfig(0.5, (("segmentation", 0.25), ("depth", 1.0), ("count", 0.75)))
    assert table.metrics(mixed) == {"segmentation": 0.75, "depth": 1.5, "count": 1.25}
