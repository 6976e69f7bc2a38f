"""tools/bench_quickstart: the interleaving and the table it prints from the raw runs."""

from tools import bench_quickstart


def test_runs_alternate_abba_with_equal_counts():
    assert bench_quickstart.abba_order(3) == [True, False, False, True, True, False]
    assert bench_quickstart.abba_order(1) == [True, False]


def test_the_table_and_the_verdict_come_from_the_runs():
    def run(reuse, wall):
        return {"reuse_host_memory": reuse, "wall_s": wall, "user_s": 200.0, "sys_s": 5.0 if reuse else 30.0,
                "job_wall_seconds": {"train": wall - 30, "search": 15.0, "job": wall - 5}, "front_size": 7,
                "full_supernet_val_score": 0.9656}
    results = {"machine": "measured here", "raw": "benchmarks/quickstart.json",
               "runs": [run(True, 118.0), run(False, 150.0), run(False, 160.0), run(True, 120.0)]}
    text = bench_quickstart.render(results)
    assert "| 2 | False | 150.0 | 120.0 | 15.0 | 200.0 | 30.0 | 7 | 0.9656 |" in text
    assert "reuse_host_memory=True: wall 119.0 ± 1.4 s" in text
    assert "reuse_host_memory=False: wall 155.0 ± 7.1 s" in text
    assert ": met with the default" in text
    results["runs"][0]["wall_s"] = 130.0
    assert "missed by 5 s" in bench_quickstart.render(results)
