"""LoRA: Keras's enable_lora on the backbone, merged for export, adapters saved alone."""

import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.parameter_efficient import LoRA
from keras_transfer.parameter_efficient import load_lora_weights
from keras_transfer.parameter_efficient import lora as lora_lib
from keras_transfer.parameter_efficient import save_lora_weights
from keras_transfer.training import method as method_lib


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


@pytest.fixture(scope="module")
def source():
    keras.utils.set_random_seed(0)
    return keras_transfer.build_classifier("mnist_cnn", 5, weights=None)


def _mixed_classifier():
    """Conv2D, Dense and DepthwiseConv2D (no LoRA in Keras) in one small backbone."""
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.Dense(6, activation="relu", name="dense")(x)  # on the channels
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras_transfer.build_classifier(keras.Model(inputs, x, name="source"), 3)


def _randomise_lora(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in lora_lib.lora_layers(model).values():
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))


def test_lora_effective_kernel_is_base_plus_alpha_over_rank_a_b_and_the_merged_model_predicts_the_same(
    tmp_path,
):
    model = _mixed_classifier()
    body = model.get_layer("backbone")
    base = {name: body.get_layer(name).kernel.numpy() for name in ("conv", "dense")}
    method = LoRA(rank=2, alpha=6)
    with pytest.warns(UserWarning, match=r"LoRA skipped depthwise \(DepthwiseConv2D: Keras has no LoRA"):
        method.prepare(model)
    assert method.report.applied == ("conv", "dense") and list(method.report.skipped) == ["depthwise"]
    assert method.scale == 3.0
    _randomise_lora(model)
    for name in ("conv", "dense"):
        layer = body.get_layer(name)
        a, b = layer.lora_kernel_a.numpy(), layer.lora_kernel_b.numpy()
        assert a.shape == base[name].shape[:-1] + (2,) and b.shape == (2, base[name].shape[-1])
        expected = base[name] + 3.0 * np.tensordot(a, b, axes=([-1], [0]))
        np.testing.assert_allclose(layer.kernel.numpy(), expected, rtol=1e-5, atol=1e-6)
    # Only A, B and the head train; kernels and biases of the backbone are frozen.
    trained = {w.path for w in method.trainable_weights(model)}
    assert trained == {
        "conv/lora_kernel_a",
        "conv/lora_kernel_b",
        "dense/lora_kernel_a",
        "dense/lora_kernel_b",
        "predictions/kernel",
        "predictions/bias",
    }
    # prepare is idempotent (FineTune's stages call it again); another rank is an error.
    method.prepare(model)
    assert len(lora_lib.lora_layers(model)) == 2 and {w.path for w in model.trainable_weights} == trained
    with pytest.raises(ValueError, match="already has LoRA of rank 2"):
        LoRA(rank=4, layers=["dense"]).prepare(model)

    x = np.random.default_rng(1).uniform(0, 255, (6, 12, 12, 1)).astype("float32")
    merged = method.finalize(model)
    assert merged is not model and not lora_lib.lora_layers(merged)
    assert not [w.path for w in merged.weights if "lora" in w.path]
    assert len(merged.weights) == len(model.weights) - 4
    np.testing.assert_allclose(merged.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(
        merged.get_layer("backbone").get_layer("dense").kernel.numpy(), body.get_layer("dense").kernel.numpy()
    )
    # The LoRA model itself survives .keras too (Keras stores the merged kernel).
    testing.assert_keras_round_trip(model, x, str(tmp_path), atol=1e-5)


def test_lora_passes_the_method_contract_and_the_export_has_no_lora_variables(source, few_digits, tmp_path):
    model = keras_transfer.build_classifier(source, 3)
    method = LoRA(rank=4)
    method.prepare(model)  # LoRA adds variables: the contract compares the model after that
    testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0},
    )
    assert method.report.applied == ("conv1", "conv2", "fc1") and method.report.skipped == {}
    trained = {w.path for w in method.trainable_weights(model)}
    assert {f"{n}/lora_kernel_{ab}" for n in ("conv1", "conv2", "fc1") for ab in "ab"} <= trained
    assert not trained & {"fc1/kernel", "fc1/bias", "conv1/kernel"}
    lora_params = sum(int(np.prod(w.shape)) for w in method.trainable_weights(model))
    assert lora_params < 0.1 * keras_transfer.count_parameters(source).total
    (saved,) = glob.glob(str(tmp_path / "saved" / "*" / "saved_model.pb"))
    loaded = tf.saved_model.load(os.path.dirname(saved))
    names = [v.name for v in loaded.variables]
    assert names and not [n for n in names if "lora" in n.lower()], names


def test_lora_weights_save_alone_and_load_onto_the_source_with_the_rank_checked(source, tmp_path):
    model = keras_transfer.build_classifier(source, 3)
    LoRA(rank=4).prepare(model)
    _randomise_lora(model)
    path = save_lora_weights(model, str(tmp_path / "digits.lora.h5"))
    model.save_weights(str(tmp_path / "full.weights.h5"))
    assert os.path.getsize(path) < 0.15 * os.path.getsize(tmp_path / "full.weights.h5")

    fresh = keras_transfer.build_classifier(source, 3)  # the source again, its own new head
    fresh.get_layer("predictions").set_weights(model.get_layer("predictions").get_weights())
    assert load_lora_weights(fresh, path) == {"backbone/conv1": 4, "backbone/conv2": 4, "backbone/fc1": 4}
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)

    other_rank = keras_transfer.build_classifier(source, 3)
    LoRA(rank=2).prepare(other_rank)
    with pytest.raises(ValueError, match="has LoRA of rank 2.*rank 4"):
        load_lora_weights(other_rank, path)
    mlp = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    with pytest.raises(ValueError, match=r"has no layer\(s\) \['backbone/conv1'"):
        load_lora_weights(mlp, path)
    with pytest.raises(ValueError, match=r"ends with '\.lora\.h5'"):
        save_lora_weights(model, str(tmp_path / "digits.h5"))
    with pytest.raises(ValueError, match="has no LoRA layer to save"):
        save_lora_weights(mlp, str(tmp_path / "mlp.lora.h5"))


def test_lora_trains_on_after_keras_weights_zeroed_a_and_b_as_a_resumed_run_does(
    source, few_digits, tmp_path
):
    model = keras_transfer.build_classifier(source, 3)
    method = LoRA(rank=2, layers=["fc1"])
    method.prepare(model)
    _randomise_lora(model)
    x = few_digits[0][:4].astype("float32")
    before = model.predict(x, verbose=0)
    model.save_weights(str(tmp_path / "backup.weights.h5"))  # what BackupAndRestore writes
    model.load_weights(str(tmp_path / "backup.weights.h5"))
    layer = model.get_layer("backbone").get_layer("fc1")
    assert (
        not layer.lora_kernel_a.numpy().any() and not layer.lora_kernel_b.numpy().any()
    )  # Keras zeroes them
    np.testing.assert_allclose(
        model.predict(x, verbose=0), before, atol=1e-5
    )  # the merged kernel is the base now
    keras_transfer.train(model, few_digits, epochs=1, min_steps=3, method=method, verbose=0)
    assert layer.lora_kernel_a.numpy().any() and layer.lora_kernel_b.numpy().any()  # LoRA trains again


def test_lora_keeps_base_weights_frozen_through_both_fine_tune_stages_and_checks_its_arguments(
    source, few_digits
):
    model = keras_transfer.build_classifier(source, 3)
    body = model.get_layer("backbone")
    kernel, bias = body.get_layer("fc1").kernel.numpy(), body.get_layer("fc1").bias.numpy()
    conv2 = body.get_layer("conv2").kernel.numpy()
    method = method_lib.get_method("lora:rank=2,alpha=4,layers=fc1")
    assert method == LoRA(rank=2, alpha=4, layers="fc1") and method.get_config() == {
        "rank": 2,
        "alpha": 4,
        "layers": "fc1",
    }
    keras_transfer.fine_tune(
        model, few_digits, recipe="pretrained", head_epochs=1, epochs=1, min_steps=4, method=method, verbose=0
    )
    layer = body.get_layer("fc1")
    assert layer.lora_enabled and not np.array_equal(layer.lora_kernel_b.numpy(), 0)
    np.testing.assert_array_equal(layer._kernel.numpy(), kernel)  # the base kernel, not the merged one
    np.testing.assert_array_equal(layer.bias.numpy(), bias)
    np.testing.assert_array_equal(body.get_layer("conv2").kernel.numpy(), conv2)  # not selected: frozen
    assert not body.get_layer("conv2").lora_enabled
    assert "lora" in dict(method_lib.list_methods())

    for bad, message in (
        ({"rank": 0}, "rank must be a positive integer"),
        ({"alpha": "big"}, "alpha must be a positive number or None"),
        ({"layers": []}, "layers must be None, a regex string or a non-empty list"),
        ({"layers": "fc1("}, "layers is not a valid regular expression"),
    ):
        with pytest.raises(ValueError, match=message):
            LoRA(**bad)
    with pytest.raises(ValueError, match=r"has no layer\(s\) \['fc9'\]"):
        LoRA(layers=["fc9"]).prepare(keras_transfer.build_classifier(source, 3))
    with pytest.raises(ValueError, match="No layer of backbone 'backbone' that LoRA can adapt"):
        LoRA(layers="pool").prepare(keras_transfer.build_classifier(source, 3))
    with pytest.raises(ValueError, match="has no layer named 'body'"):
        LoRA(backbone="body").prepare(keras_transfer.build_classifier(source, 3))


def test_keras_transfer_train_method_lora_on_an_image_folder(mnist, source, tmp_path, capsys):
    from testing import write_image_folder

    from keras_transfer import cli

    assert cli.main(["methods"]) == 0
    assert "lora" in [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    keep = np.isin(mnist.y, [0, 1])
    write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1"]
    )
    source.save(str(tmp_path / "source.keras"))
    command = [
        sys.executable,
        "-m",
        "keras_transfer.cli",
        "train",
        "--data",
        str(tmp_path / "digits"),
        "--backbone",
        str(tmp_path / "source.keras"),
        "--method",
        "lora:rank=8",
        "--epochs",
        "1",
        "--min-steps",
        "2",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["fine_tune", "lora"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    assert not [w.path for w in trained.weights if "lora" in w.path]  # merged
    old, new = source.get_layer("backbone"), trained.get_layer("backbone")
    for name in ("conv1", "conv2", "fc1"):  # biases frozen; kernels moved by the merged A @ B
        np.testing.assert_array_equal(new.get_layer(name).bias.numpy(), old.get_layer(name).bias.numpy())
    assert not np.array_equal(new.get_layer("fc1").kernel.numpy(), old.get_layer("fc1").kernel.numpy())
