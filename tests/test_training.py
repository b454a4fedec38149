import os

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import data
from keras_transfer import training


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
        keras_transfer.build_classifier("mnist_mlp", 10, weights=None), jit_compile=True
    )
    assert forced.jit_compile is True


def test_logits_head_uses_a_from_logits_loss():
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None, activation=None)
    keras_transfer.compile_classifier(model)
    assert model.loss.get_config()["from_logits"] is True


def test_training_beats_chance_by_far_on_real_digits(digits_split, tmp_path):
    train, test = digits_split
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    before = keras_transfer.evaluate_classifier(model, test).accuracy
    history = keras_transfer.train(model, train, test, epochs=3, verbose=0, workdir=str(tmp_path), patience=2)
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
        model,
        train,
        test,
        head_epochs=1,
        epochs=1,
        learning_rate=1e-4,
        head_learning_rate=1e-3,
        cosine=False,
        min_steps=0,
        workdir=str(tmp_path),
        verbose=0,
        callbacks=[Probe()],
    )
    np.testing.assert_array_equal(seen[0][0], start)  # stage 1: backbone frozen
    assert not np.allclose(seen[1][0], start)  # stage 2: backbone trains
    assert np.isclose(seen[0][1], 1e-3) and np.isclose(seen[1][1], 1e-4)
    assert len(result.history["loss"]) == 2 and result.head_epochs == 1
    assert os.path.exists(tmp_path / "head.weights.h5")
    # Run again (as after a crash in stage 2): stage 1 is loaded, not trained again.
    again = keras_transfer.fine_tune(
        model,
        train,
        test,
        head_epochs=1,
        epochs=1,
        learning_rate=1e-4,
        head_learning_rate=1e-3,
        cosine=False,
        min_steps=0,
        workdir=str(tmp_path),
        verbose=0,
    )
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


def _conv_bn_model(num_classes=3, momentum=0.999, frozen_bn=False):
    """A tiny conv + BatchNorm classifier with the BatchNorm inside a nested model."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn")(x)
    body = keras.Model(inputs, keras.layers.ReLU()(x), name="backbone")
    outer = keras.Input((28, 28, 1))
    x = body(outer)
    frozen = keras.layers.BatchNormalization(name="frozen_bn")
    x = frozen(x)
    frozen.trainable = not frozen_bn
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(outer, keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x))


def test_recalibrate_batchnorm_gives_the_data_statistics(mnist):
    keras.utils.set_random_seed(0)
    model = _conv_bn_model(frozen_bn=True)
    x = mnist.x[:200].astype("float32") / 255.0  # small values: float32 moments to 1e-4
    frozen = model.get_layer("frozen_bn")
    before = [w.numpy() for w in frozen.weights]
    result = training.recalibrate_batchnorm(model, (x, mnist.y[:200]), batch_size=64)
    assert (result.layers, result.images) == (1, 200)
    assert str(result) == "Re-estimated BatchNorm statistics of 1 layers on 200 training images"
    bn = model.get_layer("backbone").get_layer("bn")
    features = model.get_layer("backbone").get_layer("conv")(x).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean((0, 1, 2)), atol=1e-4, rtol=1e-5)
    batches = [features[i : i + 64] for i in range(0, 200, 64)]  # exact average of batch variances
    variance = np.average([b.var((0, 1, 2)) for b in batches], axis=0, weights=[len(b) for b in batches])
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, atol=1e-4, rtol=1e-5)
    for weight, value in zip(frozen.weights, before):  # a frozen BatchNorm is left alone
        np.testing.assert_array_equal(weight.numpy(), value)
    assert bn.momentum == 0.999 and "call" not in vars(bn) and "momentum" in vars(bn)
    # One batch of everything: inference mode now computes what training mode computes.
    training.recalibrate_batchnorm(model, x, batch_size=200)
    body = model.get_layer("backbone")
    np.testing.assert_allclose(body(x, training=False).numpy(), body(x, training=True).numpy(), atol=1e-4)


def test_train_recalibrates_a_short_run_from_random_weights_and_warns_otherwise(mnist, capsys):
    """BatchNorm with momentum 0.999 trained for 50 steps: in inference mode its
    statistics are still near (0, 1), so validation sits at chance; `train` re-estimates
    them ("auto": a short run), and warns when told not to."""
    keep = np.isin(mnist.y, [0, 1, 2])
    x, y = mnist.x[keep][:600], mnist.y[keep][:600]
    train_data, validation = (x[:480], y[:480]), (x[480:], y[480:])
    results = {}
    for recalibrate in (False, "auto"):
        keras.utils.set_random_seed(0)
        model = _conv_bn_model()
        history = training.train(
            model,
            train_data,
            validation,
            epochs=5,
            learning_rate=3e-3,
            batch_size=48,
            verbose=2,
            recalibrate_batchnorm=recalibrate,
        )
        accuracy = float(np.mean(model.predict(validation[0], verbose=0).argmax(-1) == validation[1]))
        results[recalibrate] = (history.history, accuracy, capsys.readouterr().out)
    history, accuracy, out = results[False]
    assert history["accuracy"][-1] > 0.55 and abs(accuracy - 1 / 3) < 0.1, (history, accuracy)
    assert "Warning: validation accuracy has stayed at chance level" in out
    assert "Re-estimated" not in out
    history, accuracy, out = results["auto"]
    assert "Re-estimated BatchNorm statistics of 2 layers on 480 training images" in out
    assert accuracy > 0.6 and history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)
    assert "chance level" not in out


def test_chance_level_warning_needs_two_epochs_and_learning():
    lines = []
    callback = training.ChanceLevelWarning(4, log=lines.append)
    for logs in (
        {"accuracy": 0.9, "val_accuracy": 0.25},
        {"accuracy": 0.6, "val_accuracy": 0.5},
        {"accuracy": 0.3, "val_accuracy": 0.25},
        {"accuracy": 0.8, "val_accuracy": 0.26},
    ):
        callback.on_epoch_end(0, logs)
    assert lines == []  # never two chance epochs in a row with training above chance
    callback.on_epoch_end(0, {"accuracy": 0.85, "val_accuracy": 0.24})
    assert len(lines) == 1 and "1/4 = 0.250" in lines[0] and "0.850" in lines[0]
    callback.on_epoch_end(0, {"accuracy": 0.9, "val_accuracy": 0.25})
    assert len(lines) == 1  # once per run


def test_fine_tune_with_no_second_stage_trains_the_head_only(mnist):
    x, y = data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)
    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    backbone_before = [w.copy() for w in model.get_layer("backbone").get_weights()]
    head_before = model.get_layer("predictions").get_weights()[0].copy()
    result = keras_transfer.fine_tune(
        model, (x, y), recipe="small", head_epochs=2, epochs=0, min_steps=6, verbose=0
    )
    assert len(result.history["loss"]) == 2
    for before, after in zip(backbone_before, model.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(head_before, model.get_layer("predictions").get_weights()[0])
    assert not model.get_layer("backbone").trainable  # it stays frozen: feature extraction
    with pytest.raises(ValueError, match="both 0"):
        keras_transfer.fine_tune(model, (x, y), head_epochs=0, epochs=0, verbose=0)
    with pytest.raises(ValueError, match="epochs must be an integer"):
        keras_transfer.fine_tune(model, (x, y), epochs=-1, verbose=0)


def test_a_step_budget_runs_exactly_its_steps_when_calls_do_not_divide_the_epoch(mnist):
    # The tf.data path (augmented): 5 images make 1 step a pass; 3 epochs x ceil(40 / 3)
    # = 14 steps. Keras's calls of 4 steps would run 16 an epoch on the repeated data.
    x, y = mnist.x[:5], mnist.y[:5]
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    with pytest.warns(UserWarning, match=r"steps_per_execution=4 does not divide the 14 steps"):
        keras_transfer.train(
            model, (x, y), epochs=3, min_steps=40, steps_per_execution=4, augment=True, verbose=0
        )
    assert int(model.optimizer.iterations) == 3 * 14 and model.steps_per_execution == 2


def test_a_finite_pipeline_is_read_through_one_iterator_per_run(mnist, monkeypatch):
    import tensorflow as tf

    made = []
    iterate = tf.data.Dataset.__iter__

    def counted(dataset):
        made.append(dataset)
        return iterate(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", counted)
    x, y = mnist.x[:400], mnist.y[:400]
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    history = keras_transfer.train(
        model,
        (x[:320], y[:320]),
        (x[320:], y[320:]),
        epochs=3,
        augment=True,
        steps_per_execution=2,
        verbose=0,
    )
    # 320 images: 10 steps an epoch; 80 validation images: 3 batches, not divisible by 2.
    assert int(model.optimizer.iterations) == 30 and len(history.history["val_loss"]) == 3
    # One training iterator for the run (Keras makes two an epoch on a finite dataset:
    # 6 here), and the validation's own (2 an epoch when its calls do not divide it).
    assert len(made) == 1 + 2 * 3, len(made)
    made.clear()
    history = keras_transfer.train(
        model,
        (x[:320], y[:320]),
        (x[320:384], y[320:384]),
        epochs=3,
        augment=True,
        steps_per_execution=2,
        verbose=0,
    )
    assert len(made) == 1 + 3  # 64 validation images: 2 batches, repeated, one iterator a validation
    accuracy = float(np.mean(model.predict(x[320:384], verbose=0).argmax(-1) == y[320:384]))
    assert history.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)


def test_a_step_budget_on_fewer_images_than_a_batch_trains_on_full_batches(mnist):
    x, y = mnist.x[:5], mnist.y[:5]
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    dataset = training.as_dataset((x, y), model, batch_size=8, shuffle=True, seed=0, repeat=True)
    assert tuple(dataset.element_spec[0].shape) == (8, 28, 28, 1)
    images, _ = next(iter(dataset))
    assert images.shape[0] == 8

    seen = []

    class BatchSizes(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)

    history = keras_transfer.train(
        model,
        (x, y),
        epochs=2,
        batch_size=8,
        min_steps=10,
        steps_per_execution=1,
        callbacks=[BatchSizes()],
        verbose=0,
    )
    assert len(history.history["loss"]) == 2 and len(seen) == 10  # 5 steps per epoch


def test_nothing_is_printed_at_verbose_0(mnist, tmp_path, capsys):
    x, y = data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=6, seed=0)
    model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None, freeze_backbone=True)
    keras_transfer.train(model, (x, y), epochs=2, min_steps=4, verbose=0)  # feature cache + step budget
    for _ in range(2):  # the second run finds stage 1 done and resumes
        keras_transfer.fine_tune(
            model,
            (x, y),
            recipe="pretrained",
            head_epochs=1,
            epochs=1,
            min_steps=2,
            workdir=str(tmp_path),
            verbose=0,
        )
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose must be"):
        keras_transfer.train(model, (x, y), epochs=1, verbose="loud")
