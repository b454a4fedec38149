"""Speed defaults that follow the device: XLA, steps per execution, bf16 precision.

Measured on 2-core AVX-512/AMX CPUs (see `benchmarks/README.md`): XLA makes training
slower on CPU and is the main lever on GPUs; running several steps per compiled call
(`steps_per_execution`) removes Keras's per-step overhead, which dominates small models;
bf16 pays on CPUs with AMX and on recent GPUs.
"""

import math

import keras
import tensorflow as tf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "onednn_bfloat16")

# Rates used only to guess how long one training step takes (forward + backward is
# about 3x the forward FLOPs). Deliberately conservative: a model that is faster than
# guessed simply gets a few more steps per execution than it needs.
_ASSUMED_FLOPS_PER_SECOND = {"cpu": 50e9, "gpu": 5e12}
_TARGET_SECONDS_PER_EXECUTION = 0.1
_MAX_STEPS_PER_EXECUTION = 64


def has_gpu():
    """Whether TensorFlow sees a GPU.

    Example:

    >>> import keras_transfer
    >>> isinstance(keras_transfer.has_gpu(), bool)
    True
    """
    return bool(tf.config.list_physical_devices("GPU"))


def has_amx():
    """Whether this CPU has AMX bf16 tiles (Intel Sapphire Rapids and later), where bf16
    matrix products run about 4x faster than float32.

    Example:

    >>> import keras_transfer
    >>> isinstance(keras_transfer.has_amx(), bool)
    True
    """
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def default_jit_compile():
    """Whether XLA pays here: `True` with a GPU, `False` on CPU.

    On 2-core AVX-512 CPUs `jit_compile=True` made training slower (MNIST MLP 25k vs
    56k samples/s, small CNN 1.4k vs 7.0k), while it is the main lever on GPUs.

    Example:

    >>> import keras_transfer
    >>> keras_transfer.default_jit_compile() == keras_transfer.has_gpu()
    True
    """
    return has_gpu()


def resolve_jit_compile(jit_compile):
    """`"auto"` -> `default_jit_compile()`; a bool passes through."""
    if jit_compile == "auto":
        return default_jit_compile()
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True, False or 'auto'. Received: jit_compile={jit_compile!r}")
    return jit_compile


def estimate_flops(model):
    """Forward FLOPs per example (2 x multiply-adds) of a model's Dense and conv layers.

    Counts every layer with a `kernel` (Dense, ConvND, DepthwiseConv, and both kernels of
    SeparableConv), nested models included, from the layer's output shape. Other layers
    (normalisation, pooling, activations) are memory-bound and left out. ResNet50 at 224
    counts 7.7 GFLOP (the usual "4 GMACs" figure counts only the convolutions).

    Args:
        model: a built `keras.Model` (Functional or Sequential).

    Returns:
        int.

    Example:

    >>> import keras, keras_transfer
    >>> model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(128),
    ...                           keras.layers.Dense(10)])
    >>> keras_transfer.estimate_flops(model)
    203264
    """
    total = 0
    for layer in _leaf_layers(model):
        kernels = [
            getattr(layer, name) for name in ("kernel", "depthwise_kernel", "pointwise_kernel")
            if getattr(layer, name, None) is not None
        ]
        if not kernels:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # called more than once or never
            continue
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            positions = shape[2:]
        else:
            positions = shape[1:-1]
        if any(p is None for p in positions):
            continue
        per_position = sum(math.prod(k.shape) for k in kernels)
        if hasattr(layer, "pointwise_kernel"):
            # The depthwise stage runs on the input positions, the pointwise on the output.
            per_position = math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape)
        total += 2 * per_position * math.prod(positions)
    return int(total)


def _leaf_layers(layer):
    children = getattr(layer, "layers", None)
    if not children:
        return [layer]
    return [leaf for child in children for leaf in _leaf_layers(child)]


def auto_steps_per_execution(model, batch_size, steps_per_epoch=None):
    """How many training steps to run per compiled call, from the model's size.

    Keras spends about a millisecond per call outside the compiled step (callbacks,
    iterator, Python). For a small model that is most of the step: the MNIST MLP trains
    at 56k samples/s with one step per call and 101k with 32. This picks enough steps
    for one call to take about 0.1 s of compute (guessed from `estimate_flops`), at most
    64 and at most `steps_per_epoch`; large models get 1. Results do not change: the
    same steps run in the same order, only fewer times through Python (batch-level
    callbacks and progress bars then update once per call).

    Args:
        model: `keras.Model`.
        batch_size: int.
        steps_per_epoch: int. Upper bound, if known.

    Returns:
        int >= 1.

    Example:

    >>> import keras_transfer
    >>> mlp = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> keras_transfer.auto_steps_per_execution(mlp, batch_size=128, steps_per_epoch=39)
    39
    >>> big = keras_transfer.build_classifier("resnet50", 10, weights=None)
    >>> keras_transfer.auto_steps_per_execution(big, batch_size=32)
    1
    """
    flops = estimate_flops(model)
    rate = _ASSUMED_FLOPS_PER_SECOND["gpu" if has_gpu() else "cpu"]
    step_seconds = max(3 * flops * batch_size / rate, 1e-6)
    steps = int(_TARGET_SECONDS_PER_EXECUTION // step_seconds)
    steps = max(1, min(steps, _MAX_STEPS_PER_EXECUTION))
    if steps_per_epoch is not None and steps_per_epoch > 0:
        steps = min(steps, int(steps_per_epoch))
    return steps


def set_precision(precision="float32"):
    """Sets the numeric precision of models built and graphs traced from now on.

    - `"float32"`: the default, everything in float32.
    - `"mixed_bfloat16"` / `"mixed_float16"`: Keras mixed precision (variables in
      float32, computation in 16 bits); set it *before* building the model. bf16 pays
      on CPUs with AMX (`has_amx()`) and on recent GPUs; float16 on GPUs only.
    - `"onednn_bfloat16"`: the model stays float32 and TensorFlow's oneDNN graph
      rewrite runs its matrix products and convolutions in bf16 on AMX CPUs. It was the
      fastest bf16 setting for ResNet50 on these CPUs, and applies to models already
      built. CPU only; needs a CPU with AMX or AVX512-BF16.

    The predictions layer of `build_classifier` always computes in float32. Check the
    accuracy you get: on MNIST, bf16 training reached the float32 accuracy within a
    point (`tests/test_performance.py`).

    Args:
        precision: one of `PRECISIONS`. Defaults to `"float32"` (undo).

    Returns:
        The previous precision (to restore it).

    Raises:
        ValueError: an unknown precision, or a 16-bit precision this machine has no
            fast path for.

    Example:

    >>> import keras_transfer
    >>> previous = keras_transfer.set_precision("float32")
    >>> keras_transfer.get_precision()
    'float32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. Received: precision={precision!r}")
    if precision == "onednn_bfloat16" and (has_gpu() or not _cpu_has_bf16()):
        raise ValueError(
            "onednn_bfloat16 needs a CPU with AMX or AVX512-BF16 and no GPU; use "
            "'mixed_bfloat16' (GPU) or 'float32'. Received: precision='onednn_bfloat16'"
        )
    if precision == "mixed_float16" and not has_gpu():
        raise ValueError(
            "mixed_float16 is only fast on GPUs (CPUs emulate float16). Use "
            "'mixed_bfloat16' or 'onednn_bfloat16' on CPU. Received: precision='mixed_float16'"
        )
    previous = get_precision()
    keras.mixed_precision.set_global_policy("float32" if precision == "onednn_bfloat16" else precision)
    tf.config.optimizer.set_experimental_options(
        {"auto_mixed_precision_onednn_bfloat16": precision == "onednn_bfloat16"}
    )
    return previous


def get_precision():
    """The precision `set_precision` last set (`"float32"` by default)."""
    if tf.config.optimizer.get_experimental_options().get("auto_mixed_precision_onednn_bfloat16"):
        return "onednn_bfloat16"
    return keras.mixed_precision.global_policy().name


def _cpu_has_bf16():
    if has_amx():
        return True
    try:
        with open("/proc/cpuinfo") as handle:
            return any(line.startswith("flags") and "avx512_bf16" in line.split() for line in handle)
    except OSError:
        return False
