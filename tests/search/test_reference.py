"""Reference-point inference and normalization for objectives without `ref`."""

import numpy as np
import pytest

from effjax.search import Objective, Optimizer
from effjax.search.gp import fit_gp
from effjax.search.pareto import non_dominated_mask
from effjax.search.problems import BraninCurrin
from effjax.search.reference import (ALPHA, MODEL_POLICIES, PAYOFF_AUGMENT, PAYOFF_KAPPA, PAYOFF_SAMPLE, PAYOFF_STARTS,
                                     POLICIES, alpha_nondominated_mask, infer_reference_point, normalization_scale,
                                     payoff_nadir)

# maximized values: (1, 4) and (3, 2) form the front, (0, 0) and (2.5, 1.5) are dominated
Y = np.array([[1.0, 4.0], [3.0, 2.0], [0.0, 0.0], [2.5, 1.5]])


def test_front_policy_is_front_nadir_minus_a_tenth_of_the_front_range():
    ref = infer_reference_point(Y, [None, None], "front", 0.1)
    np.testing.assert_allclose(ref, [1.0 - 0.1 * 2.0, 2.0 - 0.1 * 2.0])


def test_observed_policy_uses_every_observation_and_only_moves_outwards():
    ref = infer_reference_point(Y, [None, None], "observed", 0.1)
    np.testing.assert_allclose(ref, [0.0 - 0.1 * 3.0, 0.0 - 0.1 * 4.0])
    # a new point inside the observed box cannot move it inwards (the normalization stays put)
    more = np.concatenate([Y, [[0.5, 0.5]]])
    np.testing.assert_allclose(infer_reference_point(more, [None, None], "observed", 0.1), ref)


def test_front_relative_margin_follows_the_magnitude_of_a_narrow_objective():
    # objective 0 spans 2 on the front but sits near -1700 (mass): its margin is 10% of 1700
    y = Y + np.array([-1700.0, 0.0])
    ref = infer_reference_point(y, [None, None], "front_relative", 0.1)
    np.testing.assert_allclose(ref, [-1699.0 - 0.1 * 1699.0, 2.0 - 0.1 * 2.0])
    # near the origin the front's range wins, as in the "front" policy
    np.testing.assert_allclose(infer_reference_point(Y, [None, None], "front_relative", 0.1),
                               infer_reference_point(Y, [None, None], "front", 0.1))


def test_given_references_win_and_scale_spans_best_minus_ref():
    ref = infer_reference_point(Y, [None, -1.0], "front", 0.1)
    assert ref[1] == -1.0 and ref[0] == pytest.approx(0.8)
    np.testing.assert_allclose(normalization_scale(Y, ref), [3.0 - 0.8, 4.0 + 1.0])
    # a reference above every observation falls back to the spread of the data, never to 0 or a negative scale
    scale = normalization_scale(Y, np.array([5.0, 5.0]))
    assert np.all(scale > 0)


def test_bad_policy_or_margin_is_one_clear_error():
    bc = BraninCurrin()
    objectives = [Objective(o.name, o.direction) for o in bc.objectives]
    with pytest.raises(ValueError, match="reference: must be one of"):
        Optimizer(bc.space, objectives, reference="nadir")
    with pytest.raises(ValueError, match="reference_margin: must be a finite number >= 0"):
        Optimizer(bc.space, objectives, reference="front", reference_margin=-0.1)


def test_each_policy_reaches_the_proposals_it_implies():
    """The policy changes the normalization handed to the acquisition (and so the proposals)."""
    bc = BraninCurrin()
    objectives = [Objective(o.name, o.direction) for o in bc.objectives]
    refs = {}
    for policy in POLICIES:
        opt = Optimizer(bc.space, objectives, seed=0, n_initial=6, reference=policy)
        for trial in opt.ask(6):
            opt.tell(trial, bc(trial.params))
        fitted = opt._fit()
        refs[policy] = fitted["ref"]
        y = -np.array([[e.values[n] for n in bc.objective_names] for e in opt.history])
        predicted = None
        if policy in MODEL_POLICIES:
            predicted = opt._payoff_predictions(fitted["gp"], -np.ones(2), *opt._payoff_settings())
        np.testing.assert_allclose(refs[policy], infer_reference_point(y, [None, None], policy, 0.1, predicted))
    assert not np.allclose(refs["front"], refs["observed"])


def test_describe_states_the_default_policy():
    from effjax.search.reference import DEFAULT_POLICY, describe
    assert DEFAULT_POLICY in describe() and "10%" in describe()
    with pytest.raises(ValueError, match="reference: must be one of"):
        describe("nadir")


# DTLZ2-like observations (minimized, written here negated to maximize): a spread front with
# g = 0.3, plus (0, 2.1) and (2.2, 0), optimal in one objective only because x0 sits on a bound:
# each gains 0.13 over the arc's nearest end and gives up 0.8-0.9 (ratio < ALPHA = 0.2)
EDGE = -np.array([[0.0, 2.1], [2.2, 0.0]])
ARC = -1.3 * np.stack([np.cos(np.linspace(0.1, 1.47, 9)), np.sin(np.linspace(0.1, 1.47, 9))], axis=1)
WEAK = np.concatenate([ARC, EDGE, -np.array([[1.6, 1.7], [2.4, 2.5]])])


def _alpha_dominates(a, b, alpha):
    d = a - b
    g = d + alpha * (d.sum() - d)
    return bool(np.all(g >= 0) and np.any(g > 0))


def test_alpha_mask_is_the_pairwise_definition_of_alpha_dominance():
    rng = np.random.default_rng(0)
    for m in (2, 3):
        y = rng.normal(size=(40, m))
        y[:, 0] *= 50.0  # unequal units: the definition applies to objectives scaled by the front's range
        front = y[non_dominated_mask(y)]
        scaled = y / (front.max(axis=0) - front.min(axis=0))
        want = [not any(_alpha_dominates(scaled[j], scaled[i], ALPHA) for j in range(len(y))) for i in range(len(y))]
        mask = alpha_nondominated_mask(y)
        np.testing.assert_array_equal(mask, want)
        assert mask.any() and not np.any(mask & ~non_dominated_mask(y))  # non-empty subset of the Pareto front


def test_alpha_policies_ignore_weak_edge_points_of_the_front():
    assert non_dominated_mask(WEAK)[9:11].all()  # the edge points are Pareto-optimal ...
    mask = alpha_nondominated_mask(WEAK)
    assert not mask[9:11].any() and mask[0] and mask[8]  # ... but alpha-dominated; the arc's ends are kept
    arc_nadir = ARC.min(axis=0)
    span = np.maximum(ARC.max(axis=0) - arc_nadir, np.abs(arc_nadir))
    np.testing.assert_allclose(infer_reference_point(WEAK, [None, None], "alpha_relative", 0.1), arc_nadir - 0.1 * span)
    np.testing.assert_allclose(infer_reference_point(WEAK, [None, None], "alpha_front", 0.3),
                               arc_nadir - 0.3 * (ARC.max(axis=0) - arc_nadir))
    np.testing.assert_allclose(infer_reference_point(WEAK, [None, None], "alpha_observed", 0.2),
                               arc_nadir - 0.2 * (WEAK.max(axis=0) - WEAK.min(axis=0)))
    # the unfiltered policy puts its reference beyond the edge points, far outside the arc
    assert np.all(infer_reference_point(WEAK, [None, None], "front_relative", 0.1) < -2.3)
    for policy in ("alpha_relative", "alpha_front", "alpha_observed"):
        ref = infer_reference_point(WEAK, [None, None], policy, 0.1)
        assert np.all(ref > -1.6) and np.all(ARC > ref)  # below every arc point, well inside the edge points


def test_alpha_filter_keeps_the_ends_of_a_flat_ended_front_and_its_nadir():
    # DTLZ2's converged front: the quarter circle, ends included; the nadir and so the reference stay put
    t = np.linspace(0.0, np.pi / 2, 21)
    y = -np.stack([np.cos(t), np.sin(t)], axis=1)
    mask = alpha_nondominated_mask(y)
    assert mask[0] and mask[-1]
    np.testing.assert_allclose(infer_reference_point(y, [None, None], "alpha_relative", 0.1),
                               infer_reference_point(y, [None, None], "front_relative", 0.1))


def test_alpha_reference_is_below_every_kept_point_for_random_data():
    rng = np.random.default_rng(1)
    for trial in range(20):
        m = 2 + trial % 2
        y = rng.normal(size=(30, m)) * rng.uniform(0.01, 100.0, size=m) + rng.normal(size=m) * 1000.0
        kept = y[alpha_nondominated_mask(y)]
        for policy in ("alpha_relative", "alpha_front", "alpha_observed"):
            ref = infer_reference_point(y, [None] * m, policy, 0.1)
            assert np.all(kept > ref[None, :])
        # the filter only moves the nadir inwards and narrows the range: never farther out than the plain front's
        assert np.all(infer_reference_point(y, [None] * m, "alpha_front", 0.1)
                      >= infer_reference_point(y, [None] * m, "front", 0.1) - 1e-9)


def test_payoff_nadir_takes_the_worst_entry_of_the_best_point_per_objective():
    y = np.array([[5.0, 0.0, 1.0], [0.0, 5.0, 2.0], [1.0, 1.0, 5.0], [2.0, 2.0, 2.0]])
    np.testing.assert_allclose(payoff_nadir(y), [0.0, 0.0, 1.0])
    # two equal optima of objective 0: the one with the better trade-off sets the row, not the first one
    tied = np.array([[5.0, -9.0], [5.0, 3.0], [0.0, 4.0]])
    np.testing.assert_allclose(payoff_nadir(tied), [0.0, 3.0])


def test_payoff_policies_reduce_to_the_front_without_predictions():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(25, 3))
    np.testing.assert_allclose(infer_reference_point(y, [None] * 3, "payoff_relative", 0.1),
                               infer_reference_point(y, [None] * 3, "front_relative", 0.1))
    np.testing.assert_allclose(infer_reference_point(y, [None] * 3, "payoff_alpha", 0.1),
                               infer_reference_point(y, [None] * 3, "alpha_relative", 0.1))


def test_payoff_policy_keeps_a_predicted_unexplored_part_of_the_front_in_the_box():
    # minimized (mass, acceleration, intrusion), negated: every observed front point has intrusion <= 0.09,
    # but the model predicts the best acceleration (6.2) at intrusion 0.25
    y = -np.array([[1662.0, 8.3, 0.07], [1666.0, 6.9, 0.09], [1692.0, 10.5, 0.043], [1700.0, 11.5, 0.25]])
    predicted = -np.array([[1676.0, 6.2, 0.25], [1690.0, 9.0, 0.2], [1670.0, 9.0, 0.1]])
    front_ref = infer_reference_point(y, [None] * 3, "front_relative", 0.1)
    assert -front_ref[2] < 0.1  # the unexplored part lies outside the front policy's box
    ref = infer_reference_point(y, [None] * 3, "payoff_relative", 0.1, predicted)
    np.testing.assert_allclose(-ref[2], 0.25 * 1.1)  # nadir 0.25 from the payoff table, then the relative margin
    np.testing.assert_allclose(ref[:2], front_ref[:2])  # the payoff rows are no worse there than the front
    assert np.all(predicted[0] > ref)


def test_payoff_predictions_come_from_one_fixed_sample_and_the_maximizers_of_each_mean():
    bc = BraninCurrin()
    objectives = [Objective(o.name, o.direction) for o in bc.objectives]
    opt = Optimizer(bc.space, objectives, seed=3, n_initial=6, reference="payoff_relative")
    for trial in opt.ask(6):
        opt.tell(trial, bc(trial.params))
    gp = opt._fit()["gp"]
    values = opt._payoff_predictions(gp, -np.ones(2))
    x = opt._payoff_sample[0]
    assert x.shape == (PAYOFF_SAMPLE, 2) and values.shape == (PAYOFF_SAMPLE + 2 * PAYOFF_STARTS, 2)
    np.testing.assert_allclose(values[:PAYOFF_SAMPLE], -gp.posterior(x)[0])
    # the L-BFGS-B ends improve on the best sample point of each objective's (minimized) mean
    for j in range(2):
        assert values[PAYOFF_SAMPLE:, j].max() >= values[:PAYOFF_SAMPLE, j].max()
    np.testing.assert_array_equal(opt._payoff_predictions(gp, -np.ones(2)), values)  # deterministic
    assert opt._payoff_sample[0] is x


def test_mean_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(12, 3))
    y = np.stack([np.sin(3 * x[:, 0]) + x[:, 1], x[:, 2] ** 2], axis=1)
    gp = fit_gp(x, y)
    at = rng.uniform(size=(4, 3))
    for m in range(2):
        mean, grad = gp.mean_and_grad(m, at)
        np.testing.assert_allclose(mean, gp.posterior(at)[0][:, m])
        h = 1e-6
        fd = np.stack([(gp.mean_and_grad(m, at + h * np.eye(3)[d])[0] - gp.mean_and_grad(m, at - h * np.eye(3)[d])[0])
                       / (2 * h) for d in range(3)], axis=1)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def _dtlz2_after_design():
    from effjax.search.problems import DTLZ2
    problem = DTLZ2()
    objectives = [Objective(o.name, o.direction) for o in problem.objectives]
    opt = Optimizer(problem.space, objectives, seed=30, n_initial=14)
    for trial in opt.ask(14):
        opt.tell(trial, problem(trial.params))
    return opt, opt._fit()["gp"]


def test_augmented_payoff_rows_are_better_in_the_other_objective_on_a_flat_optimum():
    # DTLZ2: f1 = 0 on the whole face x0 = 1 whatever the other variables; the augmented form picks
    # a point of that face with a lower predicted f2
    opt, gp = _dtlz2_after_design()
    ends = slice(PAYOFF_SAMPLE, PAYOFF_SAMPLE + PAYOFF_STARTS)  # the L-BFGS-B ends for objective 0 (f1)
    plain = opt._payoff_predictions(gp, -np.ones(2), 0.0)[ends]
    augmented = opt._payoff_predictions(gp, -np.ones(2), PAYOFF_AUGMENT)[ends]
    assert augmented[:, 1].max() > plain[:, 1].max() + 0.01  # maximized: -f2 higher
    assert augmented[:, 0].max() > plain[:, 0].max() - 0.01  # at (almost) the same f1


def test_ucb_payoff_predictions_are_means_plus_kappa_standard_deviations():
    opt, gp = _dtlz2_after_design()
    values = opt._payoff_predictions(gp, -np.ones(2), PAYOFF_AUGMENT, PAYOFF_KAPPA)
    x = opt._payoff_sample[0]
    mean, var = gp.posterior(x)
    np.testing.assert_allclose(values[:PAYOFF_SAMPLE], -mean + PAYOFF_KAPPA * np.sqrt(var))
    # optimistic rows can only pull the payoff nadir in, towards the observed front's
    y = -np.array([[e.values[o.name] for o in opt.objectives] for e in opt.history])
    plain = opt._payoff_predictions(gp, -np.ones(2), PAYOFF_AUGMENT, 0.0)
    assert np.all(infer_reference_point(y, [None, None], "payoff_ucb", 0.1, values)
                  >= infer_reference_point(y, [None, None], "payoff_lex", 0.1, plain) - 1e-12)


def test_split_policies_apply_the_two_objective_policy_to_two_and_payoff_lex_to_more():
    from effjax.search.reference import SPLIT_POLICIES, resolve_policy
    assert resolve_policy("split_front", 2) == "front_relative" and resolve_policy("split_alpha", 2) == "alpha_relative"
    assert resolve_policy("split_front", 3) == resolve_policy("split_alpha", 4) == "payoff_lex"
    assert resolve_policy("front", 3) == "front"
    # DTLZ2's weak edge points: split_alpha ignores them like alpha_relative, split_front does not
    np.testing.assert_allclose(infer_reference_point(WEAK, [None, None], "split_alpha", 0.1),
                               infer_reference_point(WEAK, [None, None], "alpha_relative", 0.1))
    np.testing.assert_allclose(infer_reference_point(WEAK, [None, None], "split_front", 0.1),
                               infer_reference_point(WEAK, [None, None], "front_relative", 0.1))
    y = -np.array([[1662.0, 8.3, 0.07], [1666.0, 6.9, 0.09], [1692.0, 10.5, 0.043], [1700.0, 11.5, 0.25]])
    predicted = -np.array([[1676.0, 6.2, 0.25], [1690.0, 9.0, 0.2], [1670.0, 9.0, 0.1]])
    for policy in SPLIT_POLICIES:
        np.testing.assert_allclose(infer_reference_point(y, [None] * 3, policy, 0.1, predicted),
                                   infer_reference_point(y, [None] * 3, "payoff_lex", 0.1, predicted))


def test_optimizer_resolves_a_split_policy_by_its_number_of_objectives():
    from effjax.search.problems import VehicleSafety
    for problem, policy, augment in ((BraninCurrin(), "front_relative", 0.0), (VehicleSafety(), "payoff_lex", PAYOFF_AUGMENT)):
        objectives = [Objective(o.name, o.direction) for o in problem.objectives]
        opt = Optimizer(problem.space, objectives, seed=0, n_initial=8, reference="split_front")
        assert opt.reference == "split_front" and opt._policy == policy
        assert opt._payoff_settings() == (augment, 0.0)
        for trial in opt.ask(8):
            opt.tell(trial, problem(trial.params))
        fitted = opt._fit()
        assert (opt._payoff_sample is not None) == (policy == "payoff_lex")  # the model is queried only for 3+
        signs = np.array([o.sign for o in objectives])
        y = np.array([[e.values[n] for n in problem.objective_names] for e in opt.history]) * signs
        predicted = opt._payoff_predictions(fitted["gp"], signs, augment) if augment else None
        np.testing.assert_allclose(fitted["ref"], infer_reference_point(y, [None] * len(signs), policy, 0.1, predicted))


def test_describe_states_both_halves_of_a_split_policy():
    from effjax.search.reference import describe
    text = describe("split_alpha")
    assert "three or more objectives" in text and "payoff-table" in text and "alpha-dominated" in text
    assert "'split_alpha'" in text and "10%" in text
