"""Forgetting control by regularisation toward the source: `L2SP` (method `l2_sp`), `EWC`
(method `ewc`, `fisher_information`), the retention measure and `demo forgetting`."""

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
from keras_transfer.forgetting import EWC
from keras_transfer.forgetting import L2SP
from keras_transfer.forgetting import ewc as ewc_lib
from keras_transfer.forgetting import fisher_information
from keras_transfer.forgetting import measure_retention
from keras_transfer.forgetting import source_anchors
from keras_transfer.forgetting import source_task_model
from keras_transfer.training import method as method_lib

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


@pytest.fixture(scope="module")
def source_files(tmp_path_factory, few_digits):
    """A 3-class MLP source, briefly trained, in memory and as a `.keras` file."""
    keras.utils.set_random_seed(0)
    source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    keras_transfer.train(source, few_digits, epochs=1, min_steps=4, batch_size=8, verbose=0)
    path = str(tmp_path_factory.mktemp("source") / "source.keras")
    source.save(path)
    return source, path


def _target(source, classes=2, seed=1):
    keras.utils.set_random_seed(seed)
    model = keras_transfer.build_classifier("mnist_mlp", classes, weights=None)
    keras_transfer.transfer_weights(source, model, exclude="predictions")
    return model


def _perturb(model, seed=2):
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])


def test_the_l2_sp_penalty_is_zero_at_the_source_and_the_hand_computed_value_away(source_files):
    source, _ = source_files
    model = _target(source)
    anchors = source_anchors(model, source)
    assert [a.key for a in anchors.anchored] == ["fc1/0", "fc1/1"]
    assert [w.path for w in anchors.new] == ["predictions/kernel", "predictions/bias"]
    assert L2SP(source, alpha=0.7, beta=0.0).penalty_value(model) == 0.0
    head = model.get_layer("predictions").get_weights()
    decay_only = L2SP(source, alpha=0.7, beta=0.3).penalty_value(model)
    np.testing.assert_allclose(
        decay_only, 0.15 * sum(np.sum(w.astype(np.float64) ** 2) for w in head), rtol=1e-5
    )

    _perturb(model)
    fc1 = model.get_layer("backbone").get_layer("fc1").get_weights()
    source_fc1 = source.get_layer("backbone").get_layer("fc1").get_weights()
    head = model.get_layer("predictions").get_weights()
    pull = sum(np.sum((w.astype(np.float64) - s) ** 2) for w, s in zip(fc1, source_fc1))
    decay = sum(np.sum(w.astype(np.float64) ** 2) for w in head)
    assert pull > 0
    np.testing.assert_allclose(L2SP(source, alpha=0.7, beta=0.0).penalty_value(model), 0.35 * pull, rtol=1e-5)
    np.testing.assert_allclose(
        L2SP(source, alpha=0.7, beta=0.3).penalty_value(model), 0.35 * pull + 0.15 * decay, rtol=1e-5
    )
    # Without the default exclude, a head of the source's size is anchored too.
    same_size = _target(source, classes=3)
    assert len(source_anchors(same_size, source, exclude=None).anchored) == 4
    # A frozen layer is not anchored (its weights do not train).
    model.get_layer("backbone").trainable = False
    assert source_anchors(model, source).anchored == []
    with pytest.raises(ValueError, match="nothing to anchor"):
        L2SP(source).penalties(model)


def test_the_l2_sp_checks_its_arguments(source_files):
    source, path = source_files
    with pytest.raises(ValueError, match="needs the source model"):
        L2SP()
    with pytest.raises(ValueError, match="alpha must be a number >= 0. Received: alpha=-1"):
        L2SP(source, alpha=-1)
    with pytest.raises(ValueError, match="existing .keras file"):
        L2SP("missing.keras")
    assert method_lib.get_method(f"l2_sp:source={path},alpha=2") == L2SP(path, alpha=2.0)


def test_the_ewc_penalty_is_zero_at_the_anchor_and_weighted_by_the_fisher_values(source_files, tmp_path):
    source, _ = source_files
    rng = np.random.default_rng(0)
    layers = keras_transfer.weighted_layers(source)
    fisher = {
        f"{name}/{i}": rng.uniform(0, 2, w.shape).astype(np.float32)
        for name, layer in layers.items()
        for i, w in enumerate(layer.weights)
    }
    path = str(tmp_path / "given.npz")
    ewc_lib.save_fisher(path, fisher, ewc_lib.fingerprint(source))
    method = EWC(source, strength=3.0, fisher_path=path)  # no source data: the file holds F
    model = _target(source)
    assert method.penalty_value(model) == 0.0
    _perturb(model)
    fc1 = model.get_layer("backbone").get_layer("fc1").get_weights()
    source_fc1 = source.get_layer("backbone").get_layer("fc1").get_weights()
    expected = 1.5 * sum(
        np.sum(fisher[f"fc1/{i}"] * (w.astype(np.float64) - s) ** 2)
        for i, (w, s) in enumerate(zip(fc1, source_fc1))
    )
    np.testing.assert_allclose(method.penalty_value(model), expected, rtol=1e-5)
    # Another source's values are refused when there is no data to recompute them.
    other = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    with pytest.raises(ValueError, match="belong to another source model"):
        EWC(other, fisher_path=path).fisher


def test_fisher_information_matches_the_hand_computed_head_gradients_on_bounded_batches(
    source_files, few_digits
):
    source, _ = source_files
    x, y = few_digits
    dataset = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(4)  # 6 batches
    fisher = fisher_information(source, dataset, batches=2, verbose=0)
    shapes = {
        f"{n}/{i}": tuple(w.shape)
        for n, layer in keras_transfer.weighted_layers(source).items()
        for i, w in enumerate(layer.weights)
    }
    assert {k: v.shape for k, v in fisher.items()} == shapes
    assert all((v >= 0).all() for v in fisher.values()) and fisher["fc1/0"].max() > 0
    # d log p_y / d bias = onehot(y) - p: the bias's Fisher is its mean square over the
    # first 8 images only (2 batches of 4), not over all 24.
    p = source.predict(x[:8], verbose=0).astype(np.float64)
    expected = np.mean((np.eye(3)[y[:8]] - p) ** 2, axis=0)
    np.testing.assert_allclose(fisher["predictions/1"], expected, rtol=1e-4, atol=1e-7)
    everything = fisher_information(source, dataset, batches=100, verbose=0)
    assert not np.allclose(everything["predictions/1"], fisher["predictions/1"])
    with pytest.raises(ValueError, match="batches must be a positive integer"):
        fisher_information(source, dataset, batches=0)


def test_ewc_saves_the_fisher_values_beside_the_source_and_a_later_run_reuses_them(
    source_files, few_digits, tmp_path, capsys
):
    _, original = source_files
    path = str(tmp_path / "src.keras")
    keras_transfer.load_model(original).save(path)
    first = EWC(path, few_digits, fisher_batches=2, batch_size=8)
    computed = first.fisher
    saved = str(tmp_path / "src.fisher.npz")
    assert os.path.isfile(saved) and "Fisher information saved to" in capsys.readouterr().out
    second = EWC(path, None)  # no data: it can only read the file
    for key, value in computed.items():
        np.testing.assert_array_equal(second.fisher[key], value)
    assert f"read from {saved}" in capsys.readouterr().out
    np.savez(str(tmp_path / "source.npz"), x=few_digits[0], y=few_digits[1])
    from_npz = method_lib.get_method(f"ewc:source={path},source_data={tmp_path / 'source.npz'},strength=5")
    assert from_npz.strength == 5.0 and len(from_npz.fisher) == 4
    with pytest.raises(ValueError, match="needs source_data"):
        EWC(path, None, fisher_path=None).fisher


@pytest.mark.parametrize("kind", ["l2_sp", "ewc"])
def test_the_regularisers_pass_the_method_contract(kind, source_files, few_digits, tmp_path):
    source, _ = source_files
    model = _target(source, classes=3)
    if kind == "l2_sp":
        method = L2SP(source, alpha=1.0)
    else:
        method = EWC(source, few_digits, strength=100.0, fisher_batches=2, batch_size=8)
    final = testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 1, "min_steps": 4, "batch_size": 8, "verbose": 0},
    )
    assert final is model and len(final.weights) == 4  # nothing extra in the shipped model
    assert method.penalty_value(model) > 0


def test_a_strong_l2_sp_keeps_the_transferred_weights_near_the_source(source_files, few_digits):
    source, _ = source_files
    distances = {}
    for alpha in (0.0, 100.0):
        model = _target(source, classes=3)
        keras_transfer.train(
            model,
            few_digits,
            epochs=1,
            min_steps=20,
            batch_size=8,
            learning_rate=1e-2,
            seed=0,
            method=L2SP(source, alpha=alpha, beta=0.0),
            verbose=0,
        )
        anchors = source_anchors(model, source)
        distances[alpha] = sum(np.sum((a.weight.numpy() - a.value) ** 2) for a in anchors.anchored)
    assert distances[100.0] < 0.2 * distances[0.0], distances


def test_source_task_model_reproduces_the_source_and_takes_a_given_head(source_files, few_digits):
    source, path = source_files
    x = few_digits[0][:8]
    model = _target(source)
    same = source_task_model(model, path).predict(x, verbose=0)
    np.testing.assert_array_equal(same, source.predict(x, verbose=0))
    assert measure_retention(model, source, few_digits).drop == 0.0
    _perturb(model)
    moved = source_task_model(model, source)
    np.testing.assert_array_equal(
        moved.get_layer("predictions").get_weights()[0], source.get_layer("predictions").get_weights()[0]
    )
    assert not np.allclose(moved.predict(x, verbose=0), source.predict(x, verbose=0))
    head = keras.layers.Dense(3, activation="softmax")
    head.build((None, 128))
    with_head = source_task_model(model, source, head=head)
    np.testing.assert_array_equal(with_head.get_layer("predictions").get_weights()[0], head.get_weights()[0])
    wrong = keras.layers.Dense(4)
    wrong.build((None, 128))
    with pytest.raises(ValueError, match="head must have the source head's weight shapes"):
        source_task_model(model, source, head=wrong)
    other = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    with pytest.raises(ValueError, match="No layer of model"):
        source_task_model(other, source)


def _cli_train(tmp_path, mnist, source_path, method):
    from testing import write_image_folder

    keep = np.isin(mnist.y, [0, 1, 2])
    folder = tmp_path / "digits"
    if not folder.exists():
        write_image_folder(
            str(folder), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1", "2"]
        )
    command = [
        sys.executable, "-m", "keras_transfer.cli", "train", "--data", str(folder), "--backbone", source_path,
        "--method", method, "--epochs", "1", "--min-steps", "2", "--batch-size", "8",
        "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, tmp_path / "out" / "digits" / "train"


def test_keras_transfer_train_method_l2_sp_on_an_image_folder(mnist, source_files, tmp_path):
    source, path = source_files
    _, run_dir = _cli_train(tmp_path, mnist, path, f"l2_sp:source={path},alpha=1,beta=0.001")
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["fine_tune", "l2_sp"]
    (l2_sp,) = [m for m in config["method"]["config"]["methods"] if m["name"] == "l2_sp"]
    assert l2_sp["config"] == {"source": path, "alpha": 1.0, "beta": 0.001}
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    assert len(trained.weights) == len(source.weights)  # no anchors in the saved model


def test_keras_transfer_train_method_ewc_on_an_image_folder(mnist, source_files, few_digits, tmp_path):
    _, path = source_files
    npz = tmp_path / "source.npz"
    np.savez(str(npz), x=few_digits[0], y=few_digits[1])
    fisher = tmp_path / "fisher.npz"
    method = (
        f"ewc:source={path},source_data={npz},strength=10,fisher_batches=2,batch_size=8,fisher_path={fisher}"
    )
    result, run_dir = _cli_train(tmp_path, mnist, path, method)
    assert "Fisher information: 2 batch(es)" in result.stdout and fisher.is_file(), result.stdout[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["methods"] == ["ewc", "fine_tune"]


def test_the_forgetting_demo_runs_in_smoke_mode_and_skips_unknown_rows(tmp_path):
    from keras_transfer import demo_forgetting

    lines = []
    rows = demo_forgetting.FORGETTING_ROWS + (
        demo_forgetting.ForgettingRow("not here", "no_such_method", lambda *a, **k: None),
    )
    result = demo_forgetting.run_forgetting_demo(str(tmp_path), rows=rows, smoke=True, log=lines.append)
    assert "skipping row 'not here': no transfer method 'no_such_method' is registered here" in lines
    written = json.loads((tmp_path / "demo" / "forgetting.json").read_text())
    assert [row["method"] for row in written["rows"]] == ["naive fine-tune", "L2-SP", "EWC", "LwF", "replay"]
    for row in written["rows"]:
        assert 0.0 <= row["target_accuracy"] <= 1.0 and 0.0 <= row["source_accuracy_after"] <= 1.0
        expected = 100 * (row["source_accuracy_before"] - row["source_accuracy_after"])
        assert abs(row["drop_points"] - expected) < 0.02
    assert (tmp_path / "demo" / "forgetting_fisher.npz").is_file()
    assert "drop (points)" in result["table"] and (tmp_path / "demo" / "forgetting.txt").is_file()


def test_the_demo_command_takes_the_forgetting_table(monkeypatch):
    from keras_transfer import cli
    from keras_transfer import demo_forgetting

    calls = []
    monkeypatch.setattr(demo_forgetting, "run_forgetting_demo", lambda *a, **k: calls.append((a, k)))
    assert cli.main(["demo", "forgetting", "--seeds", "0,1,2", "--output", "somewhere"]) == 0
    ((args, kwargs),) = calls
    assert args == ("somewhere",) and kwargs["seeds"] == (0, 1, 2) and kwargs["budgets"] == ("all", 10)
