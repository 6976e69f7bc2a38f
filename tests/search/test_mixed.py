"""Mixed integer / categorical / continuous spaces: the benchmark problem and the lattice-respecting search."""

import numpy as np

from effjax.search import Float, Int, Objective, Space, optimize
from effjax.search.problems import CompressionMixed, get_problem

MIXED = CompressionMixed()


def test_compression_mixed_brute_force_agrees_with_its_max_hv():
    coarse = MIXED.brute_force_max_hv(n_keep=1001)
    assert MIXED.max_hv - 1e-4 < coarse <= MIXED.max_hv + 1e-12


def test_compression_mixed_evaluates_like_its_vectorized_form_and_every_block_matters():
    params = {"depth": 7, "width": 3, "block": "mbconv", "keep": 0.6, "lr": 3e-3}
    values = MIXED(params)
    np.testing.assert_allclose([values["error"], values["cost"]], MIXED.evaluate(MIXED.params_to_x(params)[None])[0])
    assert get_problem("compression_mixed").name == "CompressionMixed"
    # every block type, and several depths and widths, lie on the true front: no knob is a nuisance
    x_front, _ = MIXED.brute_force_front(n_keep=201)
    assert set(x_front[:, 2].astype(int)) == {0, 1, 2}
    assert len(set(x_front[:, 0])) > 3 and len(set(x_front[:, 1])) > 3


def test_mixed_search_proposes_lattice_points_and_beats_sobol_early():
    result = optimize(MIXED, MIXED.space, MIXED.objectives, budget=20, seed=0, progress=False, n_initial=8)
    keys = {MIXED.space.key(e.params) for e in result.history}
    assert len(keys) == 20
    for e in result.history:
        assert isinstance(e.params["depth"], int) and isinstance(e.params["width"], int)
        assert e.params["block"] in MIXED.blocks and 0.2 <= e.params["keep"] <= 1.0
    design_hv = result.__class__(result.history[:8], [], result.objectives).hypervolume()
    assert result.hypervolume() > design_hv  # the model-based proposals improve on the design


def test_mixed_search_never_reproposes_a_configuration_at_a_bound():
    # the best x is the upper bound whatever k: without the exclusion the search would ask for (k, 1.0) again
    space = Space([Int("k", 0, 2), Float("x", 0.0, 1.0)])

    def fn(p):
        return {"a": p["x"] + 0.1 * p["k"], "b": -p["x"] - 0.1 * p["k"]}

    result = optimize(fn, space, [Objective("a", "max"), Objective("b", "min")], budget=14, seed=1, progress=False,
                      n_initial=4)
    keys = [space.key(e.params) for e in result.history]
    assert len(keys) == len(set(keys))
