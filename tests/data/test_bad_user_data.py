"""Bad user arrays are refused with one line naming the array and its first bad row; integer images
of any dtype are scaled by the stated rule (raw int64 digits / 16, not / int64 max)."""

import ml_collections
import numpy as np
import pytest

from effjax.data import load_dataset
from effjax.data.validate import scale_images


def _config(path, tasks=("y:classification:3",)):
    return ml_collections.ConfigDict({"name": "npz", "path": str(path), "tasks": tasks, "seed": 0})


def _images(n=40, size=4):
    return np.random.default_rng(0).uniform(size=(n, size, size)).astype(np.float32)


def _labels(n=40):
    return np.arange(n) % 3


def _refused(tmp_path, arrays, message, tasks=("y:classification:3",)):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as info:
        load_dataset(_config(path, tasks))
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_nan_and_inf_pixels(tmp_path):
    images = _images()
    images[17, 1, 2] = np.nan
    _refused(tmp_path, {"image": images, "y": _labels()}, "array 'image': row 17 has NaN pixels")
    images[17, 1, 2], images[5, 0, 0] = 0.5, np.inf
    _refused(tmp_path, {"image": images, "y": _labels()}, "array 'image': row 5 has infinite pixels")


def test_labels_outside_their_task(tmp_path):
    labels = _labels()
    labels[9] = -1
    _refused(tmp_path, {"image": _images(), "y": labels}, "array 'y': row 9 has class -1; task 'y' has classes 0..2")
    labels[9], labels[30] = 0, 3
    _refused(tmp_path, {"image": _images(), "y": labels}, "array 'y': row 30 has class 3")


def test_fractional_float_labels_are_refused_whole_ones_accepted(tmp_path):
    labels = _labels().astype(np.float32)
    labels[4] = 1.5
    _refused(tmp_path, {"image": _images(), "y": labels}, "array 'y': row 4 has class label 1.5")
    path = tmp_path / "whole.npz"
    np.savez(path, image=_images(), y=_labels().astype(np.float64))
    ds = load_dataset(_config(path))
    assert ds.splits["train"]["y"].dtype == np.int32


def test_segmentation_label_out_of_range_names_the_first_bad_row(tmp_path):
    masks = np.zeros((40, 4, 4), np.int64)
    masks[12, 3, 3] = 7
    _refused(tmp_path, {"image": _images(), "m": masks}, "array 'm': row 12 has class 7",
             tasks=("m:segmentation:4",))


def test_depth_with_nan_is_refused(tmp_path):
    depth = np.ones((40, 4, 4), np.float32)
    depth[21, 0, 1] = np.nan
    _refused(tmp_path, {"image": _images(), "z": depth}, "array 'z': row 21 is NaN or infinite", tasks=("z:depth",))


def test_row_count_mismatch(tmp_path):
    _refused(tmp_path, {"image": _images(), "y": _labels(39)}, "array 'y' has 39 rows, 'image' has 40")
    arrays = {f"{s}_{n}": a for s in ("train", "val", "test") for n, a in (("image", _images(10)), ("y", _labels(10)))}
    arrays["val_y"] = _labels(9)
    _refused(tmp_path, arrays, "array 'val_y' has 9 rows, 'val_image' has 10")


def test_empty_split(tmp_path):
    arrays = {f"{s}_{n}": a for s in ("train", "val", "test") for n, a in (("image", _images(10)), ("y", _labels(10)))}
    arrays["val_image"], arrays["val_y"] = _images(0), _labels(0)
    _refused(tmp_path, arrays, "split 'val' is empty")
    _refused(tmp_path, {"image": _images(4), "y": _labels(4)}, "split 'val' is empty")  # 10% of 4 rows is 0


def test_negative_integer_pixels_and_strings(tmp_path):
    ints = (np.arange(40 * 16).reshape(40, 4, 4) % 7).astype(np.int16)
    ints[3, 0, 0] = -2
    _refused(tmp_path, {"image": ints, "y": _labels()}, "array 'image': row 3 has negative pixels (int16)")
    _refused(tmp_path, {"image": np.full((40, 4, 4), "a"), "y": _labels()}, "array 'image': dtype <U1 is not a number type")


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64])
def test_integer_images_are_divided_by_their_largest_value(dtype):
    raw = (np.arange(2 * 8 * 8).reshape(2, 8, 8) % 17).astype(dtype)  # 0..16, as raw sklearn digits
    scaled, rule = scale_images(raw, "image")
    np.testing.assert_array_equal(scaled[..., 0], raw.astype(np.float32) / 16)
    assert rule == f"{np.dtype(dtype)} divided by its largest value 16"


def test_other_dtypes_follow_the_stated_rule():
    raw = np.array([[[0, 255]]], np.uint8)
    assert scale_images(raw, "image")[0].max() == 1.0
    assert scale_images(raw.astype(bool), "image")[1] == "bool as 0 / 1"
    assert scale_images(raw.astype(np.float16), "image")[0].max() == 255.0  # floats are used as stored
    assert scale_images(raw.astype(np.uint16), "image", image_max=4095)[0].max() == pytest.approx(255 / 4095)


def test_split_files_share_one_integer_scale(tmp_path):
    arrays = {}
    for s, top in (("train", 16), ("val", 8), ("test", 4)):
        image = np.zeros((5, 4, 4), np.int64)
        image[0, 0, 0] = top
        arrays[f"{s}_image"], arrays[f"{s}_y"] = image, _labels(5)
    path = tmp_path / "split.npz"
    np.savez(path, **arrays)
    ds = load_dataset(_config(path))
    assert [float(ds.splits[s]["image"].max()) for s in ("train", "val", "test")] == [1.0, 0.5, 0.25]
