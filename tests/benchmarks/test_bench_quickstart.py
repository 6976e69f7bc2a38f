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
    results = {"machine": "measured here", "raw": "benchmarks/quickstart.json", "command": bench_quickstart.COMMAND,
               "runs": [run(True, 118.0), run(False, 150.0), run(False, 160.0), run(True, 120.0)]}
    text = bench_quickstart.render(results)
    assert "| 2 | False | 150.0 | 120.0 | 15.0 | 200.0 | 30.0 | 7 | 0.9656 |" in text
    assert "reuse_host_memory=True: wall 119.0 ± 1.4 s" in text
    assert "reuse_host_memory=False: wall 155.0 ± 7.1 s" in text
    assert ": met with the default" in text
    results["runs"][0]["wall_s"] = 130.0
    assert "missed by 5 s" in bench_quickstart.render(results)


def test_a_code_comparison_labels_the_runs_by_revision():
    def run(code, wall):
        return {"code": code, "reuse_host_memory": True, "wall_s": wall, "user_s": 200.0, "sys_s": 5.0,
                "job_wall_seconds": {"train": wall - 30, "search": 12.0, "job": wall - 4}, "front_size": 7,
                "full_supernet_val_score": 0.9656}
    results = {"machine": "measured here", "raw": "benchmarks/quickstart_versions.json", "against": "abc1234",
               "this_code": "def5678",
               "command": "python -m tools.bench_quickstart --repeats=3 --against=abc1234",
               "runs": [run("def5678", 117.0), run("abc1234", 130.0), run("abc1234", 134.0), run("def5678", 119.0)]}
    text = bench_quickstart.render(results)
    assert "wall time of this code and of abc1234" in text and "--against=abc1234" in text
    assert "| 2 | abc1234 | 130.0 |" in text
    assert "code=def5678: wall 118.0 ± 1.4 s" in text and "code=abc1234: wall 132.0 ± 2.8 s" in text
    assert ": met with this code" in text
    results["runs"] = results["runs"][1:] + results["runs"][:1]  # the verdict follows this code, not the first run
    assert ": met with this code" in bench_quickstart.render(results)
    results["runs"][-1]["wall_s"] = 125.0
    assert "missed by 2 s" in bench_quickstart.render(results)
