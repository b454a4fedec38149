import keras
import numpy as np
import pytest

import keras_transfer


@pytest.fixture(scope="module")
def models():
    source = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    target = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    return source, target


def test_copies_matching_layers_and_skips_the_head(models):
    source, target = models
    head_before = target.get_layer("predictions").get_weights()[0].copy()
    report = keras_transfer.transfer_weights(source, target)
    assert report.copied == ["conv1", "conv2", "fc1"]
    assert report.skipped == ["predictions"]
    s, t = keras_transfer.weighted_layers(source), keras_transfer.weighted_layers(target)
    for name in report.copied:
        for a, b in zip(s[name].get_weights(), t[name].get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(t["predictions"].get_weights()[0], head_before)
    assert not np.allclose(t["predictions"].get_weights()[0][:, :5], s["predictions"].get_weights()[0][:, :5])
    assert report.params_copied == 640 + 73856 + 409728  # conv1, conv2, fc1
    text = str(report)
    assert "shape mismatch" in text and "(128, 10)" in text and "(128, 5)" in text
    assert "3/4 layers copied" in text


def test_strict_mode_names_layers_and_shapes(models):
    source, target = models
    with pytest.raises(ValueError) as info:
        keras_transfer.transfer_weights(source, target, strict=True)
    message = str(info.value)
    assert "'predictions'" in message and "(128, 10)" in message and "(128, 5)" in message
    # Excluding the head makes the strict transfer pass.
    report = keras_transfer.transfer_weights(source, target, strict=True, exclude="predictions")
    assert report.copied == ["conv1", "conv2", "fc1"]


def test_name_map_and_order_matching():
    source = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")]
    )
    target = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="x"), keras.layers.Dense(2, name="y")]
    )
    report = keras_transfer.transfer_weights(source, target)
    assert report.copied == [] and set(report.unused_source) == {"a", "b"}
    report = keras_transfer.transfer_weights(source, target, name_map={"a": "x"})
    assert report.copied == ["x"]
    np.testing.assert_array_equal(
        target.get_layer("x").get_weights()[0], source.get_layer("a").get_weights()[0]
    )
    report = keras_transfer.transfer_weights(source, target, match="order")
    assert report.copied == ["x", "y"]
    with pytest.raises(ValueError, match="do not exist"):
        keras_transfer.transfer_weights(source, target, name_map={"nope": "x"})


def test_transfer_into_a_keras_applications_backbone():
    source = keras_transfer.build_backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
    target = keras_transfer.build_classifier("mobilenet_v3_small", 7, weights=None, input_shape=(32, 32, 3))
    report = keras_transfer.transfer_weights(source, target, strict=False)
    assert report.skipped == ["predictions"]
    assert len(report.copied) == len(keras_transfer.weighted_layers(source))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(target.get_layer("backbone")(x), source(x), atol=1e-5)
