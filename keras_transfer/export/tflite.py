"""TFLite (LiteRT) export, float32 or quantised, and a runner on the LiteRT interpreter.

`export_tflite` converts a Keras 3 model the way Keras's own `format="litert"` export
does (an `ExportArchive` SavedModel, then `tf.lite.TFLiteConverter.from_saved_model`),
with TFLite built-in ops only, so the file runs on the plain LiteRT runtime, and with
named tensors: input `images`, output `probabilities`. `TFLiteClassifier` runs such a
file with `ai_edge_litert` (the successor of `tf.lite.Interpreter`), taking float
pixels and returning float scores whatever the file's input and output types.
"""

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import checks
from keras_transfer.utils import files
from keras_transfer.utils import keras_internals

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


def export_tflite(
    model,
    path,
    *,
    quantization=None,
    representative_data=None,
    num_calibration_samples=200,
    seed=0,
    verbose=False,
):
    """Converts a Keras classifier to a TFLite (LiteRT) file, written atomically.

    The file has one signature, `serving_default`, from input `images` (the model's
    input shape, any batch size) to output `probabilities` (the model's scores). The
    model's preprocessing is inside it, so it takes raw pixels (0-255) like the Keras
    model. Only TFLite built-in ops are used (no Flex / Select TF ops).

    Quantization:

    - `None`: float32 weights and activations; predictions equal the Keras model's
      up to float rounding.
    - `"float16"`: float16 weights (about half the size), float32 input and output.
    - `"dynamic"`: int8 weights, float activations (dynamic-range quantization),
      float32 input and output. No calibration needed.
    - `"int8"`: full-integer quantization, every op in int8 (for integer-only
      accelerators and microcontrollers), calibrated on `representative_data`. The
      input and output tensors are **uint8**: the input's scale and zero point map
      pixels, and when the calibration images span 0-255 they are exactly `1.0` and
      `0`, so raw uint8 camera pixels go in unchanged; the output is dequantized as
      `(q - zero_point) * scale` (scale 1/256 for softmax probabilities).
      `TFLiteClassifier` does both conversions. About 4x smaller than float32.

    Calibration takes `num_calibration_samples` images: a random sample (drawn with
    `seed`) of an array, or the first images of a `tf.data.Dataset` (shuffle it first
    if it is sorted by class), fed one at a time through a `tf.data` pipeline.

    A mixed-precision model (`set_precision("mixed_bfloat16")`) is converted from a
    float32 copy with its weights (`float32_copy`): bf16 has no TFLite kernels. A
    conversion that fails raises `TFLiteConversionError` (a `ValueError`) with a short
    message; the converter's full output is in its `.details`.

    The file is written beside `path` under a temporary name and renamed into place,
    so a failed conversion leaves nothing and a reader never sees a partial file; an
    existing file at `path` is replaced. In a multi-worker `tf.distribute` run only the
    chief's file is kept (see `keras_transfer.utils.files.atomic_path`).

    Args:
        model: `keras.Model` with one input, e.g. from `build_classifier`.
        path: str. The `.tflite` file to write.
        quantization: `None`, `"float16"`, `"dynamic"` or `"int8"`. Defaults to
            `None` (float32).
        representative_data: calibration images for `"int8"` (ignored otherwise): an
            array `(N, H, W, C)` of raw pixels, a tuple `(x, y)`, or a
            `tf.data.Dataset` of images or of `(images, labels)`, batched or not.
        num_calibration_samples: int. Images used for calibration. Defaults to `200`.
        seed: int. Seed of the random sample drawn from an array. Defaults to `0`.
        verbose: bool. Print the file's size and the conversion time. Defaults to
            `False`.

    Returns:
        str. `path`.

    Raises:
        ValueError: an empty `path` or one that is a folder (checked before the
            conversion), an unknown `quantization`, `"int8"` without (or with empty)
            `representative_data`, calibration images of the wrong shape, a model
            with several inputs, or a bad `num_calibration_samples`.

    Example:

    >>> import os, tempfile, numpy as np, keras_transfer
    >>> from keras_transfer import tflite
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> folder = tempfile.mkdtemp()
    >>> float_file = tflite.export_tflite(model, os.path.join(folder, "model.tflite"))
    >>> x = np.random.default_rng(0).uniform(0, 255, (32, 28, 28, 1))
    >>> int8_file = tflite.export_tflite(
    ...     model, os.path.join(folder, "model_int8.tflite"), quantization="int8",
    ...     representative_data=x, num_calibration_samples=32)
    >>> os.path.getsize(float_file) > 3 * os.path.getsize(int8_file)
    True
    >>> tflite.TFLiteClassifier(int8_file).input_dtype
    'uint8'
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"quantization must be one of {QUANTIZATIONS}. Received: quantization={quantization!r}"
        )
    path = _check_path(path)
    num_calibration_samples = checks.positive_int("num_calibration_samples", num_calibration_samples)
    if len(model.inputs) != 1:
        raise ValueError(
            f"TFLite export takes models with one input. Received: a model with {len(model.inputs)} inputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    calibration = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError(
                "quantization='int8' calibrates activation ranges on sample images: pass "
                "representative_data (an array, (x, y), or a tf.data.Dataset of training "
                "images). Received: representative_data=None"
            )
        calibration = _calibration_images(representative_data, shape, num_calibration_samples, seed)

    start = time.time()
    try:
        flatbuffer = _convert(float32_copy(model), shape, quantization, calibration)
    except Exception as error:  # the converter's message is hundreds of lines of MLIR
        raise TFLiteConversionError(model, quantization, error) from None
    with files.atomic_path(path) as staging:
        with open(staging, "xb") as handle:
            handle.write(flatbuffer)
    if verbose:
        print(
            f"Saved TFLite model ({quantization or 'float32'}, {len(flatbuffer) / 1e6:.2f} MB) "
            f"at '{path}' in {time.time() - start:.1f}s."
        )
    return path


def _check_path(path):
    """`path` as a str naming a file to write (not empty, not a folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be the .tflite file to write (a str). Received: path={path!r}")
    path = os.fspath(path)
    name = os.path.basename(path)
    if not path.strip() or not name or name in (".", "..") or os.path.isdir(path):
        raise ValueError(
            "path must name the .tflite file to write (e.g. 'export/model.tflite'), not be empty "
            f"or a folder. Received: path={path!r}"
        )
    return path


class TFLiteConversionError(ValueError):
    """The TFLite converter failed; `str()` is short, `.details` has its full output."""

    def __init__(self, model, quantization, error):
        self.details = str(error)
        lines = [line for line in self.details.splitlines() if line.strip()]
        summary = "\n".join(line[:300] for line in lines[:3])
        more = f"\n... ({len(lines) - 3} more lines in the exception's .details)" if len(lines) > 3 else ""
        super().__init__(
            f"TFLite conversion ({quantization or 'float32'}) of model {model.name!r} failed "
            f"({type(error).__name__}):\n{summary}{more}"
        )


def _is_mixed(policy):
    name = getattr(policy, "name", policy)
    return isinstance(name, str) and name.startswith("mixed_")


def _float32_policies(config):
    """`config` with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and _is_mixed(config.get("config", {}).get("name")):
            return dict(config, config=dict(config["config"], name="float32"))
        return {
            key: ("float32" if key == "dtype" and _is_mixed(value) else _float32_policies(value))
            for key, value in config.items()
            if key != "compile_config"
        }
    if isinstance(config, (list, tuple)):
        return type(config)(_float32_policies(value) for value in config)
    return config


def float32_copy(model):
    """`model` itself, or for a mixed-precision model a float32 copy with its weights.

    A `mixed_bfloat16` / `mixed_float16` model computes in bf16 / fp16 (its variables
    are float32), which the TFLite converter cannot take (bf16 ops have no TFLite
    kernels). The copy is rebuilt from the model's config with every mixed policy
    replaced by float32 and gets the same weights, so it computes the same function in
    float32 (its scores differ from the mixed model's by the bf16 round-off only).

    Example:

    >>> import keras, keras_transfer
    >>> from keras_transfer import performance, tflite
    >>> _ = performance.set_precision("mixed_bfloat16")
    >>> try:
    ...     model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    ... finally:
    ...     _ = performance.set_precision("float32")
    >>> copy = tflite.float32_copy(model)
    >>> model.get_layer("backbone").compute_dtype, copy.get_layer("backbone").compute_dtype
    ('bfloat16', 'float32')
    >>> tflite.float32_copy(copy) is copy
    True
    """
    layers = keras_internals.flatten_layers(model, include_self=True)
    if not any(_is_mixed(layer.dtype_policy) for layer in layers):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = keras.saving.deserialize_keras_object(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    weights = model.get_weights()
    copy.set_weights(
        [np.asarray(w, np.float32) if np.issubdtype(np.asarray(w).dtype, np.floating) else w for w in weights]
    )
    return copy


def _convert(model, shape, quantization, calibration):
    """The TFLite flatbuffer (bytes) of `model`."""
    spec = tf.TensorSpec((None,) + shape, tf.float32, name=INPUT_NAME)

    def serve(images):
        return {OUTPUT_NAME: tf.cast(model(images, training=False), tf.float32)}

    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature=[spec])
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            dataset = tf.data.Dataset.from_tensor_slices(calibration).batch(1)

            def representative_dataset():
                for batch in dataset:
                    yield [batch]

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        return converter.convert()


def _calibration_images(data, shape, count, seed):
    """Up to `count` float32 images of shape `shape` from an array, (x, y) or dataset."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, (tuple, list)):
            data = data.map(lambda *element: element[0])
            spec = spec[0]
        if not isinstance(spec, tf.TensorSpec):
            raise ValueError(
                "representative_data must be a tf.data.Dataset of images or of "
                f"(images, labels). Received: element_spec={data.element_spec}"
            )
        if spec.shape.rank == len(shape) + 1:
            data = data.unbatch()
        images = [np.asarray(image, np.float32) for image in data.take(count)]
        if not images:
            raise ValueError("representative_data is empty: int8 calibration needs images.")
        x = np.stack(images)
    else:
        if isinstance(data, tuple) and len(data) == 2:
            data = data[0]  # (x, y)
        x = np.asarray(data, np.float32)
        if x.ndim == len(shape) and shape[-1] == 1:
            x = x[..., None]  # (N, H, W) grayscale
        if len(x) > count:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), count, replace=False))]
    if len(x) == 0:
        raise ValueError("representative_data is empty: int8 calibration needs images.")
    if x.ndim != len(shape) + 1 or any(s is not None and s != d for s, d in zip(shape, x.shape[1:])):
        raise ValueError(
            f"Calibration images must have the model's input shape {shape}. "
            f"Received: images of shape {tuple(x.shape[1:])}"
        )
    return x


class TFLiteClassifier:
    """Runs a `.tflite` classifier on the LiteRT interpreter (`ai_edge_litert`).

    `predict` takes float pixels (0-255) like the Keras model and returns float scores,
    whatever the file's tensor types: for a quantized (uint8 / int8) input it quantizes
    with the tensor's scale and zero point (`q = round(x / scale + zero_point)`,
    clipped to the type's range), and it dequantizes an integer output as
    `(q - zero_point) * scale`. Batches go through in one call when the file's batch
    size is dynamic (the input tensor is resized), padded to the fixed size otherwise.

    Args:
        path: str. A `.tflite` file with one input and one output, e.g. from
            `export_tflite`.
        num_threads: int. Interpreter threads. Defaults to LiteRT's choice.

    Example:

    >>> import os, tempfile, numpy as np, keras_transfer
    >>> from keras_transfer import tflite
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> path = tflite.export_tflite(model, os.path.join(tempfile.mkdtemp(), "m.tflite"))
    >>> runner = tflite.TFLiteClassifier(path)
    >>> runner.input_shape, runner.input_dtype, runner.output_dtype
    ((None, 28, 28, 1), 'float32', 'float32')
    >>> x = np.random.default_rng(0).uniform(0, 255, (5, 28, 28, 1))
    >>> bool(np.allclose(runner.predict(x), model.predict(x, verbose=0), atol=1e-5))
    True
    """

    def __init__(self, path, *, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.num_threads = num_threads
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                "TFLiteClassifier runs models with one input and one output. Received: "
                f"{path} with {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._input, self._output = inputs[0], outputs[0]
        self.interpreter.allocate_tensors()
        self._batch = int(self._input["shape"][0])

    @property
    def input_shape(self):
        """Input shape, `None` for a dynamic dimension, e.g. `(None, 28, 28, 1)`."""
        return tuple(None if d < 0 else int(d) for d in self._input["shape_signature"])

    @property
    def input_dtype(self):
        """The input tensor's type: `"float32"`, or `"uint8"` / `"int8"` if quantized."""
        return np.dtype(self._input["dtype"]).name

    @property
    def output_dtype(self):
        """The output tensor's type."""
        return np.dtype(self._output["dtype"]).name

    @property
    def input_quantization(self):
        """`(scale, zero_point)` of the input; `(0.0, 0)` for a float input."""
        return tuple(self._input["quantization"])

    @property
    def output_quantization(self):
        """`(scale, zero_point)` of the output; `(0.0, 0)` for a float output."""
        return tuple(self._output["quantization"])

    def predict(self, x, batch_size=256):
        """Scores (float32, `(N, num_classes)`) for images `x` (N, H, W, C), raw pixels."""
        x = np.asarray(x)
        expected = self.input_shape[1:]
        if x.ndim == len(expected) and expected[-1] == 1:
            x = x[..., None]
        if x.ndim != len(expected) + 1 or any(
            e is not None and e != d for e, d in zip(expected, x.shape[1:])
        ):
            raise ValueError(
                f"{self.path} takes inputs of shape {self.input_shape}. Received: x.shape={x.shape}"
            )
        batch_size = checks.positive_int("batch_size", batch_size)
        dynamic = self.input_shape[0] is None
        step = batch_size if dynamic else self._batch
        outputs = []
        for start in range(0, len(x), step):
            chunk = self._quantize(x[start : start + step])
            count = len(chunk)
            if not dynamic and count < step:  # fixed batch size: pad the last chunk
                padding = np.zeros((step - count,) + chunk.shape[1:], chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            outputs.append(self._invoke(chunk)[:count])
        if not outputs:
            return np.zeros((0,) + tuple(self._output["shape"][1:]), np.float32)
        return self._dequantize(np.concatenate(outputs))

    def _invoke(self, chunk):
        index = self._input["index"]
        if tuple(self.interpreter.get_input_details()[0]["shape"]) != chunk.shape:
            self.interpreter.resize_tensor_input(index, chunk.shape)
            self.interpreter.allocate_tensors()
        self.interpreter.set_tensor(index, chunk)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"]).copy()

    def _quantize(self, x):
        dtype = np.dtype(self._input["dtype"])
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype)
        scale, zero_point = self._input["quantization"]
        if scale:
            x = np.round(x.astype(np.float64) / scale + zero_point)
        info = np.iinfo(dtype)
        return np.clip(x, info.min, info.max).astype(dtype)

    def _dequantize(self, q):
        scale, zero_point = self._output["quantization"]
        if np.issubdtype(q.dtype, np.integer) and scale:
            return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return q.astype(np.float32)


def evaluate_tflite(model, x, y=None, *, batch_size=256):
    """Accuracy of a `.tflite` classifier on labelled images.

    Args:
        model: str or `TFLiteClassifier`. The `.tflite` file (or its runner).
        x: array (N, H, W, C) of raw pixels, or a `tf.data.Dataset` of batched
            `(images, labels)` (then `y` is `None`).
        y: array (N,) of integer labels.
        batch_size: int. Images per interpreter call. Defaults to `256`.

    Returns:
        float. The fraction of images whose top class is the label.

    Raises:
        ValueError: no labels, lengths that differ, or no images.

    Example:

    >>> import os, tempfile, numpy as np, keras_transfer
    >>> from keras_transfer import tflite
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> path = tflite.export_tflite(model, os.path.join(tempfile.mkdtemp(), "m.tflite"))
    >>> x = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1))
    >>> y = model.predict(x, verbose=0).argmax(-1)
    >>> tflite.evaluate_tflite(path, x, y)
    1.0
    """
    runner = model if isinstance(model, TFLiteClassifier) else TFLiteClassifier(model)
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                "With a dataset, the labels come inside it as (images, labels). "
                "Received: y as well as a dataset"
            )
        predicted, labels = [], []
        for images, batch_labels in x:
            predicted.append(runner.predict(np.asarray(images), batch_size).argmax(-1))
            labels.append(np.asarray(batch_labels).reshape(-1))
        predicted = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
        y = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    else:
        if y is None:
            raise ValueError("evaluate_tflite needs labels y (or a dataset of (images, labels)).")
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x):
            raise ValueError(f"x and y must have the same length. Received: len(x)={len(x)}, len(y)={len(y)}")
        predicted = runner.predict(x, batch_size).argmax(-1)
    if len(y) == 0:
        raise ValueError("No images to evaluate.")
    return float(np.mean(predicted == y))
