"""Knowledge distillation: `Distill` (method `distill`), `Distiller`, `SoftenedDistillation`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.distillation import Distill
from keras_transfer.distillation import Distiller
from keras_transfer.distillation import SoftenedDistillation
from keras_transfer.training import method as method_lib
from keras_transfer.utils import keras_internals

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    """A 3-class CNN teacher in memory, as a `.keras` file and as a SavedModel folder."""
    keras.utils.set_random_seed(0)
    teacher = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    folder = tmp_path_factory.mktemp("teacher")
    path = str(folder / "teacher.keras")
    teacher.save(path)
    saved = keras_transfer.export_saved_model(teacher, str(folder / "served"), class_names=["0", "1", "2"])
    return teacher, path, saved


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_distillation_loss_at_temperature_t_matches_a_hand_computation(few_digits, teacher_files):
    teacher = teacher_files[0]
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None, dropout=0.0)
    alpha, temperature, feature_weight = 0.3, 4.0, 0.7
    distiller = Distiller(
        teacher,
        student,
        [
            SoftenedDistillation(temperature),
            keras.distillation.FeatureDistillation("mse", "backbone", "backbone"),
        ],
        [1.0, feature_weight],
        student_loss_weight=alpha,
    )
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy())
    x, y = np.asarray(few_digits[0][:16], np.float32), few_digits[1][:16]
    loss = float(distiller.compute_loss(x, y, student(x), training=False))

    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    hard = -np.mean(np.log(s[np.arange(len(y)), y]))
    pt, ps = _softmax(np.log(t) / temperature), _softmax(np.log(s) / temperature)
    kl = np.mean(np.sum(pt * np.log(pt / ps), axis=-1)) * temperature**2
    tf_, sf = [
        keras.Model(m.inputs[0], keras_internals.node_output(m.get_layer("backbone"))).predict(x, verbose=0)
        for m in (teacher, student)
    ]
    hand = alpha * hard + (1 - alpha) * (kl + feature_weight * np.mean((tf_ - sf) ** 2))
    np.testing.assert_allclose(loss, hand, rtol=1e-5)
    distiller.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # a loss function
    np.testing.assert_allclose(
        float(distiller.compute_loss(x, y, student(x), training=False)), hand, rtol=1e-5
    )
    assert kl > 0.01  # the two models disagree: the soft term is not vacuous

    # log(probabilities) are logits: the loss on probabilities is Keras's on the true logits.
    rng = np.random.default_rng(0)
    zt, zs = rng.normal(size=(8, 5)).astype("float32") * 3, rng.normal(size=(8, 5)).astype("float32")
    ours = SoftenedDistillation(temperature).compute_loss(_softmax(zt), _softmax(zs))
    keras_own = keras.distillation.LogitsDistillation(temperature, keras.losses.KLDivergence()).compute_loss(
        zt, zs
    )
    np.testing.assert_allclose(float(ours), float(keras_own), rtol=1e-5)
    logits_student = SoftenedDistillation(temperature, student_probabilities=False)
    np.testing.assert_allclose(
        float(logits_student.compute_loss(_softmax(zt), zs)), float(keras_own), rtol=1e-5
    )


def test_teacher_output_cache_and_the_teacher_every_step_train_the_same_student(few_digits, teacher_files):
    teacher = teacher_files[0]
    teacher.trainable = True  # (a Distiller freezes its teacher; Distill gives the flags back)
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None, dropout=0.0)
    initial = student.get_weights()
    teacher_before = teacher.get_weights()
    weights = {}
    for cache in (True, False):
        student.set_weights(initial)
        keras_transfer.train(
            student,
            few_digits,
            validation_data=few_digits,
            epochs=3,
            batch_size=8,
            seed=0,
            verbose=0,
            method=Distill(teacher, temperature=2.0, cache=cache),
        )
        weights[cache] = student.get_weights()
    for cached, per_step, start in zip(weights[True], weights[False], initial):
        assert not np.array_equal(cached, start)
        np.testing.assert_allclose(cached, per_step, atol=1e-5)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert teacher.trainable and all(layer.trainable for layer in teacher.get_layer("backbone").layers)


def test_distill_passes_the_method_contract(few_digits, teacher_files, tmp_path):
    teacher = teacher_files[0]
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    method = Distill(teacher)
    testing.run_method_contract(
        method,
        student,
        few_digits,
        str(tmp_path),
        source=teacher,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0},
    )


def test_a_teacher_from_a_keras_file_or_a_saved_model_folder_and_the_checks(
    few_digits, teacher_files, tmp_path
):
    teacher, path, saved = teacher_files
    x = np.asarray(few_digits[0][:8], np.float32)
    expected = teacher.predict(x, verbose=0)
    for given in (path, saved, os.path.dirname(saved)):  # the parent: its highest version
        method = method_lib.get_method(f"distill:teacher={given},temperature=2")
        assert method == Distill(given, temperature=2.0) and method.get_config()["temperature"] == 2.0
        outputs = method.distiller(
            keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
        ).teacher_outputs
        np.testing.assert_allclose(outputs.predict(x, verbose=0)["final_output"], expected, atol=1e-5)
    assert "distill" in dict(method_lib.list_methods())
    assert Distill(path).get_config() == {"teacher": path}
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    with pytest.raises(ValueError, match="has no layers|no layer 'backbone'"):
        Distill(saved, features="backbone").distiller(student)
    with pytest.raises(ValueError, match="must predict the same classes"):
        Distill(path).distiller(keras_transfer.build_classifier("mnist_mlp", 4, weights=None))
    with pytest.raises(ValueError, match="same shape"):
        Distill(path, features="backbone:preprocessing").distiller(student)
    for kwargs, message in (
        ({}, "needs a teacher"),
        ({"teacher": str(tmp_path / "missing.keras")}, "Received: teacher="),
        ({"teacher": path, "temperature": 0}, r"temperature must be in \(0, inf\)"),
        ({"teacher": path, "student_loss_weight": 1.5}, r"student_loss_weight must be in \[0, 1\]"),
        ({"teacher": path, "cache": "yes"}, "cache must be 'auto', True or False"),
        ({"teacher": path, "features": "a:b:c"}, "features must be None"),
    ):
        with pytest.raises(ValueError, match=message):
            Distill(**kwargs)


def test_a_distiller_survives_keras_save_and_loads_in_a_new_process(few_digits, teacher_files, tmp_path):
    teacher = teacher_files[0]
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    distiller = Distill(teacher, features="backbone", feature_weight=0.5, student_loss_weight=0.3).distiller(
        student
    )
    x = np.asarray(few_digits[0][:8], np.float32)
    distiller.predict(x, verbose=0)  # built
    testing.assert_keras_round_trip(distiller, x, str(tmp_path))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", distiller.predict(x, verbose=0))
    code = (
        "import numpy as np, keras_transfer\n"
        f"model = keras_transfer.load_model({str(tmp_path / 'model.keras')!r}, compile=False)\n"
        f"x, expected = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'expected.npy')!r})\n"
        "np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)\n"
        "print(type(model).__name__, model.student_loss_weight, model.distillation_loss_weights,\n"
        "      [type(loss).__name__ for loss in model.distillation_losses])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(
        "Distiller 0.3 [1.0, 0.5] ['SoftenedDistillation', 'FeatureDistillation']"
    ), result.stdout


def test_keras_transfer_train_method_distill_on_an_image_folder(mnist, teacher_files, tmp_path):
    from testing import write_image_folder

    teacher, path, _ = teacher_files
    keep = np.isin(mnist.y, [0, 1, 2])
    write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1", "2"]
    )
    methods = subprocess.run(
        [sys.executable, "-m", "keras_transfer.cli", "methods"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert methods.returncode == 0 and "distill" in methods.stdout, methods.stderr[-2000:]
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
        f"distill:teacher={path},temperature=2",
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
    assert "Teacher-output cache off" in result.stdout, result.stdout[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["distill", "fine_tune"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    assert trained.get_layer("predictions").units == 3 and trained.count_params() < teacher.count_params()
    for before, after in zip(teacher.get_weights(), keras_transfer.load_model(path).get_weights()):
        np.testing.assert_array_equal(before, after)  # the teacher file is untouched


def test_the_distillation_benchmark_runs_in_smoke_mode():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, os.path.join(root, "benchmarks", "distillation.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "teacher-output cache vs the teacher every step" in result.stdout
    assert "samples/s" in result.stdout and "max |student weight difference| 0" in result.stdout


def test_a_dataset_is_cached_only_when_asked_and_then_trains_as_its_arrays_do(
    few_digits, teacher_files, capsys
):
    teacher = teacher_files[0]
    student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None, dropout=0.0)
    initial = student.get_weights()
    dataset = data.make_dataset(*few_digits, batch_size=8)
    weights = {}
    for name, train_data, cache in (
        ("arrays", few_digits, True),
        ("dataset", dataset, True),
        ("auto", dataset, "auto"),
    ):
        student.set_weights(initial)
        keras_transfer.train(
            student,
            train_data,
            epochs=2,
            batch_size=8,
            seed=0,
            verbose=2,
            method=Distill(teacher, cache=cache),
        )
        weights[name] = student.get_weights()
    printed = capsys.readouterr().out
    assert (
        printed.count("Teacher-output cache on") == 2
        and "Teacher-output cache off: the training data is a tf.data" in printed
    )
    for from_arrays, from_dataset in zip(weights["arrays"], weights["dataset"]):
        np.testing.assert_allclose(from_arrays, from_dataset, atol=1e-5)
    # Uncached, the dataset is fitted as given (its own unshuffled order), not reshuffled by seed.
    assert any(not np.allclose(a, b, atol=1e-5) for a, b in zip(weights["arrays"], weights["auto"]))


def test_train_from_folder_refuses_an_in_memory_teacher_before_any_work(teacher_files, tmp_path):
    from keras_transfer import workflows

    teacher = teacher_files[0]
    # The folder does not even exist: the refusal comes before the scan.
    with pytest.raises(ValueError, match=r"run\.json.*distill: teacher=Functional.*pass its path"):
        workflows.train_from_folder(
            str(tmp_path / "missing"), backbone="mnist_mlp", weights=None, method=Distill(teacher=teacher)
        )
