"""Exceptions raised by keras_transfer."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded and are not cached locally.

    Raised instead of Keras's raw "URL fetch failure" traceback; the message says what to
    do: pass `weights=None`, or the path of a local weights file.
    """


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite (`training.guards.StopOnNonFiniteLoss`).

    Raised by `train` (and everything built on it) at the first step whose logged loss is
    not finite; the model has been restored to its weights at the end of the last good
    epoch (or at the start of the run). Attributes: `epoch` (1-based, as Keras prints
    it), `step` (0-based batch index of the epoch) and `loss`.
    """

    def __init__(self, message, *, epoch=None, step=None, loss=None):
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss
