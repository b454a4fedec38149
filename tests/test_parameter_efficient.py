"""Parameter-efficient methods: bias-only (BitFit)."""

import keras
import numpy as np
import pytest
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer.parameter_efficient import BiasOnly
from keras_transfer.training import method as method_lib


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


def test_bias_only_passes_the_method_contract(few_digits, tmp_path):
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    model = keras_transfer.build_classifier(source, 3)
    method = BiasOnly()
    testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0},
    )
    trained = {id(w) for w in method.trainable_weights(model)}
    backbone = model.get_layer("backbone")
    for name in ("conv1", "conv2", "fc1"):
        assert id(backbone.get_layer(name).bias) in trained
        assert id(backbone.get_layer(name).kernel) not in trained
    assert {id(w) for w in model.get_layer("predictions").weights} <= trained
    count = keras_transfer.count_parameters(model)
    assert count.trainable < 0.01 * count.total  # BitFit trains well under 1% here


def test_bias_only_leaves_every_kernel_bit_identical_and_can_train_batchnorm_scale(few_digits):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    source = keras.Model(inputs, x, name="source")
    model = keras_transfer.build_classifier(source, 3)
    body = model.get_layer("backbone")
    kernel, gamma = body.get_layer("conv").kernel.numpy(), body.get_layer("bn").gamma.numpy()
    keras_transfer.train(model, few_digits, epochs=2, min_steps=6, method=BiasOnly(batchnorm=True), verbose=0)
    np.testing.assert_array_equal(body.get_layer("conv").kernel.numpy(), kernel)
    assert not np.array_equal(body.get_layer("bn").gamma.numpy(), gamma)
    assert method_lib.get_method("bias_only:batchnorm=true") == BiasOnly(batchnorm=True)
    assert "bias_only" in dict(method_lib.list_methods())
    with pytest.raises(ValueError, match="batchnorm must be True or False"):
        BiasOnly(batchnorm="yes")


def test_keras_transfer_train_method_bias_only_on_an_image_folder(mnist, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from testing import write_image_folder

    keep = np.isin(mnist.y, [0, 1])
    write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1"]
    )
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
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
        "bias_only",
        "--epochs",
        "1",
        "--min-steps",
        "2",
        "--batch-size",
        "8",
        "--output",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "out" / "digits" / "train"
    config = json.loads((run_dir / "run.json").read_text())
    assert config["methods"] == ["bias_only", "fine_tune"]
    trained = keras_transfer.load_model(str(run_dir / "model.keras"))
    np.testing.assert_array_equal(  # the CLI run changed no kernel of the source's backbone
        trained.get_layer("backbone").get_layer("conv1").kernel.numpy(),
        source.get_layer("backbone").get_layer("conv1").kernel.numpy(),
    )
