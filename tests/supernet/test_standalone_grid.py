"""tools.standalone_grid: the fixed configuration-selection rule and its CLI's error on a bad workdir."""

import subprocess
import sys

import pytest

from tools.standalone_grid import MIN_CONFIGS, run_grid, select_points
from tests.foundation.helpers import REPO


def _point(pid, width, bits, flops, score, pareto=True):
    return {"id": pid, "pareto": pareto, "pvq": None, "metrics": {"score": score}, "cost": {"flops": flops},
            "config": {"encoder_width": width, "decoder_widths": {"a": 1.0}, "weight_bits": bits}}


POINTS = [_point(0, 1.0, None, 100.0, 0.90, pareto=False), _point(1, 0.25, 4, 10.0, 0.70),
          _point(2, 0.5, 4, 30.0, 0.80), _point(3, 0.5, 8, 31.0, 0.82), _point(4, 0.75, None, 60.0, 0.88),
          _point(5, 0.75, 8, 58.0, 0.87), _point(6, 0.25, 8, 11.0, 0.72), _point(7, 1.0, 4, 90.0, 0.89)]


def test_selection_covers_picks_extremes_and_both_integer_widths():
    chosen = select_points(POINTS)
    ids = [p["id"] for p in chosen]
    assert len(ids) >= MIN_CONFIGS and len(set(ids)) == len(ids)
    assert 0 not in ids  # only front points
    assert 1 in ids and 7 in ids  # fewest and most FLOPs on the front
    assert any(p["config"]["weight_bits"] == 4 for p in chosen) and any(p["config"]["weight_bits"] == 8 for p in chosen)
    assert all(p["roles"] for p in chosen)
    assert select_points(list(reversed(POINTS))) == chosen or sorted(ids) == sorted(
        p["id"] for p in select_points(list(reversed(POINTS))))


def test_a_bad_workdir_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no pareto.json"):
        run_grid(str(tmp_path), str(tmp_path / "out"), "a", 0, progress=False)
    proc = subprocess.run([sys.executable, "-m", "tools.standalone_grid", f"--workdir={tmp_path}",
                           f"--out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --workdir=")


def test_configs_from_serves_a_supernet_only_workdir(tmp_path):
    """With --configs_from the workdir needs no pareto.json of its own (a supernet trained without the search):
    the run goes past that check to loading the workdir, which here holds no run."""
    import json
    configs = tmp_path / "pareto.json"
    configs.write_text(json.dumps({"points": POINTS}))
    (tmp_path / "supernet").mkdir()
    with pytest.raises(Exception) as error:
        run_grid(str(tmp_path / "supernet"), str(tmp_path / "out"), "a", 0, configs_from=str(configs), progress=False)
    assert "no pareto.json" not in str(error.value)


def test_score_weights_come_from_the_search_section_or_are_equal_without_one():
    from effjax.config.load import load_config
    from effjax.job.subnet_search import config_score_weights
    searched = load_config("configs/pipeline.py:digits")
    searched.search.score_weights = {"digit": 2.0}
    assert config_score_weights(searched) == {"digit": 2.0}
    assert config_score_weights(load_config("configs/supernet.py:digits")) == {}
