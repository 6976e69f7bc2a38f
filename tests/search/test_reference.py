"""Reference-point inference and normalization for objectives without `ref`."""

import numpy as np
import pytest

from effjax.search import Objective, Optimizer
from effjax.search.problems import BraninCurrin
from effjax.search.reference import infer_reference_point, normalization_scale

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
    for policy in ("front", "observed", "front_relative"):
        opt = Optimizer(bc.space, objectives, seed=0, n_initial=6, reference=policy)
        for trial in opt.ask(6):
            opt.tell(trial, bc(trial.params))
        refs[policy] = opt._fit()["ref"]
        y = -np.array([[e.values[n] for n in bc.objective_names] for e in opt.history])
        np.testing.assert_allclose(refs[policy], infer_reference_point(y, [None, None], policy, 0.1))
    assert not np.allclose(refs["front"], refs["observed"])


def test_describe_states_the_default_policy():
    from effjax.search.reference import DEFAULT_POLICY, describe
    assert DEFAULT_POLICY in describe() and "10%" in describe()
    with pytest.raises(ValueError, match="reference: must be one of"):
        describe("nadir")
