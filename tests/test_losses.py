import keras
import numpy as np
import pytest
from testing import assert_config_round_trip

import keras_transfer


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_equals_keras_categorical_crossentropy_on_one_hot(smoothing):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 16)
    probabilities = rng.dirichlet(np.ones(4), 16).astype("float32")
    ours = keras_transfer.SparseCategoricalCrossentropy(label_smoothing=smoothing)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    np.testing.assert_allclose(
        float(ours(labels, probabilities)), float(reference(np.eye(4)[labels], probabilities)), rtol=1e-5
    )
    if smoothing == 0.0:
        sparse = keras.losses.SparseCategoricalCrossentropy()
        np.testing.assert_allclose(
            float(ours(labels, probabilities)), float(sparse(labels, probabilities)), rtol=1e-5
        )


def test_logits_config_and_bad_values():
    logits = np.array([[2.0, -1.0, 0.5]], "float32")
    ours = keras_transfer.SparseCategoricalCrossentropy(0.2, from_logits=True)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    np.testing.assert_allclose(
        float(ours(np.array([1]), logits)), float(reference(np.eye(3)[[1]], logits)), rtol=1e-5
    )
    rebuilt = assert_config_round_trip(ours)
    assert rebuilt.label_smoothing == 0.2 and rebuilt.from_logits
    with pytest.raises(ValueError, match="label_smoothing"):
        keras_transfer.SparseCategoricalCrossentropy(1.0)


def test_compiled_model_with_smoothing_survives_keras_round_trip(tmp_path):
    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    keras_transfer.compile_classifier(model, label_smoothing=0.1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.loss.label_smoothing == 0.1
