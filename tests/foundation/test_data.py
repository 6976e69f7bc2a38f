import numpy as np
import pytest
import ml_collections

from effjax.data import digits, load_dataset, pipeline, shapes
from effjax.data.npz_source import parse_task


def test_digits_split_is_fixed_and_complete():
    ds = digits.load()
    sizes = {s: ds.num_examples(s) for s in ("train", "val", "test")}
    assert sizes == {"train": 1197, "val": 300, "test": 300}
    again = digits.load()
    np.testing.assert_array_equal(ds.splits["val"]["digit"], again.splits["val"]["digit"])
    d = ds.splits["train"]
    np.testing.assert_array_equal(d["parity"], d["digit"] % 2)
    np.testing.assert_array_equal(d["ge5"], (d["digit"] >= 5).astype(np.int32))
    assert d["image"].shape[1:] == (8, 8, 1) and 0.0 <= d["image"].min() and d["image"].max() <= 1.0


def test_shapes_deterministic_and_consistent():
    a, b, c = shapes.generate(64, 32, seed=1), shapes.generate(64, 32, seed=1), shapes.generate(64, 32, seed=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], c["image"])
    objects = a["segmentation"] > 0
    assert objects.any() and (~objects).any()
    assert a["depth"][objects].max() < 5.6 <= a["depth"][~objects].min()  # objects are nearer than the background
    assert set(np.unique(a["segmentation"])) <= {0, 1, 2, 3}
    assert set(np.unique(a["count"])) <= {0, 1, 2, 3}


def _npz_config(path, tasks=("label:classification:3",)):
    c = ml_collections.ConfigDict({"name": "npz", "path": str(path), "tasks": tasks, "seed": 0})
    return c


def test_npz_source_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, image=rng.integers(0, 255, (50, 6, 6), dtype=np.uint8), label=rng.integers(0, 3, 50))
    ds = load_dataset(_npz_config(path))
    assert ds.image_shape == (6, 6, 1)
    assert sum(ds.num_examples(s) for s in ("train", "val", "test")) == 50
    assert ds.splits["train"]["image"].max() <= 1.0


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    (b"this is not a zip file", "not a readable .npz"),
])
def test_npz_source_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_dataset(_npz_config(path))


def test_npz_task_spec_errors():
    with pytest.raises(ValueError, match="name:kind"):
        parse_task("label:banana:3")
    with pytest.raises(ValueError, match="num_classes >= 2"):
        parse_task("label:classification")


def test_train_iterator_resumes_exactly():
    ds = digits.load()
    it = pipeline.train_iterator(ds, 32, seed=3)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it)["digit"] for _ in range(3)]
    fresh = pipeline.train_iterator(ds, 32, seed=3)
    fresh.set_state(state)
    for e in expected:
        np.testing.assert_array_equal(next(fresh)["digit"], e)


def test_train_iterator_covers_each_epoch_once_and_reshuffles():
    from effjax.data.specs import Dataset, TaskSpec

    n, bs = 70, 7
    ids = np.arange(n, dtype=np.int32)
    split = {"image": np.zeros((n, 1, 1, 1), np.float32), "id": ids}
    ds = Dataset("ids", (TaskSpec("id", "classification", n),), {"train": split, "val": split, "test": split})
    it = pipeline.train_iterator(ds, bs, seed=0)
    epoch1 = np.concatenate([next(it)["id"] for _ in range(n // bs)])
    epoch2 = np.concatenate([next(it)["id"] for _ in range(n // bs)])
    np.testing.assert_array_equal(np.sort(epoch1), ids)
    np.testing.assert_array_equal(np.sort(epoch2), ids)
    assert not np.array_equal(epoch1, epoch2)


def test_eval_batches_pad_and_mask():
    ds = digits.load()
    batches = list(pipeline.eval_batches(ds, "val", 64))
    assert len(batches) == 5
    assert sum(b["mask"].sum() for b in batches) == 300
    assert batches[-1]["mask"][:300 - 256].all() and not batches[-1]["mask"][300 - 256:].any()


def test_global_batch_is_sharded_over_data_axes():
    from effjax.train import mesh as mesh_lib
    from effjax.config.base import DEFAULT_LOGICAL_AXIS_RULES

    cfg = ml_collections.ConfigDict({"data": 2, "fsdp": 4, "tensor": 1, "expert": 1})
    mesh = mesh_lib.make_mesh(cfg)
    sharding = mesh_lib.batch_sharding(mesh, DEFAULT_LOGICAL_AXIS_RULES)
    batch = pipeline.to_global({"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}, sharding, 16)
    assert len(batch["x"].addressable_shards) == 8
    assert batch["x"].addressable_shards[0].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(48).reshape(16, 3))
