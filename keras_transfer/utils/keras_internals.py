"""Every access this package makes to Keras internals, one named function each.

Keras 3 has no public API for some things this package needs: the graph of a
functional model (the nodes where a layer was called, the layer that produced a
tensor), the arguments a model was compiled with, the epoch `fit` resumes from, or
a way to swap a layer's `call` without Keras tracking the new attribute. Each
function here wraps one private attribute or behaviour, and no other module of
`keras_transfer` touches them. `tests/test_keras_internals.py` checks every
function against the installed Keras, so a rename in a new Keras release fails
there, naming the Keras version and the attribute, instead of deep inside
`fold_batch_norm`, `model_flops` or `train`.

Example:

>>> import keras
>>> from keras_transfer.utils import keras_internals
>>> inputs = keras.Input((4,), name="features")
>>> hidden = keras.layers.Dense(3, name="hidden")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(2, name="top")(hidden))
>>> keras_internals.keras_history(model.outputs[0]).operation.name
'top'
>>> [node.operation.name for node in keras_internals.inbound_nodes(model.get_layer("top"))]
['top']
>>> [layer.name for layer in keras_internals.flatten_layers(model, include_self=False)]
['features', 'hidden', 'top']
"""

import keras

# The graph of a functional model.


def inbound_nodes(layer):
    """The `Node`s where `layer` was called, in call order (`Operation._inbound_nodes`)."""
    return list(layer._inbound_nodes)


def outbound_nodes(layer):
    """The `Node`s that take an output of `layer` as input (`Operation._outbound_nodes`)."""
    return list(layer._outbound_nodes)


def keras_history(tensor):
    """The `(operation, node_index, tensor_index)` that made a tensor (`KerasTensor._keras_history`)."""
    return tensor._keras_history


def node_output(layer):
    """The output of `layer`'s first call, nested models too (`Layer.output.fget`, i.e. `Operation.output`).

    `model.output` of a functional model means the outputs of its own graph; this
    is the tensor the model (or layer) produced where it was called as a layer.
    """
    return keras.layers.Layer.output.fget(layer)


def graph_calls(model):
    """`{id(layer): [node, ...]}`: each layer's calls in `model`'s own graph (`Function._nodes_by_depth`).

    A layer's `_inbound_nodes` also hold its calls in other graphs (a head model built
    from the same layer objects, say); these are the ones `model` runs. A model that is
    not a graph of nodes (a Sequential model) gives every call of its layers.
    """
    if not hasattr(model, "_nodes_by_depth"):
        layers = model.layers
        return {id(layer): [n for n in inbound_nodes(layer) if n.operation is layer] for layer in layers}
    calls = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            calls.setdefault(id(node.operation), []).append(node)
    return calls


def is_functional(model):
    """Whether `model` is a Functional model, one that runs a graph (`Functional._run_through_graph`)."""
    return isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")


def flatten_layers(layer, *, include_self=True, recursive=True):
    """`layer` (if `include_self`) and its sublayers, nested ones if `recursive` (`Layer._flatten_layers`)."""
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


# Training state.


def compile_arguments(model):
    """The keyword arguments `model.compile` received, or `None` (`Trainer._compile_config.config`)."""
    config = getattr(model, "_compile_config", None)
    return None if config is None else config.config


def initial_epoch(model):
    """The epoch a resumed `fit` starts from, or `None` (`Trainer._initial_epoch`)."""
    return getattr(model, "_initial_epoch", None)


def set_initial_epoch(model, epoch):
    """Sets the epoch `fit` starts from, as `BackupAndRestore` does (`Trainer._initial_epoch`)."""
    model._initial_epoch = epoch


# What `Trainer.compile` sets: a model's compiled state, and the functions traced on it.
_COMPILED = (
    "optimizer",
    "loss",
    "_compile_loss",
    "_compile_metrics",
    "_loss_tracker",
    "jit_compile",
    "run_eagerly",
    "steps_per_execution",
    "_compiled_trainable_state",
    "_compile_config",
    "compiled",
    "train_function",
    "test_function",
    "predict_function",
)


def compiled_state(model):
    """The attributes `Trainer.compile` sets on `model`, and its traced functions, as a dict.

    `optimizer`, `_compile_loss`, `_compile_metrics`, `_loss_tracker`,
    `_compiled_trainable_state`, `_compile_config`, `train_function`, ...: what the
    traced train, test and predict functions capture.
    """
    return {name: getattr(model, name, None) for name in _COMPILED}


def set_compiled_state(model, state):
    """Puts back a `compiled_state(model)` as `Trainer.compile` sets it (Keras's tracking off)."""
    from keras.src.utils import tracking

    with tracking.DotNotTrackScope():
        for name in _COMPILED:
            setattr(model, name, state[name])


# Layer attributes past Keras's tracking.


def track_variable(layer, variable):
    """Adds `variable` to `layer.weights` (trainable or not by its flag) (`Layer._track_variable`)."""
    layer._track_variable(variable)


def set_untracked_attribute(layer, name, value):
    """Sets `layer.<name> = value` past `Layer.__setattr__`: `Layer._tracker` does not track it."""
    object.__setattr__(layer, name, value)


def instance_call(layer):
    """The `call` set on the instance by `set_call`, or `None` (the instance `__dict__`, not `Layer.call`)."""
    return layer.__dict__.get("call")


def set_call(layer, call):
    """Makes `layer(...)` run `call`, `None` its class's again (`Operation.__call__` runs `self.call`)."""
    if call is None:
        if "call" in layer.__dict__:
            object.__delattr__(layer, "call")
    else:
        object.__setattr__(layer, "call", call)


# The whole state of a model, for a run that must leave no trace (the learning-rate finder).


def attribute_snapshot(obj):
    """A copy of `obj.__dict__`, lists and dicts copied one level deep (`object.__dict__`).

    Keras keeps a model's compile state (`optimizer`, `_compile_loss`, `_loss_tracker`,
    `train_function`, `_compile_config`, ...) and TensorFlow its checkpoint
    dependencies in instance attributes; `restore_attributes` puts them all back.
    """
    return {
        key: (value, list(value) if type(value) is list else dict(value) if type(value) is dict else None)
        for key, value in obj.__dict__.items()
    }


def restore_attributes(obj, snapshot):
    """Restores `obj.__dict__` to `snapshot` past `Layer.__setattr__` (no tracking)."""
    for key in [key for key in obj.__dict__ if key not in snapshot]:
        object.__delattr__(obj, key)
    for key, (value, contents) in snapshot.items():
        if type(contents) is list:
            value[:] = contents
        elif type(contents) is dict:
            value.clear()
            value.update(contents)
        object.__setattr__(obj, key, value)
