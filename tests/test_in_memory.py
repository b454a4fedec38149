"""Arrays drawn in-graph (`training.in_memory`): the same batches and weights as the
tf.data path, exact step counts, Keras's own train function afterwards; and the oneDNN
default set at import."""

import os
import platform
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer.training import in_memory


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist.x[:640].astype("float32"), mnist.y[:640]


def _new_model():
    keras.utils.set_random_seed(1)
    return keras_transfer.build_classifier("mnist_mlp", 10, weights=None)


def _max_difference(a, b):
    return max(float(np.abs(p - q).max()) for p, q in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("min_steps", [None, 30])
def test_in_memory_path_equals_the_tf_data_path(digits, min_steps):
    x, y = digits
    kwargs = dict(epochs=3, batch_size=64, seed=7, verbose=0, min_steps=min_steps, steps_per_execution=5)
    reference = _new_model()
    keras_transfer.train(reference, (x, y), in_memory=False, **kwargs)
    fast = _new_model()
    history = keras_transfer.train(fast, (x, y), **kwargs)
    assert _max_difference(reference, fast) == 0.0
    # 640 // 64 = 10 steps a pass; under min_steps=30 over 3 epochs, still 10 per epoch.
    assert int(fast.optimizer.iterations) == int(reference.optimizer.iterations) == 30
    assert len(history.history["loss"]) == 3


def test_exact_step_count_when_calls_do_not_divide_the_epoch(digits):
    x, y = digits
    model = _new_model()
    # 5 images make 1 step a pass; 3 epochs x ceil(40 / 3) = 14 steps, 4 per call.
    keras_transfer.train(model, (x[:5], y[:5]), epochs=3, min_steps=40, steps_per_execution=4, verbose=0)
    assert int(model.optimizer.iterations) == 3 * 14


def test_keras_train_function_is_back_after_train_and_validation_runs(digits):
    x, y = digits
    model = _new_model()
    history = keras_transfer.train(model, (x[:512], y[:512]), (x[512:], y[512:]), epochs=2, verbose=0)
    assert model.train_function is None
    assert set(history.history) >= {"loss", "val_loss", "val_accuracy"}
    before = int(model.optimizer.iterations)
    model.fit(x[:128], y[:128], batch_size=32, epochs=1, verbose=0)  # the user's own fit
    assert int(model.optimizer.iterations) == before + 4


def test_in_memory_rejects_bad_values(digits):
    x, y = digits
    with pytest.raises(ValueError, match=r"in_memory must be 'auto' or False\. Received: in_memory=True"):
        keras_transfer.train(_new_model(), (x, y), epochs=1, in_memory=True, verbose=0)
    with pytest.raises(ValueError, match=r"one pass of 10 full batches of 64\. Received: steps_per_epoch=3"):
        in_memory.ArrayFeed(x, y, batch_size=64, steps_per_epoch=3)


def test_learns_on_real_digits(digits):
    x, y = digits
    model = _new_model()
    history = keras_transfer.train(model, (x, y), epochs=4, batch_size=32, seed=0, verbose=0)
    assert history.history["accuracy"][-1] > history.history["accuracy"][0] + 0.1
    assert history.history["accuracy"][-1] > 0.8


def _dense_model(dropout):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1))
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    hidden = keras.layers.Dense(32, activation="relu")(pixels)
    if dropout:
        hidden = keras.layers.Dropout(0.3)(hidden)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))


def test_jit_compile_runs_the_whole_step_loop_under_xla(digits):
    x, y = digits
    kwargs = dict(epochs=3, batch_size=64, seed=7, verbose=0, steps_per_execution=4)
    runs = {}
    for dropout in (False, True):
        for jit in (False, True):
            model = _dense_model(dropout)
            history = keras_transfer.train(model, (x, y), jit_compile=jit, **kwargs)
            assert int(model.optimizer.iterations) == 30  # 10 steps a pass, calls of 4, 4, 2
            assert history.history["accuracy"][-1] > 0.3  # chance: 0.1
            runs[dropout, jit] = model
    # Without dropout the same computation: float round-off apart.
    assert _max_difference(runs[False, False], runs[False, True]) < 1e-4
    # With dropout the masks come from XLA's generator: only XLA-compiled steps differ so.
    assert _max_difference(runs[True, False], runs[True, True]) > 1e-3


def test_auto_puts_long_dense_runs_under_xla_and_says_so(digits, monkeypatch, capsys):
    from keras_transfer import performance

    x, y = digits
    kwargs = dict(epochs=2, batch_size=64, seed=7, verbose=2)
    keras_transfer.train(_new_model(), (x, y), **kwargs)
    assert "whole-loop XLA" not in capsys.readouterr().out  # 20 steps: far below the threshold
    monkeypatch.setattr(performance, "LOOP_XLA_CPU_MIN_STEPS", 20)
    model = _new_model()
    keras_transfer.train(model, (x, y), **kwargs)
    out = capsys.readouterr().out
    assert "the 20 steps run as whole-loop XLA computations" in out
    assert model.jit_compile is False  # only the training loop: evaluate and predict as before
    assert int(model.optimizer.iterations) == 20


def _import_in_fresh_process(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    code = (
        "import os, keras_transfer; "
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), keras_transfer._ENABLED_ONEDNN)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.mark.skipif(not X86, reason="the oneDNN default is for x86 CPUs")
def test_import_turns_onednn_on_unless_the_user_chose():
    assert _import_in_fresh_process(None) == ["1", "True"]
    assert _import_in_fresh_process("0") == ["0", "False"]
    assert _import_in_fresh_process("1") == ["1", "False"]
    assert keras_transfer.performance.onednn_choice().startswith("oneDNN ")


def test_fused_adam_matches_keras_adam_and_saves_as_adam(digits, tmp_path):
    from keras_transfer.training.fused_adam import fuse_adam
    from keras_transfer.training.fused_adam import is_fused

    x, y = digits
    models = []
    for fused in (False, True):
        model = _new_model()
        optimizer = keras.optimizers.Adam(1e-3)
        keras_transfer.compile_classifier(model, optimizer=fuse_adam(optimizer) if fused else optimizer)
        keras_transfer.train(model, (x, y), epochs=2, batch_size=64, seed=3, compile=False, verbose=0)
        models.append(model)
    difference = _max_difference(*models)
    assert 0.0 < difference < 1e-5  # the fused kernel ran, and agrees to round-off
    assert is_fused(keras_transfer.compile_classifier(_new_model()).optimizer)
    assert not is_fused(fuse_adam(keras.optimizers.Adam(amsgrad=True)))
    path = str(tmp_path / "model.keras")
    models[1].save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is keras.optimizers.Adam
    expected = models[1].predict(x[:8], verbose=0)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), expected, atol=1e-6)


def test_jit_compile_with_a_dataset_and_dropout_on_a_cpu_warns(digits):
    if keras_transfer.has_gpu():
        pytest.skip("the warning is for CPUs")
    from keras_transfer.data import make_dataset

    x, y = digits
    dataset = make_dataset(x[:128], y[:128], batch_size=64, drop_remainder=True)
    with pytest.warns(UserWarning, match=r"jit_compile=True on a CPU with a tf\.data pipeline"):
        keras_transfer.train(_dense_model(True), dataset, epochs=1, jit_compile=True, verbose=0)
    # No dropout, or arrays (the whole-loop path): no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        keras_transfer.train(_dense_model(False), dataset, epochs=1, jit_compile=True, verbose=0)
        keras_transfer.train(
            _dense_model(True), (x[:128], y[:128]), epochs=1, batch_size=64, jit_compile=True, verbose=0
        )
