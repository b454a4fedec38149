"""Exceptions raised by keras_transfer."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded and are not cached locally.

    Raised instead of Keras's raw "URL fetch failure" traceback; the message says what to
    do: pass `weights=None`, or the path of a local weights file.
    """
