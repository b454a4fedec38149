"""Stopping a run whose loss became NaN or infinite, with the last good weights back.

Example:

>>> import numpy as np, keras, keras_transfer
>>> from keras_transfer.training.guards import StopOnNonFiniteLoss
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile("sgd", "mse")
>>> x = np.array([[1.0, 2.0], [np.inf, 1.0]])
>>> try:
...     model.fit(x, np.zeros(2), batch_size=1, shuffle=False, verbose=0, callbacks=[StopOnNonFiniteLoss()])
... except keras_transfer.errors.TrainingDiverged as error:
...     print(error.epoch, error.step)
1 1
"""

import math

import keras

from keras_transfer.utils.errors import TrainingDiverged


class StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Stops at the first NaN or infinite loss, restores the last good weights, raises.

    The weights are kept (`model.get_weights()`) when training begins and at the end of
    every epoch whose loss is finite; at the first batch whose logged `loss` is NaN or
    inf the model gets them back and `TrainingDiverged` is raised, naming the epoch and
    step. Other callbacks see no further epoch, so `ModelCheckpoint`'s `best.keras` and
    `BackupAndRestore`'s backup stay at the last good epoch. With
    `steps_per_execution=k > 1` Keras logs every `k` steps: the step named is the last of
    the `k` in which the loss went bad (the message says so).

    `train` adds it by default (`stop_on_nan=True`).
    """

    def __init__(self):
        super().__init__()
        self._good = None
        self._epoch = 0
        self.diverged = None
        self.every = None  # steps per logged batch; default: the model's steps_per_execution

    def on_train_begin(self, logs=None):
        self._good = self.model.get_weights()
        self.diverged = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isfinite(loss):
            return
        self.model.stop_training = True
        if self._good is not None:
            self.model.set_weights(self._good)
        every = int(self.every or getattr(self.model, "steps_per_execution", 1) or 1)
        where = f"epoch {self._epoch + 1}, step {batch}"
        if every > 1:
            where += (
                f" (the loss is logged every {every} steps: it went bad in steps {batch - every + 1}-{batch})"
            )
        self.diverged = (self._epoch + 1, batch, loss)
        last = "the start of the run" if self._epoch == 0 else f"epoch {self._epoch}"
        raise TrainingDiverged(
            f"The training loss became {loss} at {where}. The model is back at its weights "
            f"of the last good epoch ({last}); nothing after it was saved. Lower the learning rate, "
            "check the data for extreme values, or clip gradients "
            "(optimizer=keras.optimizers.Adam(..., clipnorm=1.0)).",
            epoch=self._epoch + 1,
            step=batch,
            loss=loss,
        )

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            self._good = self.model.get_weights()
