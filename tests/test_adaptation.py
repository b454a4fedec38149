"""Unsupervised domain adaptation: gradient reversal, DANN, CORAL, the MNIST-M-style domain."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.adaptation import CORAL
from keras_transfer.adaptation import DANN
from keras_transfer.adaptation import GradientReversal
from keras_transfer.adaptation import GradientReversalSchedule
from keras_transfer.adaptation import coral_loss
from keras_transfer.adaptation import dann_lambda
from keras_transfer.training import method as method_lib

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def digits(mnist):
    """Labelled source digits 0-2 and unlabelled MNIST-M-style target images of others."""
    x, y = data.subset_classes(mnist.x, mnist.y, range(3))
    target = data.mnist_m_style(x[100:164], seed=0).astype(np.float32)
    return (np.repeat(x[:48], 3, axis=-1), y[:48]), target


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras_transfer.build_classifier("mnist_mlp", 3, weights=None, input_shape=(28, 28, 3))


# Gradient reversal.


@pytest.mark.parametrize("lambda_", [0.0, 0.25, 1.0, 3.0])
def test_the_gradient_through_gradient_reversal_is_minus_lambda_times_the_identitys(lambda_):
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 5)).astype("float32"))
    weights = tf.constant(np.random.default_rng(1).normal(size=(5, 2)).astype("float32"))
    layer = GradientReversal(lambda_)

    def gradient(transform):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(tf.matmul(transform(x), weights)))
        return tape.gradient(loss, x).numpy()

    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())  # forward: the identity
    np.testing.assert_allclose(gradient(layer), -lambda_ * gradient(tf.identity), rtol=1e-6, atol=1e-7)
    layer.set_lambda(0.5)
    np.testing.assert_allclose(gradient(layer), -0.5 * gradient(tf.identity), rtol=1e-6, atol=1e-7)


def test_gradient_reversal_config_and_keras_file_round_trip(tmp_path):
    layer = GradientReversal(0.7, name="grl")
    rebuilt = testing.assert_config_round_trip(layer)
    assert rebuilt.lambda_ == 0.7 and rebuilt.current_lambda == pytest.approx(0.7)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2)(GradientReversal(0.3, name="grl")(inputs))
    model = keras.Model(inputs, outputs)
    model.get_layer("grl").set_lambda(0.9)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    loaded = testing.assert_keras_round_trip(model, x, str(tmp_path))
    assert loaded.get_layer("grl").current_lambda == pytest.approx(0.9)  # the strength is saved
    with pytest.raises(ValueError, match=r"lambda_ must be a number >= 0. Received: lambda_=-1"):
        GradientReversal(-1)


def test_the_lambda_schedule_is_the_papers():
    assert [round(dann_lambda(p), 4) for p in (0.0, 0.05, 0.25, 0.5, 1.0)] == [
        0.0,
        0.2449,
        0.8483,
        0.9866,
        0.9999,
    ]
    assert dann_lambda(0.5, gamma=10, maximum=0.3) == pytest.approx(0.3 * (2 / (1 + np.exp(-5)) - 1))
    layer = GradientReversal()
    schedule = GradientReversalSchedule(layer, gamma=10.0)
    schedule.set_params({"epochs": 2, "steps": 5})
    schedule.on_train_begin()
    seen = []
    for epoch in range(2):
        schedule.on_epoch_begin(epoch)
        for batch in range(5):
            schedule.on_train_batch_begin(batch)
            seen.append(layer.current_lambda)
    np.testing.assert_allclose(seen, [dann_lambda(step / 10) for step in range(10)], rtol=1e-6)
    with pytest.raises(ValueError, match="gamma must be a number > 0"):
        GradientReversalSchedule(layer, gamma=0)


# CORAL.


def test_coral_loss_is_zero_for_identical_batches_and_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 6)).astype("float32")
    b = (rng.normal(size=(20, 6)) * [1, 2, 3, 1, 0.5, 1] + 4).astype("float32")
    assert float(coral_loss(a, a)) == 0.0
    expected = np.sum((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2) / (4 * 6**2)
    assert float(coral_loss(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(coral_loss(a, a + 10.0)) == pytest.approx(0.0, abs=1e-9)  # a shift changes no covariance
    with pytest.raises(ValueError, match="same width"):
        coral_loss(a, b[:, :4])


# The MNIST-M-style domain.


def test_mnist_m_style_is_deterministic_for_a_seed_and_cached(mnist, tmp_path):
    x = mnist.x[:40]
    first, again, other = (data.mnist_m_style(x, seed=s) for s in (3, 3, 4))
    assert first.shape == (40, 28, 28, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.std() > 20 and len(np.unique(first.reshape(-1, 3), axis=0)) > 1000  # real colour
    built = data.load_mnist_m_style(x, mnist.y[:40], seed=3, cache_dir=str(tmp_path))
    files = os.listdir(tmp_path)
    assert len(files) == 1 and "seed3" in files[0]
    cached = data.load_mnist_m_style(x, mnist.y[:40], seed=3, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(cached.x, first.astype(np.float32))
    np.testing.assert_array_equal(built.x, cached.x)
    assert cached.source == "mnist_m_style" and cached.y.tolist() == mnist.y[:40].tolist()
    with pytest.raises(ValueError, match="x must be grayscale digits"):
        data.mnist_m_style(np.zeros((2, 28, 28, 3)))


def test_mnist_m_style_blends_each_digit_with_a_photo_crop():
    from keras_transfer.data import mnist_m

    digit = np.zeros((1, 28, 28), np.float32)
    digit[0, 5:20, 10:14] = 200.0  # binarised to 255
    image = data.mnist_m_style(digit, seed=0)[0].astype(int)
    photos = mnist_m.load_photos()
    rng = np.random.default_rng(0)
    photo = photos[rng.integers(0, len(photos), 1)[0]]
    top, left = rng.integers(0, photo.shape[0] - 27), rng.integers(0, photo.shape[1] - 27)
    crop = photo[top : top + 28, left : left + 28].astype(int)
    expected = np.abs(crop - np.where(digit[0] > 0, 255, 0)[..., None])
    np.testing.assert_array_equal(image, expected)


# DANN and CORAL.


@pytest.mark.parametrize("kind", ["dann", "coral"])
def test_a_short_run_changes_the_features_and_exports_only_the_classifier(kind, digits):
    source, target = digits
    model = _model()
    before = model.get_layer("backbone").get_layer("fc1").kernel.numpy().copy()
    method = DANN(target=target, weight=1.0) if kind == "dann" else CORAL(target=target, weight=100.0)
    history = keras_transfer.train(model, source, epochs=2, batch_size=16, method=method, seed=0, verbose=0)
    assert np.isfinite(history.history["domain_loss"]).all() and min(history.history["domain_loss"]) > 0
    if kind == "dann":
        assert 0.0 <= history.history["domain_accuracy"][-1] <= 1.0
        grl = method.adapter.domain_loss.reversal
        assert 0.0 < grl.current_lambda < 1.0  # the schedule moved it
    after = model.get_layer("backbone").get_layer("fc1").kernel.numpy()
    assert not np.array_equal(before, after)
    final = method.finalize(model)
    assert final is model
    assert [w.path for w in final.weights] == [w.path for w in _model().weights]  # no domain weights
    assert tuple(final.input.shape) == (None, 28, 28, 3) and tuple(final.output.shape) == (None, 3)
    adapter_weights = {w.path for w in method.adapter.weights} - {w.path for w in model.weights}
    assert adapter_weights if kind == "dann" else not adapter_weights


def test_the_domain_loss_joins_the_step_and_coral_moves_the_features_toward_the_target(digits):
    source, target = digits
    from keras_transfer.adaptation import domain

    features = domain.feature_tensor(_model())
    assert features.shape[-1] == 128
    gaps = []
    for weight in (0.0, 3000.0):
        model = _model()
        keras_transfer.train(
            model,
            source,
            epochs=3,
            batch_size=16,
            method=CORAL(target=target, weight=weight),
            seed=0,
            verbose=0,
        )
        extractor = keras.Model(model.inputs, domain.feature_tensor(model))
        gaps.append(float(coral_loss(extractor(source[0][:48]), extractor(target[:48]))))
    assert gaps[1] < gaps[0]


@pytest.mark.parametrize("kind", ["dann", "coral"])
def test_method_contract(kind, digits, tmp_path):
    source, target = digits
    method = DANN(target=target) if kind == "dann" else CORAL(target=target)
    testing.run_method_contract(
        method, _model(), source, str(tmp_path), run_kwargs={"epochs": 1, "batch_size": 16, "verbose": 0}
    )


def test_arguments_are_checked_and_the_config_rebuilds_the_method(digits, tmp_path):
    _, target = digits
    assert {"dann", "coral"} <= {name for name, _ in method_lib.list_methods()}
    method = method_lib.get_method(f"dann:target={tmp_path},weight=0.5,lambda_max=0.3")
    assert method == DANN(target=str(tmp_path), weight=0.5, lambda_max=0.3)
    assert method.get_config() == {"target": str(tmp_path), "weight": 0.5, "lambda_max": 0.3}
    assert CORAL(target=target) == CORAL(target=target.copy()) != CORAL(target=target, weight=1.0)
    with pytest.raises(ValueError, match=r"needs unlabelled target images.*Received: target=None"):
        DANN()
    with pytest.raises(ValueError, match=r"existing image folder.*Received: target='/no/such'"):
        CORAL(target="/no/such")
    with pytest.raises(ValueError, match=r"weight must be >= 0. Received: weight=-1.0"):
        CORAL(target=target, weight=-1)
    with pytest.raises(ValueError, match=r"has no layer 'nope'"):
        keras_transfer.train(
            _model(), digits[0], epochs=1, method=CORAL(target=target, feature_layer="nope"), verbose=0
        )


def test_cli_train_with_dann_on_image_folders(mnist, tmp_path):
    from testing import write_image_folder

    keep = np.isin(mnist.y, [0, 1])
    x, y = mnist.x[keep], mnist.y[keep]
    write_image_folder(str(tmp_path / "digits"), x[:24].astype(np.uint8), y[:24], ["0", "1"])
    target = data.mnist_m_style(x[24:48], seed=0)
    write_image_folder(str(tmp_path / "target"), target, y[24:48], ["0", "1"])
    command = [
        sys.executable,
        "-m",
        "keras_transfer.cli",
        "train",
        "--data",
        str(tmp_path / "digits"),
        "--backbone",
        "mnist_mlp",
        "--weights",
        "none",
        "--method",
        f"dann:target={tmp_path / 'target'},weight=0.5",
        "--epochs",
        "1",
        "--min-steps",
        "2",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert "dann" in config["methods"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    assert trained.get_layer("predictions").units == 2
    assert not [w.path for w in trained.weights if "domain" in w.path]


def test_the_adaptation_demo_runs_in_smoke_mode(tmp_path):
    from keras_transfer import demo_adaptation

    lines = []
    result = demo_adaptation.run_adaptation_demo(str(tmp_path), smoke=True, log=lines.append)
    table = result["table"].splitlines()
    assert table[0].split()[:3] == ["method", "UCI", "digits"]
    assert [line.split()[0] for line in table[2:]] == ["source", "DANN", "CORAL"]
    report = json.loads(open(result["json"]).read())
    for row in ("source only", "DANN", "CORAL"):
        for target in ("UCI digits", "MNIST-M-style"):
            assert 0.0 <= report["rows"][row][target]["accuracy"] <= 1.0
    assert open(result["plot"], "rb").read(4) == b"\x89PNG"
