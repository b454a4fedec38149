"""Argument checks shared by every public function: one wording, one set of rules.

Integers accept Python and NumPy integers (never `bool`); each failed check raises
`ValueError` naming the argument and what was received, e.g.
`num_classes must be a positive integer. Received: num_classes=0`.

Example:

>>> import numpy as np
>>> from keras_transfer.utils import checks
>>> checks.positive_int("batch_size", np.int64(32))
32
>>> checks.fraction("validation_split", 0.2, low_open=True, high_open=True)
0.2
>>> checks.one_of("pooling", "avg", ("avg", "max", None))
'avg'
"""

import numbers
import os

import numpy as np


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(name, value, *, maximum=None):
    """`value` as an `int` >= 1 (and <= `maximum` when given)."""
    if not _is_int(value) or value < 1 or (maximum is not None and value > maximum):
        bound = f" in [1, {maximum}]" if maximum is not None else ""
        kind = f"an integer{bound}" if bound else "a positive integer"
        raise ValueError(f"{name} must be {kind}. Received: {name}={value!r}")
    return int(value)


def non_negative_int(name, value):
    """`value` as an `int` >= 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0. Received: {name}={value!r}")
    return int(value)


def optional_non_negative_int(name, value):
    """`None`, or `value` as an `int` >= 0."""
    return None if value is None else non_negative_int(name, value)


def fraction(name, value, *, low_open=False, high_open=False):
    """`value` as a `float` in [0, 1], with the ends excluded where asked."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = (value > 0.0 if low_open else value >= 0.0) and (value < 1.0 if high_open else value <= 1.0)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a float in {interval}. Received: {name}={value!r}")
    return value


def one_of(name, value, choices):
    """`value` if it is one of `choices` (compared with `==`, so `True` and `1` differ
    only where `choices` says so)."""
    if not any(value is choice or (type(value) is type(choice) and value == choice) for choice in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}. Received: {name}={value!r}")
    return value


def safe_name(name, value):
    """`value` as a `str` that names one entry inside a folder: not empty, no path
    separator (`/`, or `\\` on Windows), not `.` or `..`, not an absolute path, so
    `os.path.join(folder, value)` stays inside `folder`.

    Example:

    >>> from keras_transfer.utils import checks
    >>> checks.safe_name("name", "flowers")
    'flowers'
    >>> try:
    ...     checks.safe_name("name", "../../x")
    ... except ValueError as error:
    ...     print(str(error).split(". ")[-1])
    Received: name='../../x'
    """
    separators = {"/", "\\"}
    ok = isinstance(value, str) and value.strip() != "" and value not in (".", "..")
    ok = ok and not any(sep in value for sep in separators) and not os.path.isabs(value)
    ok = ok and "\0" not in value and os.path.normpath(value) == value
    if not ok:
        raise ValueError(
            f"{name} must be a plain folder name (no '/' or '\\', not '..', not absolute, not empty), "
            f"so the output stays inside its folder. Received: {name}={value!r}"
        )
    return value


def positive_number(name, value):
    """`value` as a finite `float` > 0."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if not ok or not np.isfinite(float(value)) or float(value) <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def learning_rate(name, value):
    """A finite number > 0, or a `keras.optimizers.schedules.LearningRateSchedule` (or a
    callable of the step), as Keras optimizers take."""
    if callable(value):
        return value
    return positive_number(name, value)
