"""A Keras-3-native layer for TF Hub modules and TF2 SavedModels."""

import inspect
import os
import re

import keras
import tensorflow as tf

from keras_transfer.utils import keras_internals

# The size TF Hub's image modules are usually trained at (the "common signature" for
# image feature vectors takes any size, but works best at its own).
DEFAULT_INPUT_SHAPE = (224, 224, 3)


def _load_module(handle, load_options):
    """`tf.saved_model.load` for local paths, `tensorflow_hub.load` for URLs."""
    if "://" not in handle:
        # A local SavedModel: tensorflow_hub is not needed (nor imported).
        return tf.saved_model.load(handle, options=load_options)
    try:
        import tensorflow_hub
    except ImportError as error:
        raise ImportError(
            "Loading a TF Hub / Kaggle URL needs `tensorflow_hub`, which failed to "
            f"import: {error}. tensorflow-hub 0.16 imports `pkg_resources`, which "
            'setuptools 82 removed, and needs tf-keras: run `pip install "setuptools<82" '
            "tensorflow-hub tf-keras`, or pass a local SavedModel directory. "
            f"Received: handle={handle!r}"
        ) from error
    try:
        return tensorflow_hub.load(handle, options=load_options)
    except OSError as error:  # urllib's URLError, socket timeouts, missing files.
        raise OSError(
            "Could not load the TF Hub module (no network, and not in the TF Hub "
            "cache?). Load it once where there is a network (the cache is "
            "`TFHUB_CACHE_DIR`, by default <tmp>/tfhub_modules) or pass a local "
            f"SavedModel directory. Received: handle={handle!r} ({error})"
        ) from error


def _takes_training(function):
    try:
        return "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _module_variables(module, function):
    """The module's variables and the ids of those it declares trainable.

    A reusable SavedModel lists `variables` and `trainable_variables`; otherwise the
    variables its function captures, with each variable's own `trainable` flag.
    """
    if hasattr(module, "variables"):
        variables = list(module.variables)
    else:
        variables = []
        for concrete in getattr(function, "concrete_functions", None) or [function]:
            variables.extend(getattr(concrete, "variables", ()))
    unique, seen = [], set()
    for variable in variables:
        if id(variable) not in seen:
            unique.append(variable)
            seen.add(id(variable))
    if hasattr(module, "trainable_variables"):
        trainable = {id(v) for v in module.trainable_variables}
    else:
        trainable = {id(v) for v in unique if v.trainable}
    return unique, trainable


def _as_shape(shape):
    """A tuple of int/None, or a dict of them (for signature outputs)."""
    if shape is None:
        return None
    if isinstance(shape, dict):
        return {key: _as_shape(value) for key, value in shape.items()}
    return tuple(None if d is None else int(d) for d in shape)


@keras.saving.register_keras_serializable(package="keras_transfer")
class HubLayer(keras.layers.Layer):
    """Wraps a TF Hub module or a TF2 SavedModel as a Keras 3 layer.

    `hub.KerasLayer` is a Keras 2 (`tf_keras`) layer and fails in Keras 3 models. This
    layer loads the module and tracks its `tf.Variable`s as Keras variables (sharing
    their storage), so the module fine-tunes with any Keras optimizer (also under
    XLA), freezes like any layer, round-trips through `.keras` files (the module is
    reloaded from `handle`, then the saved values are restored) and is exported
    self-contained by `model.export`.

    It follows TF Hub's conventions for reusable SavedModels: the module's
    `trainable_variables` are the only ones trained when the layer is trainable (the
    rest stay frozen); its `regularization_losses` are added to the layer's losses
    while it is trainable; a module whose call takes `training` gets
    `training and layer.trainable`, so its BatchNorm layers keep their moving
    statistics while the layer is frozen. A module without `variables` /
    `trainable_variables` attributes (any `tf.saved_model.save`d object) trains the
    variables its function uses that were saved as trainable.

    TF Hub image modules take float pixels in [0, 1] (`value_range`), while
    keras_transfer models take raw 0-255 pixels: `build_classifier` puts a
    `keras.layers.Rescaling(name="preprocessing")` in front of a hub backbone for
    that. The layer itself never rescales its inputs.

    Args:
        handle: str. A TF Hub or Kaggle URL (resolved by `tensorflow_hub`, through its
            cache, `TFHUB_CACHE_DIR`) or a local SavedModel directory (loaded with
            `tf.saved_model.load`, without importing `tensorflow_hub`). It must still
            exist when a saved `.keras` model is loaded.
        trainable: bool. Train the module's trainable variables. Defaults to `False`.
        signature: str. Call this signature (e.g. `"serving_default"`) instead of the
            module's `__call__`. Signatures return a dict: pick an output with
            `output_key`, or get the dict with `signature_outputs_as_dict=True`; a
            signature with a single output returns it directly.
        output_key: str. The output to return when the module returns a dict.
        signature_outputs_as_dict: bool. Return the whole dict of signature outputs.
            Defaults to `False`.
        arguments: dict. Extra keyword arguments for every module call (a module's
            hyper-parameters). Must be JSON-serialisable to save the model.
        output_shape: tuple. Output shape without the batch dimension (or a dict of
            them for `signature_outputs_as_dict`), for modules whose function does not
            say it. Defaults to the shape the module's function infers.
        load_options: `tf.saved_model.LoadOptions`. Options for loading (not saved in
            the config).
        value_range: tuple `(low, high)` or `None`. Pixel range the module's image
            input expects; `build_classifier` rescales 0-255 pixels into it, and `None`
            feeds it the raw inputs. Defaults to `(0.0, 1.0)`, TF Hub's convention for
            images.
        **kwargs: Base layer arguments (`name`, ...). `dtype` defaults to
            `"float32"` whatever the global policy: a SavedModel's dtypes are fixed.

    Raises:
        ImportError: a URL handle while `tensorflow_hub` cannot be imported (say,
            setuptools >= 82 installed).
        OSError: a URL that cannot be resolved (offline, not cached) or a missing
            directory.
        ValueError: an unknown signature or output key, or inconsistent arguments.

    Example:

    >>> import tempfile, numpy as np, tensorflow as tf, keras
    >>> from keras_transfer.hub import HubLayer
    >>> class Scale(tf.Module):
    ...     def __init__(self):
    ...         self.kernel = tf.Variable([[2.0, 0.0], [0.0, 3.0]], name="kernel")
    ...     @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32)])
    ...     def __call__(self, x):
    ...         return tf.matmul(x, self.kernel)
    >>> path = tempfile.mkdtemp()
    >>> tf.saved_model.save(Scale(), path)
    >>> layer = HubLayer(path, trainable=True, name="scale")
    >>> [w.path for w in layer.trainable_weights]
    ['scale/kernel']
    >>> model = keras.Sequential([keras.Input((2,)), layer])
    >>> model.predict(np.ones((1, 2)), verbose=0)
    array([[2., 3.]], dtype=float32)
    >>> layer.trainable = False
    >>> layer.trainable_weights
    []
    """

    def __init__(
        self,
        handle,
        trainable=False,
        signature=None,
        output_key=None,
        signature_outputs_as_dict=False,
        arguments=None,
        output_shape=None,
        load_options=None,
        value_range=(0.0, 1.0),
        **kwargs,
    ):
        # A SavedModel's dtypes are fixed: a mixed-precision policy must not cast the
        # module's inputs (its outputs are cast by the next layers as needed).
        kwargs.setdefault("dtype", "float32")
        super().__init__(trainable=bool(trainable), **kwargs)
        if not isinstance(handle, (str, os.PathLike)) or not os.fspath(handle).strip():
            raise ValueError(
                "handle must be a TF Hub / Kaggle URL or the path of a SavedModel folder, not "
                f"empty. Received: handle={handle!r}"
            )
        self.handle = os.fspath(handle)
        self.signature = signature
        self.output_key = output_key
        self.signature_outputs_as_dict = bool(signature_outputs_as_dict)
        self.arguments = dict(arguments or {})
        self.output_shape = _as_shape(output_shape)
        self.load_options = load_options
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        if self.value_range is not None and (
            len(self.value_range) != 2 or self.value_range[0] >= self.value_range[1]
        ):
            raise ValueError(
                f"value_range must be (low, high) with low < high, or None. "
                f"Received: value_range={value_range!r}"
            )

        self._module = _load_module(self.handle, load_options)
        if getattr(self._module, "_is_hub_module_v1", False):
            # A TF1 Hub format module: only its signatures can be called.
            self.signature = self.signature or "default"
            if not self.signature_outputs_as_dict:
                self.output_key = self.output_key or "default"
        if self.signature_outputs_as_dict and not self.signature:
            raise ValueError(
                f"signature_outputs_as_dict=True needs a signature. Received: signature={signature!r}"
            )
        if self.signature_outputs_as_dict and self.output_key is not None:
            raise ValueError(
                "Pass either output_key or signature_outputs_as_dict=True, not both. "
                f"Received: output_key={output_key!r}, signature_outputs_as_dict=True"
            )
        self._function = self._resolve_function()
        self._takes_training = _takes_training(self._function)

        variables, trainable_ids = _module_variables(self._module, self._function)
        self._hub_variables = []  # (keras.Variable, declared trainable by the module)
        with keras.name_scope(self.name, caller=self):
            for variable in variables:
                declared = id(variable) in trainable_ids and variable.dtype.is_floating
                wrapped = keras.Variable(
                    initializer=variable,  # the same storage, not a copy
                    shape=variable.shape,
                    dtype=variable.dtype,
                    trainable=declared,
                    # Keras (and its optimizers' slot names) reject ":" and "/".
                    name=re.sub(r":\d+$", "", variable.name).replace("/", "_"),
                )
                keras_internals.track_variable(self, wrapped)
                self._hub_variables.append((wrapped, declared))
        self._regularization_losses = list(getattr(self._module, "regularization_losses", ()))
        for loss in self._regularization_losses:
            if not callable(loss):
                raise ValueError(
                    "The module's regularization_losses must be callables returning a "
                    f"scalar. Received: {loss!r}"
                )
        self._set_variable_flags()
        self.built = True

    def _resolve_function(self):
        if not self.signature:
            if not callable(self._module):
                raise ValueError(
                    f"The module at {self.handle!r} is not callable; pass one of its "
                    f"signatures {sorted(getattr(self._module, 'signatures', {}))}. "
                    "Received: signature=None"
                )
            # The loaded `__call__` (a restored tf.function) lists its concrete functions.
            return getattr(self._module, "__call__", self._module)
        signatures = getattr(self._module, "signatures", {})
        if self.signature not in signatures:
            raise ValueError(
                f"The module at {self.handle!r} has no signature {self.signature!r}; it "
                f"has {sorted(signatures)}. Received: signature={self.signature!r}"
            )
        function = signatures[self.signature]
        outputs = sorted(function.structured_outputs)
        if self.output_key is not None and self.output_key not in outputs:
            raise ValueError(
                f"Signature {self.signature!r} has no output {self.output_key!r}; it has "
                f"{outputs}. Received: output_key={self.output_key!r}"
            )
        if self.output_key is None and not self.signature_outputs_as_dict and len(outputs) > 1:
            raise ValueError(
                f"Signature {self.signature!r} has several outputs {outputs}: pass "
                "output_key=... or signature_outputs_as_dict=True. "
                f"Received: output_key=None"
            )
        return function

    def _set_variable_flags(self):
        trainable = self.trainable
        for variable, declared in getattr(self, "_hub_variables", ()):
            variable.trainable = trainable and declared

    @property
    def trainable(self):
        return keras.layers.Layer.trainable.fget(self)

    @trainable.setter
    def trainable(self, value):
        keras.layers.Layer.trainable.fset(self, value)
        # Keras re-flags only what it tracked as trainable: set every variable
        # explicitly, keeping the module's non-trainable ones frozen.
        self._set_variable_flags()

    @property
    def resolved_object(self):
        """The object loaded from `handle` (`tf.saved_model.load`'s result)."""
        return self._module

    def _call_module(self, inputs, training):
        kwargs = dict(self.arguments)
        if self.signature and isinstance(inputs, dict):
            args = ()
            kwargs.update(inputs)
        else:
            args = (inputs,)
        if self._takes_training:
            kwargs["training"] = training
        outputs = self._function(*args, **kwargs)
        if isinstance(outputs, dict) and not self.signature_outputs_as_dict:
            if self.output_key is not None:
                if self.output_key not in outputs:
                    raise ValueError(
                        f"The module's outputs are {sorted(outputs)}. "
                        f"Received: output_key={self.output_key!r}"
                    )
                outputs = outputs[self.output_key]
            elif self.signature and len(outputs) == 1:
                outputs = next(iter(outputs.values()))
        elif self.output_key is not None:
            raise ValueError(
                "output_key is only valid for a module that returns a dict. "
                f"Received: output_key={self.output_key!r}"
            )
        if self.output_shape is not None:
            outputs = self._ensure_shape(outputs, self.output_shape)
        return outputs

    @staticmethod
    def _ensure_shape(outputs, shape):
        if isinstance(shape, dict):
            return {key: HubLayer._ensure_shape(outputs[key], shape[key]) for key in outputs}
        return tf.ensure_shape(outputs, (None,) + tuple(shape))

    def call(self, inputs, training=None):
        trainable = self.trainable
        outputs = self._call_module(inputs, bool(training) and trainable)
        if trainable:
            for loss in self._regularization_losses:
                self.add_loss(loss())
        return outputs

    def compute_output_spec(self, inputs, training=None):
        # Trace the module's function on symbolic inputs (any dtype, e.g. strings).
        specs = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), inputs)
        traced = tf.function(lambda x: self._call_module(x, False)).get_concrete_function(specs)
        return tf.nest.map_structure(
            lambda t: keras.KerasTensor(tuple(t.shape), dtype=t.dtype.name),
            traced.structured_outputs,
        )

    def compute_output_shape(self, input_shape):
        if self.output_shape is not None:
            if isinstance(self.output_shape, dict):
                return {k: (input_shape[0],) + v for k, v in self.output_shape.items()}
            return (input_shape[0],) + self.output_shape
        spec = self.compute_output_spec(keras.KerasTensor(input_shape, dtype=self._input_dtype()))
        return tf.nest.map_structure(lambda x: x.shape, spec)

    def _input_dtype(self):
        """The dtype of the module function's first input (float32 if unknown)."""
        function = self._function
        concrete = (getattr(function, "concrete_functions", None) or [function])[0]
        specs = tf.nest.flatten(getattr(concrete, "structured_input_signature", ()))
        specs = [s for s in specs if isinstance(s, tf.TensorSpec)]
        return specs[0].dtype.name if specs else "float32"

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "handle": self.handle,
                "signature": self.signature,
                "output_key": self.output_key,
                "signature_outputs_as_dict": self.signature_outputs_as_dict,
                "arguments": dict(self.arguments),
                "output_shape": self.output_shape,
                "value_range": self.value_range,
            }
        )
        return config
