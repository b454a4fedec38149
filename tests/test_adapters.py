"""Bottleneck residual adapters: the `Adapter` layer, `insert_adapters`, the `Adapters` method."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.parameter_efficient import Adapter
from keras_transfer.parameter_efficient import Adapters
from keras_transfer.parameter_efficient import insert_adapters
from keras_transfer.training import method as method_lib


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


@pytest.fixture(scope="module")
def source():
    """A source CNN on 5 classes whose weights are not the initial ones (`fc1` moved)."""
    model = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    fc1 = model.get_layer("backbone").get_layer("fc1")
    fc1.bias.assign(np.random.default_rng(0).normal(0, 0.1, fc1.bias.shape))
    return model


def test_adapter_starts_as_the_identity_computes_its_formula_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((3, 7), (2, 5, 5, 8)):
        x = rng.normal(size=shape).astype("float32")
        np.testing.assert_array_equal(Adapter(4)(x).numpy(), x)  # up starts at zero: exactly x
    adapter = Adapter(3, activation="tanh", name="a")
    x = rng.normal(size=(4, 6, 6, 5)).astype("float32")
    adapter(x)
    assert [tuple(w.shape) for w in adapter.weights] == [(5, 3), (3,), (3, 5), (5,)]
    adapter.set_weights([rng.normal(size=w.shape).astype("float32") for w in adapter.weights])
    down, down_bias, up, up_bias = adapter.get_weights()
    np.testing.assert_allclose(
        adapter(x).numpy(), x + np.tanh(x @ down + down_bias) @ up + up_bias, atol=1e-5
    )
    rebuilt = testing.assert_config_round_trip(adapter)
    assert (rebuilt.bottleneck, rebuilt.get_config()["activation"]) == (3, "tanh")
    inputs = keras.Input((6, 6, 5))
    model = keras.Model(inputs, Adapter(3, name="a")(inputs))
    model.layers[-1].set_weights(adapter.get_weights())
    loaded = testing.assert_keras_round_trip(model, x, str(tmp_path), atol=0)
    assert isinstance(loaded.layers[-1], Adapter)
    for bad in (0, -2, 1.5, "8"):
        with pytest.raises(ValueError, match="bottleneck"):
            Adapter(bad)


def test_insert_adapters_predicts_exactly_what_the_model_did_sharing_its_layers(source, mnist):
    model = keras_transfer.build_classifier(source, 3)
    adapted = insert_adapters(model, bottleneck=8)
    body, new_body = model.get_layer("backbone"), adapted.get_layer("backbone")
    assert [layer.name for layer in new_body.layers if isinstance(layer, Adapter)] == [
        "conv1_adapter",
        "conv2_adapter",
        "fc1_adapter",
    ]
    x = mnist.x[:64]
    np.testing.assert_array_equal(adapted.predict(x, verbose=0), model.predict(x, verbose=0))
    for name in ("conv1", "conv2", "fc1"):  # the same layer objects: weights shared
        assert new_body.get_layer(name) is body.get_layer(name)
    assert adapted.get_layer("predictions") is model.get_layer("predictions")
    extra = keras_transfer.count_parameters(adapted).total - keras_transfer.count_parameters(model).total
    assert extra == sum(2 * c * 8 + 8 + c for c in (64, 128, 128))
    assert insert_adapters(adapted) is adapted  # idempotent
    chosen = insert_adapters(model, "conv2|fc1", bottleneck=4).get_layer("backbone")
    assert [layer.name for layer in chosen.layers if isinstance(layer, Adapter)] == [
        "conv2_adapter",
        "fc1_adapter",
    ]
    named = insert_adapters(model, ["fc1"]).get_layer("backbone")
    assert [layer.name for layer in adapter_layers_of(named)] == ["fc1_adapter"]
    with pytest.raises(ValueError, match=r"no layer\(s\) \['fc9'\]"):
        insert_adapters(model, ["fc9"])
    with pytest.raises(ValueError, match="No layer of backbone 'backbone' matches 'conv'"):
        insert_adapters(model, "conv")  # a regex matches whole names
    with pytest.raises(ValueError, match="no layer named 'body'"):
        insert_adapters(model, backbone="body")
    with pytest.raises(ValueError, match="layers must be None"):
        insert_adapters(model, 3)


def adapter_layers_of(model):
    return [layer for layer in model.layers if isinstance(layer, Adapter)]


def test_insert_adapters_on_a_branching_and_on_a_sequential_backbone(mnist):
    # A residual block: conv_a feeds both the add and conv_b; the adapter after conv_a
    # must feed both.
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(x)
    b = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(a)
    x = keras.layers.Activation("relu")(keras.layers.Add(name="add")([a, b]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    residual = keras_transfer.build_classifier(keras.Model(inputs, x, name="residual"), 3)
    adapted = insert_adapters(residual, bottleneck=4)
    body = adapted.get_layer("backbone")
    assert [layer.name for layer in adapter_layers_of(body)] == ["conv_a_adapter", "conv_b_adapter"]
    images = mnist.x[:32]
    np.testing.assert_array_equal(adapted.predict(images, verbose=0), residual.predict(images, verbose=0))
    # A non-zero adapter after conv_a: both the add and conv_b read its output.
    body.get_layer("conv_a_adapter").up_bias.assign(np.full((8,), 0.5, "float32"))
    a = body.get_layer("conv_a")(images / 255) + 0.5
    features = keras.ops.mean(keras.ops.relu(a + body.get_layer("conv_b")(a)), axis=(1, 2))
    expected = adapted.get_layer("predictions")(features).numpy()
    np.testing.assert_allclose(adapted.predict(images, verbose=0), expected, atol=1e-5)
    assert not np.allclose(expected, residual.predict(images, verbose=0), atol=1e-3)

    sequential = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="fc"),
        ],
        name="backbone",
    )
    inputs = keras.Input((28, 28, 1))
    outer = keras.Model(inputs, keras.layers.Dense(3, name="predictions")(sequential(inputs)))
    adapted = insert_adapters(outer, bottleneck=4)
    assert [layer.name for layer in adapter_layers_of(adapted.get_layer("backbone"))] == ["fc_adapter"]
    np.testing.assert_array_equal(adapted.predict(images, verbose=0), outer.predict(images, verbose=0))


def test_adapters_passes_the_method_contract(source, few_digits, tmp_path):
    method = Adapters(bottleneck=8)
    model = method.build(keras_transfer.build_classifier(source, 3))
    testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0},
    )
    trained = {id(w) for w in method.trainable_weights(model)}
    body = model.get_layer("backbone")
    expected = [w for layer in adapter_layers_of(body) for w in layer.weights]
    expected += model.get_layer("predictions").weights
    assert trained == {id(w) for w in expected}
    count = keras_transfer.count_parameters(model)
    assert count.trainable < 0.05 * count.total


def test_train_refuses_a_model_without_its_adapters_and_prepare_is_idempotent(source, few_digits):
    model = keras_transfer.build_classifier(source, 3)
    with pytest.raises(ValueError, match=r"call `model = method.build\(model\)`"):
        keras_transfer.train(model, few_digits, epochs=1, method="adapters", verbose=0)
    with pytest.raises(ValueError, match="has no adapters"):
        Adapters().prepare(model)
    composed = method_lib.get_method(["fine_tune", "adapters:bottleneck=4"])
    adapted = composed.build(model)  # Compose builds through its members
    assert [layer.bottleneck for layer in adapter_layers_of(adapted.get_layer("backbone"))] == [4, 4, 4]
    method = Adapters(bottleneck=4)
    keras_transfer.unfreeze(adapted)  # as FineTune leaves a stage: everything trainable
    method.prepare(adapted)
    first = [w.path for w in adapted.trainable_weights]
    method.prepare(adapted)
    assert [w.path for w in adapted.trainable_weights] == first
    assert all("adapter" in path or "predictions" in path for path in first), first


def test_adapters_settings_parse_validate_and_list():
    method = method_lib.get_method("adapters:bottleneck=8,layers=conv2|fc1,activation=gelu")
    assert method == Adapters(bottleneck=8, layers="conv2|fc1", activation="gelu")
    assert method.get_config() == {"bottleneck": 8, "activation": "gelu", "layers": "conv2|fc1"}
    assert Adapters().get_config() == {}
    assert Adapters(layers=("fc1",)) == method_lib.get_method(
        {"name": "adapters", "config": {"layers": ["fc1"]}}
    )
    assert "adapters" in dict(method_lib.list_methods())
    with pytest.raises(ValueError, match="bottleneck"):
        Adapters(bottleneck=0)
    with pytest.raises(ValueError, match="Unknown activation|Could not interpret"):
        Adapters(activation="nope")
    with pytest.raises(ValueError, match="does not take these arguments"):
        method_lib.get_method("adapters:rank=4")


def test_keras_transfer_train_method_adapters_on_an_image_folder(mnist, source, tmp_path):
    keep = np.isin(mnist.y, [0, 1])
    testing.write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1"]
    )
    source.save(str(tmp_path / "source.keras"))
    command = [sys.executable, "-m", "keras_transfer.cli", "train", "--data", str(tmp_path / "digits")]
    command += ["--backbone", str(tmp_path / "source.keras"), "--method", "adapters:bottleneck=4"]
    command += ["--epochs", "1", "--min-steps", "2", "--batch-size", "8", "--output", str(tmp_path / "out")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["adapters", "fine_tune"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    body = trained.get_layer("backbone")
    assert [(layer.name, layer.bottleneck) for layer in adapter_layers_of(body)] == [
        ("conv1_adapter", 4),
        ("conv2_adapter", 4),
        ("fc1_adapter", 4),
    ]
    np.testing.assert_array_equal(  # the backbone's own kernels did not train
        body.get_layer("fc1").kernel.numpy(), source.get_layer("backbone").get_layer("fc1").kernel.numpy()
    )
    assert np.abs(body.get_layer("fc1_adapter").up_bias.numpy()).max() > 0  # the adapters did
    import tensorflow as tf  # the export serves the model with its adapters

    served = tf.saved_model.load(str(tmp_path / "out" / "digits" / "1")).signatures["serve"]
    x = mnist.x[:8].astype("float32")
    np.testing.assert_allclose(
        served(images=tf.constant(x))["probabilities"].numpy(), trained.predict(x, verbose=0), atol=1e-5
    )
    # A fresh process loads it (the Adapter class registered by `import keras_transfer`).
    np.save(tmp_path / "x.npy", mnist.x[:8])
    code = (
        "import numpy as np, keras_transfer\n"
        f"model = keras_transfer.load_model({str(run_dir / 'model.keras')!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, model.predict(x, verbose=0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), trained.predict(mnist.x[:8], verbose=0), atol=1e-6
    )
