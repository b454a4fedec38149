"""Bad input and faults: exports, images and weights files (the README's E rows)."""

import os
import struct
import threading
import time
import warnings
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import images
from keras_transfer import saving
from keras_transfer import workflows
from keras_transfer.data import image_folder
from keras_transfer.export import saved_model
from keras_transfer.export import tflite


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_png(width=15000, height=15000):
    """A valid grayscale PNG of `width` x `height` zero pixels: 218 KB of zlib-compressed rows."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _png(value=0, size=28):
    return tf.io.encode_png(tf.fill((size, size, 1), tf.constant(value, tf.uint8))).numpy()


@pytest.fixture(scope="module")
def huge_png():
    contents = _huge_png()
    assert len(contents) < 300_000  # small on disk, 225 megapixels decoded
    return contents


@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(0)
    return keras_transfer.build_classifier("mnist_mlp", 3, weights=None)


@pytest.fixture(scope="module")
def serving(mlp, tmp_path_factory):
    path = keras_transfer.export_saved_model(mlp, str(tmp_path_factory.mktemp("served") / "digits"))
    return tf.saved_model.load(path).signatures["serving_default"]


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.fault("E01")
def test_export_saved_model_refuses_an_empty_base_dir(mlp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"base_dir must name the model's folder .* Received: base_dir=''"):
        keras_transfer.export_saved_model(mlp, "")
    assert os.listdir(tmp_path) == []  # no version "1" in the working folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        keras_transfer.export_saved_model(mlp, str(tmp_path / "file"))


@pytest.mark.fault("E02")
def test_export_tflite_refuses_a_folder_or_empty_path_before_converting(mlp, tmp_path, monkeypatch):
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted before checking the path")

    monkeypatch.setattr(tflite, "_convert", no_conversion)
    for path in ("", str(tmp_path), str(tmp_path) + os.sep, str(tmp_path / "..")):
        with pytest.raises(ValueError, match=r"path must name the \.tflite file to write"):
            keras_transfer.export_tflite(mlp, path)
    assert os.listdir(tmp_path) == []


@pytest.mark.fault("E03")
def test_two_exports_at_once_into_one_folder_both_land_in_distinct_versions(tmp_path, monkeypatch):
    base = str(tmp_path / "digits")
    models = [keras_transfer.build_classifier("mnist_mlp", 3, weights=None) for _ in range(2)]
    # Force the race: both exports read "next version = 1" before either claims it.
    real_next_version = saved_model.next_version
    barrier = threading.Barrier(2, timeout=60)
    first_call = set()

    def racing_next_version(directory):
        version = real_next_version(directory)
        if threading.get_ident() not in first_call:
            first_call.add(threading.get_ident())
            barrier.wait()
        return version

    monkeypatch.setattr(saved_model, "next_version", racing_next_version)
    results, failures = {}, []

    def run(index):
        try:
            results[index] = keras_transfer.export_saved_model(
                models[index], base, class_names=[f"m{index}a", f"m{index}b", f"m{index}c"]
            )
        except BaseException as error:  # noqa: BLE001 (reported below)
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sorted(os.path.basename(path) for path in results.values()) == ["1", "2"]
    assert sorted(os.listdir(base)) == ["1", "2"]  # no claim or staging folder left
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    for index, path in results.items():
        assert keras_transfer.export.read_labels(path) == [f"m{index}a", f"m{index}b", f"m{index}c"]
        served = tf.saved_model.load(path).signatures["serve"](images=tf.constant(x))["probabilities"]
        np.testing.assert_allclose(served.numpy(), models[index].predict(x, verbose=0), atol=1e-5)


@pytest.mark.fault("E04")
def test_an_existing_export_version_raises_before_any_export_work(mlp, tmp_path, monkeypatch):
    base = tmp_path / "digits"
    (base / "3").mkdir(parents=True)
    (base / "3" / "saved_model.pb").write_bytes(b"the version being served")

    def no_export(*args, **kwargs):
        raise AssertionError("export work started")

    monkeypatch.setattr(saved_model.keras.export, "ExportArchive", no_export)
    with pytest.raises(
        FileExistsError, match=r"Version 3 exists already at .*digits.3; it is never overwritten"
    ):
        keras_transfer.export_saved_model(mlp, str(base), version=3)
    (base / ".4.claim").mkdir()  # another export is writing version 4
    with pytest.raises(FileExistsError, match=r"Version 4 is being exported by another process"):
        keras_transfer.export_saved_model(mlp, str(base), version=4)
    assert (base / "3" / "saved_model.pb").read_bytes() == b"the version being served"
    assert sorted(os.listdir(base)) == [".4.claim", "3"]


@pytest.mark.fault("E05")
def test_scan_skips_an_image_above_the_pixel_limit_without_decoding_it(huge_png, tmp_path):
    for name, value in (("dark", 0), ("light", 255)):
        (tmp_path / name).mkdir()
        for i in range(2):
            (tmp_path / name / f"{i}.png").write_bytes(_png(value))
    huge = tmp_path / "light" / "huge.png"
    huge.write_bytes(huge_png)
    start = time.time()
    folder = image_folder.scan_image_folder(str(tmp_path), verbose=False)
    assert time.time() - start < 20  # decoding it took 44 s and 4.3 GB
    assert folder.class_counts == {"dark": 2, "light": 2}
    [(path, reason)] = folder.skipped
    assert path == str(huge)
    assert reason.startswith("The image is 15000x15000 pixels (225000000 pixels), above max_pixels=50000000")
    # The limit is an argument; the header is read the same way for each format.
    assert [int(v) for v in images.image_header(huge_png)] == [0, 15000, 15000, 1]
    with pytest.raises(
        ValueError,
        match=r"max_pixels must be a positive integer or None \(no limit\). Received: max_pixels=0",
    ):
        image_folder.scan_image_folder(str(tmp_path), max_pixels=0, verbose=False)


@pytest.mark.fault("E06")
def test_serving_signature_rejects_an_image_above_the_pixel_limit_naming_the_item(serving, huge_png):
    start = time.time()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is 15000x15000 pixels"):
        serving(image_bytes=tf.constant([_png(), huge_png, _png()]))
    assert time.time() - start < 20
    out = serving(image_bytes=tf.constant([_png(), _png(255)]))  # still serves good batches
    assert out["probabilities"].shape == (2, 3)


@pytest.mark.fault("E07")
def test_serving_batch_with_a_non_image_item_says_which_item(serving):
    batch = tf.constant([_png(), _png(), b"<html>not an image</html>", _png()])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"image_bytes\[2\] is not a PNG, JPEG, GIF or BMP image"
    ):
        serving(image_bytes=batch)


@pytest.mark.fault("E08")
def test_serving_batch_with_a_truncated_png_says_which_item(serving):
    cut = _png(128)[:-30]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is a PNG file cut short \(truncated\)"
    ):
        serving(image_bytes=tf.constant([_png(), cut]))


@pytest.mark.fault("E09")
def test_strict_transfer_weights_failure_leaves_the_target_unchanged():
    source = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    target = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)  # head differs
    before = _weights(target)
    with pytest.raises(ValueError, match=r"Strict weight transfer failed \(nothing was copied\)"):
        keras_transfer.transfer_weights(source, target, strict=True)
    assert _same(before, _weights(target))  # conv1, conv2, fc1 were overwritten before


@pytest.mark.fault("E10")
def test_an_exclude_pattern_that_matches_no_layer_is_reported():
    source = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    target = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    with pytest.warns(UserWarning, match=r"exclude patterns matched no target layer.*\['prediction'\]"):
        report = keras_transfer.transfer_weights(source, target, exclude=["prediction", "fc1"])
    assert report.unmatched_exclude == ["prediction"]
    assert report.copied == ["predictions"]  # the typo excluded nothing
    assert "exclude patterns that matched no layer: prediction" in str(report)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_transfer.transfer_weights(source, target, exclude="predictions")  # matches: no warning
    with pytest.raises(ValueError, match=r"exclude pattern 'prediction' matched no target layer"):
        keras_transfer.transfer_weights(source, target, exclude="prediction", strict=True)


@pytest.mark.fault("E11")
def test_weights_file_of_another_architecture_names_the_file_and_leaves_the_model(tmp_path):
    path = str(tmp_path / "cnn.weights.h5")
    keras_transfer.build_backbone("mnist_cnn", weights=None).save_weights(path)
    with pytest.raises(ValueError, match=r"cnn\.weights\.h5 does not fit backbone 'mnist_mlp'.*shape"):
        keras_transfer.build_classifier("mnist_mlp", 3, weights=path)

    def two_layers(classes):
        layers = [keras.layers.Dense(8, name="fc1"), keras.layers.Dense(classes, name="head")]
        return keras.Sequential([keras.Input((4,))] + layers)

    two_layers(3).save_weights(path)  # fc1 fits a 5-class model, its head does not
    target = two_layers(5)
    before = _weights(target)
    with pytest.raises(ValueError, match=r"cnn\.weights\.h5 does not fit the model .*transfer_weights"):
        saving.load_weights(target, path)
    assert _same(before, _weights(target))  # Keras had loaded fc1 before raising


@pytest.mark.fault("E12")
def test_a_text_file_named_weights_h5_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "x.weights.h5"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match=r"x\.weights\.h5 is not an HDF5 file \(it starts with b'these a"):
        keras_transfer.build_classifier("mnist_cnn", 3, weights=str(path))


@pytest.mark.fault("E13")
def test_an_empty_hub_handle_is_refused(tmp_path):
    for backbone in ("hub:", "hub:   "):
        with pytest.raises(ValueError, match=r"needs a handle after 'hub:'.* Received: backbone='hub:"):
            keras_transfer.build_classifier(backbone, 3)
    with pytest.raises(ValueError, match=r"handle must be a TF Hub / Kaggle URL .* Received: handle=''"):
        keras_transfer.hub.HubLayer("")


@pytest.mark.fault("E14")
def test_predicting_with_a_tflite_file_without_labels_txt_says_what_to_do(mlp, tmp_path):
    model_file = keras_transfer.export_tflite(mlp, str(tmp_path / "model.tflite"))
    image = tmp_path / "a.png"
    image.write_bytes(_png())
    with pytest.raises(
        FileNotFoundError, match=r"No labels.txt in .*: the class names of a SavedModel or \.tflite"
    ):
        workflows.predict_files(model_file, [str(image)])
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    [prediction] = workflows.predict_files(model_file, [str(image)], top=1)
    assert prediction.error is None and prediction.top[0][0] in ("a", "b", "c")


@pytest.mark.fault("E15")
def test_a_truncated_keras_file_names_the_file(mlp, tmp_path):
    path = tmp_path / "model.keras"
    mlp.save(path)
    contents = path.read_bytes()
    path.write_bytes(contents[: len(contents) // 2])
    with pytest.raises(ValueError, match=r"model\.keras is truncated or corrupt: .*save the model again"):
        keras_transfer.load_model(str(path))
    with pytest.raises(ValueError, match=r"model\.keras is truncated or corrupt"):
        workflows.load_trained(str(path))
    with pytest.raises(ValueError, match=r"model\.keras is truncated or corrupt"):
        keras_transfer.build_classifier(str(path), 3)


@pytest.mark.fault("E16")
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn_on", "onednn_off"])
def test_bfloat16_inference_is_decided_by_the_cpu_flags_not_by_this_machine(monkeypatch, onednn):
    from keras_transfer import inference
    from keras_transfer import performance

    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    monkeypatch.setattr(performance, "_onednn_enabled", lambda: onednn)
    cpus = {
        "amx": {"avx2", "avx512f", "amx_tile", "amx_bf16", "avx512_bf16"},
        "avx512_bf16 (AMD Zen 4)": {"avx2", "avx512f", "avx512_bf16"},
        "avx2 only": {"avx2", "fma"},
    }
    for cpu, flags in cpus.items():
        monkeypatch.setattr(performance, "_cpu_flags", lambda flags=flags: set(flags))
        native = cpu != "avx2 only"
        assert performance.has_amx() == (cpu == "amx"), cpu
        assert performance.bf16_supported() == (native and onednn), cpu
        if native and onednn:
            assert performance.bf16_unsupported_reason() is None
            continue
        expected = "no native bfloat16" if onednn else "oneDNN kernels are off"
        with pytest.raises(RuntimeError, match=expected):
            inference.optimize_for_inference(model, precision="bfloat16")
