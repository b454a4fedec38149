"""Bad data and bad training arguments: the README's table, part D (one test per row)."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import data as data_lib
from keras_transfer.errors import TrainingDiverged

N = 32


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = (rng.random((N, 28, 28, 1)) * 255).astype(np.float32)
    y = (np.arange(N) % 3).astype(np.int64)
    return x, y


@pytest.fixture()
def model():
    return keras_transfer.build_classifier("mnist_mlp", 3, weights=None)


def _weights_equal(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def _dataset(x, y, batch=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.fault("D01")
def test_train_dataset_label_out_of_range(arrays, model):
    x, y = arrays
    bad = y.copy()
    bad[5] = 7
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\); found \[7\] in train_data \(1 of 32"):
        keras_transfer.train(model, _dataset(x, bad), epochs=1, verbose=0)
    assert _weights_equal(before, model.get_weights())


@pytest.mark.fault("D02")
def test_validation_dataset_label_out_of_range(arrays, model):
    x, y = arrays
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\); found \[-1, 3\] in validation_data"):
        keras_transfer.train(model, (x, y), _dataset(x[:4], np.array([0, -1, 3, 1])), epochs=1, verbose=0)


@pytest.mark.fault("D03")
def test_infinite_dataset_label_out_of_range_fails_at_first_bad_batch(arrays, model):
    x, y = arrays
    bad = y.copy()
    bad[-1] = 9
    ds = _dataset(x, bad).repeat()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"train_data has labels >= num_classes=3"):
        keras_transfer.train(model, ds, epochs=1, min_steps=8, verbose=0, steps_per_execution=1)


@pytest.mark.fault("D04")
def test_evaluation_dataset_label_out_of_range(arrays, model):
    x, y = arrays
    bad = y.copy()
    bad[0] = 4
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 3\); found \[4\] in data "):
        keras_transfer.evaluate_classifier(model, _dataset(x, bad))


@pytest.mark.fault("D05")
def test_one_hot_labels(arrays, model):
    x, y = arrays
    with pytest.raises(ValueError, match=r"look one-hot .* pass np.argmax\(y, axis=-1\)"):
        keras_transfer.train(model, (x, np.eye(3)[y]), epochs=1, verbose=0)


@pytest.mark.fault("D06")
def test_fractional_float_labels(arrays, model):
    x, y = arrays
    labels = y.astype(np.float32)
    labels[3] = 0.5
    with pytest.raises(ValueError, match=r"train_data has labels that are not integer class ids: \[0.5\]"):
        keras_transfer.train(model, _dataset(x, labels), epochs=1, verbose=0)


@pytest.mark.fault("D07")
def test_nan_in_array_images(arrays, model):
    x, y = arrays
    x = x.copy()
    x[1, 0, 0, 0] = x[2, 3, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"train_data images must be finite: it holds 2 NaN and 0 infinite"):
        keras_transfer.train(model, (x, y), epochs=1, verbose=0)


@pytest.mark.fault("D08")
def test_inf_in_evaluation_images(arrays, model):
    x, y = arrays
    x = x.copy()
    x[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"data images must be finite: it holds 0 NaN and 1 infinite"):
        keras_transfer.evaluate_classifier(model, (x, y))
    with pytest.raises(ValueError, match=r"x must be finite"):
        data_lib.make_dataset(x, y)


class _BreakAtEpoch(keras.callbacks.Callback):
    """Poisons the head's kernel with NaN when epoch `at` (0-based) begins."""

    def __init__(self, at):
        super().__init__()
        self.at, self.saved = at, {}

    def on_epoch_end(self, epoch, logs=None):
        self.saved[epoch] = self.model.get_weights()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            kernel = self.model.get_layer("predictions").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


@pytest.mark.fault("D09")
def test_loss_becomes_nan_mid_run(arrays, model, tmp_path):
    x, y = arrays
    breaker = _BreakAtEpoch(at=1)
    with pytest.raises(
        TrainingDiverged, match=r"loss became nan at epoch 2, step 0.*Lower the learning rate"
    ):
        keras_transfer.train(
            model,
            (x, y),
            epochs=4,
            batch_size=8,
            workdir=str(tmp_path),
            callbacks=[breaker],
            verbose=0,
            steps_per_execution=1,
        )
    good = breaker.saved[0]
    assert _weights_equal(good, model.get_weights())
    assert all(np.isfinite(w).all() for w in model.get_weights())
    best = keras.saving.load_model(os.path.join(tmp_path, "best.keras"))
    assert _weights_equal(good, best.get_weights())


@pytest.mark.fault("D10")
def test_loss_becomes_nan_on_the_feature_cache_path(arrays):
    x, y = arrays
    model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None, freeze_backbone=True)
    breaker = _BreakAtEpoch(at=1)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 1 \(the loss is logged every 2 steps"):
        keras_transfer.train(
            model, (x, y), epochs=3, batch_size=8, callbacks=[breaker], verbose=0, steps_per_execution=2
        )
    assert _weights_equal(breaker.saved[0], model.get_weights())


@pytest.mark.fault("D11")
def test_one_class_softmax():
    with pytest.raises(ValueError, match=r"num_classes=1 with a softmax head .* use num_classes=2"):
        keras_transfer.build_classifier("mnist_mlp", 1, weights=None)


@pytest.mark.fault("D12")
def test_duplicate_class_names(arrays, model):
    x, y = arrays
    with pytest.raises(ValueError, match=r"class_names must be unique; 'cat' appears 2 times"):
        keras_transfer.evaluate_classifier(model, (x, y), class_names=["cat", "dog", "cat"])


@pytest.mark.fault("D13")
def test_prescaled_array_pixels_warn(arrays, model):
    x, y = arrays
    match = r"train_data images: the pixels look scaled to \[0, 1\].*pass 0-255 pixels"
    with pytest.warns(data_lib.PrescaledPixelsWarning, match=match):
        keras_transfer.train(model, (x / 255.0, y), epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", data_lib.PrescaledPixelsWarning)
        keras_transfer.evaluate_classifier(model, (x, y))  # 0-255: no warning


@pytest.mark.fault("D14")
def test_prescaled_dataset_pixels_warn_on_first_batch(arrays, model):
    x, y = arrays
    match = r"data images: the pixels look scaled to \[0, 1\]"
    with pytest.warns(data_lib.PrescaledPixelsWarning, match=match):
        keras_transfer.evaluate_classifier(model, _dataset(x / 255.0, y))


@pytest.mark.fault("D15")
def test_zero_epochs(arrays, model):
    with pytest.raises(ValueError, match=r"epochs must be a positive integer. Received: epochs=0"):
        keras_transfer.train(model, arrays, epochs=0, verbose=0)
    with pytest.raises(ValueError, match=r"epochs must be greater than initial_epoch"):
        keras_transfer.train(model, arrays, epochs=2, initial_epoch=2, verbose=0)


@pytest.mark.fault("D16")
def test_negative_learning_rate(arrays, model):
    with pytest.raises(
        ValueError, match=r"learning_rate must be a finite number > 0. Received: learning_rate=-0.001"
    ):
        keras_transfer.train(model, arrays, learning_rate=-1e-3, verbose=0)
    with pytest.raises(ValueError, match=r"head_learning_rate must be a finite number > 0"):
        keras_transfer.fine_tune(model, arrays, head_learning_rate=-1.0, verbose=0)


@pytest.mark.fault("D17")
def test_negative_patience(arrays, model):
    with pytest.raises(ValueError, match=r"patience must be an integer >= 0. Received: patience=-1"):
        keras_transfer.train(model, arrays, patience=-1, verbose=0)
    with pytest.raises(ValueError, match=r"patience must be an integer >= 0. Received: patience=-2"):
        keras_transfer.training.FineTune(patience=-2)


@pytest.mark.fault("D18")
def test_unfreeze_fraction_above_one(arrays):
    model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None, freeze_backbone=True)
    before = model.get_weights()
    with pytest.raises(
        ValueError, match=r"unfreeze_fraction must be a float in \[0, 1\]. Received: unfreeze_fraction=1.5"
    ):
        keras_transfer.fine_tune(model, arrays, head_epochs=1, epochs=1, unfreeze_fraction=1.5, verbose=0)
    assert _weights_equal(before, model.get_weights())  # before stage 1, not after it


@pytest.mark.fault("D19")
def test_batch_size_zero(arrays, model):
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer. Received: batch_size=0"):
        keras_transfer.train(model, arrays, batch_size=0, verbose=0)


@pytest.mark.fault("D20")
def test_negative_min_steps(arrays, model):
    with pytest.raises(ValueError, match=r"min_steps must be an integer >= 0. Received: min_steps=-5"):
        keras_transfer.train(model, arrays, min_steps=-5, verbose=0)


@pytest.mark.fault("D21")
def test_label_smoothing_one(arrays, model):
    with pytest.raises(
        ValueError, match=r"label_smoothing must be a float in \[0, 1\). Received: label_smoothing=1.0"
    ):
        keras_transfer.train(model, arrays, label_smoothing=1.0, verbose=0)


@pytest.mark.fault("D22")
def test_recipe_with_a_negative_rate():
    with pytest.raises(
        ValueError, match=r"learning_rate must be a finite number > 0. Received: learning_rate=-0.01"
    ):
        keras_transfer.Recipe(
            head_epochs=1, epochs=1, head_learning_rate=1e-3, learning_rate=-1e-2, unfreeze_fraction=0.5
        )
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 0. Received: epochs=-3"):
        keras_transfer.training.RECIPES["small"].replace(epochs=-3)
