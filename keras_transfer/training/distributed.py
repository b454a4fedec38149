"""Training on `tf.distribute`: `MirroredStrategy` through Keras `fit`, and
`MultiWorkerMirroredStrategy` through a `strategy.run` loop.

Which path runs, and why:

- **One machine, several devices** (`tf.distribute.MirroredStrategy`, or any strategy
  that is not multi-worker): Keras `fit`, as without a strategy. One thing differs:
  Keras 3's multi-step train function (`steps_per_execution` above 1) fails under a
  multi-replica strategy ("You must feed a value for placeholder tensor
  'while/cond/Placeholder_1'", plain Keras too), so `train` runs one step per call
  there and prints a line saying so.
- **Several machines** (`tf.distribute.MultiWorkerMirroredStrategy`, configured by
  `TF_CONFIG`): Keras 3's `fit` does not work under it (keras-team/keras#20585: "Attempt
  to convert a value (PerReplica...) ... to a Tensor"; Keras's maintainers say Keras 3
  does not support it). `fit_multi_worker` runs the same model's own `train_step` and
  `test_step` (so the same loss, optimizer and metrics) inside `strategy.run`, on
  tf.distribute's collectives (the optimizer all-reduces the gradients), and drives the
  same Keras callbacks (History, early stopping, the best checkpoint, the crash
  backup). The epoch's logs are averaged over the workers, so every worker takes the
  same decisions (early stopping) and stays in step.

Data: each worker reads its shard of the global batches: `tf.data`'s auto-shard policy
`DATA` (each worker keeps its part of every global batch, so a run on N workers sees the
batches one process would see) unless the dataset sets its own policy. The global batch
(`batch_size`) is split across all replicas.

Files: only the chief writes (`keras_transfer.utils.files.is_chief`): the best
checkpoint and exports go through `files.atomic_path`, which gives the other workers a
throw-away folder; the crash backup (`ChiefBackupAndRestore`) is written by the chief
and read by every worker when the run restarts, so the work folder must be one that
every worker can read (a shared file system).

Example:

>>> import tensorflow as tf
>>> from keras_transfer.training import distributed
>>> strategy = distributed.resolve_strategy("mirrored")
>>> type(strategy).__name__, distributed.is_multi_worker(strategy)
('MirroredStrategy', False)
"""

import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import files

STRATEGIES = ("mirrored", "multi-worker")


def resolve_strategy(strategy):
    """A `tf.distribute.Strategy` from one, or from `"mirrored"` / `"multi-worker"`.

    `"mirrored"` is `tf.distribute.MirroredStrategy()` over every local device;
    `"multi-worker"` is `tf.distribute.MultiWorkerMirroredStrategy()`, configured by
    `TF_CONFIG` (checked first: a JSON object with a `"cluster"` and a `"task"`).

    Raises:
        ValueError: another name or type, or a malformed `TF_CONFIG`.
    """
    if strategy is None or isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if strategy == "multi-worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"strategy must be a tf.distribute.Strategy or one of {STRATEGIES}. Received: strategy={strategy!r}"
    )


def check_tf_config():
    """Checks `TF_CONFIG` (if set) before TensorFlow reads it: a JSON object whose
    `"cluster"` maps job names to lists of `host:port` and whose `"task"` names a job
    of the cluster and an index in it.

    Raises:
        ValueError: naming what is wrong and the value received.
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return None
    files.is_chief()  # JSON object, task type and index (its own messages)
    config = json.loads(raw)
    cluster, task = config.get("cluster"), config.get("task") or {}
    if (
        not isinstance(cluster, dict)
        or not cluster
        or not all(
            isinstance(v, list) and v and all(isinstance(a, str) and ":" in a for a in v)
            for v in cluster.values()
        )
    ):
        raise ValueError(
            'TF_CONFIG needs a "cluster" mapping each job to a list of "host:port" addresses, e.g. '
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}. '
            f"Received: TF_CONFIG={raw!r}"
        )
    if task and (
        task.get("type") not in cluster or not 0 <= task.get("index", 0) < len(cluster[task["type"]])
    ):
        raise ValueError(
            f'The "task" of TF_CONFIG must name a job of its "cluster" ({sorted(cluster)}) and an index '
            f"in it. Received: TF_CONFIG={raw!r}"
        )
    return config


def is_multi_worker(strategy):
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` (the `strategy.run` path)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_model(model, strategy):
    """Refuses a model whose variables were not created under `strategy.scope()`
    (Keras trains a model with the strategy it was built under).

    Raises:
        ValueError: naming the model and what to do.
    """
    built_under = getattr(model, "_distribute_strategy", None)
    if built_under is not strategy:
        where = type(built_under).__name__ if built_under else "no strategy"
        raise ValueError(
            f"Model {model.name!r} was not built under this strategy's scope, so its variables are "
            f"not distributed: build it inside `with strategy.scope():` (e.g. "
            f"`with strategy.scope(): model = keras_transfer.build_classifier(...)`) and pass the same "
            f"strategy. Received: a model built under {where}, "
            f"strategy={type(strategy).__name__}"
        )


def shard(dataset):
    """`dataset` with the auto-shard policy `DATA`, unless it sets its own."""
    options = dataset.options()
    if options.experimental_distribute.auto_shard_policy != tf.data.experimental.AutoShardPolicy.AUTO:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` written by the chief only (every worker reads it).

    Every worker restores the same backup when the run restarts. Saving runs on every
    worker (reading distributed variables may run collective ops), the other workers
    into a throw-away folder.

    Example:

    >>> from keras_transfer.training import distributed
    >>> distributed.ChiefBackupAndRestore("/tmp/run/backup").backup_dir
    '/tmp/run/backup'
    """

    _PATHS = (
        "backup_dir",
        "_weights_path",
        "_training_metadata_path",
        "_prev_weights_path",
        "_prev_training_metadata_path",
    )

    def _save_model(self):
        if files.is_chief():
            return super()._save_model()
        kept = {name: getattr(self, name) for name in self._PATHS}
        scratch = tempfile.mkdtemp(prefix="keras_transfer_not_chief_")
        try:
            for name, path in kept.items():
                setattr(self, name, os.path.join(scratch, os.path.relpath(path, kept["backup_dir"])))
            super()._save_model()
        finally:
            for name, path in kept.items():
                setattr(self, name, path)
            shutil.rmtree(scratch, ignore_errors=True)

    def on_train_end(self, logs=None):
        if files.is_chief():
            super().on_train_end(logs)


def _mean_over_workers(strategy, values):
    """The mean of `values` (floats) over every replica of the cluster."""
    tensor = tf.constant(values, tf.float32)

    def mean(t):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, t)

    result = strategy.run(mean, args=(tensor,))
    return [float(v) for v in strategy.experimental_local_results(result)[0].numpy()]


def _epoch_logs(model, strategy, prefix=""):
    logs = {prefix + k: float(v) for k, v in model.get_metrics_result().items()}
    if not logs:
        return logs
    keys = sorted(logs)
    return dict(zip(keys, _mean_over_workers(strategy, [logs[k] for k in keys])))


def fit_multi_worker(
    model,
    train_data,
    *,
    strategy,
    epochs,
    steps_per_epoch=None,
    validation_data=None,
    initial_epoch=0,
    callbacks=(),
    verbose=2,
):
    """Trains `model` under a `MultiWorkerMirroredStrategy` with a `strategy.run` loop.

    The model's own `train_step` / `test_step` run on each replica (its compiled loss,
    optimizer and metrics; the optimizer all-reduces the gradients); the Keras callbacks
    get the usual calls; `keras.callbacks.BackupAndRestore` becomes
    `ChiefBackupAndRestore`. Called by `keras_transfer.train(..., strategy=)`; use that.

    Args:
        model: compiled `keras.Model`, built under `strategy.scope()`.
        train_data: `tf.data.Dataset` of global batches (full batches: every worker runs
            the same number of steps).
        strategy: `tf.distribute.MultiWorkerMirroredStrategy`.
        epochs: int. The last epoch (as `fit`'s).
        steps_per_epoch: int or `None` (the dataset's cardinality).
        validation_data: `tf.data.Dataset` or `None`.
        initial_epoch: int.
        callbacks: Keras callbacks.
        verbose: 0, 1 or 2 (one line per epoch on the chief).

    Returns:
        The `keras.callbacks.History`.

    Raises:
        ValueError: a dataset of unknown length without `steps_per_epoch`.
    """
    if steps_per_epoch is None:
        steps_per_epoch = int(train_data.cardinality())
        if steps_per_epoch < 1:
            raise ValueError(
                "The multi-worker loop needs the number of steps per epoch: a dataset of known "
                f"length or steps_per_epoch. Received: cardinality {steps_per_epoch}"
            )
    callbacks = [
        ChiefBackupAndRestore(c.backup_dir) if type(c) is keras.callbacks.BackupAndRestore else c
        for c in callbacks
    ]
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        callbacks + [history], model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    distributed_train = strategy.experimental_distribute_dataset(shard(train_data))
    distributed_validation = (
        strategy.experimental_distribute_dataset(shard(validation_data))
        if validation_data is not None
        else None
    )

    @tf.function
    def train_step(iterator):
        return strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def test_step(batch):
        return strategy.run(model.test_step, args=(batch,))

    model.stop_training = False
    model._initial_epoch = initial_epoch
    callback_list.on_train_begin()
    start_epoch = max(initial_epoch, getattr(model, "_initial_epoch", None) or 0)
    if start_epoch > initial_epoch and verbose and files.is_chief():
        print(f"Resumed from the crash backup: epoch {start_epoch} of {epochs}.")
    logs = {}
    for epoch in range(start_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        started = time.perf_counter()
        iterator = iter(distributed_train)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_step(iterator)
            callback_list.on_train_batch_end(
                step, {k: float(v) for k, v in model.get_metrics_result().items()}
            )
            if model.stop_training:
                break
        logs = _epoch_logs(model, strategy)
        if distributed_validation is not None:
            model.reset_metrics()
            callback_list.on_test_begin()
            for batch in distributed_validation:
                test_step(batch)
            logs.update(_epoch_logs(model, strategy, prefix="val_"))
            callback_list.on_test_end(logs)
        callback_list.on_epoch_end(epoch, logs)
        if verbose and files.is_chief():
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.1f}s - {shown}")
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


def weights_digest(model):
    """A float64 sum of every weight, for comparing workers' models in logs and tests."""
    return float(sum(np.sum(np.asarray(w, np.float64)) for w in model.get_weights()))
