"""A damaged or inconsistent export is refused by `load` with one line naming the file and field;
`predict` on images of the wrong size says which size the model takes."""

import json
import os
import shutil

import numpy as np
import pytest

from effjax.compress import export as export_lib


@pytest.fixture
def copy(exported_dir, tmp_path):
    directory = str(tmp_path / "copy")
    shutil.copytree(exported_dir, directory)
    return directory


def _edit_json(directory, edit):
    path = os.path.join(directory, "model.json")
    with open(path) as f:
        meta = json.load(f)
    edit(meta)
    with open(path, "w") as f:
        json.dump(meta, f)


def _refused(directory, message):
    with pytest.raises(export_lib.ExportError) as info:
        export_lib.load(directory)
    text = str(info.value)
    assert message in text and "\n" not in text, text
    return text


def test_missing_model_bin(copy):
    os.remove(os.path.join(copy, "model.bin"))
    _refused(copy, "model.bin: not found")


def test_garbage_model_json(copy):
    with open(os.path.join(copy, "model.json"), "w") as f:
        f.write("{not json")
    _refused(copy, "model.json: not valid JSON")


def _first(meta, bits):
    return next(p for p in meta["params"] if p["bits"] == bits)


def test_changed_bits(copy):
    _edit_json(copy, lambda meta: _first(meta, 4).update(bits=8))
    _refused(copy, "(bits=8, active_shape=")
    _edit_json(copy, lambda meta: _first(meta, 8).update(bits=3))
    _refused(copy, ".bits=3; allowed: 32, 8, 4, 'pvq'")


def test_changed_active_shape_alone(copy):
    def shrink(meta):
        p = next(p for p in meta["params"] if p["bits"] == 32 and p["active_shape"][-1] > 1)
        p["active_shape"][-1] -= 1
    _edit_json(copy, shrink)
    _refused(copy, "needs array")


def test_changed_active_shape_with_a_consistent_array(copy):
    """A kernel's active shape transposed, and its stored array with it: same bytes, so only the model can tell."""
    def transpose(meta):
        p = next(p for p in meta["params"] if p["bits"] == 8 and p["active_shape"][0] != p["active_shape"][1]
                 and max(p["active_shape"]) <= min(p["full_shape"]))
        p["active_shape"] = p["active_shape"][::-1]
        array = next(a for a in meta["arrays"] if a["name"] == p["path"] + ":q")
        array["shape"] = array["shape"][::-1]
        scale = next(a for a in meta["arrays"] if a["name"] == p["path"] + ":scale")
        scale["shape"], scale["nbytes"] = [p["active_shape"][-1]], 4 * p["active_shape"][-1]
    _edit_json(copy, transpose)
    text = _refused(copy, "].active_shape=")
    assert "but the model at subnet" in text


def test_changed_bytes_of_model_bin(copy):
    path = os.path.join(copy, "model.bin")
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    _refused(copy, "sha256 differs")


def test_predict_on_the_wrong_image_size(exported_dir):
    model = export_lib.load(exported_dir)
    for images in (np.zeros((2, 16, 16, 1), np.float32), np.zeros((2, 8, 8), np.float32)):
        with pytest.raises(ValueError) as info:
            model.predict(images)
        assert "this model takes [None, 8, 8, 1]" in str(info.value) and "\n" not in str(info.value)
