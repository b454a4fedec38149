"""Training on arrays held in memory, without a per-step input iterator.

Keras's `fit` on a `tf.data.Dataset` pulls every batch through the dataset's iterator:
one `IteratorGetNext` per step, fed by tf.data's own threads, plus the `Optional` and
`tf.cond` plumbing of its multi-step loop. For arrays that are already in memory that
is pure overhead: `ArrayFeed` keeps the images and labels as tensors and its compiled
multi-step function draws its own batches, gathering each batch's rows by index inside
the step loop. The order is the input pipeline's own: the indices come from
`tf.data.Dataset.range(n)` shuffled, repeated and batched exactly as
`data.make_dataset` shuffles, repeats and batches the images, one element (a whole
epoch of index batches) pulled per epoch. For a seed, the batches, and so the trained
weights, equal those of the `tf.data` path.

`train` takes this path by itself for `(x, y)` arrays without augmentation on one
device (`in_memory="auto"`) and says so when `verbose`; `fit_in_memory` is the same
for a compiled model.
"""

import contextlib

import numpy as np
import tensorflow as tf

from keras_transfer.data import datasets as data_lib
from keras_transfer.utils import checks


class ArrayFeed:
    """Arrays as tensors, and the index batches of each epoch.

    Args:
        x: array `(N, ...)` of inputs (cast to float32).
        y: array `(N,)` of integer labels (cast to int64).
        batch_size: int.
        steps_per_epoch: int. Steps of each epoch. Without `repeat` it must be
            `N // batch_size` (a pass, full batches only).
        shuffle: bool. Reshuffle every pass. Defaults to `True`.
        seed: int or `None`. The shuffle seed (as `make_dataset(seed=...)`).
        repeat: bool. The passes run into each other (a step budget): batches may span
            two passes, as `make_dataset(repeat=True)`. Defaults to `False`.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.training.in_memory import ArrayFeed
    >>> feed = ArrayFeed(np.zeros((10, 2)), np.arange(10), batch_size=4,
    ...                  steps_per_epoch=2, seed=0)
    >>> tuple(feed.indices.shape), feed.num_samples
    ((2, 4), 10)
    """

    def __init__(self, x, y, *, batch_size, steps_per_epoch, shuffle=True, seed=None, repeat=False):
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"x and y must be non-empty and of one length. Received: {len(x)} and {len(y)}")
        batch_size = checks.positive_int("batch_size", batch_size)
        steps_per_epoch = checks.positive_int("steps_per_epoch", steps_per_epoch)
        n = len(x)
        if not repeat and steps_per_epoch != n // batch_size:
            raise ValueError(
                f"Without repeat an epoch is one pass of {n // batch_size} full batches of {batch_size}. "
                f"Received: steps_per_epoch={steps_per_epoch}"
            )
        self.num_samples, self.batch_size, self.steps_per_epoch = n, batch_size, steps_per_epoch
        with tf.device("/cpu:0"):
            self.x = tf.convert_to_tensor(x.astype(np.float32, copy=False))
            self.y = tf.convert_to_tensor(y.astype(np.int64, copy=False))
        indices = tf.data.Dataset.range(n)
        if shuffle:
            indices = indices.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            indices = indices.repeat()
        # An epoch's indices as one batch (one batching op over the elements, not two),
        # shaped (steps, batch) where read: the same order as batching twice.
        indices = indices.batch(steps_per_epoch * batch_size, drop_remainder=True)
        options = data_lib.pipeline_options()
        options.experimental_warm_start = True  # the first shuffle starts now
        # Without `repeat`, one pass an epoch, reshuffled (see `next_indices`); with it,
        # the data repeats already and this `repeat` never starts over.
        self.dataset = indices.repeat().prefetch(1).with_options(options)
        self.indices = tf.Variable(tf.zeros((steps_per_epoch, batch_size), tf.int64), trainable=False)
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False)
        # One iterator for the whole run (kept when the train function is remade
        # mid-run, e.g. by `GradualUnfreezing`), made here, outside any trace.
        self.iterator = iter(self.dataset)

    def next_indices(self):
        """The index batches `(steps_per_epoch, batch_size)` of the next epoch; called
        inside the compiled train function at each epoch's first step.

        One iterator for the whole run, made in `__init__`; its `prefetch(1)` computes
        the next epoch's shuffle on a tf.data thread while this epoch trains, off the
        epoch's critical path.

        Without `repeat` the order is that of `train`'s `tf.data` path, which repeats
        a dataset of known length so that `fit` keeps one iterator for the run
        (`fit._repeated`): each pass draws the next shuffle's seeds, so
        epoch e reads the (e+1)-th shuffle, here one repetition of the pass each.
        `tests/test_in_memory.py::test_in_memory_path_equals_the_tf_data_path` holds it
        to the `tf.data` path's weights after three reshuffled epochs.
        """
        return tf.reshape(self.iterator.get_next(), (self.steps_per_epoch, self.batch_size))

    def batch(self, step):
        """The `(images, labels)` of step `step` of the current epoch."""
        rows = self.indices[step]
        return tf.gather(self.x, rows), tf.gather(self.y, rows)


def make_train_function(model, feed, jit_compile=None):
    """A `model.train_function` drawing its batches from `feed`.

    Each call runs `min(model.steps_per_execution, steps left in the epoch)` steps of
    `model.train_step`; the first call of an epoch pulls the epoch's index batches.
    `fit` must be given a dummy dataset and `steps_per_epoch=feed.steps_per_epoch`
    (see `fit_in_memory`): the function does not read the iterator it is given.

    With XLA (`jit_compile`, or `model.jit_compile` when `None`) the whole loop of
    steps is one XLA computation: batch gathers, steps and metric updates without a
    TensorFlow executor hand-off between ops. (Keras's own `jit_compile=True`
    compiles each step alone and calls it from a TensorFlow loop, which on a CPU made
    the MNIST MLP 6x slower than no XLA; the whole loop makes it 1.5x faster:
    `python benchmarks/mlp.py`, `benchmarks/fast_path.py`.) Dropout masks under XLA
    come from XLA's random number generator, so they differ from the non-XLA path's
    for one seed.
    """
    steps_per_execution = int(model.steps_per_execution)
    steps = feed.steps_per_epoch
    whole_loop_xla = bool(model.jit_compile if jit_compile is None else jit_compile) and not model.run_eagerly

    def one_step(data):
        return model.train_step(data)

    if not model.run_eagerly and not whole_loop_xla:
        one_step = tf.function(one_step, reduce_retracing=True)

    def run_steps(position, count):
        logs = one_step(feed.batch(position))
        for i in tf.range(tf.constant(1, tf.int64), count):
            logs = one_step(feed.batch(position + i))
        return logs

    if whole_loop_xla:
        run_steps = tf.function(run_steps, jit_compile=True)

    def multi_step():
        position = feed.position.read_value()
        if position == 0:
            feed.indices.assign(feed.next_indices())
        count = tf.minimum(tf.constant(steps_per_execution, tf.int64), steps - position)
        logs = run_steps(position, count)
        feed.position.assign((position + count) % steps)
        return logs

    if not model.run_eagerly:
        multi_step = tf.function(multi_step, autograph=True)

    def function(_unused_iterator):
        return multi_step()

    return function


@contextlib.contextmanager
def installed(model, feed, jit_compile=None):
    """Runs with `model.train_function` drawing from `feed`; Keras's own afterwards.

    `jit_compile`: the whole step loop as one XLA computation (`None`: the model's own
    `jit_compile`; see `make_train_function`).

    `model.make_train_function` is replaced too, so a callback that remakes the train
    function mid-run (`make_train_function(force=True)` after changing what trains, as
    `GradualUnfreezing` does) gets a new function on the same feed.
    """
    previous = model.train_function

    def make(force=False):
        if model.train_function is None or force:
            model.train_function = make_train_function(model, feed, jit_compile)
        return model.train_function

    model.train_function = make_train_function(model, feed, jit_compile)
    model.make_train_function = make
    try:
        yield
    finally:
        del model.make_train_function  # the class's own again
        model.train_function = previous


def placeholder_dataset():
    """What `fit` iterates while the feed supplies the data: one scalar, repeated."""
    return tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()


def fit_in_memory(model, x, y, *, batch_size=32, epochs=1, steps_per_epoch=None, seed=None, **fit_kwargs):
    """`model.fit` on in-memory arrays with `ArrayFeed` drawing the batches in-graph.

    The model must be compiled; compiled with `jit_compile=True`, the loop of steps
    of each call runs as one XLA computation (`make_train_function`). Batches are the
    full batches of a reshuffled pass
    (as `make_dataset(x, y, shuffle=True, seed=seed, drop_remainder=True)`); with
    `steps_per_epoch` above a pass, the passes run into each other
    (`make_dataset(..., repeat=True)`).

    Args:
        model: compiled `keras.Model`.
        x, y: arrays of inputs and integer labels.
        batch_size: int. Defaults to `32`.
        epochs: int. Defaults to `1`.
        steps_per_epoch: int or `None` (a pass). Defaults to `None`.
        seed: int. The shuffle seed.
        **fit_kwargs: passed to `model.fit` (`validation_data`, `callbacks`,
            `initial_epoch`, `verbose`).

    Returns:
        The `keras.callbacks.History`.

    Example:

    >>> import numpy as np, keras, keras_transfer
    >>> from keras_transfer.training.in_memory import fit_in_memory
    >>> model = keras_transfer.compile_classifier(
    ...     keras_transfer.build_classifier("mnist_mlp", 2, weights=None))
    >>> x = np.random.rand(64, 28, 28, 1) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> history = fit_in_memory(model, x, y, epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"fit_in_memory needs a compiled model. Received: model {model.name!r}, not compiled"
        )
    passes = max(1, len(x) // batch_size)
    steps_per_epoch = passes if steps_per_epoch is None else steps_per_epoch
    feed = ArrayFeed(
        x,
        y,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        repeat=steps_per_epoch != passes or len(x) < batch_size,
    )
    with installed(model, feed):
        return model.fit(
            placeholder_dataset(), epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, **fit_kwargs
        )
