"""Magnitude pruning (compression/pruning.py): Prune, strip_pruning, sparsity_report,
compressed_size."""

import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.compression import Prune
from keras_transfer.compression import compressed_size
from keras_transfer.compression import sparsity_report
from keras_transfer.compression import strip_pruning
from keras_transfer.compression.pruning import PruningMask
from keras_transfer.compression.pruning import prunable_weights
from keras_transfer.compression.pruning import scheduled_sparsity
from keras_transfer.training import method as method_lib


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


def tiny_model(num_classes=3):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny")


def expected_zeros(size, sparsity):
    return math.floor(sparsity * size + 1e-9)


def count_zeros(arrays):
    return sum(int(np.sum(np.asarray(a) == 0)) for a in arrays)


def test_prune_passes_the_method_contract_and_its_zeros_survive_export(few_digits, tmp_path):
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    model = keras_transfer.build_classifier(source, 3, freeze_backbone=False)  # every kernel trains
    method = Prune(sparsity=0.8)
    final = testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0},
    )
    assert final is model
    report = sparsity_report(final)
    assert [row.name for row in report.rows] == [
        "backbone/conv1",
        "backbone/conv2",
        "backbone/fc1",
        "predictions",
    ]
    for row in report.rows:  # every kernel at the target, exactly
        assert row.zeros == expected_zeros(row.size, 0.8), row
    assert all(w.constraint is None for w in final.weights)  # stripped: plain Keras
    assert "backbone/fc1" in str(report) and "80.00%" in str(report)
    # The shipped files keep every zero: SavedModel variables and TFLite tensors.
    zeros = count_zeros(w.numpy() for w in final.weights)
    assert zeros >= report.zeros
    (version,) = glob.glob(str(tmp_path / "saved" / "*" / "variables"))
    reader = tf.train.load_checkpoint(os.path.join(version, "variables"))
    exported = [
        reader.get_tensor(key)
        for key, dtype in reader.get_variable_to_dtype_map().items()
        if key.startswith("variables/") and dtype.is_floating  # ExportArchive's own list
    ]
    assert sum(a.size for a in exported) == sum(int(np.prod(w.shape)) for w in final.weights)
    assert count_zeros(exported) == zeros
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "model.tflite"))
    interpreter.allocate_tensors()
    tensors = []
    for detail in interpreter.get_tensor_details():
        try:
            tensors.append(interpreter.get_tensor(detail["index"]))
        except ValueError:  # activations: no data before a call
            pass
    kernels = [np.sort(np.abs(w.numpy()).ravel()) for w in (final.get_layer("predictions").kernel,)]
    assert any(
        t.size == kernels[0].size and np.array_equal(np.sort(np.abs(t).ravel()), kernels[0]) for t in tensors
    )
    assert count_zeros(t for t in tensors if t.dtype == np.float32) >= report.zeros


def test_pruned_weights_stay_zero_through_compiled_multi_step_updates_under_xla(few_digits):
    # The constraint alone: Adam moves every weight, the mask's zeros stay exactly zero.
    model = tiny_model()
    kernel = model.get_layer("conv").kernel
    kernel.constraint = PruningMask(kernel)
    mask = (np.random.default_rng(0).random(tuple(kernel.shape)) > 0.5).astype(np.float32)
    kernel.constraint.mask.assign(mask)
    kernel.assign(kernel.numpy() * mask)
    before = kernel.numpy()
    model.compile(
        keras.optimizers.Adam(1e-2),
        "sparse_categorical_crossentropy",
        jit_compile=True,
        steps_per_execution=4,
    )
    model.fit(*few_digits, batch_size=8, epochs=2, verbose=0)
    after = kernel.numpy()
    np.testing.assert_array_equal(after[mask == 0], 0.0)
    assert np.all(after[mask == 1] != before[mask == 1])
    assert id(kernel.constraint.mask) not in {id(w) for w in model.weights}  # not the model's weights

    # The method: with 3 steps per compiled call and XLA, what is pruned after one call is
    # still zero after every later call (the masks only grow), up to the target.
    model = tiny_model()
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: snapshots.append(model.get_layer("conv").kernel.numpy() == 0)
    )
    keras_transfer.train(
        model,
        few_digits,
        epochs=2,
        batch_size=8,
        min_steps=12,
        steps_per_execution=3,
        jit_compile=True,
        callbacks=[record],
        method=Prune(sparsity=0.6, end=0.5, frequency=1),
        verbose=0,
    )
    assert len(snapshots) == 4  # 12 steps in calls of 3
    for earlier, later in zip(snapshots, snapshots[1:]):
        assert np.all(later[earlier]), "a pruned weight came back"
    sizes = [int(s.sum()) for s in snapshots]
    assert sizes[0] == 0 and 0 < sizes[1] < sizes[-1]  # masks rise on the schedule
    for layer in ("conv", "predictions"):
        weights = model.get_layer(layer).kernel
        assert int(np.sum(weights.numpy() == 0)) == expected_zeros(int(np.prod(weights.shape)), 0.6)


def test_the_schedule_follows_zhu_and_gupta_and_a_run_reaches_it(few_digits):
    values = [scheduled_sparsity(t, sparsity=0.8, begin=2, end=12) for t in (0, 2, 4, 7, 12, 30)]
    np.testing.assert_allclose(values, [0, 0, 0.8 * (1 - 0.8**3), 0.8 * (1 - 0.5**3), 0.8, 0.8])
    assert scheduled_sparsity(5, sparsity=0.5, begin=5, end=9, schedule="constant") == 0.5
    assert scheduled_sparsity(4, sparsity=0.5, begin=5, end=9, schedule="constant") == 0.0
    # One step per compiled call: after step t the kernel has the schedule's zeros at t
    # (begin and end as steps; the recording callback runs before the mask update, so
    # it sees the update of the previous step).
    model = tiny_model()
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            int(np.sum(model.get_layer("conv").kernel.numpy() == 0))
        )
    )
    keras_transfer.train(
        model,
        few_digits,
        epochs=1,
        batch_size=8,
        min_steps=10,
        steps_per_execution=1,
        callbacks=[record],
        method=Prune(sparsity=0.8, begin=2, end=8, frequency=2),
        verbose=0,
    )
    size = int(np.prod(model.get_layer("conv").kernel.shape))
    updates = {2: 0.0, 4: scheduled_sparsity(4, sparsity=0.8, begin=2, end=8), 6: None, 8: 0.8}
    updates[6] = scheduled_sparsity(6, sparsity=0.8, begin=2, end=8)
    expected, current = [], 0
    for step in range(1, 11):
        expected.append(current)  # seen at step `step`: the masks of the updates before it
        if step in updates:
            current = expected_zeros(size, updates[step])
    assert seen == expected


def test_prune_composes_with_fine_tune_stages_and_never_touches_frozen_kernels(few_digits):
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    model = keras_transfer.build_classifier(source, 3)
    kernels = {name: variable.numpy() for name, _, variable in prunable_weights(model)}
    # Stage 1: the head on the frozen backbone (the feature cache trains it); stage 2:
    # the top half of the backbone. prepare runs in each stage.
    keras_transfer.fine_tune(
        model,
        few_digits,
        recipe="small",
        head_epochs=1,
        epochs=1,
        unfreeze_fraction=0.5,
        min_steps=6,
        augment=False,
        method=Prune(sparsity=0.5),
        verbose=0,
    )
    trained = {name for name, _, variable in prunable_weights(model) if variable.trainable}
    assert "backbone/conv1" not in trained and {"backbone/fc1", "predictions"} <= trained
    constraints = [w.constraint for w in model.weights if isinstance(w.constraint, PruningMask)]
    assert len(constraints) == len(trained) and not any(isinstance(c.inner, PruningMask) for c in constraints)
    report = {row.name: row for row in sparsity_report(model).rows}
    for name, _, variable in prunable_weights(model):
        if name in trained:
            assert report[name].zeros == expected_zeros(report[name].size, 0.5), report[name]
        else:  # frozen in both stages: never pruned, bit-identical
            np.testing.assert_array_equal(variable.numpy(), kernels[name])
            assert report[name].zeros == 0
    strip_pruning(model)
    assert all(w.constraint is None for w in model.weights)
    assert sparsity_report(model).zeros == sum(report[n].zeros for n in report)


def test_prune_settings_are_checked_and_round_trip(tmp_path):
    assert method_lib.get_method("prune:sparsity=0.9,end=200,layers=predictions") == Prune(
        sparsity=0.9, end=200, layers=["predictions"]
    )
    assert Prune().get_config() == {}
    assert Prune(begin=10, end=100, frequency=5, schedule="constant").get_config() == {
        "schedule": "constant",
        "begin": 10,
        "end": 100,
        "frequency": 5,
    }
    assert "prune" in dict(method_lib.list_methods())
    for kwargs, message in (
        ({"sparsity": 1.0}, r"sparsity must be a float in \(0, 1\). Received: sparsity=1.0"),
        ({"schedule": "cubic"}, "schedule must be one of"),
        ({"begin": -1}, "begin must be a step"),
        ({"end": 0.2, "begin": 0.5}, "end must come after begin"),
        ({"frequency": 0}, "frequency must be a positive integer"),
        ({"layers": [3]}, "layers must be None, a layer name or a list of names"),
    ):
        with pytest.raises(ValueError, match=message):
            Prune(**kwargs)
    model = tiny_model()
    with pytest.raises(ValueError, match="has no layer named 'nope'"):
        Prune(layers="nope").prepare(model)
    with pytest.raises(ValueError, match="Layer 'flatten' .* has no kernel to prune"):
        Prune(layers=["flatten"]).prepare(model)
    Prune(layers="predictions").prepare(model)
    assert isinstance(model.get_layer("predictions").kernel.constraint, PruningMask)
    assert model.get_layer("conv").kernel.constraint is None
    with pytest.raises(ValueError, match="compressed_size takes a file or a folder"):
        compressed_size(str(tmp_path / "missing"))


def test_compressed_size_of_a_pruned_export_is_smaller(tmp_path):
    model = tiny_model()
    dense_path = keras_transfer.export_saved_model(
        model, str(tmp_path / "dense"), class_names=["a", "b", "c"]
    )
    for layer in ("conv", "predictions"):  # prune 90% by hand: the sizes, not training
        kernel = model.get_layer(layer).kernel
        values = kernel.numpy()
        values[np.abs(values) < np.quantile(np.abs(values), 0.9)] = 0
        kernel.assign(values)
    sparse_path = keras_transfer.export_saved_model(
        model, str(tmp_path / "sparse"), class_names=["a", "b", "c"]
    )
    dense, sparse = compressed_size(dense_path), compressed_size(sparse_path)
    assert sparse < 0.5 * dense
    raw = sum(os.path.getsize(p) for p in glob.glob(os.path.join(sparse_path, "variables", "*")))
    assert sparse < raw
    assert compressed_size(os.path.join(sparse_path, "saved_model.pb")) > 0


def test_keras_transfer_train_method_prune_on_an_image_folder(mnist, tmp_path, capsys):
    import json
    import subprocess
    import sys

    from keras_transfer import cli

    assert cli.main(["methods"]) == 0
    assert "prune" in [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    keep = np.isin(mnist.y, [0, 1])
    testing.write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1"]
    )
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    source.save(str(tmp_path / "source.keras"))
    command = [
        sys.executable,
        "-m",
        "keras_transfer.cli",
        "train",
        "--data",
        str(tmp_path / "digits"),
        "--backbone",
        str(tmp_path / "source.keras"),
        "--method",
        "prune:sparsity=0.8",
        "--epochs",
        "1",
        "--min-steps",
        "4",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["fine_tune", "prune"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    for row in sparsity_report(trained).rows:  # the small-model recipe trains (and prunes) every layer
        assert row.zeros == expected_zeros(row.size, 0.8), row
