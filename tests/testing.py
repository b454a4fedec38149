"""Shared checks for tests: config, .keras save/load, SavedModel export, and the contract
every transfer method passes (`run_method_contract`)."""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import keras_internals


def assert_config_round_trip(layer):
    """`from_config(get_config())` rebuilds a layer with the same config."""
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def assert_keras_round_trip(model, x, directory, atol=1e-6):
    """Saving to `.keras` and loading back gives the same predictions."""
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=atol)
    return loaded


def assert_saved_model_round_trip(path, model, x, input_name="images", atol=1e-5):
    """Every exported signature gives the Keras model's predictions and class names.

    `serve` takes `x` as float32; `serve_uint8` and `serving_default` (PNG bytes) take
    `x` rounded to uint8 and are compared with the model on those pixels. Returns the
    outputs of `serving_default`.
    """
    loaded = tf.saved_model.load(path)
    with open(os.path.join(path, "labels.txt")) as handle:
        names = np.array([line.rstrip("\n") for line in handle if line.strip()])
    x = np.asarray(x, np.float32)
    pixels = np.clip(np.round(x), 0, 255).astype(np.uint8)
    png = tf.stack([tf.io.encode_png(image) for image in pixels])
    expected = model.predict(x, verbose=0)
    expected_pixels = model.predict(pixels.astype(np.float32), verbose=0)
    calls = {
        "serve": ({input_name: tf.constant(x)}, expected),
        "serve_uint8": ({input_name: tf.constant(pixels)}, expected_pixels),
        "serving_default": ({"image_bytes": png}, expected_pixels),
    }
    for name, (inputs, want) in calls.items():
        outputs = loaded.signatures[name](**inputs)
        assert sorted(outputs) == ["class_id", "class_name", "probabilities"], (name, sorted(outputs))
        np.testing.assert_allclose(outputs["probabilities"].numpy(), want, atol=atol, err_msg=name)
        class_id = outputs["class_id"].numpy()
        np.testing.assert_array_equal(class_id, want.argmax(-1), err_msg=name)
        served_names = [n.decode("utf-8") for n in outputs["class_name"].numpy()]
        np.testing.assert_array_equal(served_names, names[class_id])
    return outputs


def _is_moving_statistic(model, weight):
    """BatchNorm moving statistics of a trainable BatchNorm layer: not trained, but
    updated by every training step."""
    for layer in keras_internals.flatten_layers(model, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            if any(weight is w for w in (layer.moving_mean, layer.moving_variance)):
                return True
    return False


def run_method_contract(method, model, train_data, directory, *, source=None, run_kwargs=None):
    """What every `TransferMethod` must do, checked on a tiny model and data (in the spirit
    of keras-hub's `run_task_test`):

    1. `method.run(model, train_data, **run_kwargs)` trains;
    2. exactly the weights `method.trainable_weights(model)` names changed (each of
       them), every other weight is bit-identical (BatchNorm moving statistics of
       trainable BatchNorm layers excepted: steps update them);
    3. `source` (a model the method was given) is untouched;
    4. the method's config rebuilds an equal method (`get_method`);
    5. the model to ship, `method.finalize(model)`, survives `.keras` save and load with
       the same predictions, and its SavedModel and TFLite exports predict what it does.

    Returns the finalised model.
    """
    from keras_transfer import export
    from keras_transfer.training import method as method_lib

    x = np.asarray(train_data[0][:8], np.float32) if isinstance(train_data, tuple) else None
    before = {id(w): np.array(w.numpy()) for w in model.weights}
    source_before = [np.array(w) for w in source.get_weights()] if source is not None else None
    method.run(model, train_data, **(run_kwargs or {}))
    trained = {id(w) for w in method.trainable_weights(model)}
    assert trained, f"{method!r} says it trains no weights"
    for weight in model.weights:
        changed = not np.array_equal(before[id(weight)], weight.numpy())
        if id(weight) in trained:
            assert changed, f"{method!r} says it trains {weight.path}, which did not change"
        elif not _is_moving_statistic(model, weight):
            assert not changed, f"{method!r} changed {weight.path}, which it does not train"
    if source is not None:
        for old, new in zip(source_before, source.get_weights()):
            np.testing.assert_array_equal(old, new, err_msg="the source model changed")
    rebuilt = method_lib.get_method(method_lib.method_config(method))
    assert rebuilt == method and rebuilt.get_config() == method.get_config()
    final = method.finalize(model)
    if x is not None:
        assert_keras_round_trip(final, x, directory, atol=1e-5)
        path = export.export_saved_model(final, os.path.join(directory, "saved"))
        served = tf.saved_model.load(path).signatures["serve"](images=tf.constant(x))
        np.testing.assert_allclose(served["probabilities"].numpy(), final.predict(x, verbose=0), atol=1e-5)
        tflite_path = export.export_tflite(final, os.path.join(directory, "model.tflite"))
        interpreter = export.TFLiteClassifier(tflite_path)
        np.testing.assert_allclose(interpreter.predict(x), final.predict(x, verbose=0), atol=1e-4)
    return final


# Image folders on disk (class-per-folder layout, real encoded files).


def write_image_folder(directory, images, labels, class_names, fmt="png"):
    """Writes images as files into `directory/<class_name>/<index>.<fmt>`; returns the paths.

    `images` (N, H, W) or (N, H, W, C) with C 1 or 3, values 0-255 (uint8, or floats such
    as the `mnist` fixture's, rounded); `labels` index into `class_names`. `fmt` is
    `"png"` (lossless: decoding gives the pixels back) or `"jpg"`/`"jpeg"` (tf.io
    encoders), `"bmp"` or `"gif"` (Pillow). Paths are returned in input order; file
    names carry the input index, so `sorted()` within a class is input order.
    """
    images = np.clip(np.round(np.asarray(images, np.float64)), 0, 255).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    fmt = fmt.lower().lstrip(".")
    for name in class_names:
        os.makedirs(os.path.join(directory, str(name)), exist_ok=True)
    width = max(5, len(str(len(images))))
    paths = []
    for index, (image, label) in enumerate(zip(images, labels)):
        path = os.path.join(directory, str(class_names[int(label)]), f"{index:0{width}d}.{fmt}")
        if fmt == "png":
            contents = tf.io.encode_png(image).numpy()
        elif fmt in ("jpg", "jpeg"):
            contents = tf.io.encode_jpeg(image, quality=95).numpy()
        elif fmt in ("bmp", "gif"):
            import io

            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format=fmt.upper())
            contents = buffer.getvalue()
        else:
            raise ValueError(f"fmt must be png, jpg, jpeg, bmp or gif. Received: fmt={fmt!r}")
        with open(path, "wb") as handle:
            handle.write(contents)
        paths.append(path)
    return paths


def write_truncated_png(path, image=None):
    """Writes the first half of a valid PNG's bytes (decoding fails: "Invalid PNG data")."""
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8)
    image = np.asarray(image, np.uint8)
    contents = tf.io.encode_png(image if image.ndim == 3 else image[..., None]).numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(contents[: len(contents) // 2])
    return path


def write_fake_image(path, contents=b"This is not an image, whatever its name says.\n"):
    """Writes non-image bytes under an image name (decoding fails: "Unknown image file
    format"); `contents=b""` writes an empty file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(contents)
    return path


def write_photo_crops(directory, size=32, per_class=60, seed=0):
    """Random square crops of three real colour photos (scikit-image's astronaut, coffee
    and chelsea), resized to `size` and written as PNGs to `directory/<photo>/<i>.png`.

    Returns the class names. Crops span 2 * `size` pixels to half the photo's short side,
    so a class is one photo seen at many places and scales (real textures and colours).
    """
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = {
        "astronaut": skimage.data.astronaut(),
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
    }
    for name, photo in photos.items():
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        height, width = photo.shape[:2]
        for i in range(per_class):
            side = int(rng.integers(2 * size, min(height, width) // 2))
            top, left = rng.integers(0, height - side), rng.integers(0, width - side)
            crop = tf.image.resize(photo[top : top + side, left : left + side], (size, size), antialias=True)
            crop = tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), tf.uint8)
            tf.io.write_file(os.path.join(directory, name, f"{i}.png"), tf.io.encode_png(crop))
    return sorted(photos)
