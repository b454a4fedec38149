"""The fast defaults change speed, not results."""

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import performance


@pytest.fixture(scope="module")
def digits(mnist):
    return (mnist.x[:1000], mnist.y[:1000]), (mnist.x[4000:], mnist.y[4000:])


def mlp_twins(count=2):
    models = []
    for _ in range(count):
        keras.utils.set_random_seed(3)
        models.append(keras_transfer.build_classifier("mnist_mlp", 10, weights=None, dropout=0.0))
    for model in models[1:]:
        model.set_weights(models[0].get_weights())
    return models


def test_steps_per_execution_does_not_change_what_is_learned(digits):
    train, test = digits
    auto, single = mlp_twins()
    keras_transfer.train(auto, train, epochs=2, batch_size=32, seed=5, verbose=0)
    keras_transfer.train(single, train, epochs=2, batch_size=32, seed=5, verbose=0, steps_per_execution=1)
    assert auto.steps_per_execution == 31 and single.steps_per_execution == 1  # 1000 // 32 full batches
    for a, b in zip(auto.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert keras_transfer.evaluate_classifier(auto, test).accuracy > 0.8


def test_xla_gives_the_same_model_and_compiles_once(digits):
    train, _ = digits
    xla, plain = mlp_twins()
    traces = []
    step = xla.train_step
    xla.train_step = lambda data: traces.append(data[0].shape) or step(data)  # runs when traced
    keras_transfer.train(xla, train, epochs=2, batch_size=48, seed=5, verbose=0, jit_compile=True)
    keras_transfer.train(plain, train, epochs=2, batch_size=48, seed=5, verbose=0, jit_compile=False)
    assert xla.jit_compile is True and plain.jit_compile is False
    # 1000 = 20 x 48 + 40: the partial batch is dropped, so every trace (the first step
    # and the loop of steps per execution) sees one fixed shape; a batch of 40 or an
    # unknown batch size would compile again.
    assert traces and {tuple(shape) for shape in traces} == {(48, 28, 28, 1)}
    for a, b in zip(xla.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_auto_steps_per_execution_follows_model_size():
    mlp = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    cnn = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    assert keras_transfer.auto_steps_per_execution(mlp, 128) == 64
    assert keras_transfer.auto_steps_per_execution(mlp, 128, steps_per_epoch=7) == 7
    assert keras_transfer.auto_steps_per_execution(cnn, 128) < keras_transfer.auto_steps_per_execution(cnn, 8)
    conv = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3)])
    assert keras_transfer.model_flops(conv) == 2 * 3 * 3 * 1 * 8 * 26 * 26
    with pytest.raises(ValueError, match="steps_per_execution must be"):
        keras_transfer.train(
            mlp, (np.zeros((4, 28, 28, 1)), np.zeros(4)), epochs=1, verbose=0, steps_per_execution=0
        )


def test_precision_errors_and_round_trip():
    with pytest.raises(ValueError, match="precision must be one of"):
        keras_transfer.set_precision("bf16")
    if not keras_transfer.has_gpu():
        with pytest.raises(ValueError, match="only fast on GPUs"):
            keras_transfer.set_precision("mixed_float16")
    previous = keras_transfer.set_precision("mixed_bfloat16")
    try:
        assert keras_transfer.get_precision() == "mixed_bfloat16"
        model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
        assert model.get_layer("predictions").compute_dtype == "float32"
    finally:
        keras_transfer.set_precision(previous)
    assert keras_transfer.get_precision() == "float32"


@pytest.mark.skipif(not performance.bf16_supported() or performance.has_gpu(), reason="no bf16 CPU")
def test_onednn_bf16_training_reaches_float32_accuracy(digits):
    train, test = digits
    fp32, bf16 = mlp_twins()
    keras_transfer.train(fp32, train, epochs=3, seed=5, verbose=0)
    previous = keras_transfer.set_precision("onednn_bfloat16")
    try:
        keras_transfer.train(bf16, train, epochs=3, seed=5, verbose=0)
        bf16_accuracy = keras_transfer.evaluate_classifier(bf16, test).accuracy
        bf16_probabilities = bf16.predict(test[0][:64], verbose=0)
    finally:
        keras_transfer.set_precision(previous)
    fp32_accuracy = keras_transfer.evaluate_classifier(fp32, test).accuracy
    assert fp32_accuracy > 0.85
    assert abs(bf16_accuracy - fp32_accuracy) <= 0.02
    # bf16 really ran: the same weights give slightly different numbers in float32.
    float32_probabilities = bf16.predict(test[0][:64], verbose=0)
    difference = np.abs(bf16_probabilities - float32_probabilities).max()
    assert 1e-5 < difference < 0.1


def test_in_memory_loop_xla_stays_off_under_onednn_bfloat16():
    from keras_transfer.performance import in_memory_loop_xla

    if keras_transfer.has_gpu() or not keras_transfer.bf16_supported():
        pytest.skip("onednn_bfloat16 needs a CPU with AMX or AVX512-BF16")
    mlp = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    assert in_memory_loop_xla(mlp, 10**6)
    previous = keras_transfer.set_precision("onednn_bfloat16")
    try:
        assert not in_memory_loop_xla(mlp, 10**6)
    finally:
        keras_transfer.set_precision(previous)
    assert in_memory_loop_xla(mlp, 10**6)
