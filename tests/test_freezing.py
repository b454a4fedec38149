import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import freezing


def bn_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.Conv2D(4, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, outputs)


def test_select_by_name_index_regex_fraction():
    model = bn_model()
    keras_transfer.freeze(model, "conv_a")
    assert not model.get_layer("conv_a").trainable and model.get_layer("conv_b").trainable
    keras_transfer.unfreeze(model, freeze_batchnorm=False)
    keras_transfer.freeze(model, [0, -1])
    assert not model.get_layer("conv_a").trainable and not model.get_layer("head").trainable
    keras_transfer.unfreeze(model, freeze_batchnorm=False)
    keras_transfer.freeze(model, pattern=r"^conv_")
    assert [layer.name for layer in freezing.leaf_layers(model) if not layer.trainable] == [
        "conv_a",
        "conv_b",
    ]
    keras_transfer.unfreeze(model, freeze_batchnorm=False)
    counts = keras_transfer.freeze(model, fraction=0.6)  # bottom 3 of 5 layers
    assert [layer.name for layer in freezing.leaf_layers(model) if not layer.trainable] == [
        "conv_a",
        "bn_a",
        "conv_b",
    ]
    assert counts.trainable == 4 * 2 + 2 and counts.total == keras_transfer.count_parameters(model).total
    with pytest.raises(ValueError, match="No layer named 'conv_z'"):
        keras_transfer.freeze(model, "conv_z")
    with pytest.raises(ValueError, match="fraction"):
        keras_transfer.freeze(model, fraction=1.5)


def test_unfreeze_keeps_batchnorm_frozen_by_default():
    model = bn_model()
    keras_transfer.freeze(model)
    assert keras_transfer.count_parameters(model).trainable == 0
    keras_transfer.unfreeze(model)
    assert not model.get_layer("bn_a").trainable and model.get_layer("conv_a").trainable
    keras_transfer.unfreeze(model, freeze_batchnorm=False)
    assert model.get_layer("bn_a").trainable


def test_unfreeze_inside_a_frozen_nested_backbone():
    model = keras_transfer.build_classifier("mnist_cnn", 5, weights=None, freeze_backbone=True)
    backbone = model.get_layer("backbone")
    assert not backbone.trainable
    counts = keras_transfer.unfreeze(model, "fc1")
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"fc1", "predictions"}
    assert counts.trainable == 409728 + 645  # fc1 + predictions


def test_frozen_weights_do_not_change_in_fit(mnist):
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    keras_transfer.freeze(model, pattern="conv")
    frozen = {n: layer.get_weights() for n, layer in keras_transfer.weighted_layers(model).items()}
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(mnist.x[:128], mnist.y[:128], epochs=1, batch_size=32, verbose=0)
    after = keras_transfer.weighted_layers(model)
    for name in ("conv1", "conv2"):
        for a, b in zip(frozen[name], after[name].get_weights()):
            np.testing.assert_array_equal(a, b)
    for name in ("fc1", "predictions"):
        assert not np.allclose(frozen[name][0], after[name].get_weights()[0])


def _changed(before, layer):
    return sum(not np.array_equal(a, b) for a, b in zip(before, layer.get_weights()))


@pytest.mark.parametrize("how", ["all", "fraction", "pattern", "layers", "backbone", "leaf flag"])
def test_unfreeze_then_train_trains_the_backbone(mnist, how):
    # Issue 9: unfreeze left the nested backbone container frozen, so the feature
    # cache cut there and train changed 0 of its 6 weights.
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None, freeze_backbone=True)
    backbone = model.get_layer("backbone")
    if how == "all":
        keras_transfer.unfreeze(model)
    elif how == "fraction":
        keras_transfer.unfreeze(model, fraction=1.0)
    elif how == "pattern":
        keras_transfer.unfreeze(model, pattern="conv|fc")
    elif how == "layers":
        keras_transfer.unfreeze(model, ["conv1", "conv2", "fc1"])
    elif how == "backbone":
        keras_transfer.unfreeze(model, "backbone")
    else:  # the user sets a layer's own flag; train must honour it
        for name in ("conv1", "conv2", "fc1"):
            backbone.get_layer(name).trainable = True
    before = backbone.get_weights()
    keras_transfer.train(model, (mnist.x[:256], mnist.y[:256]), epochs=1, verbose=0)
    assert backbone.trainable
    assert _changed(before, backbone) == 6
    counts = keras_transfer.count_parameters(model)
    assert counts.trainable == counts.total


def test_freeze_and_unfreeze_by_nested_model_name():
    model = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    counts = keras_transfer.freeze(model, "backbone")
    assert not model.get_layer("backbone").trainable
    assert counts.trainable == 128 * 5 + 5  # only the head
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}
    keras_transfer.unfreeze(model, "backbone")
    assert keras_transfer.count_parameters(model).trainable == keras_transfer.count_parameters(model).total


def test_partly_frozen_backbone_trains_only_its_unfrozen_layers(mnist):
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None, freeze_backbone=True)
    keras_transfer.unfreeze(model, "fc1")
    backbone = model.get_layer("backbone")
    conv = [backbone.get_layer(n).get_weights() for n in ("conv1", "conv2")]
    fc1 = backbone.get_layer("fc1").get_weights()
    keras_transfer.train(model, (mnist.x[:256], mnist.y[:256]), epochs=1, verbose=0)
    assert _changed(conv[0], backbone.get_layer("conv1")) == 0
    assert _changed(conv[1], backbone.get_layer("conv2")) == 0
    assert _changed(fc1, backbone.get_layer("fc1")) == 2
