"""Fast CPU inference: BatchNorm folding, frozen graphs and bfloat16 on AMX.

`model.predict` runs a Keras model as it was built for training: every BatchNormalization
is a separate multiply and add after its convolution, and the weights are variables that
oneDNN reorders into its blocked layout on every call. For inference on a CPU,
`optimize_for_inference` instead

1. folds each BatchNormalization into the convolution (or Dense layer) before it
   (`fold_batch_norm`): the convolution gets a bias, the BatchNorm disappears;
2. traces the model once for a fixed batch size and freezes the weights into graph
   constants, so TensorFlow's graph optimizer (Grappler) fuses convolution + bias +
   ReLU (and + residual add + ReLU) into single oneDNN primitives, and oneDNN keeps the
   weights in its own blocked (AMX) layout between calls;
3. with `precision="bfloat16"`, rewrites that frozen graph with TensorFlow's
   `auto_mixed_precision_onednn_bfloat16` pass: convolutions and matmuls run in
   bfloat16 (on AMX tiles where the CPU has them), inputs and outputs stay float32 and
   numerically sensitive ops (softmax, reductions) stay float32.

Measured on a 2-core Xeon with AMX (Sapphire Rapids class), ResNet50 at batch 32: the
float32 path is about 1.2-1.3x `model.predict` and the bfloat16 path about 4-5x the
float32 one. Without step 1 the bfloat16 convolutions are fast but the unfused
BatchNorm adds and ReLUs, run by Eigen in bfloat16, eat most of the gain (1.3-1.8x).

The pieces:

- `optimize_for_inference(model, batch_size, precision)` -> `InferenceModel` with
  `.predict(x)` (any number of samples) and `__call__(batch)` (exactly one batch).
- `fold_batch_norm(model)`: a copy of a functional or Sequential model with
  BatchNormalization folded into the layer before it; it saves to `.keras` (so does
  `InferenceModel.keras_model`, the folded model an `InferenceModel` was traced from).
- `performance.bf16_supported()`, `performance.has_amx()`: what the CPU can do.
- `performance.model_flops(model)`: floating-point operations of one forward pass (2 per
  multiply-add of the convolution and Dense layers).
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.performance import DEPTHWISE_LAYERS
from keras_transfer.performance import FOLDABLE_LAYERS
from keras_transfer.performance import TRANSPOSED_LAYERS
from keras_transfer.performance import bf16_unsupported_reason
from keras_transfer.utils import checks
from keras_transfer.utils import keras_internals

PRECISIONS = ("float32", "bfloat16")


# BatchNorm folding.


@keras.saving.register_keras_serializable(package="keras_transfer", name="FoldedBatchNorm")
class _FoldedBatchNorm(keras.layers.Layer):
    """What a folded BatchNormalization becomes: the identity.

    Registered for Keras serialisation (as `keras_transfer>FoldedBatchNorm`), so a
    folded model saves to `.keras` and loads back with `keras.saving.load_model`.
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        # Only the base config (name, trainable, dtype policy): Keras cannot generate
        # one itself from the `dtype=DTypePolicy` the layer was created with.
        return super().get_config()


def _is_functional(model):
    # Functional models (and Sequential ones) know their graph of layers.
    return isinstance(model, keras.Sequential) or keras_internals.is_functional(model)


def _channel_axis(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    return 1 if data_format == "channels_first" else -1


def _foldable_pairs(model):
    """{producer layer name: BatchNormalization} for BNs that can fold into a layer."""
    pairs = {}
    output_ids = {id(t) for t in keras.tree.flatten(model.outputs)}
    for layer in model.layers:
        nodes = keras_internals.inbound_nodes(layer)
        if type(layer) is not keras.layers.BatchNormalization or len(nodes) != 1:
            continue
        node = nodes[0]
        parents = node.parent_nodes
        if len(parents) != 1:
            continue
        producer = parents[0].operation
        if not isinstance(producer, FOLDABLE_LAYERS + DEPTHWISE_LAYERS) or isinstance(
            producer, TRANSPOSED_LAYERS
        ):
            continue
        producer_nodes = keras_internals.inbound_nodes(producer)
        if len(producer_nodes) != 1 or len(keras_internals.outbound_nodes(producer)) != 1:
            continue  # shared, or its output also goes elsewhere
        producer_outputs = keras.tree.flatten(producer_nodes[0].output_tensors)
        if any(id(t) in output_ids for t in producer_outputs):
            continue  # its output is also a model output
        if getattr(producer, "activation", None) not in (None, keras.activations.linear):
            continue  # the BN comes after a nonlinearity
        if getattr(producer, "lora_enabled", False) or getattr(producer, "quantization_mode", None):
            continue
        out_rank = len(producer_outputs[0].shape)
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = [a % out_rank for a in axes]
        if axes != [_channel_axis(producer) % out_rank]:
            continue
        pairs[producer.name] = layer
    return pairs


def _folded_weights(producer, bn):
    """(kernel, bias) of `producer` with `bn` folded in, in float64 then cast back."""
    kernel = keras.ops.convert_to_numpy(producer.kernel).astype(np.float64)
    dtype = producer.kernel.dtype
    if producer.use_bias:
        bias = keras.ops.convert_to_numpy(producer.bias).astype(np.float64)
    else:
        bias = 0.0
    variance = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        scale = scale * keras.ops.convert_to_numpy(bn.gamma).astype(np.float64)
    beta = keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else 0.0
    if isinstance(producer, DEPTHWISE_LAYERS):
        # kernel (*k, in, multiplier): output channel c * multiplier + m.
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale  # output channels are the last axis
    bias = (bias - mean) * scale + beta
    return kernel.astype(dtype), np.broadcast_to(bias, scale.shape).astype(dtype)


def _fold(model):
    """(folded copy of `model`, number of BatchNorms folded), nested models included."""
    pairs = _foldable_pairs(model)
    bn_names = {bn.name for bn in pairs.values()}
    nested = {}

    def clone(layer):
        if _is_functional(layer) and layer is not model:
            nested[layer.name], _ = _fold(layer)
            return nested[layer.name]
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
            if isinstance(layer, DEPTHWISE_LAYERS):
                config["bias_initializer"] = "zeros"
            return layer.__class__.from_config(config)
        if layer.name in bn_names:
            return _FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    count = len(pairs)
    for name, sub in nested.items():
        count += getattr(sub, "_folded_batch_norms", 0)
    for layer in model.layers:
        if not layer.weights or layer.name in bn_names or layer.name in nested:
            continue
        target = folded.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(list(_folded_weights(layer, pairs[layer.name])))
        else:
            target.set_weights(layer.get_weights())
    folded._folded_batch_norms = count
    return folded, count


def fold_batch_norm(model):
    """A copy of `model` with each BatchNormalization folded into the layer before it.

    In inference a BatchNormalization after a convolution or Dense layer is a
    per-channel scale and shift, which folds into that layer's kernel and bias:
    `kernel * s` and `(bias - mean) * s + beta` with `s = gamma / sqrt(var + eps)`. The
    copy computes the same function (up to float rounding) with one op less per
    BatchNorm, and lets TensorFlow fuse convolution + bias + ReLU. Folded are
    BatchNormalization layers whose only input is a Conv1D/2D/3D, DepthwiseConv1D/2D
    or Dense layer without activation, whose output feeds only that BatchNorm, with
    the BatchNorm over that layer's channel axis; the others are kept. Nested functional
    models (e.g. a backbone inside a classifier) are folded too. For inference only:
    the copy no longer normalizes with batch statistics when trained.

    Args:
        model: a functional or Sequential Keras model.

    Returns:
        A new Keras model; the input model is left unchanged. Its attribute
        `_folded_batch_norms` holds the number of BatchNorms folded (not saved). It
        saves to `.keras` and loads back with `keras.saving.load_model`: the folded
        BatchNorms are the registered layer `keras_transfer>FoldedBatchNorm`, so in
        a new process import `keras_transfer.inference` before loading (the package
        imports its modules on first use).

    Raises:
        ValueError: `model` is a subclassed model (its graph of layers is unknown).

    Example:

    >>> import keras, numpy as np
    >>> from keras_transfer import inference
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...                           keras.layers.BatchNormalization(), keras.layers.ReLU()])
    >>> model.layers[1].set_weights([np.full(4, 2.0), np.full(4, 0.5),
    ...                              np.full(4, 0.1), np.full(4, 4.0)])
    >>> folded = inference.fold_batch_norm(model)
    >>> [layer.__class__.__name__ for layer in folded.layers]
    ['Conv2D', '_FoldedBatchNorm', 'ReLU']
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(folded(x), model(x), atol=1e-5))
    True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a Keras model. Received: model={model!r}")
    if not _is_functional(model):
        raise ValueError(
            "fold_batch_norm needs a functional or Sequential model (a subclassed "
            f"model's layer graph is unknown). Received: model={model.name!r} "
            f"of class {model.__class__.__name__}"
        )
    folded, _ = _fold(model)
    return folded


# Freezing and the bfloat16 rewrite (TensorFlow internals, stable since TF 2.0).


def _freeze(concrete):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete)


def _bf16_rewrite(frozen):
    """`frozen` rewritten by Grappler's `auto_mixed_precision_onednn_bfloat16` pass."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.core.protobuf import rewriter_config_pb2
    from tensorflow.python.grappler import tf_optimizer

    graph_def = frozen.graph.as_graph_def()
    input_names = [t.name for t in frozen.inputs]
    output_names = [t.name for t in frozen.outputs]
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
        meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=graph)
    fetches = meta_graph.collection_def["train_op"].node_list.value
    for name in output_names:
        fetches.append(name)  # the outputs Grappler must keep
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    rewrite.min_graph_nodes = -1
    optimized = tf_optimizer.OptimizeGraph(config, meta_graph)

    def import_graph():
        tf.graph_util.import_graph_def(optimized, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    bf16_ops = sum(
        1
        for node in optimized.node
        if node.attr["T"].type == tf.bfloat16.as_datatype_enum
        and node.op in ("Conv2D", "Conv3D", "MatMul", "BatchMatMulV2", "DepthwiseConv2dNative")
    )
    return wrapped.prune(
        [wrapped.graph.get_tensor_by_name(n) for n in input_names],
        [wrapped.graph.get_tensor_by_name(n) for n in output_names],
    ), bf16_ops


# The optimized model.


class InferenceModel:
    """A Keras model compiled for fast CPU inference by `optimize_for_inference`.

    Not a `keras.Model`: it holds a frozen TensorFlow graph, which has no `.save`.
    To save it, save the Keras model it was traced from, `keras_model` (the copy with
    BatchNormalization folded in, which round-trips through a `.keras` file), and
    optimize the loaded model again:

    ```python
    fast.keras_model.save("model.keras")
    fast = optimize_for_inference(keras.saving.load_model("model.keras"), batch_size=32)
    ```

    The new one predicts the same; its `folded_batch_norms` is `0`, as the loaded
    model has no BatchNormalization left to fold.

    Attributes:
        batch_size: int. The batch size the graph was traced for.
        precision: str. `"float32"` or `"bfloat16"`.
        input_shape: tuple. Shape of one batch, `(batch_size, ...)`.
        folded_batch_norms: int. BatchNormalization layers folded away.
        bf16_ops: int. Convolutions / matmuls running in bfloat16 (0 for float32).
        keras_model: `keras.Model`. The model the graph was traced from: the folded
            copy, or the model passed to `optimize_for_inference` itself when it was
            not folded (`fold_batchnorm=False`, or a model that cannot be cloned).
            Later changes to its weights do not reach the graph.
    """

    def __init__(
        self,
        function,
        *,
        batch_size,
        precision,
        input_shape,
        input_dtype,
        single_output,
        folded_batch_norms,
        bf16_ops,
        keras_model=None,
    ):
        self._function = function
        self.batch_size = batch_size
        self.precision = precision
        self.input_shape = input_shape
        self._input_dtype = input_dtype
        self._single_output = single_output
        self.folded_batch_norms = folded_batch_norms
        self.bf16_ops = bf16_ops
        self.keras_model = keras_model

    def __repr__(self):
        return (
            f"<InferenceModel precision={self.precision!r} batch_size={self.batch_size} "
            f"input_shape={self.input_shape} folded_batch_norms={self.folded_batch_norms}>"
        )

    def __call__(self, batch):
        """Runs exactly one batch of `input_shape`; returns a float32 tensor (or a list)."""
        batch = tf.convert_to_tensor(batch, dtype=self._input_dtype)
        if tuple(batch.shape) != self.input_shape:
            raise ValueError(
                f"Expected one batch of shape {self.input_shape}; use .predict for other "
                f"sizes. Received: shape={tuple(batch.shape)}"
            )
        outputs = self._function(batch)
        return outputs[0] if self._single_output else list(outputs)

    def predict(self, x):
        """Predictions for `x` of any length, like `model.predict(x)`.

        `x` is split into batches of `batch_size`; the last one is padded (with its
        last sample) and the padding dropped from the result.

        Args:
            x: array-like (N, ...) with the model's sample shape.

        Returns:
            `np.ndarray` float32 (or a list of them for a multi-output model).
        """
        x = np.asarray(x, dtype=self._input_dtype.as_numpy_dtype)
        if x.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"Expected samples of shape {self.input_shape[1:]}. Received: x.shape={x.shape}")
        n = len(x)
        chunks = []
        for start in range(0, n, self.batch_size):
            batch = x[start : start + self.batch_size]
            size = len(batch)
            if size < self.batch_size:
                pad = np.repeat(batch[-1:], self.batch_size - size, axis=0)
                batch = np.concatenate([batch, pad])
            outputs = self._function(tf.constant(batch))
            chunks.append([o.numpy()[:size] for o in outputs])
        if not chunks:
            shapes = [tuple(t.shape[1:]) for t in self._function.outputs]
            results = [np.zeros((0,) + s, np.float32) for s in shapes]
        else:
            results = [np.concatenate(parts) for parts in zip(*chunks)]
        return results[0] if self._single_output else results


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}. "
            f"Received: precision={precision!r}"
        )
    return precision


def optimize_for_inference(model, batch_size=32, precision="float32", *, fold_batchnorm=True):
    """Compiles `model` into a frozen, fused TensorFlow graph for fast CPU inference.

    Folds BatchNormalization into the layer before it (`fold_batch_norm`), traces the
    model for batches of `batch_size` and freezes its weights into constants, so
    TensorFlow fuses convolution + bias + activation (+ residual add) into oneDNN
    primitives that keep their weights in oneDNN's layout. With
    `precision="bfloat16"` the frozen graph is rewritten by TensorFlow's oneDNN
    bfloat16 auto-mixed-precision pass: convolutions and matmuls compute in bfloat16
    (AMX on Sapphire Rapids and later), inputs and outputs stay float32. The result is
    a snapshot: later changes to `model`'s weights do not reach it.

    float32 predictions equal `model.predict` up to float rounding (about 1e-6
    relative); bfloat16 ones are within about 1% (bfloat16 has 8 bits of mantissa):
    check the top-1 agreement on your data before serving them.

    Args:
        model: a functional or Sequential Keras model with one input whose sample
            shape is fully known (e.g. `(224, 224, 3)`). A model that cannot be cloned
            (a custom layer without `get_config`) is frozen without folding, with a
            warning.
        batch_size: int. The batch the graph is traced for; `.predict` pads the last
            batch to it. 32-64 is a good choice for a CNN on a CPU. Defaults to `32`.
        precision: str. `"float32"` or `"bfloat16"` (refused where `bf16_supported()` is
            False). Defaults to `"float32"`.
        fold_batchnorm: bool. Fold BatchNormalization first. Defaults to `True`.

    Returns:
        `InferenceModel` with `.predict(x)` and `__call__(batch)`. It is not a Keras
        model: save its `keras_model` (see `InferenceModel`).

    Raises:
        ValueError: unknown `precision`, bad `batch_size`, a subclassed model, a model
            with several inputs or an input shape with unknown dimensions.
        RuntimeError: `precision="bfloat16"` on a machine without native bfloat16 (the
            message says why).

    Example:

    >>> import keras, numpy as np
    >>> from keras_transfer import inference
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3), keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(5, activation="softmax")])
    >>> fast = inference.optimize_for_inference(model, batch_size=4)
    >>> fast.folded_batch_norms
    1
    >>> x = np.random.default_rng(0).uniform(size=(10, 16, 16, 3)).astype("float32")
    >>> probabilities = fast.predict(x)
    >>> probabilities.shape
    (10, 5)
    >>> bool(np.allclose(probabilities, model.predict(x, verbose=0), rtol=1e-4, atol=1e-6))
    True
    """
    precision = _check_precision(precision)
    batch_size = checks.positive_int("batch_size", batch_size)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a Keras model. Received: model={model!r}")
    if precision == "bfloat16":
        reason = bf16_unsupported_reason()
        if reason is not None:
            raise RuntimeError(
                f"precision='bfloat16' is not supported on this machine: {reason}. Use precision='float32'."
            )
    inputs = model.inputs if _is_functional(model) else None
    if not inputs:
        raise ValueError(
            "optimize_for_inference needs a functional or Sequential model built on a "
            f"keras.Input (its input shape and graph are known). Received: model={model.name!r} "
            f"of class {model.__class__.__name__}"
        )
    if len(inputs) != 1:
        raise ValueError(
            f"optimize_for_inference supports models with one input. Received a model with "
            f"{len(inputs)} inputs: {[i.name for i in inputs]}"
        )
    sample_shape = tuple(inputs[0].shape[1:])
    if any(d is None for d in sample_shape):
        raise ValueError(
            "The model's input shape must be fully known (apart from the batch) to trace "
            f"a fixed graph, e.g. build it with input_shape=(224, 224, 3). Received: "
            f"input shape {(None,) + sample_shape}"
        )
    input_dtype = tf.as_dtype(inputs[0].dtype)

    folded = 0
    target = model
    if fold_batchnorm and _is_functional(model):
        try:
            target, folded = _fold(model)
        except Exception as error:  # a custom layer that cannot be cloned
            warnings.warn(
                f"BatchNormalization folding skipped, the model could not be cloned: {error}",
                stacklevel=2,
            )
            target, folded = model, 0

    spec = tf.TensorSpec((batch_size,) + sample_shape, input_dtype)

    @tf.function(input_signature=[spec], autograph=False)
    def forward(batch):
        outputs = target(batch, training=False)
        return [tf.cast(o, tf.float32) for o in tf.nest.flatten(outputs)]

    single_output = len(tf.nest.flatten(model.outputs)) == 1
    function = _freeze(forward.get_concrete_function())
    bf16_ops = 0
    if precision == "bfloat16":
        function, bf16_ops = _bf16_rewrite(function)
    return InferenceModel(
        function,
        batch_size=batch_size,
        precision=precision,
        input_shape=(batch_size,) + sample_shape,
        input_dtype=input_dtype,
        single_output=single_output,
        folded_batch_norms=folded,
        bf16_ops=bf16_ops,
        keras_model=target,
    )
