"""The Pareto plot: log-axis tick labels that do not overlap, and the score defined under the plots."""

import os

import numpy as np
import pytest

from effjax.job import report as report_lib
from effjax.job import subnet_search as ss
from effjax.data.specs import TaskSpec


def _points(flops_range, bits_range, n=12):
    rng = np.random.default_rng(0)
    return [{"id": i, "pareto": i % 3 == 0, "metrics": {"score": float(rng.uniform(0.5, 0.9))},
             "cost": {"flops": float(f), "bits": float(b)}}
            for i, (f, b) in enumerate(zip(np.geomspace(*flops_range, n), np.geomspace(*bits_range, n)))]


def _overlaps(labels, renderer, gap: float = 3.0) -> list:
    """Pairs of shown labels closer than `gap` pixels."""
    boxes = [label.get_window_extent(renderer).expanded(1.0, 1.0).padded(gap / 2)
             for label in labels if label.get_visible() and label.get_text()]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.mark.parametrize("flops_range, bits_range", [((9.2e4, 7.2e5), (5.3e4, 8.1e5)),  # the tiny digits run
                                                     ((9.2e4, 7.5e5), (4.1e4, 2.1e5)),  # under a decade
                                                     ((3e5, 8e5), (1.5e5, 3.9e5)),
                                                     ((2e3, 5e8), (1e3, 1e9))])  # many decades
def test_log_axis_tick_labels_do_not_overlap(flops_range, bits_range):
    import matplotlib.pyplot as plt

    fig = ss.pareto_figure(_points(flops_range, bits_range), "t", "validation score = mean of digit accuracy")
    fig.set_dpi(110)  # as plot_pareto saves it
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
        shown = [label for label in labels if label.get_text()]
        assert len(shown) >= 2, [label.get_text() for label in labels]
        assert not _overlaps(labels, renderer), [label.get_text() for label in shown]
    plt.close(fig)


def test_score_is_defined_under_the_plot(tmp_path):
    tasks = (TaskSpec("digit", "classification", 10), TaskSpec("seg", "segmentation", 4), TaskSpec("z", "depth"))
    text = ss.score_definition(tasks, {})
    assert text == "validation score = mean of digit accuracy, seg miou, (1 - RMSE/std) of z"
    assert ss.score_definition(tasks, {"z": 2.0}).startswith("validation score = weighted mean of digit accuracy")
    fig = ss.pareto_figure(_points((1e5, 1e6), (1e5, 1e6)), "t", text)
    assert text in [t.get_text() for t in fig.texts]
    import matplotlib.pyplot as plt

    plt.close(fig)
    image = ss.plot_pareto(_points((1e5, 1e6), (1e5, 1e6)), str(tmp_path / "p.png"), "t", text)
    assert image.ndim == 3 and os.path.getsize(tmp_path / "p.png") > 0


def test_report_export_paths_are_relative_to_the_workdir(tmp_path):
    import ml_collections

    points = _points((1e5, 1e6), (1e5, 1e6))
    for p in points:
        p["config"] = {"encoder_width": 1.0, "decoder_widths": {}, "weight_bits": None, "first_last_bits": None}
    workdir = str(tmp_path / "run")
    exports = {p["id"]: os.path.join(workdir, "export", f"point_{p['id']}") for p in report_lib.budget_picks(points)}
    text = report_lib.render(points, {"score": 0.8}, ml_collections.ConfigDict({"data": {"name": "digits"}}), exports,
                             workdir)
    assert str(tmp_path) not in text
    for i in exports:
        assert f"`export/point_{i}`" in text
