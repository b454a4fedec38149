import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing import assert_config_round_trip
from testing import assert_keras_round_trip

import keras_transfer
from keras_transfer.hub import HubLayer

# Small modules, saved once per test module with tf.saved_model.save.


class ReusableModule(tf.Module):
    """A reusable SavedModel: `variables`, a `trainable_variables` subset and
    `regularization_losses` saved as attributes, `multiplier` as a hyper-parameter."""

    # tf.Module computes these as properties, which tf.saved_model.save does not keep;
    # the reusable SavedModel API needs them saved as attributes.
    variables = trainable_variables = regularization_losses = None

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal((4, 3), seed=(0, 1)), name="dense/kernel")
        self.bias = tf.Variable(tf.zeros(3), name="dense/bias")
        # Saved as trainable, but not in the module's trainable subset: stays frozen.
        self.scale = tf.Variable(tf.fill((3,), 1.5), name="scale")
        self.variables = [self.kernel, self.bias, self.scale]
        self.trainable_variables = [self.kernel, self.bias]
        self.regularization_losses = [
            tf.function(lambda: 0.01 * tf.reduce_sum(tf.square(self.kernel)), input_signature=[])
        ]

    @tf.function
    def __call__(self, x, multiplier=1.0):
        return multiplier * self.scale * (tf.matmul(x, self.kernel) + self.bias)


class ImageFeatures(tf.Module):
    """A Keras Conv + BatchNorm body; `__call__(images, training)` gives a feature
    vector, the `feature_maps` signature the 4-D maps."""

    def __init__(self):
        super().__init__()
        keras.utils.set_random_seed(1)
        self.model = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Conv2D(4, 3, name="conv"),
                keras.layers.BatchNormalization(name="bn"),
            ],
            name="sequential",  # explicit: an automatic name depends on the models made before
        )

    @tf.function
    def __call__(self, images, training=False):
        return tf.reduce_mean(self.model(images, training=training), axis=[1, 2])

    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    def feature_maps(self, images):
        return {"feature_maps": self.model(images, training=False)}


class TextEmbedding(tf.Module):
    """Sentences -> mean of hashed word embeddings (plus a two-output signature)."""

    buckets = 64

    def __init__(self):
        super().__init__()
        self.table = tf.Variable(tf.random.stateless_normal((self.buckets, 5), seed=(0, 2)))

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def __call__(self, sentences):
        ids = tf.strings.to_hash_bucket_fast(tf.strings.split(sentences), self.buckets)
        vectors = tf.gather(self.table, ids)
        count = tf.cast(ids.row_lengths(), tf.float32)[:, None]
        return tf.math.divide_no_nan(tf.reduce_sum(vectors, axis=1), count)

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def embed(self, sentences):
        words = tf.strings.split(sentences).row_lengths()
        return {"embedding": self(sentences), "num_words": words}


IMAGES = tf.TensorSpec((None, None, None, 3), tf.float32)


@pytest.fixture(scope="module")
def reusable_dir(tmp_path_factory):
    module = ReusableModule()
    for multiplier in (1.0, 2.0):
        module.__call__.get_concrete_function(tf.TensorSpec((None, 4), tf.float32), multiplier=multiplier)
    path = str(tmp_path_factory.mktemp("reusable"))
    tf.saved_model.save(module, path)
    return path


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    module = ImageFeatures()
    for training in (True, False):
        module.__call__.get_concrete_function(IMAGES, training=training)
    path = str(tmp_path_factory.mktemp("image"))
    tf.saved_model.save(module, path, signatures={"feature_maps": module.feature_maps})
    return path


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    module = TextEmbedding()
    path = str(tmp_path_factory.mktemp("text"))
    tf.saved_model.save(module, path, signatures={"embed": module.embed})
    return path


def values(layer):
    return [w.numpy().copy() for w in layer.weights]


def regression_model(layer):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(layer(inputs)))
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def regression_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def fit(model, x, y, epochs=2):
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)


# Trainability.


def test_trainable_layer_fine_tunes_only_the_modules_trainable_subset(reusable_dir):
    layer = HubLayer(reusable_dir, trainable=True)
    assert [w.name for w in layer.weights] == ["dense_kernel", "dense_bias", "scale"]
    assert [w.name for w in layer.trainable_weights] == ["dense_kernel", "dense_bias"]
    model = regression_model(layer)
    before = values(layer)
    fit(model, *regression_data())
    kernel, bias, scale = values(layer)
    assert not np.allclose(kernel, before[0]) and not np.allclose(bias, before[1])
    np.testing.assert_array_equal(scale, before[2])  # outside the module's subset
    # The Keras variables share the module's storage.
    np.testing.assert_array_equal(layer.resolved_object.kernel.numpy(), kernel)


def test_frozen_by_default_and_toggling(reusable_dir):
    layer = HubLayer(reusable_dir)
    assert not layer.trainable and layer.trainable_weights == []
    assert all(not w.trainable for w in layer.weights)
    model = regression_model(layer)
    x, y = regression_data()
    before = values(layer)
    fit(model, x, y)
    for old, new in zip(before, values(layer)):
        np.testing.assert_array_equal(old, new)

    layer.trainable = True
    assert [w.trainable for w in layer.weights] == [True, True, False]
    model.compile(keras.optimizers.Adam(0.05), "mse")
    fit(model, x, y)
    assert not np.allclose(layer.weights[0].numpy(), before[0])
    np.testing.assert_array_equal(layer.weights[2].numpy(), before[2])

    layer.trainable = False
    assert [w.trainable for w in layer.weights] == [False, False, False]
    model.compile(keras.optimizers.Adam(0.05), "mse")
    frozen = values(layer)
    fit(model, x, y)
    for old, new in zip(frozen, values(layer)):
        np.testing.assert_array_equal(old, new)


def test_freeze_and_unfreeze_helpers_take_a_lone_hub_layer(reusable_dir):
    layer = HubLayer(reusable_dir, trainable=True)
    assert keras_transfer.freeze(layer).trainable == 0 and not layer.trainable
    counts = keras_transfer.unfreeze(layer, fraction=1.0)
    assert layer.trainable and counts.trainable == 4 * 3 + 3 and counts.total == 4 * 3 + 3 + 3


def test_regularization_losses_join_model_losses_while_trainable(reusable_dir):
    x, _ = regression_data(4)
    layer = HubLayer(reusable_dir, trainable=True)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs))
    model(x)
    expected = 0.01 * np.sum(np.square(layer.weights[0].numpy()))
    assert len(model.losses) == 1
    np.testing.assert_allclose(float(model.losses[0]), expected, rtol=1e-6)
    # ... and the training objective: the loss against zeros is mean(out**2) + penalty.
    model.compile(loss="mse")
    penalised = model.evaluate(x, np.zeros((4, 3)), verbose=0)
    np.testing.assert_allclose(penalised, np.mean(model(x) ** 2) + expected, rtol=1e-5)
    layer.trainable = False
    model(x)
    assert model.losses == []


def test_arguments_are_passed_to_the_module(reusable_dir):
    x, _ = regression_data(4)
    plain = HubLayer(reusable_dir)(x).numpy()
    doubled = HubLayer(reusable_dir, arguments={"multiplier": 2.0})(x).numpy()
    np.testing.assert_allclose(doubled, 2 * plain, rtol=1e-6)


def test_batchnorm_statistics_follow_trainable_and_training(image_dir):
    x = np.random.default_rng(0).uniform(size=(16, 6, 6, 3)).astype("float32") * 5
    y = np.arange(16) % 2
    layer = HubLayer(image_dir)
    names = [w.name for w in layer.weights]
    assert names[-2:] == ["sequential_bn_moving_mean", "sequential_bn_moving_variance"]
    assert [w.name for w in layer.trainable_weights] == []
    # Frozen: training=True still runs the module in inference mode.
    np.testing.assert_allclose(layer(x, training=True), layer(x, training=False))
    model = keras.Sequential([keras.Input((6, 6, 3)), layer, keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = values(layer)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for old, new in zip(before, values(layer)):
        np.testing.assert_array_equal(old, new)

    layer.trainable = True
    assert {w.name for w in layer.trainable_weights} == {
        "sequential_conv_kernel",
        "sequential_conv_bias",
        "sequential_bn_gamma",
        "sequential_bn_beta",
    }
    model.predict(x, verbose=0)  # inference (training=False) leaves the statistics alone
    layer(x, training=False)
    for old, new in zip(before, values(layer)):
        np.testing.assert_array_equal(old, new)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = dict(zip(names, values(layer)))
    old = dict(zip(names, before))
    for name in names:  # weights trained, moving statistics updated
        assert not np.allclose(after[name], old[name]), name


def test_xla_fit_in_sequential_model(reusable_dir):
    layer = HubLayer(reusable_dir, trainable=True)
    model = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.05), "mse", jit_compile=True)
    x, y = regression_data()
    before = values(layer)
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert not np.allclose(layer.weights[0].numpy(), before[0])


# Outputs: signatures, strings, shapes.


def test_string_input_module(text_dir):
    inputs = keras.Input(shape=(), dtype="string")
    layer = HubLayer(text_dir)
    features = layer(inputs)
    assert tuple(features.shape) == (None, 5)
    model = keras.Model(inputs, features)
    texts = tf.constant(["the cat sat", "a dog ran home", "the cat sat", ""])
    out = model.predict(texts, verbose=0)
    assert out.shape == (4, 5)
    np.testing.assert_allclose(out[0], out[2])
    assert not np.allclose(out[0], out[1])
    np.testing.assert_array_equal(out[3], 0.0)
    assert layer.compute_output_shape((None,)) == (None, 5)


def test_signatures_with_an_output_key_or_a_dict(text_dir):
    texts = tf.constant(["one two three", "four"])
    embedding = HubLayer(text_dir, signature="embed", output_key="embedding")(texts)
    np.testing.assert_allclose(embedding, HubLayer(text_dir)(texts))
    outputs = HubLayer(text_dir, signature="embed", signature_outputs_as_dict=True)(texts)
    assert sorted(outputs) == ["embedding", "num_words"]
    np.testing.assert_array_equal(outputs["num_words"], [3, 1])
    with pytest.raises(ValueError, match="several outputs"):
        HubLayer(text_dir, signature="embed")
    with pytest.raises(ValueError, match="has no signature 'nope'"):
        HubLayer(text_dir, signature="nope", output_key="embedding")
    with pytest.raises(ValueError, match="no output 'nope'"):
        HubLayer(text_dir, signature="embed", output_key="nope")
    with pytest.raises(ValueError, match="needs a signature"):
        HubLayer(text_dir, signature_outputs_as_dict=True)


def test_output_shape(image_dir):
    layer = HubLayer(image_dir, signature="feature_maps")
    assert layer.compute_output_shape((None, 8, 8, 3)) == (None, 6, 6, 4)
    given = HubLayer(image_dir, signature="feature_maps", output_shape=(6, 6, 4))
    assert given.compute_output_shape((None, None, None, 3)) == (None, 6, 6, 4)
    # Known from output_shape even where the module's function cannot infer it.
    assert tuple(given(keras.Input((None, None, 3))).shape) == (None, 6, 6, 4)
    wrong = HubLayer(image_dir, signature="feature_maps", output_shape=(5, 5, 4))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        wrong(np.zeros((1, 8, 8, 3), "float32"))


# Saving and export.


def test_config_and_keras_round_trip(reusable_dir, tmp_path):
    layer = HubLayer(reusable_dir, trainable=True, arguments={"multiplier": 2.0}, name="hub")
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.arguments == {"multiplier": 2.0} and rebuilt.trainable
    model = regression_model(layer)
    x, y = regression_data()
    fit(model, x, y)  # the fine-tuned values, not the module file's, must come back
    loaded = assert_keras_round_trip(model, x, str(tmp_path))
    hub_layer = loaded.get_layer("hub")
    assert isinstance(hub_layer, HubLayer) and hub_layer.trainable
    np.testing.assert_allclose(hub_layer.weights[0].numpy(), layer.weights[0].numpy())


def test_export_is_self_contained(image_dir, tmp_path):
    module_dir = str(tmp_path / "module")
    shutil.copytree(image_dir, module_dir)
    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(HubLayer(module_dir)(inputs)))
    x = np.random.default_rng(0).uniform(size=(3, 6, 6, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    exported = str(tmp_path / "exported")
    model.export(exported, verbose=False)
    shutil.rmtree(module_dir)
    reloaded = tf.saved_model.load(exported)  # kept: its variables die with it
    np.testing.assert_allclose(reloaded.serve(tf.constant(x)).numpy(), expected, atol=1e-5)


# build_classifier.


def test_build_classifier_with_a_hub_handle_trains(image_dir):
    model = keras_transfer.build_classifier("hub:" + image_dir, 2, input_shape=(6, 6, 3))
    backbone = model.get_layer("backbone")
    assert isinstance(backbone, HubLayer) and not backbone.trainable
    preprocessing = model.get_layer("preprocessing")
    assert isinstance(preprocessing, keras.layers.Rescaling)
    np.testing.assert_allclose(preprocessing(np.full((1, 1), 255.0, "float32")), [[1.0]])
    assert [layer.name for layer in model.layers] == [
        "images",
        "preprocessing",
        "backbone",
        "output_dropout",
        "predictions",
    ]
    x = np.random.default_rng(0).uniform(0, 255, size=(16, 6, 6, 3)).astype("float32")
    y = (x[:, :3].mean(axis=(1, 2, 3)) > x[:, 3:].mean(axis=(1, 2, 3))).astype(int)
    before = values(backbone)
    head = model.get_layer("predictions").kernel.numpy().copy()
    result = keras_transfer.fine_tune(
        model, (x, y), head_epochs=1, epochs=1, batch_size=8, learning_rate=1e-2, verbose=0
    )
    assert len(result.history["loss"]) == 2
    assert not np.allclose(model.get_layer("predictions").kernel.numpy(), head)
    assert backbone.trainable  # stage 2 unfroze it and trained its weights
    assert not np.allclose(backbone.weights[0].numpy(), before[0])


def test_build_classifier_with_a_hub_layer(image_dir):
    layer = HubLayer(image_dir, signature="feature_maps", value_range=None, name="maps")
    model = keras_transfer.build_classifier(layer, 3, input_shape=(8, 8, 3), pooling="max")
    assert [layer.name for layer in model.layers] == [
        "images",
        "backbone",
        "pooling",
        "output_dropout",
        "predictions",
    ]
    assert isinstance(model.get_layer("pooling"), keras.layers.GlobalMaxPooling2D)
    assert model.get_layer("backbone") is not layer and layer.name == "maps"  # a copy
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    maps = layer(x).numpy().max(axis=(1, 2))
    head = model.get_layer("predictions")
    np.testing.assert_allclose(model.predict(x, verbose=0), head(maps), rtol=1e-5, atol=1e-6)
    default = keras_transfer.build_classifier("hub:" + image_dir, 2)
    assert tuple(default.input.shape) == (None, 224, 224, 3)
    assert default.name == "hub_classifier"


# Loading.


def test_lazy_tensorflow_hub_import(image_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_hub", None)  # `import` now fails
    assert HubLayer(image_dir).weights  # a local directory needs no tensorflow_hub
    with pytest.raises(ImportError, match=r'pip install "setuptools<82"'):
        HubLayer("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5")


def test_missing_directory_raises(tmp_path):
    with pytest.raises(OSError):
        HubLayer(os.path.join(str(tmp_path), "nothing_here"))
