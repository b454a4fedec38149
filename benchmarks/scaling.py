"""Cost that stays flat as data grows: image-folder throughput and memory at 1k, 10k, 50k images.

    python benchmarks/scaling.py [--smoke] [--json PATH]

Image folders of 1,000, 10,000 and 50,000 small JPEGs (32x32 RGB, 10 class folders,
deterministic content: a class colour and stripe pattern with seeded noise, quality 90,
about 1 KB each) are written once to a temp dir (the 50k folder; the smaller ones are hard
links to its first files per class); the writing time is printed, not a figure. `--smoke`
uses 200 / 400 / 800 images.

Each size then runs in its own fresh process (`--child`), `PROCESS_ROUNDS` = 2
processes per size in alternating rounds (1k, 10k, 50k, 1k, 10k, 50k; one in
`--smoke`): a stage's time at a size is the best over its processes, its peak RSS the
highest. With one process per size, one slow process moved a flatness figure by 0.1-0.3
(the 10k process of one run took 4.12 s for its feature pass, 3.05-3.19 s in the runs
before). A process builds the model, runs the whole sequence once on a 100-image
warm-up folder (first-time costs: thread pools, first traces; not timed; skipped in
`--smoke`), then `SEQUENCES` = 2 times on the folder of its size. Every size gets the
same number of timings of every stage (before, 1k got the best of 3 sequences, 10k of
2 and 50k of 1, and a best of more timings is lower). The memory figure is the
process's peak RSS (`ru_maxrss`) right after its first sequence of its size: the warm-up
and one pipeline, what a user's run holds. The second pipeline of the same folder in
the same process adds up to one more cache (TensorFlow's oneDNN CPU allocator keeps a
freed cache's memory in its pool, and the new cache does not fit in it whole); the
process's own peak (`os.wait4`'s `ru_maxrss`) is in the detail.

- **scan**: `keras_transfer.image_folder_datasets(folder, image_size=32, batch_size=64,
  validation_split=0, cache="auto")` (lists and decodes every file once to check it) and
  the first epoch (decoding and filling the image cache).
- **epoch**: a later epoch of that pipeline, from the image cache: each timing runs
  `ceil(EPOCH_IMAGES / n)` epochs back to back (`EPOCH_IMAGES` = 50,000: 50 epochs at
  1k, 5 at 10k, 1 at 50k) and takes their mean, best of `EPOCH_REPEATS` = 5 timings. A
  1k epoch from memory takes about 13 ms, where one scheduler hiccup is a large part
  of a single timing.
- **feature cache**: `keras_transfer.compute_features(features, folder.train)`, the pass
  `train(..., feature_cache=True)` makes, with the frozen front of
  `build_classifier("mobilenet_v3_small", 10, weights=None, input_shape=(32, 32, 3),
  freeze_backbone=True)` (`split_frozen_features`): the backbone once over every image
  of the image cache, the features kept (in memory, or memory-mapped beyond 2 GiB); best
  of `FEATURE_REPEATS` = 3 passes per sequence.

Each call has a fixed cost (building pipelines, tracing `tf.function`s) that a run pays
once, about 2 s here, more than a whole 1k-image pass: `n / T(n)` then mostly measures
it. What must stay flat as data grows is the cost of each further image, so throughput
is taken **between sizes**: `(n2 - n1) / (T(n2) - T(n1))` for 1k -> 10k and 10k -> 50k
(every process pays the same fixed cost), and the raw `n / T(n)` of each size is in the
detail.

Figures: for each of scan, epoch and feature cache, **flatness** = min / max of the two
throughputs between sizes (goal >= 0.8: within 20%); **memory**: peak RSS at the largest size
over the smallest (goal <= 2x: the process's base (TensorFlow, Keras, the model, about
1 GB) stays, and what grows is the image cache (50k x 32x32x3 float32 = 0.61 GB, in
memory by `cache="auto"`'s rule since it is far below half the memory) and the features
(50k x 576 float32 = 0.12 GB), so 2x bounds it with room for tf.data's buffers; the
absolute peak and the growth over the planned cache are in the detail). The cache
decision at each size is printed and in the detail, with one more row for a simulated
100,000 x 224x224 folder (no images written: `plan_image_cache`, the function the
pipeline itself calls, on this machine's memory and disk).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SIZES = (1000, 10_000, 50_000)
PROCESS_ROUNDS = 2  # fresh processes per size, alternating 1k, 10k, 50k, 1k, ...
SEQUENCES = 2  # timed sequences per process, the same at every size
EPOCH_REPEATS = 5
EPOCH_IMAGES = 50_000  # images per epoch timing: ceil(EPOCH_IMAGES / n) epochs back to back
FEATURE_REPEATS = 3
SMOKE_SIZES = (200, 400, 800)
WARM = 100  # images of the warm-up folder (first-time costs of a process)
CLASSES = 10
IMAGE = 32
BATCH = 64
BACKBONE = "mobilenet_v3_small"
FLAT_GOAL = 0.8
MEMORY_GOAL = 2.0
SIMULATED = (100_000, 224)  # images, side: the decision row, no images written

STAGES = {
    "scan": "image_folder_datasets scan + first epoch (cache filled)",
    "epoch": "a later epoch from the image cache",
    "features": f"feature cache: compute_features, a frozen {BACKBONE} once over the cached images",
}


def write_folder(root, count, seed=0):
    """Writes `count` deterministic 32x32 RGB JPEGs, `count / 10` per class folder."""
    import tensorflow as tf

    per_class = count // CLASSES
    rng = np.random.default_rng(seed)
    palette = rng.uniform(40, 215, (CLASSES, 3)).astype(np.float32)
    index = np.arange(CLASSES * per_class)
    label = index % CLASSES

    def draw(i, c):
        colour = tf.gather(palette, c)
        rows = tf.range(IMAGE, dtype=tf.float32)[:, None, None]
        # A stripe frequency per class, a phase per image.
        stripes = 40.0 * tf.sin(rows * tf.cast(c + 1, tf.float32) * 0.2 + tf.cast(i, tf.float32))
        noise = tf.random.stateless_normal((IMAGE, IMAGE, 3), seed=tf.stack([i, seed]), stddev=12.0)
        image = tf.clip_by_value(colour + stripes + noise, 0.0, 255.0)
        return tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90)

    for c in range(CLASSES):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
    ds = tf.data.Dataset.from_tensor_slices((index, label)).map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    paths, total = [], 0
    for i, encoded in zip(index, ds.as_numpy_iterator()):
        path = os.path.join(root, f"class_{label[i]}", f"{i // CLASSES:06d}.jpg")
        with open(path, "wb") as handle:
            handle.write(encoded)
        paths.append(path)
        total += len(encoded)
    return paths, total


def link_folder(source_paths, root, count):
    """`count` of the images (the first of each class) as hard links under `root`."""
    per_class = count // CLASSES
    for path in source_paths:
        name, file = os.path.basename(os.path.dirname(path)), os.path.basename(path)
        if int(os.path.splitext(file)[0]) < per_class:
            os.makedirs(os.path.join(root, name), exist_ok=True)
            try:
                os.link(path, os.path.join(root, name, file))
            except OSError:
                shutil.copyfile(path, os.path.join(root, name, file))


# The child process: one size.


def _epoch(dataset):
    count = 0
    for x, _ in dataset:
        count += int(x.shape[0])
    return count


def _sequence(folder, cache_dir, feature_model, epoch_images=EPOCH_IMAGES):
    """Seconds of scan + first epoch, a later epoch (best of `EPOCH_REPEATS`), the feature pass
    (best of `FEATURE_REPEATS`)."""
    import keras_transfer

    times = {}
    start = time.perf_counter()
    data = keras_transfer.image_folder_datasets(
        folder,
        image_size=IMAGE,
        batch_size=BATCH,
        validation_split=0.0,
        cache="auto",
        cache_dir=cache_dir,
        shuffle=True,
        seed=0,
        verbose=False,
    )
    n = _epoch(data.train)
    times["scan"] = time.perf_counter() - start
    epochs = max(1, -(-epoch_images // n))
    best = float("inf")
    for _ in range(EPOCH_REPEATS):
        start = time.perf_counter()
        for _ in range(epochs):
            assert _epoch(data.train) == n
        best = min(best, (time.perf_counter() - start) / epochs)
    times["epoch"] = best
    best = float("inf")
    for _ in range(FEATURE_REPEATS):
        features = labels = None  # the last pass's features are freed before the next
        start = time.perf_counter()
        features, labels = keras_transfer.compute_features(feature_model, data.train)
        best = min(best, time.perf_counter() - start)
        assert features.shape[0] == n == len(labels), (features.shape, n)
    times["features"] = best
    return n, times, int(features.nbytes)


def _best(runs):
    return {stage: min(times[stage] for times in runs) for stage in STAGES}


def _peak_rss():
    """This process's peak RSS so far in bytes (`ru_maxrss`, KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(folder, warm, out, cache_dir, mode):
    import keras
    import tensorflow as tf

    # Retracing notices (the pipelines' functions, once per sequence) are not figures.
    tf.get_logger().setLevel("ERROR")

    import keras_transfer
    from keras_transfer.data import image_folder

    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier(
        BACKBONE, CLASSES, weights=None, input_shape=(IMAGE, IMAGE, 3), freeze_backbone=True
    )
    feature_model = keras_transfer.split_frozen_features(model).features
    smoke = mode == "smoke"
    epoch_images = 0 if smoke else EPOCH_IMAGES  # --smoke and the warm-up: one epoch per timing
    if not smoke:
        _sequence(warm, cache_dir, feature_model, 0)  # first-time costs of the process, not timed
    count = sum(len(files) for _, _, files in os.walk(folder))
    plan = image_folder.plan_image_cache(count, IMAGE, 3, cache_dir=cache_dir)
    print(f"  {count:,} images; Image cache: {plan.reason}.", flush=True)
    repeats = 1 if smoke else SEQUENCES
    runs = [_sequence(folder, cache_dir, feature_model, epoch_images)]
    first_peak = _peak_rss()  # the warm-up and one pipeline of this size: the memory figure
    runs += [_sequence(folder, cache_dir, feature_model, epoch_images) for _ in range(repeats - 1)]
    n, feature_bytes = runs[0][0], runs[0][2]
    assert n == count, (n, count)
    with open(out, "w") as handle:
        json.dump(
            {
                "n": n,
                "times": _best([r[1] for r in runs]),
                "repeats": repeats,
                "first_peak": first_peak,
                "plan": plan.kind,
                "reason": plan.reason,
                "estimated_bytes": plan.estimated_bytes,
                "feature_bytes": feature_bytes,
            },
            handle,
        )


# The parent: writes the folders, runs one child per size.


def _run_child(folder, warm, cache_dir, label, smoke):
    """Runs the child in a fresh process; returns (its results, peak RSS bytes, seconds)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    mode = "smoke" if smoke else "full"
    command = [sys.executable, os.path.abspath(__file__), "--child", folder, warm, out, cache_dir, mode]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=common.ROOT, env=env, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        print(f"[{label}] {line}", end="", flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    try:
        if code != 0:
            raise RuntimeError(f"the {label} child process failed with exit code {code}")
        with open(out) as handle:
            return json.load(handle), usage.ru_maxrss * 1024, seconds
    finally:
        os.remove(out)


def _between(results, sizes, stage):
    """Images/s between consecutive sizes: (n2 - n1) / (T(n2) - T(n1))."""
    rates = []
    for small, large in zip(sizes, sizes[1:]):
        seconds = results[large]["times"][stage] - results[small]["times"][stage]
        rates.append((large - small) / seconds if seconds > 0 else float("inf"))
    return rates


def run(smoke=False):
    from keras_transfer.data import image_folder

    sizes = SMOKE_SIZES if smoke else SIZES
    root = tempfile.mkdtemp(prefix="kt_scaling_")
    try:
        start = time.perf_counter()
        largest = os.path.join(root, f"n{sizes[-1]}")
        paths, total = write_folder(largest, sizes[-1])
        folders = {sizes[-1]: largest}
        for size in (WARM,) + sizes[:-1]:
            folders[size] = os.path.join(root, f"n{size}")
            link_folder(paths, folders[size], size)
        print(
            f"Wrote {len(paths):,} JPEGs ({IMAGE}x{IMAGE} RGB, {total / len(paths) / 1024:.1f} KB each, "
            f"{CLASSES} classes) and the smaller folders as hard links in "
            f"{time.perf_counter() - start:.1f}s to {root} (not a figure)",
            flush=True,
        )
        cache_dir = os.path.join(root, "image_cache")
        runs = {size: [] for size in sizes}
        for round_ in range(1 if smoke else PROCESS_ROUNDS):
            for size in sizes:
                label = f"{size:,}" + ("" if smoke else f" round {round_ + 1}")
                result, rss, seconds = _run_child(folders[size], folders[WARM], cache_dir, label, smoke)
                result["rss"], result["process_rss"] = result["first_peak"], rss
                runs[size].append(result)
                line = ", ".join(f"{stage} {size / result['times'][stage]:,.0f} img/s" for stage in STAGES)
                print(
                    f"  {size:,} images: {line}; peak RSS {result['rss'] / 1e9:.2f} GB after one pipeline, "
                    f"{rss / 1e9:.2f} GB for the process; process {seconds:.0f}s",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # Per size: the best time of each stage over its processes, the highest peak RSS.
    results = {
        size: {
            **done[0],
            "times": {stage: min(r["times"][stage] for r in done) for stage in STAGES},
            "rss": max(r["rss"] for r in done),
            "all_rss": [r["rss"] for r in done],
            "process_rss": max(r["process_rss"] for r in done),
        }
        for size, done in runs.items()
    }

    figures = []
    counts = ", ".join(f"{size:,}" for size in sizes)
    for stage, what in STAGES.items():
        between = _between(results, sizes, stage)
        # A larger size no slower than a smaller one (noise at --smoke sizes) is no rate.
        flatness = min(between) / max(between) if all(np.isfinite(between)) else 0.0
        segments = "; ".join(
            f"{a:,} -> {b:,}: {rate:,.0f} img/s" for a, b, rate in zip(sizes, sizes[1:], between)
        )
        seconds = {size: results[size]["times"][stage] for size in sizes}
        raw = "; ".join(f"{n:,}: {t:.3f}s = {n / t:,.0f} img/s" for n, t in seconds.items())
        figures.append(
            common.Figure(
                f"scaling: {stage} throughput flatness, min/max between {counts} images",
                flatness,
                FLAT_GOAL,
                detail=f"{what}; images/s between sizes {segments} (raw, with the fixed cost: {raw})",
            )
        )
    small, large = results[sizes[0]], results[sizes[-1]]
    growth = large["rss"] - small["rss"]
    planned = large["estimated_bytes"] - small["estimated_bytes"]
    decisions = "; ".join(f"{size:,}: {results[size]['plan']}" for size in sizes)
    simulated = image_folder.plan_image_cache(SIMULATED[0], SIMULATED[1], 3)
    print(f"  {SIMULATED[0]:,} x {SIMULATED[1]}x{SIMULATED[1]} (simulated): Image cache: {simulated.reason}.")
    figures.append(
        common.Figure(
            f"scaling: peak RSS at {sizes[-1]:,} images over {sizes[0]:,}",
            large["rss"] / small["rss"],
            MEMORY_GOAL,
            comparison="<=",
            detail=(
                f"peak RSS after the warm-up and the first pipeline of the size (ru_maxrss of each "
                f"size's own processes, the highest: "
                f"{', '.join(f'{r / 1e9:.2f}' for r in small['all_rss'])} and "
                f"{', '.join(f'{r / 1e9:.2f}' for r in large['all_rss'])} GB) {small['rss'] / 1e9:.2f} GB at "
                f"{sizes[0]:,} -> {large['rss'] / 1e9:.2f} GB at {sizes[-1]:,}: +{growth / 1e9:.2f} GB for "
                f"+{planned / 1e9:.2f} GB of planned image cache ({growth / max(planned, 1):.2f}x; the "
                f"rest is features and tf.data buffers). With its second pipeline the {sizes[-1]:,} "
                f"process peaked at {large['process_rss'] / 1e9:.2f} GB (TensorFlow's oneDNN CPU allocator "
                f"keeps a freed cache in its pool, where the next cache does not fit whole). "
                f"Image cache (cache='auto'): {decisions}; a "
                f"simulated {SIMULATED[0]:,} x {SIMULATED[1]}x{SIMULATED[1]}x3 folder on this machine: "
                f"{simulated.kind} ({simulated.reason})"
            ),
        )
    )
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        sys.path.insert(0, common.ROOT)
        child(*sys.argv[2:])
    else:
        common.main(run, description=__doc__.splitlines()[0])
