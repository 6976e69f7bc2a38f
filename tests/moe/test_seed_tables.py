"""experiments/moe/seeds.py tables: results files holding only the top-p run (an entropy-weight sweep)."""

from experiments.moe.seeds import accuracy, flops, present_models


def _results(topk: bool, segmentation_topp: float):
    res = {"tasks": {"segmentation": "miou", "depth": "rmse"},
           "accuracy": {"dense": {"segmentation": 0.50, "depth": 0.90},
                        "moe_topp": {"segmentation": segmentation_topp, "depth": 0.88}},
           "experts_per_token": {"moe_topp": {"segmentation": 2.5, "depth": 1.5}},
           "flops": {"dense (all tasks)": 10e6, "moe_topp (all tasks)": 18e6,
                     "moe_topp single-task segmentation": 9e6, "moe_topp single-task depth": 8e6}}
    if topk:
        res["accuracy"]["moe_topk"] = {"segmentation": 0.49, "depth": 0.91}
        res["experts_per_token"]["moe_topk"] = {"segmentation": 2.0, "depth": 2.0}
        res["flops"].update({"moe_topk (all tasks)": 17e6, "moe_topk single-task segmentation": 8.5e6,
                             "moe_topk single-task depth": 8.5e6})
        res["all_experts_active_flops"] = 30e6
    return res


def test_tables_list_only_the_models_every_run_has():
    runs = [("entropy1e-4", _results(True, 0.52)), ("entropy1e-2", _results(False, 0.485))]
    assert present_models(runs) == (("moe_topp", "MoE top-p"),)
    table = "\n".join(accuracy(runs))
    assert "MoE top-2" not in table
    # top-p minus dense: +2.00 and -1.50 points, so the worst run misses the 1-point criterion
    assert "| MoE top-p | +0.25 ± 2.47 (+2.00, -1.50) | -2.00 ± 0.00 (-2.00, -2.00) | no |" in table
    flop_rows = "\n".join(flops(runs))
    assert "all experts active" in flop_rows and flop_rows.count("all experts active") == 1  # only the run with top-2
    assert present_models([("a", _results(True, 0.5))]) == (("moe_topk", "MoE top-2"), ("moe_topp", "MoE top-p"))
