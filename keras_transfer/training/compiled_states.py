"""The compiled states a model keeps across `train` calls: a run that compiles as an
earlier run on the same model did gets that run's traced functions back.

`train` compiles the model for every run, and compiling drops the traced train, test
and predict functions, so every run traced and optimised its graphs again (in the
demo of `benchmarks/demo_pipeline.py`, the runs that still trace took up to 1.4 s
more than the others, of 2.5-7.6 s per run). A sweep (`learning_curves`, the demo)
trains one model many times with a few configurations: per budget and seed, scratch,
frozen and the two stages of fine-tuning.

`compile_for_run(model, optimizer, key, compile)` keeps, per model, the compiled
state of each configuration it has seen (`keras_internals.compiled_state`: the
optimizer, loss and metric objects, and the functions traced on them). `run_key`
names everything a traced function bakes in: the optimizer's class and config (its
learning rate or schedule with every constant), the loss's settings, `jit_compile`,
and which layers and variables train, with their regularizers and constraints
(`trainable_key`). On a known key the state comes back, its optimizer given the
values of the new optimizer the run would have compiled with (built on the same
variables: `iterations` 0, zero moments, the run's learning rate) and its metrics
reset: what `compile` gives, with the traced functions kept. Anything else compiles.
The in-memory feed (`training.in_memory`) makes its own train function per run (it
holds the run's arrays); the test and predict functions still come back. A change
Keras reads only when it traces and that the key does not name (a Dropout layer's
`rate` set by hand) needs `clear(model)` before the next run.

At most `MAX_STATES` states per model are kept, and at most `MAX_KEPT_BYTES` of
optimizer variables beyond the model's current state; `clear(model)` drops them all.

Example:

>>> import numpy as np, keras, keras_transfer
>>> from keras_transfer.training import compiled_states
>>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
>>> x, y = np.random.rand(64, 28, 28, 1) * 255, np.arange(64) % 2
>>> run = dict(epochs=1, in_memory=False, verbose=0)  # a tf.data pipeline
>>> _ = keras_transfer.train(model, (x, y), **run)
>>> traced = model.train_function
>>> _ = keras_transfer.train(model, (x, y), **run)  # the same configuration
>>> model.train_function is traced is not None, int(model.optimizer.iterations)
(True, 2)
>>> _ = keras_transfer.train(model, (x, y), learning_rate=1e-4, **run)  # another one
>>> model.train_function is traced, compiled_states.kept(model)
(False, 2)
>>> compiled_states.clear(model)
"""

import collections
import json

import numpy as np

from keras_transfer.training import fused_adam
from keras_transfer.utils import keras_internals

MAX_STATES = 4  # compiled states kept per model
MAX_KEPT_BYTES = 512 * 2**20  # optimizer variables kept beyond the model's current state

_STORE = "_keras_transfer_compiled_states"


class _Store:
    def __init__(self):
        self.states = collections.OrderedDict()  # key -> compiled state, oldest first
        self.current = None  # the key of the state the model holds now


_REGULARIZERS = ("kernel_regularizer", "bias_regularizer", "activity_regularizer")


def trainable_key(model):
    """What trains in `model`, as traced functions see it: every layer's `trainable`
    flag and regularizers, and the trainable variables with their constraints (a
    pruning mask), by identity."""
    layers = tuple(
        (id(layer), layer.trainable, *(id(getattr(layer, name, None)) for name in _REGULARIZERS))
        for layer in keras_internals.flatten_layers(model)
    )
    return layers, tuple((id(v), id(v.constraint)) for v in model.trainable_variables)


def run_key(model, optimizer, *settings):
    """The key of a compiled state: `optimizer`'s class and config (a schedule's
    constants included; not its name, which Keras numbers), whether its update is
    fused, `settings` (hashable: the loss's label smoothing, `jit_compile`, ...) and
    `trainable_key(model)`."""
    config = {k: v for k, v in optimizer.get_config().items() if k != "name"}  # "adam", "adam_1", ...
    config = json.dumps(config, sort_keys=True, default=repr)
    return (type(optimizer), config, fused_adam.is_fused(optimizer), settings, trainable_key(model))


def compile_for_run(model, optimizer, key, compile):
    """Compiles `model` with `compile()` or brings back the state kept under `key`.

    Args:
        model: `keras.Model`.
        optimizer: the new (unbuilt) optimizer `compile` gives the model. On a kept
            state, the state's optimizer takes its values instead (built on the
            model's trainable variables): the same start, the traced functions kept.
        key: `run_key(model, optimizer, ...)`: everything the compiled state depends
            on, `trainable_key(model)` last. `None` compiles and keeps nothing.
        compile: callable `()` that compiles `model` with `optimizer`.

    Returns:
        `True` when a kept state came back (its traced functions with it).
    """
    store = model.__dict__.get(_STORE)
    if _holding(model) is not None:
        state = store.states[store.current]
        if state["steps_per_execution"] == model.steps_per_execution:
            # Traced since the run (evaluation); neither depends on what trains.
            state["test_function"] = model.test_function
            state["predict_function"] = model.predict_function
    if key is not None and store is not None and key in store.states:
        state = store.states[key]
        if _take_values(state["optimizer"], optimizer, model):
            keras_internals.set_compiled_state(model, state)
            model.stop_training = False
            model.reset_metrics()
            store.states.move_to_end(key)
            store.current = key
            return True
        del store.states[key]
    compile()
    if key is None:
        if store is not None:
            store.current = None
        return False
    if store is None:
        store = _Store()
        keras_internals.set_untracked_attribute(model, _STORE, store)
    store.states[key] = keras_internals.compiled_state(model)
    store.current = key
    _evict(store)
    return False


def after_run(model):
    """Keeps the functions the run traced with the model's current state, or drops the
    state when what trains changed during the run (a callback that unfroze layers and
    remade the train function: those functions no longer fit its key)."""
    store = _holding(model)
    if store is None:
        return
    if trainable_key(model) == store.current[-1]:  # `run_key` ends with it
        store.states[store.current] = keras_internals.compiled_state(model)
    else:
        del store.states[store.current]
        store.current = None


def _holding(model):
    """The model's store when the model holds its current state, else `None`."""
    store = model.__dict__.get(_STORE)
    if store is None or store.current is None:
        return None
    if model.optimizer is not store.states[store.current]["optimizer"]:
        store.current = None  # compiled elsewhere since: the model holds none of the kept states
        return None
    return store


def clear(model):
    """Drops the compiled states `train` kept for `model` (the model stays compiled).

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.training import compiled_states
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> compiled_states.clear(model)
    >>> compiled_states.kept(model)
    0
    """
    store = model.__dict__.get(_STORE)
    if store is not None:
        store.states.clear()
        store.current = None


def kept(model):
    """How many compiled states `model` keeps."""
    store = model.__dict__.get(_STORE)
    return 0 if store is None else len(store.states)


def _take_values(kept_optimizer, fresh, model):
    """Builds `fresh` on `model.trainable_variables` and gives `kept_optimizer` its
    values; `False` (nothing changed) when their variables do not match."""
    if kept_optimizer is None or not kept_optimizer.built:
        return False
    fresh.build(model.trainable_variables)
    old, new = kept_optimizer.variables, fresh.variables
    if len(old) != len(new) or any(
        tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype for a, b in zip(old, new)
    ):
        return False
    for variable, value in zip(old, new):
        variable.assign(value)
    return True


def _optimizer_bytes(state):
    optimizer = state["optimizer"]
    if optimizer is None or not optimizer.built:
        return 0
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in optimizer.variables)


def _evict(store):
    """Drops the oldest states beyond `MAX_STATES`, or beyond `MAX_KEPT_BYTES` of optimizer
    variables besides the current state."""
    while len(store.states) > MAX_STATES:
        store.states.popitem(last=False)
    others = [key for key in store.states if key != store.current]
    total = sum(_optimizer_bytes(store.states[key]) for key in others)
    for key in others:
        if total <= MAX_KEPT_BYTES:
            break
        total -= _optimizer_bytes(store.states.pop(key))
