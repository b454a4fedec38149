"""The one output convention of the library: `verbose`.

Library functions take `verbose` (`"auto"`, 0, 1 or 2, as Keras `fit` does) and print
nothing at 0; only `workflows` and the CLI take a `log=` callable for their progress
lines. `resolve_verbose("auto")` is Keras progress bars on a terminal and one line per
epoch otherwise (logs, CI).

Example:

>>> from keras_transfer.utils import output
>>> output.resolve_verbose(0), output.resolve_verbose(2)
(0, 2)
"""

import sys


def default_verbose():
    """Keras progress bars on a terminal, one line per epoch otherwise (logs, CI)."""
    return 1 if sys.stdout.isatty() else 2


def resolve_verbose(verbose):
    """`verbose` with `"auto"` replaced by `default_verbose()`."""
    if isinstance(verbose, str):
        if verbose != "auto":
            raise ValueError(f"verbose must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}")
        return default_verbose()
    return verbose
