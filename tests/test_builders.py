import keras
import numpy as np
import pytest
from testing import assert_config_round_trip
from testing import assert_keras_round_trip

import keras_transfer


def classic_mlp(num_classes=10):
    """The classic Keras MNIST MLP, written the textbook way (auto-named layers)."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def test_structure_and_names():
    model = keras_transfer.build_classifier("mnist_cnn", 5, weights=None, dropout=0.3)
    assert [layer.name for layer in model.layers] == [
        "images",
        "preprocessing",
        "backbone",
        "output_dropout",
        "predictions",
    ]
    assert model.output.shape == (None, 5)
    assert model.get_layer("output_dropout").rate == 0.3
    # Random init: the backbone trains by default.
    assert model.get_layer("backbone").trainable


def test_mlp_source_model_matches_the_classic_recipe():
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    assert keras_transfer.count_parameters(model).total == 784 * 128 + 128 + 128 * 10 + 10
    assert model.get_layer("output_dropout").rate == 0.2


def test_pretrained_backbone_frozen_and_called_in_inference_mode(tmp_path):
    path = str(tmp_path / "b.weights.h5")
    keras_transfer.build_backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3)).save_weights(
        path
    )
    model = keras_transfer.build_classifier("mobilenet_v3_small", 4, weights=path, input_shape=(32, 32, 3))
    head = model.get_layer("predictions")
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head.trainable_weights}
    # training=False is baked into the call: BatchNorm statistics do not move in fit.
    backbone = model.get_layer("backbone")
    moving = [w for w in backbone.weights if "moving_mean" in w.path]
    before = [w.numpy().copy() for w in moving]
    keras_transfer.unfreeze(backbone)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.arange(8) % 4, epochs=1, verbose=0)
    for b, w in zip(before, moving):
        np.testing.assert_array_equal(b, w.numpy())


def test_preprocessing_inside_the_model_matches_keras_applications():
    model = keras_transfer.build_classifier("resnet50", 2, weights=None, input_shape=(32, 32, 3))
    layer = model.get_layer("preprocessing")
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-3)
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.backbone == "resnet50"


def test_user_model_is_cut_below_its_top_and_cloned(mnist):
    source = classic_mlp()
    source.compile("adam", "sparse_categorical_crossentropy")
    source.fit(mnist.x[:256], mnist.y[:256], epochs=1, verbose=0)
    source_weights = [w.copy() for w in source.get_weights()]

    target = keras_transfer.build_classifier(source, 5)
    features = target.get_layer("backbone")
    # The old top and its dropout are gone; features are the 128-unit hidden layer.
    assert features.output.shape == (None, 128)
    assert not features.trainable  # trained weights: frozen by default
    # Same features as the source's hidden layer.
    hidden = keras.Model(source.inputs, source.layers[-3].output)
    x = mnist.x[:16]
    np.testing.assert_allclose(features.predict(x, verbose=0), hidden.predict(x, verbose=0), atol=1e-6)

    # Fine-tuning the target never changes the source.
    keras_transfer.unfreeze(target)
    target.compile("adam", "sparse_categorical_crossentropy")
    target.fit(mnist.x[:64], mnist.y[:64] % 5, epochs=2, verbose=0)
    for before, after in zip(source_weights, source.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(features.get_weights()[0], source.layers[2].get_weights()[0])


def test_feature_layer_and_multi_generation_transfer():
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    conv_features = keras_transfer.build_classifier(source, 3, feature_layer="backbone", pooling="max")
    assert conv_features.get_layer("backbone").output.shape == (None, 128)
    # A classifier built from a classifier keeps the leaf layer names.
    assert list(keras_transfer.weighted_layers(conv_features)) == ["conv1", "conv2", "fc1", "predictions"]


def test_a_toolkit_classifier_as_source_is_not_nested_twice(mnist):
    # Issue 9: backbone -> [images, preprocessing, backbone] made get_layer("fc1") fail.
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    keras_transfer.train(source, (mnist.x[:128], mnist.y[:128] % 5), epochs=1, verbose=0)
    target = keras_transfer.build_classifier(source, 3)
    assert [layer.name for layer in target.layers] == [
        "images",
        "preprocessing",
        "backbone",
        "output_dropout",
        "predictions",
    ]
    backbone = target.get_layer("backbone")
    assert backbone.get_layer("fc1").units == 128
    assert backbone is not source.get_layer("backbone") and not backbone.trainable
    x = mnist.x[:8].astype("float32")
    expected = source.get_layer("backbone")(source.get_layer("preprocessing")(x))
    np.testing.assert_allclose(backbone(target.get_layer("preprocessing")(x)), expected, atol=1e-6)
    counts = keras_transfer.freeze(target, "backbone")
    assert counts.trainable == 128 * 3 + 3


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="Received: pooling='mean'"):
        keras_transfer.build_classifier("mnist_cnn", 5, weights=None, pooling="mean")
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        keras_transfer.build_classifier("mnist_cnn", 0, weights=None)
    with pytest.raises(ValueError, match="Unknown backbone"):
        keras_transfer.build_classifier("resnet_50x", 5, weights=None)
    with pytest.raises(ValueError, match=r"takes inputs of shape \(28, 28, 1\)"):
        keras_transfer.build_classifier(classic_mlp(), 5, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="registry name or a keras.Model"):
        keras_transfer.build_classifier(42, 5)


@pytest.mark.parametrize("backbone", ["mnist_cnn", "user_mlp", "mobilenet_v3_small"])
def test_keras_round_trip(backbone, tmp_path, mnist):
    if backbone == "user_mlp":
        model = keras_transfer.build_classifier(classic_mlp(), 10)
        x = mnist.x[:8]
    elif backbone == "mobilenet_v3_small":
        model = keras_transfer.build_classifier(backbone, 10, weights=None, input_shape=(32, 32, 3))
        x = keras_transfer.data.adapt_images(mnist.x[:8], size=32, channels=3).numpy()
    else:
        model = keras_transfer.build_classifier(backbone, 10, weights=None)
        x = mnist.x[:8]
    loaded = assert_keras_round_trip(model, x, str(tmp_path))
    assert loaded.get_layer("backbone").trainable == model.get_layer("backbone").trainable
