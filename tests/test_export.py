import gc
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing import assert_saved_model_round_trip

import keras_transfer
from keras_transfer import export
from keras_transfer import images

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


@pytest.fixture(scope="module")
def model():
    return keras_transfer.build_classifier("mnist_cnn", 5, weights=None)


@pytest.fixture(scope="module")
def served(mnist, tmp_path_factory):
    """A small MLP trained on 2,000 real digits, exported once with digit names."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    keras_transfer.train(model, (mnist.x[:2000], mnist.y[:2000]), epochs=2, verbose=0)
    base = str(tmp_path_factory.mktemp("served") / "digits")
    path = keras_transfer.export_saved_model(model, base, class_names=DIGIT_NAMES)
    return model, path, tf.saved_model.load(path).signatures


def test_tf_serving_layout_and_same_predictions(model, mnist, tmp_path):
    base = str(tmp_path / "digits")
    names = ["five", "six", "seven", "eight", "nine"]
    first = keras_transfer.export_saved_model(model, base, class_names=names)
    second = keras_transfer.export_saved_model(model, base)
    assert first == os.path.join(base, "1") and second == os.path.join(base, "2")
    assert os.path.exists(os.path.join(first, "saved_model.pb"))
    assert export.read_labels(first) == names and export.read_labels(second) == ["0", "1", "2", "3", "4"]
    assert_saved_model_round_trip(first, model, mnist.x[:20])
    assert sorted(os.listdir(base)) == ["1", "2"]  # no staging left over


def test_saved_model_cli_lists_three_named_signatures(served):
    _, path, _ = served
    out = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"], capture_output=True, text=True, check=True
    ).stdout
    blocks = {block.split("']", 1)[0]: block for block in out.split("signature_def['")[1:]}
    assert set(export.SIGNATURES) <= set(blocks)
    inputs = {
        "serving_default": ("image_bytes", "DT_STRING"),
        "serve": ("images", "DT_FLOAT"),
        "serve_uint8": ("images", "DT_UINT8"),
    }
    for name, (input_name, dtype) in inputs.items():
        block = blocks[name]
        assert f"inputs['{input_name}']" in block and f"dtype: {dtype}" in block
        for output in ("probabilities", "class_id", "class_name"):
            assert f"outputs['{output}']" in block, (name, output)
    assert "output_0" not in out


def test_saved_model_cli_runs_serve_on_npy_pixels(served, mnist, tmp_path):
    model, path, _ = served
    x = mnist.x[:8].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outdir = tmp_path / "out"
    subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serve",
            "--inputs",
            f"images={tmp_path / 'x.npy'}",
            "--outdir",
            str(outdir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.load(outdir / "probabilities.npy"), expected, atol=1e-5)
    np.testing.assert_array_equal(np.load(outdir / "class_id.npy"), expected.argmax(-1))


def test_served_png_bytes_give_the_keras_class_and_name(served, mnist):
    model, _, signatures = served
    x, y = mnist.x[4000:4200], mnist.y[4000:4200]
    png = tf.stack([tf.io.encode_png(image) for image in x.astype(np.uint8)])
    outputs = signatures["serving_default"](image_bytes=png)
    decoded = images.decode_images(png, 28, channels=1).numpy()
    np.testing.assert_array_equal(decoded, x)  # PNG is lossless: the training pixels
    expected = model.predict(decoded, verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert outputs["class_id"].dtype == tf.int64 and outputs["class_name"].dtype == tf.string
    np.testing.assert_array_equal(outputs["class_id"].numpy(), expected.argmax(-1))
    names = outputs["class_name"].numpy().astype(str)
    assert list(names) == [DIGIT_NAMES[i] for i in expected.argmax(-1)]
    assert np.mean(names == np.array(DIGIT_NAMES)[y]) > 0.85  # real digits, right names


def test_jpeg_and_other_sizes_and_colours_are_decoded_in_the_graph(served, mnist):
    model, _, signatures = served
    x = mnist.x[4200:4232].astype(np.uint8)
    jpeg = [tf.io.encode_jpeg(image, quality=90) for image in x]
    # Colour images twice the size: decoded to grayscale and resized to 28x28.
    rgb = tf.cast(tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(x[:4])), (56, 56)), tf.uint8)
    big = [tf.io.encode_png(image) for image in rgb]
    batch = tf.stack(jpeg + big)
    outputs = signatures["serving_default"](image_bytes=batch)
    expected = model.predict(images.decode_images(batch, 28, channels=1).numpy(), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(outputs["class_id"].numpy(), expected.argmax(-1))
    # JPEG is lossy, but the class of the original pixels survives.
    original = model.predict(x.astype(np.float32), verbose=0).argmax(-1)
    assert np.mean(outputs["class_id"].numpy()[:32] == original) >= 0.9


def test_uint8_and_float_signatures_agree(served, mnist):
    _, _, signatures = served
    pixels = mnist.x[:64].astype(np.uint8)
    as_float = signatures["serve"](images=tf.constant(pixels, tf.float32))
    as_uint8 = signatures["serve_uint8"](images=tf.constant(pixels))
    np.testing.assert_allclose(as_uint8["probabilities"], as_float["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(as_uint8["class_id"], as_float["class_id"])
    np.testing.assert_array_equal(as_uint8["class_name"], as_float["class_name"])


def test_the_saved_model_runs_without_the_keras_model(mnist, tmp_path):
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    path = keras_transfer.export_saved_model(model, str(tmp_path / "m"))
    x = mnist.x[:16]
    expected = model.predict(x, verbose=0)
    del model
    gc.collect()
    keras.backend.clear_session()
    outputs = tf.saved_model.load(path).signatures["serve"](images=tf.constant(x))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)


def test_top_k_outputs(model, mnist, tmp_path):
    names = ["a", "b", "c", "d", "e"]
    path = keras_transfer.export_saved_model(model, str(tmp_path / "m"), class_names=names, top_k=3)
    x = mnist.x[:10]
    signatures = tf.saved_model.load(path).signatures
    for name in export.SIGNATURES:
        assert {"top_k_probabilities", "top_k_class_ids", "top_k_class_names"} <= set(
            signatures[name].structured_outputs
        )
    outputs = signatures["serve"](images=tf.constant(x))
    probabilities = outputs["probabilities"].numpy()
    best = np.argsort(-probabilities, axis=-1)[:, :3]
    np.testing.assert_array_equal(outputs["top_k_class_ids"].numpy(), best)
    np.testing.assert_allclose(
        outputs["top_k_probabilities"].numpy(), np.take_along_axis(probabilities, best, -1), atol=1e-7
    )
    assert outputs["top_k_class_names"].numpy().astype(str).tolist() == np.array(names)[best].tolist()


def test_the_version_folder_follows_the_umask(model, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = keras_transfer.export_saved_model(model, str(tmp_path / "m"))
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask


def test_existing_versions_are_never_touched(model, tmp_path):
    base = str(tmp_path / "m")
    path = keras_transfer.export_saved_model(model, base, version=3)
    stamp = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    with pytest.raises(FileExistsError, match="never overwritten"):
        keras_transfer.export_saved_model(model, base, version=3)
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == stamp
    assert export.next_version(base) == 4


def test_a_failed_export_leaves_nothing(model, tmp_path, monkeypatch):
    import tensorflow as tf

    def broken(*args, **kwargs):
        os.makedirs(os.path.join(args[1], "variables"), exist_ok=True)  # half-written
        raise RuntimeError("disk full")

    base = str(tmp_path / "m")
    keras_transfer.export_saved_model(model, base)
    monkeypatch.setattr(tf.saved_model, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        keras_transfer.export_saved_model(model, base)
    assert os.listdir(base) == ["1"]


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="5 classes but 2 class names"):
        keras_transfer.export_saved_model(model, str(tmp_path), class_names=["a", "b"])
    with pytest.raises(ValueError, match="version"):
        keras_transfer.export_saved_model(model, str(tmp_path), version=0)
    with pytest.raises(ValueError, match="single-line"):
        keras_transfer.export_saved_model(model, str(tmp_path), class_names=["a", "b\nc", "d", "e", "f"])
    with pytest.raises(ValueError, match=r"top_k must be .*Received: top_k=6"):
        keras_transfer.export_saved_model(model, str(tmp_path), top_k=6)
    any_size = keras_transfer.build_classifier("mnist_mlp", 2, weights=None, input_shape=(28, 28, 2))
    with pytest.raises(ValueError, match=r"1 or 3 channels.*Received"):
        keras_transfer.export_saved_model(any_size, str(tmp_path))
    assert os.listdir(tmp_path) == []  # nothing written for refused exports
