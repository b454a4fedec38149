import os
import subprocess
import sys

import numpy as np
import pytest

import keras_transfer
from keras_transfer import export
from testing import assert_saved_model_round_trip


@pytest.fixture(scope="module")
def model():
    return keras_transfer.build_classifier("mnist_cnn", 5, weights=None)


def test_tf_serving_layout_and_same_predictions(model, mnist, tmp_path):
    base = str(tmp_path / "digits")
    names = ["five", "six", "seven", "eight", "nine"]
    first = keras_transfer.export_saved_model(model, base, class_names=names)
    second = keras_transfer.export_saved_model(model, base)
    assert first == os.path.join(base, "1") and second == os.path.join(base, "2")
    assert os.path.exists(os.path.join(first, "saved_model.pb"))
    assert export.read_labels(first) == names and export.read_labels(second) == ["0", "1", "2", "3", "4"]
    assert_saved_model_round_trip(first, model, mnist.x[:20])
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging left over


def test_saved_model_cli_lists_the_signature(model, tmp_path):
    path = keras_transfer.export_saved_model(model, str(tmp_path / "m"))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", path, "--tag_set", "serve",
                          "--signature_def", "serving_default"],
                         capture_output=True, text=True, check=True).stdout
    assert "inputs['images']" in out and "outputs['probabilities']" in out
    assert "outputs['class_id']" in out and "output_0" not in out


def test_existing_versions_are_never_touched(model, tmp_path):
    base = str(tmp_path / "m")
    path = keras_transfer.export_saved_model(model, base, version=3)
    stamp = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="never overwritten"):
        keras_transfer.export_saved_model(model, base, version=3)
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == stamp
    assert export.next_version(base) == 4


def test_a_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    import tensorflow as tf

    def broken(*args, **kwargs):
        os.makedirs(os.path.join(args[1], "variables"), exist_ok=True)  # half-written
        raise RuntimeError("disk full")

    base = str(tmp_path / "m")
    keras_transfer.export_saved_model(model, base)
    monkeypatch.setattr(tf.saved_model, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        keras_transfer.export_saved_model(model, base)
    assert os.listdir(base) == ["1"]


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="5 classes but 2 class names"):
        keras_transfer.export_saved_model(model, str(tmp_path), class_names=["a", "b"])
    with pytest.raises(ValueError, match="version"):
        keras_transfer.export_saved_model(model, str(tmp_path), version=0)
