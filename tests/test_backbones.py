import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import backbones

FAMILIES = {
    "convnext",
    "densenet",
    "efficientnet",
    "efficientnet_v2",
    "inception_resnet_v2",
    "inception_v3",
    "mobilenet",
    "mobilenet_v2",
    "mobilenet_v3",
    "nasnet",
    "resnet",
    "resnet_v2",
    "vgg16",
    "vgg19",
    "xception",
}


def test_registry_covers_every_keras_applications_constructor():
    constructors = {
        name
        for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    }
    registered = {spec.family for spec in map(backbones.get_backbone_spec, keras_transfer.list_backbones())}
    assert FAMILIES <= registered
    # One registry entry per keras.applications constructor, plus the two MNIST bodies.
    applications = [
        n for n in keras_transfer.list_backbones() if keras_transfer.get_backbone_spec(n).family in FAMILIES
    ]
    assert len(applications) == len(constructors) == 40
    for name in (
        "resnet50",
        "resnet101",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "efficientnet_v2_s",
        "densenet121",
        "inception_v3",
        "xception",
        "vgg16",
        "convnext_tiny",
    ):
        assert name in applications


def test_spec_limits():
    spec = keras_transfer.get_backbone_spec("inception_v3")
    assert (spec.default_size, spec.min_size, spec.channels) == (299, 75, 3)
    assert keras_transfer.get_backbone_spec("efficientnet_b3").default_input_shape == (300, 300, 3)
    assert keras_transfer.get_backbone_spec("ResNet-50".replace("-", "")).name == "resnet50"


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet5'.*resnet50"):
        keras_transfer.get_backbone_spec("resnet5")


def test_input_too_small_and_wrong_channels():
    with pytest.raises(ValueError, match=r"at least 32x32.*\(28, 28, 3\)"):
        keras_transfer.build_backbone("resnet50", weights=None, input_shape=(28, 28, 3))
    with pytest.raises(ValueError, match="expect 3 channels"):
        keras_transfer.build_backbone("resnet50", weights="imagenet", input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match="height, width, channels"):
        keras_transfer.build_backbone("mobilenet_v2", weights=None, input_shape=(32, 32))


def test_imagenet_offline_fails_fast_with_advice(monkeypatch):
    from keras.src.utils import file_utils

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: False)
    with pytest.raises(keras_transfer.WeightsUnavailableError) as info:
        keras_transfer.build_backbone("mobilenet_v3_small", weights="imagenet", input_shape=(32, 32, 3))
    message = str(info.value)
    assert "weights=None" in message and "local weights file" in message
    assert "Traceback" not in message


def test_local_weights_file_loads(tmp_path):
    first = keras_transfer.build_backbone("mobilenet_v3_small", weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "small.weights.h5")
    first.save_weights(path)
    second = keras_transfer.build_backbone("mobilenet_v3_small", weights=path, input_shape=(32, 32, 3))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        keras_transfer.build_backbone(
            "mobilenet_v3_small", weights=str(tmp_path / "missing.weights.h5"), input_shape=(32, 32, 3)
        )


def test_mnist_backbones_have_no_imagenet_weights():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        keras_transfer.build_backbone("mnist_cnn", weights="imagenet")


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet50", "mnist_mlp", "mnist_cnn"])
def test_builds_at_minimum_size(name):
    spec = keras_transfer.get_backbone_spec(name)
    size = max(spec.min_size, 32) if spec.channels == 3 else spec.default_size
    model = keras_transfer.build_backbone(name, weights=None, input_shape=(size, size, spec.channels))
    assert model.name == "backbone"
    assert model.output.shape[0] is None


@pytest.mark.large
@pytest.mark.parametrize("name", [n for n in keras_transfer.list_backbones() if not n.startswith("mnist_")])
def test_every_backbone_builds_a_classifier(name):
    spec = keras_transfer.get_backbone_spec(name)
    size = 224 if name == "nasnet_large" else max(spec.min_size, 32)
    model = keras_transfer.build_classifier(name, 3, weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (1, 3)
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-4)


def test_one_function_says_what_a_backbone_argument_is(tmp_path):
    from keras_transfer.backbones import resolve_backbone

    assert resolve_backbone("ResNet50").value == "resnet50"
    assert (resolve_backbone("resnet50").pretrained, resolve_backbone("resnet50", None).pretrained) == (
        True,
        False,
    )
    assert resolve_backbone("mnist_cnn", None).recipe == "small"
    source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    assert (resolve_backbone(source).kind, resolve_backbone(source).recipe) == ("classifier", "small")
    body = source.get_layer("backbone")
    assert resolve_backbone(body).kind == "model" and resolve_backbone(body).pretrained
    path = str(tmp_path / "source.keras")
    source.save(path)
    loaded = resolve_backbone(path)
    assert loaded.kind == "classifier" and [w.shape for w in loaded.value.weights] == [
        w.shape for w in source.weights
    ]
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    assert resolve_backbone(str(folder)) == resolve_backbone("hub:" + str(folder))
    with pytest.raises(FileNotFoundError, match="No such model file"):
        resolve_backbone(str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="not a .keras model file or a SavedModel"):
        resolve_backbone(str(tmp_path))
