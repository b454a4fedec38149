"""The learning-rate finder measures the model as it trains and leaves no trace on it."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer.training import lr_finder


def _model_with_batchnorm():
    """Frozen first layer, BatchNorm, a compiled toolkit loss with label smoothing and SGD
    with momentum, trained a few steps so every optimizer variable exists."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, name="frozen_dense")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("frozen_dense").trainable = False
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras_transfer.SparseCategoricalCrossentropy(0.1, from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _state(model):
    return {
        "variables": [v.numpy().copy() for v in model.variables],
        "names": [v.path for v in model.variables],
        "trainable": [layer.trainable for layer in model._flatten_layers()],
        "optimizer": model.optimizer,
        "optimizer_variables": [v.numpy().copy() for v in model.optimizer.variables],
        "loss": model.loss,
        "compile_loss": model._compile_loss,
        "train_function": model.train_function,
        "keys": sorted(model.__dict__),
    }


def _assert_same(before, after):
    assert after["names"] == before["names"]
    for a, b in zip(before["variables"], after["variables"]):
        np.testing.assert_array_equal(a, b)  # bit-identical
    assert after["trainable"] == before["trainable"]
    assert after["optimizer"] is before["optimizer"]
    assert len(after["optimizer_variables"]) == len(before["optimizer_variables"])
    for a, b in zip(before["optimizer_variables"], after["optimizer_variables"]):
        np.testing.assert_array_equal(a, b)
    for key in ("loss", "compile_loss", "train_function"):
        assert after[key] is before[key], key
    assert after["keys"] == before["keys"]


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist.x[:1024], mnist.y[:1024]


@pytest.fixture(scope="module")
def trained(digits):
    keras.utils.set_random_seed(0)
    model = _model_with_batchnorm()
    model.fit(digits[0][:256] / 255.0, digits[1][:256], epochs=1, batch_size=64, verbose=0)
    return model


def test_the_model_is_bit_identical_after_a_run_and_a_divergence_stop(trained, digits):
    before = _state(trained)
    result = keras_transfer.find_learning_rate(trained, digits, steps=12, verbose=0)
    assert len(result.losses) == 12 and result.divergence_step is None
    _assert_same(before, _state(trained))
    # A ramp into huge rates diverges and stops early; the model is still untouched.
    result = keras_transfer.find_learning_rate(trained, digits, min_lr=1.0, max_lr=1e6, steps=30, verbose=0)
    assert result.divergence_step is not None and len(result.losses) == result.divergence_step + 1 < 30
    _assert_same(before, _state(trained))
    # The model still trains as compiled: SGD with momentum, its own train function.
    trained.fit(digits[0][:64] / 255.0, digits[1][:64], epochs=1, batch_size=64, verbose=0)
    assert trained.optimizer is before["optimizer"] and trained.train_function is before["train_function"]


def test_the_model_is_restored_after_an_exception(trained, digits, monkeypatch):
    before = _state(trained)
    real = lr_finder._Recorder.on_train_batch_end

    def failing(self, batch, logs=None):
        real(self, batch, logs)
        if len(self.losses) == 3:
            raise RuntimeError("interrupted")

    monkeypatch.setattr(lr_finder._Recorder, "on_train_batch_end", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        keras_transfer.find_learning_rate(trained, digits, min_lr=0.1, max_lr=10.0, steps=10, verbose=0)
    _assert_same(before, _state(trained))


def test_an_uncompiled_model_stays_uncompiled():
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    x = np.random.default_rng(0).random((64, 28, 28, 1)) * 255
    y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    keys = sorted(model.__dict__)
    weights = [w.copy() for w in model.get_weights()]
    keras_transfer.find_learning_rate(model, (x, y), steps=6, verbose=0)
    assert sorted(model.__dict__) == keys and getattr(model, "optimizer", None) is None
    assert not model.compiled
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_ramp_smoothing_and_steepest_rule():
    rates = lr_finder.ramp_rates(1e-5, 1e-1, 5)
    np.testing.assert_allclose(rates, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    ramp = lr_finder.ExponentialRamp(1e-5, 1e-1, 5)
    np.testing.assert_allclose([float(ramp(i)) for i in range(6)], [*rates, 1e-1], rtol=1e-5)
    schedules = keras.optimizers.schedules
    assert schedules.deserialize(schedules.serialize(ramp)).get_config() == ramp.get_config()
    # fastai's AvgSmoothLoss by hand: val = beta*val + (1-beta)*loss, / (1 - beta**n).
    losses = [3.0, 2.0, 4.0]
    beta = 0.9
    v1 = 0.1 * 3.0
    v2 = 0.9 * v1 + 0.1 * 2.0
    v3 = 0.9 * v2 + 0.1 * 4.0
    expected = [v1 / (1 - 0.9), v2 / (1 - 0.9**2), v3 / (1 - 0.9**3)]
    np.testing.assert_allclose(lr_finder.smooth_losses(losses, beta), expected)
    # The steepest drop against log(lr) (the last rates skipped, as fastai).
    smoothed = [2.0, 1.99, 1.9, 1.5, 1.4, 1.39, 5.0]
    index = lr_finder.steepest_index(np.logspace(-5, 1, 7), smoothed, skip_start=0, skip_end=1)
    assert index == 2
    with pytest.raises(ValueError, match="max_lr"):
        keras_transfer.find_learning_rate(None, None, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        keras_transfer.find_learning_rate(None, None, steps=2)
    with pytest.raises(ValueError, match="smoothing"):
        keras_transfer.find_learning_rate(None, None, smoothing=1.0)


def test_suggestion_on_real_digits_is_before_divergence_and_sane(digits, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    path = str(tmp_path / "lr.png")
    result = keras_transfer.find_learning_rate(model, digits, steps=100, plot=path, verbose=0)
    # The ramp: exponential from min_lr to max_lr over the steps.
    ratios = result.learning_rates[1:] / result.learning_rates[:-1]
    np.testing.assert_allclose(ratios, (10.0 / 1e-7) ** (1 / 99))
    assert result.learning_rates[0] == 1e-7
    # The recorded losses are the per-step ones: their smoothing is the result's.
    np.testing.assert_allclose(result.smoothed_losses, lr_finder.smooth_losses(result.losses, 0.98))
    assert result.losses[0] == pytest.approx(np.log(10), abs=0.4)  # an untrained 10-class model
    assert result.divergence_step is not None  # Adam at lr ~1 diverges
    assert result.steepest < result.divergence_step
    assert 1e-4 <= result.suggestion <= 1e-1, result.summary()
    assert result.smoothed_losses[result.steepest] < result.smoothed_losses[0]
    assert os.path.getsize(path) > 10_000
    assert "suggested learning rate" in result.summary()


def test_cli_lr_find_on_a_tiny_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "tiny" / label)
        for i in range(8):
            value = 40 if label == "a" else 200
            image = np.clip(rng.normal(value, 30, (28, 28, 1)), 0, 255).astype(np.uint8)
            tf.io.write_file(str(tmp_path / "tiny" / label / f"{i}.png"), tf.io.encode_png(image))
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    argv = [command, "lr-find", "--data", "tiny", "--backbone", "mnist_mlp", "--weights", "none"]
    argv += ["--steps", "20", "--batch-size", "4", "--plot", "lr.png"]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LR finder on the whole model: 20 steps" in result.stdout
    assert "the recipe's rate for this stage: 0.003" in result.stdout
    assert "suggested learning rate: " in result.stdout
    assert (tmp_path / "lr.png").stat().st_size > 10_000
    assert not (tmp_path / "saved_models").exists()


@pytest.mark.parametrize("method", ["prune", "bias_only"])
def test_a_method_measures_as_it_trains_and_leaves_no_trace(method):
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    x = np.random.default_rng(1).random((64, 28, 28, 1)) * 255
    y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    flags = [(v.path, v.trainable, v.constraint) for v in model.variables]
    layers = [layer.trainable for layer in model._flatten_layers()]
    weights = [w.copy() for w in model.get_weights()]
    result = keras_transfer.find_learning_rate(model, (x, y), steps=6, method=method, verbose=0)
    assert len(result.losses) == 6 and np.isfinite(result.losses).all()
    assert [(v.path, v.trainable, v.constraint) for v in model.variables] == flags
    assert [layer.trainable for layer in model._flatten_layers()] == layers
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
