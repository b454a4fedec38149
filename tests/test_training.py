import os

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import data, training


@pytest.fixture(scope="module")
def digits_split(mnist):
    x, y = mnist.x, mnist.y
    return (x[:1500], y[:1500]), (x[4000:], y[4000:])


def test_xla_default_follows_the_device():
    import tensorflow as tf

    assert keras_transfer.default_jit_compile() == bool(tf.config.list_physical_devices("GPU"))
    model = keras_transfer.compile_classifier(keras_transfer.build_classifier("mnist_mlp", 10, weights=None))
    assert model.jit_compile == keras_transfer.default_jit_compile()
    forced = keras_transfer.compile_classifier(
        keras_transfer.build_classifier("mnist_mlp", 10, weights=None), jit_compile=True)
    assert forced.jit_compile is True


def test_logits_head_uses_a_from_logits_loss():
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None, activation=None)
    keras_transfer.compile_classifier(model)
    assert model.loss.get_config()["from_logits"] is True


def test_training_beats_chance_by_far_on_real_digits(digits_split, tmp_path):
    train, test = digits_split
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    before = keras_transfer.evaluate_classifier(model, test).accuracy
    history = keras_transfer.train(model, train, test, epochs=3, verbose=0,
                                   workdir=str(tmp_path), patience=2)
    after = keras_transfer.evaluate_classifier(model, test).accuracy
    assert before < 0.3 and after > 0.85
    assert history.history["val_accuracy"][-1] > 0.85
    best = keras.saving.load_model(str(tmp_path / "best.keras"))
    assert best.output.shape == (None, 10)
    assert not os.path.exists(tmp_path / "backup")  # removed once training finishes


class Crash(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("simulated crash")


def test_interrupted_training_resumes_from_the_backup(digits_split, tmp_path):
    train, _ = digits_split
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        keras_transfer.train(model, train, epochs=4, verbose=0, workdir=str(tmp_path), callbacks=[Crash(1)])
    assert os.path.exists(tmp_path / "backup")
    weights_at_crash = model.get_layer("predictions").get_weights()[0].copy()
    fresh = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    history = keras_transfer.train(fresh, train, epochs=4, verbose=0, workdir=str(tmp_path))
    # Epochs 0 and 1 were done before the crash: only 2 and 3 run again.
    assert history.epoch == [2, 3]
    assert not np.allclose(fresh.get_layer("predictions").get_weights()[0], weights_at_crash)


def test_two_stage_fine_tuning(digits_split, tmp_path):
    train, test = digits_split
    source = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    keras_transfer.train(source, train, epochs=1, verbose=0)
    model = keras_transfer.build_classifier(source, 10)
    conv1 = keras_transfer.weighted_layers(model)["conv1"]
    start = conv1.get_weights()[0].copy()

    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = (conv1.get_weights()[0].copy(), self.model.optimizer.learning_rate.numpy())

    result = keras_transfer.fine_tune(
        model, train, test, head_epochs=1, epochs=1, learning_rate=1e-4, head_learning_rate=1e-3,
        cosine=False, min_steps=0, workdir=str(tmp_path), verbose=0, callbacks=[Probe()])
    np.testing.assert_array_equal(seen[0][0], start)  # stage 1: backbone frozen
    assert not np.allclose(seen[1][0], start)  # stage 2: backbone trains
    assert np.isclose(seen[0][1], 1e-3) and np.isclose(seen[1][1], 1e-4)
    assert len(result.history["loss"]) == 2 and result.head_epochs == 1
    assert os.path.exists(tmp_path / "head.weights.h5")
    # Run again (as after a crash in stage 2): stage 1 is loaded, not trained again.
    again = keras_transfer.fine_tune(
        model, train, test, head_epochs=1, epochs=1, learning_rate=1e-4, head_learning_rate=1e-3,
        cosine=False, min_steps=0, workdir=str(tmp_path), verbose=0)
    assert len(again.history["loss"]) == 1
    with pytest.raises(ValueError, match="no layer named 'body'"):
        keras_transfer.fine_tune(model, train, backbone="body")


def test_bad_training_input_gets_clear_errors(mnist):
    model = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 5\)"):
        keras_transfer.train(model, (mnist.x[:20], mnist.y[:20]), epochs=1, verbose=0)
    rgb = data.make_dataset(mnist.x[:20], mnist.y[:20] % 5, image_size=32, channels=3)
    with pytest.raises(ValueError, match=r"takes images of shape \(28, 28, 1\).*\(32, 32, 3\)"):
        keras_transfer.train(model, rgb, epochs=1, verbose=0)
    empty = data.make_dataset(mnist.x[:20], mnist.y[:20] % 5).take(0)
    with pytest.raises(ValueError, match="empty"):
        keras_transfer.train(model, empty, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        keras_transfer.train(model, mnist.x[:20], epochs=1, verbose=0)


def test_verbose_follows_the_terminal(monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert training.default_verbose() == 2


def test_fine_tune_defaults_transfer_a_users_own_source_model(mnist):
    """Issue 9: fine_tune on a user's source scored below scratch (0.51 vs 0.86 at 5
    labels per class): the backbone stayed frozen and stage 2 ran at 1e-5."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="c1")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
    source = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    x_src, y_src = data.subset_classes(mnist.x, mnist.y, range(5))
    source.compile("adam", "sparse_categorical_crossentropy")
    source.fit(x_src[:2000], y_src[:2000], epochs=2, batch_size=32, verbose=0)

    x_tgt, y_tgt = data.subset_classes(mnist.x, mnist.y, range(5, 10))
    x_few, y_few = data.few_shot(x_tgt[:1500], y_tgt[:1500], k=5, seed=0)
    model = keras_transfer.build_classifier(source, 5)
    assert training.backbone_kind(model) == "small"
    before = model.get_layer("backbone").get_layer("c1").get_weights()[0].copy()
    result = keras_transfer.fine_tune(model, (x_few, y_few), verbose=0)
    assert result.recipe == training.RECIPES["small"]
    assert not np.allclose(model.get_layer("backbone").get_layer("c1").get_weights()[0], before)
    accuracy = keras_transfer.evaluate_classifier(model, (x_tgt[1500:], y_tgt[1500:])).accuracy
    assert accuracy > 0.75, accuracy
