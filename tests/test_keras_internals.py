"""Every function of `keras_internals` against the installed Keras.

Each wraps a private Keras attribute; when a Keras release renames or removes one,
the test of that function fails with the Keras version and the attribute's name.
"""

import inspect

import keras
import numpy as np
import pytest

from keras_transfer.utils import keras_internals

# Function of keras_internals -> the Keras attribute it wraps (named in its docstring).
WRAPS = {
    "inbound_nodes": "Operation._inbound_nodes",
    "outbound_nodes": "Operation._outbound_nodes",
    "keras_history": "KerasTensor._keras_history",
    "node_output": "Layer.output.fget",
    "is_functional": "Functional._run_through_graph",
    "flatten_layers": "Layer._flatten_layers",
    "compile_arguments": "Trainer._compile_config.config",
    "initial_epoch": "Trainer._initial_epoch",
    "set_initial_epoch": "Trainer._initial_epoch",
    "track_variable": "Layer._track_variable",
    "set_untracked_attribute": "Layer.__setattr__",
    "instance_call": "`__dict__`",
    "set_call": "Operation.__call__",
    "attribute_snapshot": "`object.__dict__`",
    "restore_attributes": "Layer.__setattr__",
    "graph_calls": "Function._nodes_by_depth",
    "compiled_state": "Trainer.compile",
    "set_compiled_state": "Trainer.compile",
}


def _fail(name, what):
    pytest.fail(
        f"Keras {keras.version()}: keras_internals.{name}, which wraps Keras's {WRAPS[name]}, "
        f"{what}. Keras has changed this internal: update keras_transfer/utils/keras_internals.py.",
        pytrace=False,
    )


def _call(name, *args, **kwargs):
    try:
        return getattr(keras_internals, name)(*args, **kwargs)
    except Exception as error:
        _fail(name, f"raised {type(error).__name__}: {error}")


def _expect(name, condition, what):
    if not condition:
        _fail(name, what)


@pytest.fixture(scope="module")
def graph():
    """Input -> Dense `first` -> Dense `second` (model `inner`), nested in `outer` before `head`."""
    inputs = keras.Input((4,), name="inner_input")
    hidden = keras.layers.Dense(3, name="first")(inputs)
    outputs = keras.layers.Dense(2, name="second")(hidden)
    inner = keras.Model(inputs, outputs, name="inner")
    outer_input = keras.Input((4,), name="outer_input")
    inner_output = inner(outer_input)
    outer = keras.Model(outer_input, keras.layers.Dense(1, name="head")(inner_output), name="outer")
    return {
        "inner": inner,
        "outer": outer,
        "first": inner.get_layer("first"),
        "second": inner.get_layer("second"),
        "hidden": hidden,
        "outputs": outputs,
        "inner_output": inner_output,
    }


def test_every_function_is_checked_and_names_its_keras_attribute():
    functions = {
        name
        for name, value in vars(keras_internals).items()
        if inspect.isfunction(value) and value.__module__ == keras_internals.__name__
    }
    assert functions == set(WRAPS), "a function of keras_internals without a test here, or a stale entry"
    for name, attribute in WRAPS.items():
        docstring = getattr(keras_internals, name).__doc__
        assert attribute in docstring.split("\n")[0], f"{name}'s docstring does not name {attribute}"


def test_inbound_nodes(graph):
    nodes = _call("inbound_nodes", graph["second"])
    _expect("inbound_nodes", isinstance(nodes, list) and len(nodes) == 1, f"returned {nodes!r}, not one node")
    node = nodes[0]
    _expect("inbound_nodes", node.operation is graph["second"], f"node.operation is {node.operation!r}")
    _expect(
        "inbound_nodes",
        len(node.input_tensors) == 1 and node.input_tensors[0] is graph["hidden"],
        f"the node's input_tensors are {node.input_tensors!r}, not the first Dense's output",
    )
    _expect(
        "inbound_nodes",
        len(node.output_tensors) == 1 and node.output_tensors[0] is graph["outputs"],
        f"the node's output_tensors are {node.output_tensors!r}",
    )
    _expect(
        "inbound_nodes",
        [parent.operation for parent in node.parent_nodes] == [graph["first"]],
        f"the node's parent_nodes are {node.parent_nodes!r}",
    )
    # A nested model: the node where the outer model calls it.
    nodes = _call("inbound_nodes", graph["inner"])
    _expect("inbound_nodes", len(nodes) == 1, f"the nested model has {len(nodes)} nodes, not 1")
    _expect(
        "inbound_nodes",
        nodes[0].output_tensors[0] is graph["inner_output"],
        "the nested model's node does not output the tensor it made in the outer model",
    )


def test_outbound_nodes(graph):
    nodes = _call("outbound_nodes", graph["first"])
    _expect(
        "outbound_nodes",
        isinstance(nodes, list) and [node.operation for node in nodes] == [graph["second"]],
        f"returned {nodes!r}, not the second Dense's node",
    )
    _expect(
        "outbound_nodes", _call("outbound_nodes", graph["second"]) == [], "the last layer has outbound nodes"
    )


def test_keras_history(graph):
    history = _call("keras_history", graph["outputs"])
    _expect("keras_history", history.operation is graph["second"], f"operation is {history.operation!r}")
    _expect(
        "keras_history",
        (history.node_index, history.tensor_index) == (0, 0),
        f"returned node_index={history.node_index}, tensor_index={history.tensor_index}",
    )
    operation = _call("keras_history", graph["hidden"]).operation
    _expect("keras_history", operation is graph["first"], f"the first Dense's output came from {operation!r}")


def test_node_output(graph):
    _expect("node_output", _call("node_output", graph["first"]) is graph["hidden"], "not the layer's output")
    _expect(
        "node_output",
        _call("node_output", graph["inner"]) is graph["inner_output"],
        "a nested model's is not the tensor it made in the outer model",
    )
    assert graph["inner"].output is graph["outputs"]  # what `model.output` means instead


def test_is_functional(graph):
    _expect(
        "is_functional", _call("is_functional", graph["outer"]) is True, "is not True for a Functional model"
    )

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    for other in (Subclassed(), keras.layers.Dense(2)):
        _expect("is_functional", _call("is_functional", other) is False, f"is not False for {other!r}")


def test_flatten_layers(graph):
    outer, inner = graph["outer"], graph["inner"]
    names = [layer.name for layer in _call("flatten_layers", outer)]
    _expect("flatten_layers", names[0] == "outer", f"does not start with the model itself: {names}")
    _expect(
        "flatten_layers",
        sorted(names) == sorted(["outer", "outer_input", "inner", "inner_input", "first", "second", "head"]),
        f"does not list the nested layers: {names}",
    )
    names = [layer.name for layer in _call("flatten_layers", outer, include_self=False, recursive=False)]
    _expect(
        "flatten_layers",
        sorted(names) == ["head", "inner", "outer_input"],
        f"include_self=False, recursive=False gave {names}",
    )
    layers = _call("flatten_layers", inner, include_self=False)
    _expect(
        "flatten_layers",
        graph["first"] in layers and inner not in layers,
        f"include_self=False gave {layers}",
    )


def test_compile_arguments():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    _expect("compile_arguments", _call("compile_arguments", model) is None, "is not None before compile")
    loss = keras.losses.MeanSquaredError()
    model.compile(optimizer="sgd", loss=loss, metrics=["mae"])
    arguments = _call("compile_arguments", model)
    _expect("compile_arguments", isinstance(arguments, dict), f"returned {arguments!r}, not a dict")
    _expect("compile_arguments", arguments.get("loss") is loss, f"holds loss={arguments.get('loss')!r}")
    _expect(
        "compile_arguments",
        arguments.get("metrics") == ["mae"],
        f"holds metrics={arguments.get('metrics')!r}",
    )


def test_initial_epoch_is_where_fit_starts():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    _expect("initial_epoch", _call("initial_epoch", model) is None, "is not None on a new model")
    _call("set_initial_epoch", model, 2)
    _expect("initial_epoch", _call("initial_epoch", model) == 2, "does not return what set_initial_epoch set")
    history = model.fit(np.zeros((8, 4)), np.zeros((8, 1)), epochs=3, verbose=0)
    _expect("set_initial_epoch", history.epoch == [2], f"fit(epochs=3) ran epochs {history.epoch}, not [2]")


class _Holder(keras.layers.Layer):
    def call(self, inputs):
        return inputs


def test_track_variable():
    layer = _Holder()
    layer.built = True
    frozen = keras.Variable(np.zeros(2), trainable=False, name="frozen")
    trained = keras.Variable(np.ones(3), trainable=True, name="trained")
    _call("track_variable", layer, frozen)
    _call("track_variable", layer, trained)
    _expect(
        "track_variable",
        layer.non_trainable_weights == [frozen] and layer.trainable_weights == [trained],
        f"weights are trainable={layer.trainable_weights}, non-trainable={layer.non_trainable_weights}",
    )


def test_set_untracked_attribute():
    layer = _Holder()
    variable = keras.Variable(np.zeros(2), name="untracked")
    _call("set_untracked_attribute", layer, "extra", variable)
    _expect("set_untracked_attribute", layer.extra is variable, "does not set the attribute")
    _expect("set_untracked_attribute", layer.weights == [], f"tracked the variable: {layer.weights}")
    layer.tracked = keras.Variable(np.zeros(2), name="tracked")  # what it avoids
    assert len(layer.weights) == 1


def test_set_call_and_instance_call():
    layer = keras.layers.Dense(2, kernel_initializer="ones")
    x = np.ones((1, 3), "float32")
    _expect("instance_call", _call("instance_call", layer) is None, "is not None before set_call")

    def doubled(inputs, *args, **kwargs):
        return 2.0 * keras.ops.convert_to_tensor(inputs)

    _call("set_call", layer, doubled)
    _expect("instance_call", _call("instance_call", layer) is doubled, "does not return the call set")
    result = keras.ops.convert_to_numpy(layer(x))
    _expect("set_call", np.array_equal(result, 2.0 * x), f"layer(x) did not run the call set: {result}")
    _call("set_call", layer, None)
    _expect("instance_call", _call("instance_call", layer) is None, "is not None after set_call(layer, None)")
    result = keras.ops.convert_to_numpy(layer(x))
    _expect("set_call", np.allclose(result, 3.0), f"layer(x) after set_call(None) gave {result}")
    _call("set_call", layer, None)  # nothing to remove: no error


def test_attribute_snapshot_and_restore_attributes_undo_compile_and_fit():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    snapshot = _call("attribute_snapshot", model)
    keys = sorted(model.__dict__)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    _expect("attribute_snapshot", getattr(model, "optimizer", None) is not None, "compile set no optimizer")
    _call("restore_attributes", model, snapshot)
    _expect("restore_attributes", sorted(model.__dict__) == keys, "left attributes compile/fit added")
    _expect("restore_attributes", not model.compiled, "the model is still compiled")
    _expect("restore_attributes", getattr(model, "optimizer", None) is None, "the optimizer is still set")


def test_graph_calls_leaves_out_calls_in_other_graphs():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(2, name="shared")
    model = keras.Model(inputs, dense(inputs))
    other_input = keras.Input((4,))
    keras.Model(other_input, dense(other_input))  # a second call of the layer, in another graph
    calls = _call("graph_calls", model)
    _expect("graph_calls", len(keras_internals.inbound_nodes(dense)) == 2, "the layer has 2 calls")
    own = calls.get(id(dense), [])
    _expect("graph_calls", len(own) == 1, f"returned {len(own)} calls of the layer, not the model's one")
    _expect("graph_calls", own[0].output_tensors[0] is model.outputs[0], "not the model's call")
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    _expect("graph_calls", len(_call("graph_calls", sequential)[id(sequential.layers[0])]) == 1, "Sequential")


def test_compiled_state_and_set_compiled_state_swap_what_compile_set():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    first = _call("compiled_state", model)
    _expect("compiled_state", first["train_function"] is model.train_function, "missed the train function")
    _expect("compiled_state", first["optimizer"] is model.optimizer, "missed the optimizer")
    metrics = len(model.metrics)
    model.compile(optimizer="adam", loss="mae", jit_compile=False)
    _call("set_compiled_state", model, first)
    _expect("set_compiled_state", model.optimizer is first["optimizer"], "did not put the optimizer back")
    _expect(
        "set_compiled_state", model.train_function is first["train_function"], "did not put the function back"
    )
    _expect("set_compiled_state", len(model.metrics) == metrics, "changed the model's metrics")
    _expect(
        "set_compiled_state", model.get_compile_config()["loss"] == "mse", "left the second compile config"
    )
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    _expect("set_compiled_state", int(model.optimizer.iterations) == 2, "fit did not train on with it")
