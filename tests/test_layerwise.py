"""Layer-wise methods: layer groups, partial fine-tuning, discriminative learning rates,
gradual unfreezing."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import testing

import keras_transfer
from keras_transfer import cli
from keras_transfer import data
from keras_transfer.layerwise import DiscriminativeLR
from keras_transfer.layerwise import GradualUnfreezing
from keras_transfer.layerwise import LayerwiseOptimizer
from keras_transfer.layerwise import PartialFineTune
from keras_transfer.layerwise import layer_groups
from keras_transfer.training import method as method_lib

BLOCKS = ("conv1", "conv2", "fc1")  # mnist_cnn's blocks, bottom to top


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


@pytest.fixture(scope="module")
def source():
    keras.utils.set_random_seed(0)
    return keras_transfer.build_classifier("mnist_cnn", 5, weights=None)


def _kernels(model):
    body = model.get_layer("backbone")
    return {name: body.get_layer(name).kernel.numpy().copy() for name in BLOCKS}


class _EpochKernels(keras.callbacks.Callback):
    """The backbone's kernels at the start of the run and after each epoch."""

    def __init__(self, model):
        super().__init__()
        self.full = model
        self.seen = [_kernels(model)]

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(_kernels(self.full))


def test_layer_groups_follow_the_blocks_of_keras_applications_and_else_layers_with_weights():
    resnet = layer_groups(keras_transfer.build_backbone("resnet50", input_shape=(32, 32, 3), weights=None))
    assert (
        len(resnet) == 1 + 3 + 4 + 6 + 3 and resnet[0].name == "conv1" and resnet[-1].name == "conv5_block3"
    )
    block = next(group for group in resnet if group.name == "conv4_block2")
    assert block.layer_names[0] == "conv4_block2_1_conv" and block.layer_names[-1] == "conv4_block2_out"
    assert all(name.startswith("conv4_block2_") for name in block.layer_names)
    assert "pool1_pool" in resnet[0].layer_names  # weightless layers join the block before them
    mobilenet = layer_groups(
        keras_transfer.build_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)
    )
    names = [group.name for group in mobilenet]
    assert names == ["Conv1", "expanded_conv"] + [f"block_{i}" for i in range(1, 17)] + ["Conv_1"]
    assert "bn_Conv1" in mobilenet[0].layer_names and "Conv_1_bn" in mobilenet[-1].layer_names
    efficientnet = layer_groups(
        keras_transfer.build_backbone("efficientnet_b0", input_shape=(32, 32, 3), weights=None)
    )
    assert [g.name for g in efficientnet][:3] == ["stem", "block1a", "block2a"] and efficientnet[
        -1
    ].name == "top"
    # Every layer of a backbone is in exactly one group, in depth order.
    leaves = keras_transfer.freezing.leaf_layers(
        keras_transfer.build_backbone("resnet50", input_shape=(32, 32, 3), weights=None)
    )
    assert sum(len(group.layers) for group in resnet) == len(leaves)
    # Any other model: one group per layer with weights, BatchNorm with the layer before it.
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="first")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Dense(3, name="second")(x)
    groups = layer_groups(keras.Model(inputs, x))
    assert [(g.name, g.layer_names) for g in groups] == [
        ("first", ["first", "norm", "relu"]),
        ("second", ["second"]),
    ]
    assert len(groups[0].weights) == 2 + 4  # kernel, bias; gamma, beta, moving mean and variance
    with pytest.raises(ValueError, match="has no layer with weights"):
        layer_groups(keras.Sequential([keras.Input((3,)), keras.layers.ReLU()]))
    with pytest.raises(ValueError, match="needs a group naming the block"):
        layer_groups(keras.Model(inputs, x), patterns=["^dense"])


def test_partial_trains_only_the_top_blocks_and_passes_the_method_contract(source, few_digits, tmp_path):
    model = keras_transfer.build_classifier(source, 3)
    method = PartialFineTune(blocks=2)
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
    assert {id(w) for name in ("conv2", "fc1") for w in body.get_layer(name).weights} <= trained
    assert not {id(w) for w in body.get_layer("conv1").weights} & trained
    assert {id(w) for w in model.get_layer("predictions").weights} <= trained
    # prepare is idempotent, whatever was trainable before (as FineTune's stages leave it).
    keras_transfer.unfreeze(model)
    method.prepare(model)
    first = [layer.trainable for layer in keras_transfer.freezing.leaf_layers(model)]
    method.prepare(model)
    assert [layer.trainable for layer in keras_transfer.freezing.leaf_layers(model)] == first
    assert method_lib.get_method("partial:blocks=2") == method and method.get_config() == {"blocks": 2}
    with pytest.raises(ValueError, match=r"at most the backbone's 3 blocks \(conv1, conv2, fc1\)"):
        PartialFineTune(blocks=4).prepare(model)
    with pytest.raises(ValueError, match="blocks must be a positive integer. Received: blocks=0"):
        PartialFineTune(blocks=0)


def test_discriminative_lr_divides_each_lower_blocks_rate_and_keeps_the_schedule(
    source, few_digits, tmp_path
):
    model = keras_transfer.build_classifier(source, 3, freeze_backbone=False)  # DLR sets no freezing
    method = DiscriminativeLR(decay=2.0)
    testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        run_kwargs={"epochs": 2, "min_steps": 6, "verbose": 0, "cosine": True},
    )
    optimizer = model.optimizer
    assert isinstance(optimizer, LayerwiseOptimizer)
    body = model.get_layer("backbone")
    head = optimizer.optimizer_map(model.get_layer("predictions").kernel)
    assert int(head.iterations.numpy()) == int(optimizer.iterations.numpy())
    for depth, name in enumerate(reversed(BLOCKS), start=1):
        inner = optimizer.optimizer_map(body.get_layer(name).kernel)
        assert inner is optimizer.optimizer_map(body.get_layer(name).bias) and inner is not head
        assert int(inner.iterations.numpy()) == int(optimizer.iterations.numpy()) > 0
        # The cosine schedule, at this step, times 2 ** -depth.
        np.testing.assert_allclose(
            float(inner.learning_rate), float(head.learning_rate) * 2.0**-depth, rtol=1e-6
        )
    assert float(head.learning_rate) < 1e-3  # the run's cosine decay (from train's 1e-3) went on
    assert method.get_config() == {"decay": 2.0}
    assert DiscriminativeLR(groups=2).rates(model, 1.0)[1][1] == pytest.approx(1 / 2.6**2)
    runs = [[layer.name for layer in layers] for layers, _ in DiscriminativeLR(groups=2).rates(model)]
    assert runs == [["conv2", "pool2", "flatten", "fc1"], ["conv1", "pool1"]]  # top first; upper run larger
    with pytest.raises(ValueError, match="decay must be a number >= 1. Received: decay=0.5"):
        DiscriminativeLR(decay=0.5)
    with pytest.raises(ValueError, match="cannot be combined: each chooses the optimizer"):
        method_lib.Compose([DiscriminativeLR(), DiscriminativeLR(decay=3)])


def test_gradual_unfreezing_keeps_each_block_bit_identical_until_its_epoch(source, few_digits, tmp_path):
    model = keras_transfer.build_classifier(source, 3)
    method = GradualUnfreezing()
    recorder = _EpochKernels(model)
    testing.run_method_contract(
        method,
        model,
        few_digits,
        str(tmp_path),
        source=source,
        # steps_per_execution=2: the remade train function runs 2 steps per call too.
        run_kwargs={
            "epochs": 2,
            "min_steps": 8,
            "verbose": 0,
            "callbacks": [recorder],
            "steps_per_execution": 2,
        },
    )
    start, after_first, after_second = recorder.seen
    assert not np.array_equal(after_first["fc1"], start["fc1"])
    np.testing.assert_array_equal(after_first["conv2"], start["conv2"])  # frozen in epoch 0
    assert not np.array_equal(after_second["conv2"], after_first["conv2"])  # trains from epoch 1
    np.testing.assert_array_equal(after_second["conv1"], start["conv1"])  # its epoch (2) never came
    trained = {id(w) for w in method.trainable_weights(model)}
    assert not {id(w) for w in model.get_layer("backbone").get_layer("conv1").weights} & trained
    assert method_lib.get_method("gradual_unfreezing:every=2") == GradualUnfreezing(every=2)
    with pytest.raises(ValueError, match="every must be a positive integer. Received: every=0"):
        GradualUnfreezing(every=0)


def test_ulmfit_discriminative_rates_with_gradual_unfreezing_every_two_epochs(source, few_digits):
    model = keras_transfer.build_classifier(source, 3)
    recorder = _EpochKernels(model)
    schedule = GradualUnfreezing(every=2)
    keras_transfer.train(
        model,
        few_digits,
        epochs=5,
        min_steps=10,
        cosine=True,
        verbose=0,
        method=["discriminative_lr", schedule],
        callbacks=[recorder],
    )
    seen = recorder.seen
    unchanged = {"fc1": 0, "conv2": 2, "conv1": 4}  # epochs each block stays frozen
    for name, frozen_epochs in unchanged.items():
        for epoch in range(frozen_epochs):
            np.testing.assert_array_equal(
                seen[epoch + 1][name], seen[0][name], err_msg=f"{name} at epoch {epoch}"
            )
        assert not np.array_equal(seen[frozen_epochs + 1][name], seen[frozen_epochs][name]), name
    optimizer = model.optimizer
    assert isinstance(optimizer, LayerwiseOptimizer)
    # The inner optimizers of blocks frozen for a while kept the run's clock.
    steps = int(optimizer.iterations.numpy())
    assert steps == 5 * 2 and all(int(opt.iterations.numpy()) == steps for opt in optimizer.optimizers)


def test_keras_transfer_train_method_partial_and_ulmfit_on_an_image_folder(mnist, source, tmp_path, capsys):
    from testing import write_image_folder

    assert cli.main(["methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert {"partial", "discriminative_lr", "gradual_unfreezing"} <= set(listed)
    keep = np.isin(mnist.y, [0, 1])
    write_image_folder(
        str(tmp_path / "digits"), mnist.x[keep][:24].astype(np.uint8), mnist.y[keep][:24], ["0", "1"]
    )
    source.save(str(tmp_path / "source.keras"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for run, methods in (
        ("partial", ["partial"]),
        ("ulmfit", ["discriminative_lr", "gradual_unfreezing:every=1"]),
    ):
        command = [sys.executable, "-m", "keras_transfer.cli", "train", "--data", str(tmp_path / "digits")]
        command += ["--backbone", str(tmp_path / "source.keras"), "--epochs", "2", "--min-steps", "4"]
        command += ["--batch-size", "8", "--output", str(tmp_path / run)]
        for method in methods:
            command += ["--method", method]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        run_dir = tmp_path / run / "digits" / "train"
        config = json.loads((run_dir / "run.json").read_text())
        assert config["methods"] == sorted([m.split(":")[0] for m in methods] + ["fine_tune"])
        # In a fresh process: the model loads (its optimizer too) and predicts as saved.
        check = (
            "import sys, numpy as np, keras_transfer\n"
            "model = keras_transfer.load_model(sys.argv[1])\n"
            "print(type(model.optimizer).__name__)\n"
            "np.save(sys.argv[2], model.predict(np.load(sys.argv[3]), verbose=0))\n"
        )
        x = np.asarray(mnist.x[keep][:4], np.float32).reshape(4, 28, 28, 1)
        np.save(tmp_path / "x.npy", x)
        loaded = subprocess.run(
            [
                sys.executable,
                "-c",
                check,
                str(run_dir / "model.keras"),
                str(tmp_path / "p.npy"),
                str(tmp_path / "x.npy"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert loaded.returncode == 0, loaded.stderr[-3000:]
        trained = keras_transfer.load_model(str(run_dir / "model.keras"))
        np.testing.assert_allclose(np.load(tmp_path / "p.npy"), trained.predict(x, verbose=0), atol=1e-6)
        body, source_body = trained.get_layer("backbone"), source.get_layer("backbone")
        # conv1 is below the top block (partial) / its epoch never came (2 epochs, ULMFiT).
        np.testing.assert_array_equal(
            body.get_layer("conv1").kernel.numpy(), source_body.get_layer("conv1").kernel.numpy()
        )
        assert not np.array_equal(
            body.get_layer("fc1").kernel.numpy(), source_body.get_layer("fc1").kernel.numpy()
        )
        if run == "ulmfit":
            assert "LayerwiseOptimizer" in loaded.stdout
            assert not np.array_equal(
                body.get_layer("conv2").kernel.numpy(), source_body.get_layer("conv2").kernel.numpy()
            )
