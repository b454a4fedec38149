"""Shared round-trip checks for tests: config, .keras save/load, SavedModel export."""

import os

import keras
import numpy as np
import tensorflow as tf


def assert_config_round_trip(layer):
    """`from_config(get_config())` rebuilds a layer with the same config."""
    config = layer.get_config()
    rebuilt = layer.__class__.from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def assert_keras_round_trip(model, x, directory, atol=1e-6):
    """Saving to `.keras` and loading back gives the same predictions."""
    path = os.path.join(directory, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=atol
    )
    return loaded


def assert_saved_model_round_trip(path, model, x, input_name="images", atol=1e-5):
    """The exported `serving_default` signature gives the Keras model's predictions."""
    served = tf.saved_model.load(path).signatures["serving_default"]
    outputs = served(**{input_name: tf.constant(x, tf.float32)})
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=atol)
    np.testing.assert_array_equal(outputs["class_id"].numpy(), expected.argmax(-1))
    return outputs
