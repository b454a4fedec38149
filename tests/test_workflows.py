"""`keras-transfer train | evaluate | export | predict` on image folders the tests write."""

import os

import numpy as np
import pytest
import tensorflow as tf
from testing import write_image_folder
from testing import write_truncated_png

import keras_transfer
from keras_transfer import cli
from keras_transfer import export
from keras_transfer import training
from keras_transfer import workflows

CLASSES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def digits_dir(mnist, tmp_path_factory):
    """Real MNIST digits 0-2 as PNG files in class folders, plus one truncated PNG."""
    root = str(tmp_path_factory.mktemp("folders") / "digits")
    keep = np.isin(mnist.y, [0, 1, 2])
    x, y = mnist.x[keep][:240].astype(np.uint8), mnist.y[keep][:240]
    write_image_folder(root, x, y, CLASSES)
    write_truncated_png(os.path.join(root, "one", "truncated.png"))
    return root


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    """`keras-transfer train` with a randomly initialised CNN; returns (output, stdout)."""
    output = str(tmp_path_factory.mktemp("out"))
    return output, _run(
        [
            "train",
            "--data",
            digits_dir,
            "--backbone",
            "mnist_cnn",
            "--weights",
            "none",
            "--output",
            output,
            "--head-epochs",
            "3",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--tflite",
            "float32,int8",
            "--no-augment",
        ]
    )


def _run(argv):
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    assert code == 0, stdout.getvalue()[-2000:]
    return stdout.getvalue()


def test_train_reports_the_corrupt_file_and_writes_the_run(trained, digits_dir):
    output, out = trained
    assert "truncated.png" in out and "skipped 1" in out
    run = os.path.join(output, "digits", "train")
    for name in (
        "model.keras",
        "labels.txt",
        "report.txt",
        "metrics.json",
        "confusion.png",
        "learning_curves.png",
    ):
        assert os.path.exists(os.path.join(run, name)), name
    model, names = workflows.load_trained(run)
    assert names == sorted(CLASSES)  # folder order
    x, y = workflows.load_labelled_folder(digits_dir, model, names, log=None)
    assert len(x) == 240  # every valid image, the truncated one skipped
    accuracy = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert accuracy > 0.8  # real digits, 4 epochs: far above chance (1/3)


def test_a_random_init_run_trains_exactly_epochs_in_one_stage(trained):
    _, out = trained
    assert "in one stage for 4 epochs" in out and "--head-epochs is not used" in out
    assert "Epoch 4/4" in out and "Epoch 5/" not in out and "Epoch 1/7" not in out


def test_exports_agree_with_the_keras_model(trained, digits_dir):
    output, out = trained
    version = os.path.join(output, "digits", "1")
    assert export.read_labels(version) == sorted(CLASSES)
    assert "held-out" not in out
    line = next(text for text in out.splitlines() if text.startswith("accuracy on the validation split"))
    scores = dict(part.split() for part in line.split(": ")[1].split(", "))
    assert set(scores) == {"keras", "float32", "int8"}
    assert abs(float(scores["int8"]) - float(scores["keras"])) <= 0.01 + 1e-9
    assert float(scores["float32"]) == pytest.approx(float(scores["keras"]), abs=1e-9)

    model, names = workflows.load_trained(os.path.join(output, "digits", "train"))
    files = sorted(tf.io.gfile.glob(os.path.join(digits_dir, "two", "*.png")))[:5]
    x = np.stack([keras_transfer.images.read_image(f, 28, 1).numpy() for f in files])
    expected = model.predict(x, verbose=0)
    served = workflows.predict_files(version, files, top=3)
    tflite = workflows.predict_files(
        os.path.join(output, "digits", "tflite", "1", "model_float32.tflite"), files, top=3
    )
    for row, from_saved_model, from_tflite in zip(expected, served, tflite):
        assert from_saved_model.top[0][0] == names[row.argmax()] == from_tflite.top[0][0]
        assert from_saved_model.top[0][1] == pytest.approx(row.max(), abs=1e-5)


def test_evaluate_export_and_predict_commands(trained, digits_dir, capsys):
    output, _ = trained
    run = os.path.join(output, "digits", "train")
    out = _run(["evaluate", run, "--data", digits_dir, "--output", os.path.join(output, "eval")])
    assert "accuracy" in out and os.path.exists(os.path.join(output, "eval", "confusion.png"))
    assert f"wrote report.txt, metrics.json and confusion.png to {os.path.join(output, 'eval')}" in out
    out = _run(["export", run, "--output", output, "--tflite", "float32"])
    assert os.path.exists(os.path.join(output, "digits", "2", "saved_model.pb"))
    assert os.path.exists(os.path.join(output, "digits", "tflite", "2", "model_float32.tflite"))
    image = os.path.join(digits_dir, "zero", sorted(os.listdir(os.path.join(digits_dir, "zero")))[0])
    out = _run(["predict", os.path.join(output, "digits", "2"), image, "--top", "2"])
    assert out.startswith(f"{image}: ") and len(out.strip().split(", ")) == 2
    # A file that cannot be read is reported; the others are still predicted.
    bad = os.path.join(digits_dir, "one", "truncated.png")
    assert cli.main(["predict", run, bad, image]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: cannot read" in captured.err and f"{image}: " in captured.out


def test_export_int8_needs_data(trained, capsys):
    output, _ = trained
    run = os.path.join(output, "digits", "train")
    assert cli.main(["export", run, "--output", output, "--tflite", "int8"]) == 1
    assert "--data" in capsys.readouterr().err


def test_export_defaults_to_float32_without_data_and_names_its_data(trained, digits_dir, tmp_path):
    output, _ = trained
    run = os.path.join(output, "digits", "train")
    out = _run(["export", run, "--output", str(tmp_path)])
    assert "TFLite int8 skipped: it needs --data" in out
    assert sorted(os.listdir(tmp_path / "digits" / "tflite" / "1")) == ["labels.txt", "model_float32.tflite"]
    out = _run(["export", run, "--output", str(tmp_path), "--data", digits_dir])
    assert "int8 skipped" not in out
    assert os.path.exists(tmp_path / "digits" / "tflite" / "2" / "model_int8.tflite")
    line = next(text for text in out.splitlines() if text.startswith("accuracy on "))
    assert f"folder {digits_dir} (the --data images)" in line and "held-out" not in line


def test_predict_a_folder_predicts_every_image_under_it(trained, digits_dir, tmp_path):
    import shutil

    output, _ = trained
    zero = sorted(os.listdir(os.path.join(digits_dir, "zero")))[:2]
    os.makedirs(tmp_path / "photos" / "nested")
    shutil.copy(os.path.join(digits_dir, "zero", zero[0]), tmp_path / "photos" / "a.png")
    shutil.copy(os.path.join(digits_dir, "zero", zero[1]), tmp_path / "photos" / "nested" / "b.PNG")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    out = _run(["predict", os.path.join(output, "digits", "train"), str(tmp_path / "photos"), "--top", "1"])
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        str(tmp_path / "photos" / "a.png"),
        str(tmp_path / "photos" / "nested" / "b.PNG"),
    ]
    os.makedirs(tmp_path / "empty")
    assert cli.main(["predict", os.path.join(output, "digits", "train"), str(tmp_path / "empty")]) == 1


def test_too_small_image_size_is_refused_before_the_scan(capsys, tmp_path):
    # A class folder without images: a scan would fail on it; the size is refused first.
    (tmp_path / "unscanned" / "a").mkdir(parents=True)
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tmp_path / "unscanned"),
                "--backbone",
                "mnist_cnn",
                "--weights",
                "none",
                "--image-size",
                "8",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "--image-size" in err and "at least 10x10" in err and "unscanned" not in err


def test_weights_given_a_whole_model_says_what_weights_takes(trained, digits_dir, capsys):
    output, _ = trained
    model = os.path.join(output, "digits", "train", "model.keras")
    assert (
        cli.main(
            [
                "train",
                "--data",
                digits_dir,
                "--backbone",
                "mnist_cnn",
                "--weights",
                model,
                "--output",
                output,
                "--name",
                "w",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 400, err
    assert "imagenet, none, or a .weights.h5" in err and f"--backbone {model}" in err


def test_backbone_from_a_keras_file_and_a_saved_model_folder(trained, digits_dir, tmp_path):
    output, _ = trained
    source = os.path.join(output, "digits", "train", "model.keras")
    out = _run(
        [
            "train",
            "--data",
            digits_dir,
            "--backbone",
            source,
            "--output",
            str(tmp_path),
            "--name",
            "own",
            "--head-epochs",
            "1",
            "--epochs",
            "1",
            "--no-augment",
        ]
    )
    assert "Stage 1" in out and "exported to" in out
    model, _ = workflows.load_trained(str(tmp_path / "own" / "train"))
    assert tuple(model.input.shape[1:]) == (28, 28, 1)

    class Features(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.normal((28 * 28 * 3, 16), stddev=0.05))

        @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 3), tf.float32)])
        def __call__(self, images):
            return tf.nn.relu(tf.reshape(images, (-1, 28 * 28 * 3)) @ self.kernel)

    module = str(tmp_path / "features_module")
    tf.saved_model.save(Features(), module)
    out = _run(
        [
            "train",
            "--data",
            digits_dir,
            "--backbone",
            module,
            "--image-size",
            "28",
            "--output",
            str(tmp_path),
            "--name",
            "hub",
            "--head-epochs",
            "1",
            "--epochs",
            "1",
            "--no-augment",
        ]
    )
    assert "Stage 1" in out
    model, _ = workflows.load_trained(str(tmp_path / "hub" / "train"))
    assert type(model.get_layer("backbone")).__name__ == "HubLayer"


def test_rerun_resumes_or_starts_fresh_on_another_configuration(mnist, tmp_path):
    import json

    small = str(tmp_path / "small")
    keep = np.isin(mnist.y, [0, 1, 2])
    write_image_folder(small, mnist.x[keep][:48].astype(np.uint8), mnist.y[keep][:48], CLASSES)
    output = str(tmp_path / "out")
    common = [
        "--data",
        small,
        "--weights",
        "none",
        "--output",
        output,
        "--batch-size",
        "16",
        "--no-augment",
        "--patience",
        "0",
    ]
    _run(["train", "--backbone", "mnist_mlp", "--epochs", "1", *common])
    run_dir = os.path.join(output, "small", "train")
    with open(os.path.join(run_dir, "run.json")) as handle:
        config = json.load(handle)
    assert config["backbone"] == "mnist_mlp" and config["class_names"] == sorted(CLASSES)
    assert config["image_size"] == [28, 28, 1] and config["weights"] is None

    # A crash after epoch 2 of 3 leaves a BackupAndRestore backup: the rerun says so and
    # runs epoch 3 only.
    model, _ = workflows.load_trained(run_dir)
    backup = os.path.join(run_dir, "all", "backup")
    os.makedirs(backup)
    model.save_weights(os.path.join(backup, "latest.weights.h5"))
    with open(os.path.join(backup, "training_metadata.json"), "w") as handle:
        json.dump({"epoch": 2}, handle)
    out = _run(["train", "--backbone", "mnist_mlp", "--epochs", "3", *common])
    assert f"Resuming the interrupted run in {run_dir} from epoch 3." in out
    assert "The method's settings changed since that run" in out and "'epochs': 3" in out
    assert "Epoch 3/3" in out and "Epoch 1/3" not in out

    # Another backbone: the old run is not loaded into the new model, and stays in place
    # until the new run has succeeded; then it is moved aside.
    out = _run(["train", "--backbone", "mnist_cnn", "--epochs", "1", *common])
    assert "belongs to another configuration (backbone 'mnist_mlp' -> 'mnist_cnn')" in out
    assert f"training in {run_dir}.next" in out
    assert f"This run is now in {run_dir}; the previous run is in {run_dir}.stale." in out
    assert os.path.exists(os.path.join(run_dir + ".stale", "run.json"))
    assert not os.path.exists(run_dir + ".next")

    # Other classes (a crash backup of a 3-class model, now 2 classes): fresh again.
    os.makedirs(os.path.join(run_dir, "all", "backup"), exist_ok=True)
    model, _ = workflows.load_trained(run_dir)
    model.save_weights(os.path.join(run_dir, "all", "backup", "latest.weights.h5"))
    with open(os.path.join(run_dir, "all", "backup", "training_metadata.json"), "w") as handle:
        json.dump({"epoch": 1}, handle)
    import shutil

    shutil.rmtree(os.path.join(small, "two"))
    out = _run(["train", "--backbone", "mnist_cnn", "--epochs", "1", *common])
    assert "classes 3 -> 2" in out and f"the previous run is in {run_dir}.stale2" in out
    assert workflows.load_trained(run_dir)[1] == ["one", "zero"]


def test_resnet50_end_to_end_with_a_weights_file(digits_dir, tmp_path):
    """ResNet50 from a local weights file: stage 2 leaves the frozen bottom untouched."""
    backbone = keras_transfer.build_backbone("resnet50", weights=None, input_shape=(32, 32, 3))
    weights = str(tmp_path / "resnet50.weights.h5")
    backbone.save_weights(weights)
    output = str(tmp_path / "out")
    out = _run(
        [
            "train",
            "--data",
            digits_dir,
            "--backbone",
            "resnet50",
            "--weights",
            weights,
            "--image-size",
            "32",
            "--output",
            output,
            "--name",
            "rn50",
            "--head-epochs",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--min-steps",
            "0",
        ]
    )
    assert "Stage 1" in out and "exported to" in out
    model, _ = workflows.load_trained(os.path.join(output, "rn50", "train"))
    trained_backbone = model.get_layer("backbone")
    # conv1 is in the frozen bottom 75%, conv5 (top) was fine-tuned.
    np.testing.assert_array_equal(
        trained_backbone.get_layer("conv1_conv").kernel.numpy(),
        backbone.get_layer("conv1_conv").kernel.numpy(),
    )
    assert not np.array_equal(
        trained_backbone.get_layer("conv5_block3_3_conv").kernel.numpy(),
        backbone.get_layer("conv5_block3_3_conv").kernel.numpy(),
    )
    # BatchNorm stayed frozen: its moving statistics are the file's.
    np.testing.assert_array_equal(
        trained_backbone.get_layer("conv5_block3_3_bn").moving_mean.numpy(),
        backbone.get_layer("conv5_block3_3_bn").moving_mean.numpy(),
    )
    assert os.path.exists(os.path.join(output, "rn50", "1", "saved_model.pb"))


def test_clear_errors(tmp_path, capsys):
    assert (
        cli.main(
            ["train", "--data", str(tmp_path / "missing"), "--backbone", "mnist_cnn", "--weights", "none"]
        )
        == 2  # refused with the other arguments, before any work
    )
    assert "missing" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="No Keras model"):
        workflows.load_trained(str(tmp_path))
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "x", "--tflite", "int4"])


def test_a_source_model_keeps_its_own_input(digits_dir, tmp_path):
    source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    result = workflows.train_from_folder(
        digits_dir,
        backbone=source,
        output=str(tmp_path),
        method=training.FineTune(head_epochs=1, epochs=1),
        export=False,
        log=None,
    )
    assert tuple(result.model.input.shape[1:]) == (28, 28, 1)
    with pytest.raises(ValueError, match="source model takes"):
        workflows.train_from_folder(
            digits_dir, backbone=source, image_size=32, output=str(tmp_path), log=None
        )


def test_a_one_stage_run_stopped_early_says_so(mnist, tmp_path):
    small = str(tmp_path / "small")
    keep = np.isin(mnist.y, [0, 1])
    write_image_folder(small, mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], CLASSES[:2])
    # A learning rate this large makes val_loss worse at once: patience 1 stops at epoch 2.
    out = _run(
        [
            "train",
            "--data",
            small,
            "--backbone",
            "mnist_mlp",
            "--weights",
            "none",
            "--output",
            str(tmp_path / "out"),
            "--epochs",
            "6",
            "--patience",
            "1",
            "--head-lr",
            "50",
            "--batch-size",
            "4",
            "--no-augment",
        ]
    )
    epochs_run = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert len(epochs_run) < 6, out[-2000:]
    assert f"Early stopping: stopped after epoch {len(epochs_run)} of 6" in out


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """3 classes of 60 random 32x32 crops of real colour photos (scikit-image)."""
    from testing import write_photo_crops

    root = str(tmp_path_factory.mktemp("photos") / "photos")
    write_photo_crops(root, size=32, per_class=60)
    return root


@pytest.mark.large
def test_batchnorm_from_random_weights_gives_a_usable_model_and_exports(photos_dir, tmp_path, capsys):
    """MobileNetV3 from random weights, 4 epochs: BatchNorm statistics (momentum 0.999)
    would stay near their initial values and every export would be at chance (1/3);
    they are re-estimated on the training images, and the run says so."""
    output = str(tmp_path / "out")
    result = workflows.train_from_folder(
        photos_dir,
        backbone="mobilenet_v3_small",
        weights=None,
        image_size=32,
        output=output,
        method=training.FineTune(head_epochs=0, epochs=4, batch_size=32),
        export=("float32",),
    )
    out = capsys.readouterr().out
    assert "Re-estimated BatchNorm statistics of 34 layers on 144 training images" in out
    accuracy = result.export.accuracy
    assert accuracy["keras"] >= 0.6, accuracy  # chance is 0.333
    assert accuracy["float32"] == pytest.approx(accuracy["keras"], abs=1e-9)
    # The SavedModel and the TFLite file give the Keras model's classes.
    model, names = result.model, result.class_names
    x, y = workflows.load_labelled_folder(photos_dir, model, names, log=None)
    keras_classes = model.predict(x, verbose=0).argmax(-1)
    served = tf.saved_model.load(result.export.saved_model).signatures["serve"]
    served_classes = served(images=tf.constant(x, tf.float32))["class_id"].numpy()
    tflite_classes = keras_transfer.TFLiteClassifier(result.export.tflite["float32"]).predict(x).argmax(-1)
    assert np.mean(served_classes == keras_classes) >= 0.99
    assert np.mean(tflite_classes == keras_classes) >= 0.99
    assert np.mean(keras_classes == y) >= 0.6
