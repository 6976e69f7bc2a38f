"""The examples of docs/your_data.md, run from the page's own text: npz with one task, npz with several
tasks and its own split (trained end to end), and a grain RandomAccessDataSource of the user's own."""

import os
import re
import sys

import jax
import numpy as np
import pytest

from effjax.job import run as pipeline
from effjax.config.load import load_config
from effjax.data import digits, load_dataset
from tests.foundation.helpers import REPO

DOC = os.path.join(REPO, "docs", "your_data.md")


def examples() -> dict[str, str]:
    with open(DOC) as f:
        text = f.read()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_config(path, source):
    path.write_text(source)
    return load_config(str(path))


def _tiny(config):
    """The docs' configs at test scale (the model and schedule of configs/quickstart.py:tiny)."""
    tiny = load_config(os.path.join(REPO, "configs", "quickstart.py") + ":tiny")
    config.model, config.train, config.eval = tiny.model, tiny.train, tiny.eval
    config.log.progress_bar, config.checkpoint.async_save = False, False
    return config


def test_every_example_is_found():
    assert set(examples()) == {"npz_one_task_data", "npz_one_task_config", "npz_tasks_data", "npz_tasks_config",
                               "grain_module", "grain_config"}


def test_npz_with_one_task_scales_raw_digits_like_the_embedded_ones(in_tmp):
    code = examples()
    exec(compile(code["npz_one_task_data"], "npz_one_task_data", "exec"), {})
    config = _write_config(in_tmp / "my_digits.py", code["npz_one_task_config"])
    ds = load_dataset(config.data)
    assert {s: ds.num_examples(s) for s in ("train", "val", "test")} == {"train": 1437, "val": 180, "test": 180}
    assert "int64 divided by its largest value 16" in ds.preprocessing
    embedded = digits.load()
    pixels = np.unique(np.concatenate([ds.splits[s]["image"].ravel() for s in ds.splits]))
    np.testing.assert_array_equal(pixels, np.unique(np.concatenate([embedded.splits[s]["image"].ravel()
                                                                    for s in embedded.splits])))


def _tasks_config(in_tmp):
    code = examples()
    exec(compile(code["npz_tasks_data"], "npz_tasks_data", "exec"), {})
    return _tiny(_write_config(in_tmp / "my_tasks.py", code["npz_tasks_config"]))


def test_npz_with_several_tasks_keeps_its_own_split(in_tmp):
    ds = load_dataset(_tasks_config(in_tmp).data)
    assert [t.name for t in ds.tasks] == ["digit", "big"]
    assert {s: ds.num_examples(s) for s in ("train", "val", "test")} == {"train": 1400, "val": 200, "test": 197}
    assert ds.preprocessing == "npz 'image': float32 used as stored"
    assert (ds.splits["test"]["big"] == (ds.splits["test"]["digit"] >= 5)).all()


@pytest.mark.slow
def test_npz_with_several_tasks_trains(in_tmp):
    config = _tasks_config(in_tmp)
    summary = pipeline.run_main_job(config, str(in_tmp / "run"), devices=jax.devices()[:1])
    assert set(summary["metrics"]["test"]) == {"digit", "big"}
    assert all(np.isfinite(v) for v in summary["metrics"]["test"].values())


def test_grain_source_of_the_users_own(in_tmp, monkeypatch):
    code = examples()
    (in_tmp / "my_grain_data.py").write_text(code["grain_module"])
    monkeypatch.syspath_prepend(str(in_tmp))
    config = _write_config(in_tmp / "my_grain.py", code["grain_config"])
    ds = load_dataset(config.data)
    assert [t.name for t in ds.tasks] == ["digit", "odd"] and ds.label_names == {"odd": ("even", "odd")}
    assert {s: ds.num_examples(s) for s in ("train", "val", "test")} == {"train": 1400, "val": 200, "test": 197}
    assert ds.image_shape == (8, 8, 1) and "divided by image_max=16" in ds.preprocessing
    assert float(ds.splits["train"]["image"].max()) == 1.0
    assert (ds.splits["val"]["odd"] == ds.splits["val"]["digit"] % 2).all()
    sys.modules.pop("my_grain_data", None)
