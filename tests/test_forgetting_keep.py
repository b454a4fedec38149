"""Transfer that keeps the source head: `LwF`, `Replay`, `replay_buffer`, `mix_buffer`,
the kept head (`copy_head`, `with_source_head`, `SourceHeadTrainer`)."""

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
from keras_transfer.forgetting import LwF
from keras_transfer.forgetting import Replay
from keras_transfer.forgetting import SoftTargetLoss
from keras_transfer.forgetting import copy_head
from keras_transfer.forgetting import mix_buffer
from keras_transfer.forgetting import replay_buffer
from keras_transfer.forgetting import soft_targets
from keras_transfer.forgetting import with_source_head
from keras_transfer.training import method as method_lib

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def tasks(mnist):
    """Source digits 0-4 and target digits 5-9 (relabelled 0-4): train and test parts."""
    x_source, y_source = data.subset_classes(mnist.x[:3000], mnist.y[:3000], range(5))
    x_target, y_target = data.subset_classes(mnist.x[:3000], mnist.y[:3000], range(5, 10))
    return {
        "source": (x_source[:400], y_source[:400]),
        "source_test": (x_source[400:800], y_source[400:800]),
        "target": (x_target[:200], y_target[:200]),
        "target_test": (x_target[200:600], y_target[200:600]),
    }


@pytest.fixture(scope="module")
def source(tasks):
    """An MLP trained on digits 0-4 (the source task)."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    keras_transfer.train(model, tasks["source"], epochs=3, seed=0, verbose=0)
    return model


def transferred(source, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    keras_transfer.transfer_weights(source, model, exclude="predictions")
    return model


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_replay_buffer_holds_exactly_per_class_examples_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [7, 9, 12, 30])
    x = np.stack([np.full((2, 2), i, np.float32) for i in range(len(y))])  # x[i] is i everywhere
    x_buffer, y_buffer = replay_buffer(x, y, per_class=7, seed=3)
    assert np.bincount(y_buffer).tolist() == [7, 7, 7, 7]
    index = x_buffer[:, 0, 0].astype(int)
    assert len(set(index.tolist())) == 28 and (y[index] == y_buffer).all()  # real, distinct examples
    again = replay_buffer(x, y, per_class=7, seed=3)
    np.testing.assert_array_equal(again[0], x_buffer)
    other = replay_buffer(x, y, per_class=7, seed=4)[0][:, 0, 0]
    assert set(other.tolist()) != set(index.tolist())
    shuffled = rng.permutation(len(y))
    assert np.bincount(replay_buffer(x[shuffled], y[shuffled], 2)[1]).tolist() == [2, 2, 2, 2]
    with pytest.raises(
        ValueError, match=r"classes have fewer \(class: count\): \{0: 7, 1: 9\}. Received: per_class=10"
    ):
        replay_buffer(x, y, per_class=10)
    with pytest.raises(ValueError, match="per_class must be a positive integer"):
        replay_buffer(x, y, per_class=0)


def test_mixed_batches_carry_the_stated_share_of_buffer_examples(tasks):
    x, y = tasks["target"][0][:40].astype(np.float32), tasks["target"][1][:40]
    x_buffer, y_buffer = replay_buffer(*tasks["source"], per_class=2, seed=0)
    x_buffer = x_buffer.astype(np.float32)
    target = data.make_dataset(x, y, batch_size=8, drop_remainder=True)
    batches = list(mix_buffer(target, x_buffer, y_buffer, 3, seed=0))
    assert len(batches) == 5
    replayed = []
    for (images, labels, weights), (own, own_labels) in zip(batches, target):
        images = images.numpy()
        assert images.shape[0] == 11
        np.testing.assert_array_equal(images[:8], own.numpy())  # the target batch, then 3 buffer images
        np.testing.assert_array_equal(labels["predictions"].numpy()[:8], own_labels.numpy())
        for image, label in zip(images[8:], labels["source_predictions"].numpy()[8:]):
            match = np.flatnonzero([(image == b).all() for b in x_buffer])
            assert len(match) == 1 and y_buffer[match[0]] == label
            replayed.append(match[0])
        np.testing.assert_allclose(weights["predictions"].numpy(), [11 / 8] * 8 + [0] * 3)
        np.testing.assert_allclose(weights["source_predictions"].numpy(), [0] * 8 + [11 / 3] * 3)
    # The buffer is shuffled and repeated: 15 draws from 10 examples cover all of them.
    assert sorted(set(replayed)) == list(range(10))
    again = [
        int(np.flatnonzero([(image == b).all() for b in x_buffer])[0])
        for images, _, _ in mix_buffer(target, x_buffer, y_buffer, 3, seed=0)
        for image in images.numpy()[8:]
    ]
    assert again == [int(i) for i in replayed]


def test_soft_targets_are_the_source_outputs_and_the_loss_its_softened_kl(source, tasks):
    x = tasks["source_test"][0][:16].astype(np.float32)
    targets = soft_targets(source, x)
    np.testing.assert_allclose(targets, source.predict(x, verbose=0), atol=1e-6)
    # The kept head starts as the source's: on the transferred backbone it predicts the same.
    model = transferred(source)
    kept = with_source_head(model, copy_head(source)).predict(x, verbose=0)["source_predictions"]
    np.testing.assert_allclose(kept, targets, atol=1e-6)
    temperature = 2.0
    other = keras_transfer.build_classifier("mnist_mlp", 5, weights=None).predict(x, verbose=0)
    pt, ps = _softmax(np.log(targets) / temperature), _softmax(np.log(other) / temperature)
    hand = temperature**2 * np.mean(np.sum(pt * np.log(pt / ps), axis=-1))
    np.testing.assert_allclose(float(SoftTargetLoss(temperature)(targets, other)), hand, rtol=1e-4)
    assert hand > 0.01 and float(SoftTargetLoss(temperature)(targets, kept)) < 1e-6


def _source_agreement(model, head, tasks):
    x, y = tasks["source_test"]
    probabilities = with_source_head(model, head).predict(x, verbose=0)["source_predictions"]
    return float(np.mean(probabilities.argmax(-1) == y))


@pytest.fixture(scope="module")
def naive(source, tasks):
    """Naive fine-tuning: the source's head, unchanged, on the fine-tuned backbone."""
    model = transferred(source)
    keras_transfer.train(model, tasks["target"], epochs=4, learning_rate=3e-3, seed=0, verbose=0)
    return model, _source_agreement(model, copy_head(source), tasks)


def test_lwf_and_replay_keep_the_source_task_better_than_naive_fine_tuning(source, tasks, naive):
    before = float(
        np.mean(source.predict(tasks["source_test"][0], verbose=0).argmax(-1) == tasks["source_test"][1])
    )
    naive_model, naive_source = naive
    naive_target = keras_transfer.evaluate_classifier(naive_model, tasks["target_test"]).accuracy
    results = {}
    for method in (LwF(source), Replay(source, tasks["source"], per_class=10, seed=0)):
        model = transferred(source)
        history = keras_transfer.train(
            model, tasks["target"], epochs=4, learning_rate=3e-3, seed=0, method=method, verbose=0
        )
        results[method.name] = (
            keras_transfer.evaluate_classifier(model, tasks["target_test"]).accuracy,
            _source_agreement(model, method.source_head, tasks),
            history.history,
        )
    print(f"source before {before:.3f}; naive: target {naive_target:.3f}, source {naive_source:.3f}")
    print({name: values[:2] for name, values in results.items()})
    assert before > 0.85 and naive_source < before - 0.1  # naive fine-tuning forgets
    for name, (target, kept, _) in results.items():
        assert kept > naive_source + 0.1, (name, kept, naive_source)
        assert target > 0.8 and target > naive_target - 0.1, (name, target, naive_target)
    # Replay's kept head learns its buffer's labels: the source loss term falls.
    replay_history = results["replay"][2]
    assert replay_history["source_predictions_loss"][-1] < replay_history["source_predictions_loss"][0]
    assert replay_history["source_predictions_accuracy"][-1] > 0.8


def test_lwf_soft_targets_once_or_per_batch_train_the_same_model(source, tasks):
    weights = {}
    for cache in (True, False):
        model = transferred(source)
        method = LwF(source, cache=cache)
        keras_transfer.train(
            model, tasks["target"], epochs=1, batch_size=50, seed=0, method=method, verbose=0
        )
        weights[cache] = model.get_weights() + method.source_head.get_weights()
    for once, per_batch in zip(weights[True], weights[False]):
        np.testing.assert_allclose(once, per_batch, atol=1e-5)


def test_lwf_and_replay_pass_the_method_contract(source, tasks, tmp_path):
    target = (tasks["target"][0][:48], tasks["target"][1][:48])
    for method in (
        LwF(source, weight=0.5),
        Replay(source, tasks["source"], per_class=3, replay_batch_size=4),
    ):
        model = transferred(source)
        head_before = source.get_layer("predictions").get_weights()
        (tmp_path / method.name).mkdir()
        final = testing.run_method_contract(
            method,
            model,
            target,
            str(tmp_path / method.name),
            source=source,
            run_kwargs={
                "epochs": 1,
                "min_steps": 4,
                "batch_size": 16,
                "augment": True,
                "seed": 0,
                "verbose": 0,
            },
        )
        assert final is model and len(final.outputs) == 1
        trained_head = method.source_head.get_weights()
        assert not np.array_equal(trained_head[0], head_before[0])  # the kept copy trained
        np.testing.assert_array_equal(source.get_layer("predictions").get_weights()[0], head_before[0])


def test_settings_parse_validate_and_list(source, tasks, tmp_path):
    path = str(tmp_path / "source.keras")
    source.save(path)
    np.savez(tmp_path / "source.npz", x=tasks["source"][0][:50], y=tasks["source"][1][:50])
    method = method_lib.get_method(f"lwf:source={path},weight=0.5,temperature=3")
    assert method == LwF(path, weight=0.5, temperature=3.0)
    assert method.get_config() == {"source": path, "weight": 0.5, "temperature": 3.0}
    replay = method_lib.get_method(f"replay:source={path},source_data={tmp_path / 'source.npz'},per_class=4")
    assert replay.get_config() == {
        "source": path,
        "source_data": str(tmp_path / "source.npz"),
        "per_class": 4,
    }
    assert np.bincount(replay.make_buffer(transferred(source))[1]).tolist() == [4] * 5
    x, y = data.few_shot(*tasks["source"], k=3, seed=0)  # an image folder: class ids by folder name
    testing.write_image_folder(str(tmp_path / "folder"), x, y, ["0", "1", "2", "3", "4"])
    x_buffer, y_buffer = Replay(source, str(tmp_path / "folder"), per_class=3).make_buffer(
        transferred(source)
    )
    order = np.lexsort((np.arange(len(y)), y))  # the folder's order: class, then file
    np.testing.assert_array_equal(y_buffer, y[order])
    np.testing.assert_allclose(x_buffer, np.round(x[order]).astype(np.float32))
    assert Replay(source, tasks["source"]) == Replay(source, tasks["source"])
    assert Replay(source, tasks["source"]) != Replay(source, tasks["source"], seed=1)
    assert {"lwf", "replay"} <= set(dict(method_lib.list_methods()))
    with pytest.raises(ValueError, match="needs the source model"):
        LwF()
    with pytest.raises(ValueError, match=r"source must be a keras.Model or an existing .keras file"):
        LwF("nowhere.keras")
    with pytest.raises(ValueError, match=r"temperature must be a number > 0. Received: temperature=0"):
        LwF(source, temperature=0)
    with pytest.raises(ValueError, match=r"weight must be a number >= 0. Received: weight=-1"):
        Replay(source, tasks["source"], weight=-1)
    with pytest.raises(ValueError, match="Replay needs source_data"):
        Replay(source)
    with pytest.raises(ValueError, match="per_class must be a positive integer"):
        Replay(source, tasks["source"], per_class=0)
    with pytest.raises(ValueError, match=r"no layer 'head'"):
        copy_head(source, "head")
    small = keras.layers.Dense(5)
    small.build((None, 7))
    with pytest.raises(
        ValueError, match="takes 7 features but the target model's 'predictions' layer reads 128"
    ):
        with_source_head(keras_transfer.build_classifier("mnist_cnn", 5, weights=None), small)


def test_registered_pieces_survive_keras_files(source, tmp_path):
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32") * 255
    both = with_source_head(transferred(source), copy_head(source))
    both.compile(
        "adam",
        loss={"predictions": "sparse_categorical_crossentropy", "source_predictions": SoftTargetLoss(3.0)},
    )
    path = str(tmp_path / "both.keras")
    both.save(path)
    loaded = keras_transfer.load_model(path)
    for name, value in both.predict(x, verbose=0).items():
        np.testing.assert_allclose(loaded.predict(x, verbose=0)[name], value, atol=1e-6)
    loss = loaded.loss["source_predictions"]
    assert isinstance(loss, SoftTargetLoss) and loss.temperature == 3.0
    config = SoftTargetLoss(2.5, student_probabilities=False).get_config()
    assert SoftTargetLoss.from_config(config).get_config() == config


def test_keras_transfer_train_method_lwf_and_replay_on_an_image_folder(mnist, source, tasks, tmp_path):
    keep = np.isin(mnist.y, [5, 6])
    testing.write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24] - 5, ["5", "6"]
    )
    source.save(str(tmp_path / "source.keras"))
    np.savez(tmp_path / "source.npz", x=tasks["source"][0][:60], y=tasks["source"][1][:60])
    methods = {
        "lwf": f"lwf:source={tmp_path / 'source.keras'},temperature=2",
        "replay": f"replay:source={tmp_path / 'source.keras'},source_data={tmp_path / 'source.npz'},"
        "per_class=3",
    }
    for name, text in methods.items():
        command = [sys.executable, "-m", "keras_transfer.cli", "train", "--data", str(tmp_path / "digits")]
        command += ["--backbone", str(tmp_path / "source.keras"), "--method", text, "--name", name]
        command += [
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
        run_dir = tmp_path / "out" / name / "train"
        config = json.loads((run_dir / "run.json").read_text())
        assert config["methods"] == sorted([name, "fine_tune"])
        trained = keras_transfer.load_model(str(run_dir / "model.keras"))
        assert len(trained.outputs) == 1 and trained.get_layer("predictions").units == 2
        served = tf.saved_model.load(str(tmp_path / "out" / name / "1")).signatures["serve"]
        x = mnist.x[:4].astype("float32")
        np.testing.assert_allclose(
            served(images=tf.constant(x))["probabilities"].numpy(), trained.predict(x, verbose=0), atol=1e-5
        )
    assert "LwF soft targets per batch" in result.stdout or "Replay: a buffer of 15" in result.stdout, (
        result.stdout
    )
