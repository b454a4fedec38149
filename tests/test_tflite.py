import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import data
from keras_transfer import tflite


@pytest.fixture(scope="module")
def trained(mnist):
    """The MNIST CNN trained on 3,500 real digits; the other 1,500 held out."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    x_train, y_train = mnist.x[:3500], mnist.y[:3500]
    keras_transfer.train(model, (x_train, y_train), epochs=2, batch_size=64, verbose=0)
    x_test, y_test = mnist.x[3500:], mnist.y[3500:]
    probabilities = model.predict(x_test, verbose=0)
    return {
        "model": model,
        "train": (x_train, y_train),
        "test": (x_test, y_test),
        "probabilities": probabilities,
        "accuracy": float(np.mean(probabilities.argmax(-1) == y_test)),
    }


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    model, (x_train, _) = trained["model"], trained["train"]
    return {
        "float32": tflite.export_tflite(model, str(folder / "model.tflite")),
        "int8": tflite.export_tflite(
            model, str(folder / "model_int8.tflite"), quantization="int8", representative_data=x_train
        ),
    }


def test_float_file_matches_keras(trained, files):
    x_test, y_test = trained["test"]
    runner = tflite.TFLiteClassifier(files["float32"])
    assert (runner.input_dtype, runner.output_dtype) == ("float32", "float32")
    assert runner.input_shape == (None, 28, 28, 1)
    np.testing.assert_allclose(runner.predict(x_test), trained["probabilities"], atol=1e-4)
    assert tflite.evaluate_tflite(files["float32"], x_test, y_test) == trained["accuracy"]


def test_int8_loses_at_most_one_point_on_held_out_digits(trained, files):
    x_test, y_test = trained["test"]
    assert trained["accuracy"] > 0.9
    accuracy = tflite.evaluate_tflite(files["int8"], x_test, y_test)
    assert accuracy >= trained["accuracy"] - 0.01, (accuracy, trained["accuracy"])


def test_int8_file_is_integer_and_about_four_times_smaller(files):
    runner = tflite.TFLiteClassifier(files["int8"])
    assert (runner.input_dtype, runner.output_dtype) == ("uint8", "uint8")
    # Calibration images span 0-255: raw uint8 pixels go in unchanged.
    assert runner.input_quantization == (1.0, 0)
    assert runner.output_quantization == (1 / 256, 0)
    signatures = runner.interpreter.get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["images"], "outputs": ["probabilities"]}}
    ratio = os.path.getsize(files["float32"]) / os.path.getsize(files["int8"])
    assert 3.5 < ratio < 4.5, ratio


def test_int8_calibrated_from_a_tf_data_pipeline(trained, tmp_path):
    x_train, y_train = trained["train"]
    x_test, y_test = trained["test"]
    pipeline = data.make_dataset(x_train, y_train, batch_size=32, shuffle=True, seed=0)
    path = tflite.export_tflite(
        trained["model"],
        str(tmp_path / "sub" / "m.tflite"),
        quantization="int8",
        representative_data=pipeline,
        num_calibration_samples=100,
    )
    assert os.listdir(tmp_path / "sub") == ["m.tflite"]  # the folder is made, no staging left
    accuracy = tflite.evaluate_tflite(path, x_test, y_test)
    assert accuracy >= trained["accuracy"] - 0.01, (accuracy, trained["accuracy"])
    # A dataset of (images, labels) batches evaluates like the arrays.
    test_pipeline = data.make_dataset(x_test, y_test, batch_size=100)
    assert tflite.evaluate_tflite(path, test_pipeline) == accuracy


@pytest.mark.parametrize("quantization", ["float16", "dynamic"])
def test_weight_only_quantizations_keep_float_io(trained, files, quantization, tmp_path):
    x_test, _ = trained["test"]
    path = tflite.export_tflite(trained["model"], str(tmp_path / "m.tflite"), quantization=quantization)
    runner = tflite.TFLiteClassifier(path)
    assert (runner.input_dtype, runner.output_dtype) == ("float32", "float32")
    assert os.path.getsize(path) < 0.6 * os.path.getsize(files["float32"])
    predicted = runner.predict(x_test[:200]).argmax(-1)
    assert np.mean(predicted == trained["probabilities"][:200].argmax(-1)) >= 0.98


def test_batching_does_not_change_predictions(trained, files):
    x_test, _ = trained["test"]
    runner = tflite.TFLiteClassifier(files["int8"])
    whole = runner.predict(x_test[:50])
    np.testing.assert_array_equal(runner.predict(x_test[:50], batch_size=7), whole)
    np.testing.assert_array_equal(runner.predict(x_test[:1, ..., 0]), whole[:1])  # (N, H, W)
    assert runner.predict(x_test[:0]).shape == (0, 10)


def test_the_file_is_replaced_atomically(trained, files, tmp_path, monkeypatch):
    path = str(tmp_path / "m.tflite")
    tflite.export_tflite(trained["model"], path)
    before = open(path, "rb").read()

    def broken(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)  # the rename in utils.files.atomic_path
    with pytest.raises(OSError, match="disk full"):
        tflite.export_tflite(trained["model"], path, quantization="dynamic")
    assert os.listdir(tmp_path) == ["m.tflite"] and open(path, "rb").read() == before


def test_bad_arguments(trained, files, tmp_path):
    model, path = trained["model"], str(tmp_path / "m.tflite")
    with pytest.raises(ValueError, match=r"quantization must be one of.*Received: quantization='int4'"):
        tflite.export_tflite(model, path, quantization="int4")
    with pytest.raises(ValueError, match="representative_data"):
        tflite.export_tflite(model, path, quantization="int8")
    with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*Received: images of shape \(32, 32, 3\)"):
        tflite.export_tflite(model, path, quantization="int8", representative_data=np.zeros((4, 32, 32, 3)))
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="empty"):
        tflite.export_tflite(model, path, quantization="int8", representative_data=empty)
    with pytest.raises(ValueError, match="num_calibration_samples"):
        tflite.export_tflite(
            model, path, quantization="int8", representative_data=trained["train"], num_calibration_samples=0
        )
    assert not os.path.exists(path)
    runner = tflite.TFLiteClassifier(files["float32"])
    with pytest.raises(ValueError, match=r"Received: x.shape=\(2, 32, 32, 3\)"):
        runner.predict(np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="same length"):
        tflite.evaluate_tflite(runner, np.zeros((3, 28, 28, 1)), [0, 1])


@pytest.fixture(scope="module")
def mixed(mnist):
    """The MNIST CNN built and trained under mixed_bfloat16 (policy restored after)."""
    from keras_transfer import performance

    keras.utils.set_random_seed(0)
    performance.set_precision("mixed_bfloat16")
    try:
        model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
        keras_transfer.train(model, (mnist.x[:2000], mnist.y[:2000]), epochs=1, batch_size=64, verbose=0)
    finally:
        performance.set_precision("float32")
    assert model.get_layer("backbone").compute_dtype == "bfloat16"
    return model


def test_mixed_bfloat16_models_export_float32_and_int8(mixed, mnist, tmp_path):
    from keras_transfer import workflows

    x, y = mnist.x[3500:4000], mnist.y[3500:4000]
    expected = mixed.predict(x, verbose=0).argmax(-1)
    assert np.mean(expected == y) > 0.8
    result = workflows.export_model(
        mixed,
        str(tmp_path / "digits"),
        class_names=[str(i) for i in range(10)],
        tflite=("float32", "int8"),
        calibration_data=mnist.x[:2000],
        eval_data=(x, y),
        log=None,
    )
    for kind, least in (("float32", 0.98), ("int8", 0.95)):
        runner = tflite.TFLiteClassifier(result.tflite[kind])
        agreement = np.mean(runner.predict(x).argmax(-1) == expected)
        assert agreement >= least, (kind, agreement)
    # The SavedModel serves the mixed model itself.
    served = tf.saved_model.load(result.saved_model).signatures["serve"]
    outputs = served(images=tf.constant(x, tf.float32))
    assert np.mean(outputs["class_id"].numpy() == expected) >= 0.98
    np.testing.assert_allclose(outputs["probabilities"].numpy(), mixed.predict(x, verbose=0), atol=2e-2)
    # The float32 copy computes the mixed model's function in float32.
    copy = tflite.float32_copy(mixed)
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    np.testing.assert_allclose(copy.predict(x[:64], verbose=0), mixed.predict(x[:64], verbose=0), atol=2e-2)


def test_a_failed_conversion_leaves_no_tflite_folder_and_a_short_error(trained, tmp_path, monkeypatch):
    from keras_transfer import workflows

    def broken(*args, **kwargs):
        raise RuntimeError("\n".join(f"error: op {i} cannot be converted" for i in range(200)))

    monkeypatch.setattr(tflite, "_convert", broken)
    base = tmp_path / "digits"
    with pytest.raises(tflite.TFLiteConversionError) as info:
        workflows.export_model(trained["model"], str(base), tflite=("float32",), log=None)
    message = str(info.value)
    assert "TFLite conversion (float32)" in message and len(message.splitlines()) <= 6, message
    assert "op 199" in info.value.details and isinstance(info.value, ValueError)
    assert not os.path.exists(base / "tflite")  # no tflite/1/, no staging folder left
    assert os.path.exists(base / "1" / "saved_model.pb")  # the SavedModel is complete
