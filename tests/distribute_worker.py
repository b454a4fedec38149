"""One process of tests/test_distribute.py: trains a tiny classifier with `keras_transfer.train`.

python tests/distribute_worker.py MODE OUT [WORKDIR]
  MODE: single (no strategy), multi-worker (TF_CONFIG from the environment), mirrored
  (two logical CPUs: a two-replica MirroredStrategy and one replica, both in this process).
Writes OUT (.npz: the final weights, the epochs trained). DIE_AT_EPOCH=k makes the process
exit at the start of epoch k (a killed worker). The training set is read from PNG files
through the memory image cache (`train_dataset`), so every mode also checks that a pipeline
capturing the cache variable shards and distributes to the batches of the arrays.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

EPOCHS = int(os.environ.get("EPOCHS", "3"))


class DieAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            sys.stdout.flush()
            os._exit(3)


def data():
    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(0, 255, size=(256, 8, 8, 1))).astype("float32")  # whole: PNG-exact
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype("int64")
    return x, y


def train_dataset(x, y):
    """The training images as PNG files read through the memory image cache (one
    variable captured by the pipeline, built outside the strategy scope), in `x`'s order:
    the batches of `Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)`,
    checked here. The files are gone before training: the cache was filled when built."""
    import tempfile

    from testing import write_image_folder

    from keras_transfer import image_folder

    with tempfile.TemporaryDirectory() as folder:
        paths = write_image_folder(folder, x, y, ["a", "b"])
        dataset = image_folder.files_dataset(
            paths, y, image_size=8, channels=1, batch_size=32, cache=True, drop_remainder=True
        )
    reference = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True)
    for (images, labels), (want_images, want_labels) in zip(dataset, reference, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
    return dataset


def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(x))


def run(strategy, workdir=None, callbacks=()):
    import keras_transfer

    x, y = data()
    if strategy is None:
        net = model()
    else:
        with strategy.scope():
            net = model()
    history = keras_transfer.train(
        net,
        # A dataset (not arrays): the same batches in the same order in every run (tf.data
        # shuffles in another order once a strategy distributes the dataset).
        train_dataset(x[:192], y[:192]),
        (x[192:], y[192:]),
        epochs=EPOCHS,
        batch_size=32,
        seed=0,
        learning_rate=1e-2,
        workdir=workdir,
        strategy=strategy,
        callbacks=list(callbacks),
        verbose=2,
    )
    return net, history


def main():
    mode, out = sys.argv[1], sys.argv[2]
    workdir = sys.argv[3] if len(sys.argv) > 3 else None
    callbacks = [DieAt(int(os.environ["DIE_AT_EPOCH"]))] if os.environ.get("DIE_AT_EPOCH") else []
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        two, history = run(strategy)
        one, _ = run(None)
        np.savez(
            out,
            two=np.concatenate([w.ravel() for w in two.get_weights()]),
            one=np.concatenate([w.ravel() for w in one.get_weights()]),
            replicas=strategy.num_replicas_in_sync,
            epochs=len(history.history["loss"]),
        )
        return
    from keras_transfer.training import distributed

    if mode == "refusals":  # what the multi-worker path refuses, before any work
        import keras_transfer

        strategy = distributed.resolve_strategy("multi-worker")  # one worker: no TF_CONFIG
        with strategy.scope():
            net = model()
        x, y = data()
        for kwargs in (
            {"steps_per_execution": 4},
            {"method": "feature_cache"},
            {"recalibrate_batchnorm": True},
        ):
            try:
                keras_transfer.train(net, (x, y), epochs=1, strategy=strategy, verbose=0, **kwargs)
                print("ACCEPTED", kwargs)
            except ValueError as error:
                print("REFUSED", error)
        return
    strategy = distributed.resolve_strategy("multi-worker") if mode == "multi-worker" else None
    net, history = run(strategy, workdir, callbacks)
    np.savez(
        out,
        weights=np.concatenate([w.ravel() for w in net.get_weights()]),
        epochs=len(history.history["loss"]),
        val_loss=np.asarray(history.history.get("val_loss", []), "float64"),
    )


if __name__ == "__main__":
    main()
