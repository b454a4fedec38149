"""Speed defaults that follow the device: XLA, steps per execution, bf16 precision.

Measured on 2-core AVX-512/AMX CPUs (see `benchmarks/README.md`): XLA is the main lever
on GPUs; on a CPU it pays only over a whole in-memory loop of Dense steps, long enough to
pay back its compile time (`in_memory_loop_xla`), and makes convolutions slower;
running several steps per compiled call (`steps_per_execution`) removes Keras's per-step
overhead, which dominates small models; bf16 pays on CPUs with AMX and on recent GPUs.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import choices
from keras_transfer.utils import keras_internals

PRECISIONS = choices.PRECISIONS

# Layers whose output channels are the last axis of the kernel; a BatchNormalization
# right after one of them folds into its kernel and bias.
# Layer kinds whose weights a following BatchNormalization can be folded into (used by
# `model_flops` and by `inference.fold_batch_norm`).
FOLDABLE_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)
TRANSPOSED_LAYERS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
DEPTHWISE_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)

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


def _cpu_flags():
    """The CPU feature flags of /proc/cpuinfo (`flags` on x86, `Features` on ARM)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _onednn_enabled():
    """Whether TensorFlow runs its CPU kernels through oneDNN (the bfloat16 kernels)."""
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in ("0", "false"):
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - a TensorFlow without the helper
        return True
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_choice():
    """Who decided whether TensorFlow's oneDNN kernels are on, and what they are.

    `import keras_transfer` before TensorFlow sets `TF_ENABLE_ONEDNN_OPTS=1` on x86
    CPUs unless the variable is already set: TensorFlow turns oneDNN on by itself only
    on CPUs with AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX, and on AVX2-only CPUs its
    oneDNN kernels measured faster than its own (`benchmarks/README.md`). A value the
    user set always wins; with TensorFlow imported first, TensorFlow's default stands.

    Returns:
        A sentence, e.g. `"oneDNN on (set by keras_transfer: TF_ENABLE_ONEDNN_OPTS=1)"`.

    Example:

    >>> import keras_transfer
    >>> keras_transfer.performance.onednn_choice().startswith(("oneDNN on", "oneDNN off"))
    True
    """
    import keras_transfer

    state = "on" if _onednn_enabled() else "off"
    if keras_transfer._USER_TF_ENABLE_ONEDNN_OPTS is not None:
        who = f"the user's TF_ENABLE_ONEDNN_OPTS={keras_transfer._USER_TF_ENABLE_ONEDNN_OPTS}"
    elif keras_transfer._ENABLED_ONEDNN:
        who = "set by keras_transfer: TF_ENABLE_ONEDNN_OPTS=1"
    else:
        who = "TensorFlow's default for this CPU"
    return f"oneDNN {state} ({who})"


def has_amx():
    """Whether the CPU has Intel AMX tiles for bfloat16 (`amx_bf16`, Sapphire Rapids+).

    AMX multiplies bfloat16 matrices about 4x faster than AVX-512 multiplies float32
    ones; `optimize_for_inference(..., precision="bfloat16")` uses it through oneDNN.

    Example:

    >>> import keras_transfer
    >>> isinstance(keras_transfer.has_amx(), bool)
    True
    """
    flags = _cpu_flags()
    return "amx_bf16" in flags and "amx_tile" in flags


def bf16_supported():
    """Whether bfloat16 inference is natively fast here.

    True when TensorFlow runs on oneDNN and the CPU computes in bfloat16 in hardware:
    x86 with AMX (`amx_bf16`) or AVX-512 BF16 (`avx512_bf16`), or ARM with `bf16`.
    Elsewhere bfloat16 is emulated and slower than float32, and
    `optimize_for_inference(..., precision="bfloat16")` refuses it.

    Example:

    >>> import keras_transfer
    >>> isinstance(keras_transfer.bf16_supported(), bool)
    True
    """
    flags = _cpu_flags()
    native = bool(flags & {"amx_bf16", "avx512_bf16", "bf16"})
    return native and _onednn_enabled()


def bf16_unsupported_reason():
    """Why bf16 would not be fast here (a sentence), or `None` where it is (AMX + oneDNN)."""
    if not bf16_supported():
        if not _onednn_enabled():
            return (
                "TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0 or a build "
                "without oneDNN), and they are the ones that compute in bfloat16"
            )
        return (
            "this CPU has no native bfloat16 instructions (neither AMX `amx_bf16` nor "
            "AVX-512 `avx512_bf16`), so bfloat16 would be emulated and slower than float32"
        )
    return None


def _layer_flops(layer, nodes):
    """2 x multiply-adds of the calls `nodes` of a conv / Dense layer (0 for other layers)."""
    if not getattr(layer, "built", False) or not nodes:
        return 0
    flops = 0
    for node in nodes:
        outputs = keras.tree.flatten(node.output_tensors)
        if not outputs:
            continue

        def positions(shape):  # output pixels (conv) or rows (Dense) per sample
            inner = shape[2:] if getattr(layer, "data_format", None) == "channels_first" else shape[1:-1]
            return int(np.prod([d for d in inner if d is not None])) if len(shape) > 2 else 1

        spatial = positions(outputs[0].shape)
        if isinstance(layer, DEPTHWISE_LAYERS):
            kernel = layer.kernel.shape  # (*k, in, multiplier)
            macs = int(np.prod(kernel)) * spatial
        elif isinstance(layer, keras.layers.SeparableConv1D) or isinstance(
            layer, keras.layers.SeparableConv2D
        ):
            macs = int(np.prod(layer.depthwise_kernel.shape)) * spatial
            macs += int(np.prod(layer.pointwise_kernel.shape)) * spatial
        elif isinstance(layer, FOLDABLE_LAYERS + TRANSPOSED_LAYERS):
            # Dense on (batch, ..., features): every leading position is a matmul row.
            if isinstance(layer, TRANSPOSED_LAYERS):  # each input pixel meets the whole kernel
                spatial = positions(keras.tree.flatten(node.input_tensors)[0].shape)
            macs = int(np.prod(layer.kernel.shape)) * spatial
        else:
            return 0
        flops += 2 * macs
    return flops


def model_flops(model):
    """Floating-point operations of one forward pass of one sample.

    Counts 2 per multiply-add of the convolution (including depthwise, separable and
    transposed) and Dense layers, nested models included; biases, BatchNorm,
    activations and pooling are not counted (they are a few % at most in a CNN).
    ResNet50 at 224x224 counts 7.7e9 (3.86 GMAC; the usual "4.1 GMAC" also
    counts the other layers).

    Args:
        model: a built Keras model (functional or Sequential: the layers' output shapes
            must be known).

    Returns:
        int.

    Example:

    >>> import keras
    >>> import keras_transfer
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...                           keras.layers.Conv2D(4, 3, padding="same"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(10)])
    >>> keras_transfer.model_flops(model) == 2 * (3 * 3 * 3 * 4 * 8 * 8 + 256 * 10)
    True
    """
    total = 0
    calls = keras_internals.graph_calls(model)  # not a cached head's calls, say
    for layer in model.layers:
        nodes = calls.get(id(layer), [])
        if isinstance(layer, keras.Model):
            total += model_flops(layer) * max(1, len(nodes))
        else:
            total += _layer_flops(layer, nodes)
    return total


def default_jit_compile():
    """Whether XLA pays here for every training step: `True` with a GPU, `False` on CPU.

    On 2-core AVX-512 CPUs Keras's `jit_compile=True` (each step compiled alone, called
    from a TensorFlow loop) made the MNIST MLP about 6x slower (35.9k vs 204k samples/s,
    `python benchmarks/mlp.py` before the whole-loop change) and convolutions slower,
    while it is the main lever on GPUs. On a CPU `train` still compiles the in-memory
    loop of a long Dense-only run as a whole (`in_memory_loop_xla`).

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


# `train`'s in-memory loop as one XLA computation on a CPU (`in_memory_loop_xla`): the
# layer kinds measured to compile well there (the MNIST MLP's), and the planned steps
# from which the compile time is paid back, with a margin: `python
# benchmarks/xla_break_even.py` (the MNIST MLP's `train` wall time by run length, batch
# 128, 2-core AMD EPYC, 2026-12-04): XLA +1.05 s fixed, 0.28 ms less per step, even at
# 3,721 steps (2,340 steps: 2.79 s with XLA vs 2.37 s without; 4,680: 3.70 vs 4.00 s).
# The MNIST CNN's steps under XLA ran 0.48x as fast, after seconds of compile time
# (`python benchmarks/fast_path.py`, its `xla_loop` line).
_LOOP_XLA_CPU_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Softmax,
)
LOOP_XLA_CPU_MIN_STEPS = 5000


def in_memory_loop_xla(model, steps):
    """Whether `train(jit_compile="auto")` runs its in-memory step loop under XLA.

    On a GPU XLA always pays. On a CPU, TensorFlow's executor hands the many small ops
    of a Dense step from thread to thread; XLA compiled over the whole loop of steps
    (`training.in_memory.make_train_function`) runs the MNIST MLP 1.5x faster, but
    costs about a second of compile time first, and runs convolutions slower (the MNIST
    CNN 0.48x). So on a CPU: only when every layer is a kind measured to compile well
    (Dense, Dropout, Flatten, Reshape, Rescaling, activations, and the toolkit's pixel
    preprocessing), the run plans at least `LOOP_XLA_CPU_MIN_STEPS` (5,000) steps,
    where the faster steps have paid back the compile time (`python
    benchmarks/xla_break_even.py` measures where that is on a machine), and the
    precision is not `"onednn_bfloat16"` (a graph rewrite of TensorFlow's, not measured
    under XLA).

    Args:
        model: `keras.Model`.
        steps: int. The optimizer steps the run plans.

    Returns:
        bool.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.performance import in_memory_loop_xla
    >>> mlp = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> cnn = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    >>> has_gpu = keras_transfer.has_gpu()
    >>> in_memory_loop_xla(mlp, 5000) or has_gpu, in_memory_loop_xla(mlp, 100) == has_gpu
    (True, True)
    >>> in_memory_loop_xla(cnn, 5000) == has_gpu
    True
    """
    if has_gpu():
        return True
    if steps is None or steps < LOOP_XLA_CPU_MIN_STEPS:
        return False
    if get_precision() == "onednn_bfloat16":
        return False  # TensorFlow's graph rewrite: not measured under XLA
    from keras_transfer.backbones.preprocessing import BackbonePreprocessing

    allowed = _LOOP_XLA_CPU_LAYERS + (BackbonePreprocessing,)
    for layer in keras_internals.flatten_layers(model, include_self=False):
        if isinstance(layer, keras.Model):
            continue  # a container: its own layers are in the list
        if not isinstance(layer, allowed):
            return False
    return True


def auto_steps_per_execution(model, batch_size, steps_per_epoch=None):
    """How many training steps to run per compiled call, from the model's size.

    Keras spends about a millisecond per call outside the compiled step (callbacks,
    iterator, Python). For a small model (the MNIST MLP's step is about a millisecond
    of compute) that doubles the time per step. This picks enough steps
    for one call to take about 0.1 s of compute (guessed from `model_flops`), at most
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
    flops = model_flops(model)
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
    if precision == "onednn_bfloat16" and (has_gpu() or not bf16_supported()):
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
