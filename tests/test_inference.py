import keras
import numpy as np
import pytest
from testing import assert_keras_round_trip

import keras_transfer
from keras_transfer import inference
from keras_transfer import performance
from keras_transfer.utils import keras_internals


def _randomize_batch_norms(model, seed=0):
    """Non-trivial BatchNorm statistics (a fresh BN is nearly the identity)."""
    rng = np.random.default_rng(seed)
    for layer in keras_internals.flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c),
                    rng.normal(0, 0.3, c),
                    rng.normal(0, 0.3, c),
                    rng.uniform(0.5, 2.0, c),
                ]
            )


def small_cnn(num_classes=6, nested=False):
    """conv+BN+ReLU blocks, a residual add, a depthwise conv and a Dense+BN head."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(8, 3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)
    x = keras.layers.BatchNormalization()(x)
    features = keras.layers.GlobalAveragePooling2D()(x)
    if nested:
        backbone = keras.Model(inputs, features, name="backbone")
        outer_in = keras.Input((24, 24, 3))
        features = backbone(outer_in)
        inputs = outer_in
    h = keras.layers.Dense(16)(features)
    h = keras.layers.BatchNormalization()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.ReLU()(h))
    model = keras.Model(inputs, outputs)
    _randomize_batch_norms(model)
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (37, 24, 24, 3)).astype("float32")


@pytest.mark.parametrize("nested", [False, True])
def test_fold_batch_norm_same_function(images, nested):
    model = small_cnn(nested=nested)
    folded = inference.fold_batch_norm(model)
    assert folded._folded_batch_norms == 4
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in keras_internals.flatten_layers(folded)
    )
    np.testing.assert_allclose(
        folded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-4, atol=1e-6
    )
    # The original is untouched.
    assert (
        sum(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in keras_internals.flatten_layers(model)
        )
        == 4
    )


def test_bn_after_activation_or_shared_conv_is_kept(images):
    inputs = keras.Input((24, 24, 3))
    conv = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    a = keras.layers.BatchNormalization()(conv)
    plain = keras.layers.Conv2D(4, 3)(inputs)
    b = keras.layers.BatchNormalization()(plain)
    model = keras.Model(inputs, [keras.layers.Add()([a, b]), plain])  # `plain` is an output too
    _randomize_batch_norms(model)
    folded = inference.fold_batch_norm(model)
    assert folded._folded_batch_norms == 0
    for got, want in zip(folded.predict(images, verbose=0), model.predict(images, verbose=0)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_float32_equals_predict(images):
    model = small_cnn(nested=True)
    fast = inference.optimize_for_inference(model, batch_size=8)
    assert fast.folded_batch_norms == 4 and fast.precision == "float32"
    expected = model.predict(images, verbose=0)
    got = fast.predict(images)  # 37 = 4 full batches + a padded one
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fast(images[:8]).numpy(), expected[:8], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="one batch of shape"):
        fast(images[:3])
    with pytest.raises(ValueError, match="samples of shape"):
        fast.predict(images[:, :10])


def _folded_batch_norm_layers(model):
    layers = keras_internals.flatten_layers(model)
    return [layer for layer in layers if type(layer).__name__ == "_FoldedBatchNorm"]


@pytest.mark.parametrize("nested", [False, True])
def test_folded_model_round_trips_through_a_keras_file(images, nested, tmp_path):
    folded = inference.fold_batch_norm(small_cnn(nested=nested))
    loaded = assert_keras_round_trip(folded, images, str(tmp_path), atol=1e-5)
    assert len(_folded_batch_norm_layers(loaded)) == 4
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in loaded.layers)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in folded.layers]


def test_folded_classifier_round_trips_through_a_keras_file(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras_transfer.build_classifier("mobilenet_v3_small", 3, weights=None, input_shape=(32, 32, 3))
    _randomize_batch_norms(model)
    folded = inference.fold_batch_norm(model)
    assert folded._folded_batch_norms > 0
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    loaded = assert_keras_round_trip(folded, x, str(tmp_path), atol=1e-5)
    assert len(_folded_batch_norm_layers(loaded)) == folded._folded_batch_norms
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)


def test_inference_model_saves_through_its_keras_model(images, tmp_path):
    model = small_cnn(nested=True)
    fast = inference.optimize_for_inference(model, batch_size=8)
    assert isinstance(fast.keras_model, keras.Model) and fast.keras_model is not model
    assert len(_folded_batch_norm_layers(fast.keras_model)) == 4
    path = str(tmp_path / "fast.keras")
    fast.keras_model.save(path)
    loaded = keras.saving.load_model(path)
    again = inference.optimize_for_inference(loaded, batch_size=8)
    np.testing.assert_allclose(again.predict(images), fast.predict(images), atol=1e-5)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), fast.predict(images), atol=1e-5)
    assert again.folded_batch_norms == 0  # nothing left to fold
    # Not folded: the graph was traced from the model itself.
    assert inference.optimize_for_inference(model, batch_size=8, fold_batchnorm=False).keras_model is model


@pytest.mark.skipif(
    not performance.bf16_supported(),
    reason=f"bfloat16 inference is refused here: {performance.bf16_unsupported_reason()}",
)
def test_bfloat16_close_to_float32(images):
    model = small_cnn(nested=True)
    fast = inference.optimize_for_inference(model, batch_size=8, precision="bfloat16")
    assert fast.bf16_ops > 0
    expected = model.predict(images, verbose=0)
    got = fast.predict(images)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.05)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_bad_arguments(monkeypatch):
    model = small_cnn()
    with pytest.raises(ValueError, match="precision must be one of 'float32', 'bfloat16'"):
        inference.optimize_for_inference(model, precision="fp16")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        inference.optimize_for_inference(model, batch_size=0)
    free = keras.Model(
        *(lambda i: (i, keras.layers.GlobalAveragePooling2D()(i)))(keras.Input((None, None, 3)))
    )
    with pytest.raises(ValueError, match="fully known"):
        inference.optimize_for_inference(free)
    monkeypatch.setattr(performance, "_cpu_flags", lambda: {"avx2"})
    # An AVX2-only CPU, whatever this machine is (on AMD EPYC TensorFlow also leaves
    # oneDNN off, which has its own message, checked below).
    monkeypatch.setattr(performance, "_onednn_enabled", lambda: True)
    assert not performance.bf16_supported() and not performance.has_amx()
    with pytest.raises(RuntimeError, match="no native bfloat16"):
        inference.optimize_for_inference(model, precision="bfloat16")
    monkeypatch.setattr(performance, "_onednn_enabled", lambda: False)
    with pytest.raises(RuntimeError, match="oneDNN kernels are off"):
        inference.optimize_for_inference(model, precision="bfloat16")


def test_model_flops():
    model = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.DepthwiseConv2D(3),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    expected = 2 * (3 * 3 * 3 * 4 * 8 * 8 + 3 * 3 * 4 * 6 * 6 + 6 * 6 * 4 * 5)
    assert performance.model_flops(model) == expected
