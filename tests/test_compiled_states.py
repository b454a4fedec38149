"""`train` keeps a model's compiled states across runs (`training.compiled_states`): a
run compiled as an earlier one gets its traced functions back and trains exactly as a
fresh compile would."""

import keras
import numpy as np

import keras_transfer
from keras_transfer import freezing
from keras_transfer.training import compiled_states

# The Keras path with a tf.data pipeline (the demo's, augmented) and no feature cache
# (a frozen backbone on arrays would train a cached-feature head, which keeps nothing).
FIT = {"in_memory": False, "feature_cache": False}


def _data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 28, 28, 1)).astype("float32") * 255
    return x, (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)


def _model():
    keras.utils.set_random_seed(3)
    return keras_transfer.build_classifier("mnist_mlp", 2, weights=None)


def _stages(model, data, keep):
    """Every layer at 1e-3, the head alone at 1e-2, every layer at 1e-3 again (the
    first run's configuration): the weights and train function after each."""
    body = model.get_layer("backbone")
    out = []
    for trainable, rate in ((True, 1e-3), (False, 1e-2), (True, 1e-3)):
        if not keep:
            compiled_states.clear(model)
        freezing.freeze(body) if not trainable else freezing.unfreeze(body, fraction=1.0)
        keras_transfer.train(
            model, data, epochs=2, batch_size=16, learning_rate=rate, **FIT, seed=0, verbose=0
        )
        out.append((model.get_weights(), model.train_function, int(model.optimizer.iterations)))
    return out


def test_a_run_compiled_as_an_earlier_one_reuses_its_functions_and_trains_the_same():
    data = _data()
    kept, fresh = _model(), _model()
    reused = _stages(kept, data, keep=True)
    compiled = _stages(fresh, data, keep=False)
    for (weights, _, steps), (expected, _, expected_steps) in zip(reused, compiled):
        assert steps == expected_steps == 2 * 3  # the optimizer starts afresh every run
        for a, b in zip(weights, expected):
            np.testing.assert_array_equal(a, b)
    # The third run compiled as the first: its traced train function came back.
    assert reused[2][1] is reused[0][1] and reused[1][1] is not reused[0][1]
    assert compiled[2][1] is not compiled[0][1]
    assert compiled_states.kept(kept) == 2
    # The weights moved in the third run (it trained, from the second run's weights).
    assert any(not np.array_equal(a, b) for a, b in zip(reused[2][0], reused[1][0]))


def test_a_different_learning_rate_or_smoothing_compiles_anew():
    data = _data()
    model = _model()
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    first = model.train_function
    keras_transfer.train(model, data, epochs=1, batch_size=16, learning_rate=2e-3, **FIT, verbose=0)
    assert model.train_function is not first
    second = model.train_function
    keras_transfer.train(
        model,
        data,
        epochs=1,
        batch_size=16,
        learning_rate=2e-3,
        label_smoothing=0.1,
        **FIT,
        verbose=0,
    )
    assert model.train_function is not second and compiled_states.kept(model) == 3
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    assert model.train_function is first
    assert float(model.optimizer.learning_rate) == np.float32(1e-3)


def test_a_run_whose_trainable_layers_change_during_it_keeps_nothing():
    data = _data()
    model = _model()
    body = model.get_layer("backbone")
    freezing.freeze(body)

    class Unfreeze(keras.callbacks.Callback):  # as `layerwise.GradualUnfreezing` does
        def on_train_begin(self, logs=None):
            freezing.unfreeze(body, fraction=1.0)
            self.model.optimizer.build(self.model.trainable_variables)
            freezing.freeze(body)

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                freezing.unfreeze(body, fraction=1.0)
                self.model.make_train_function(force=True)

    keras_transfer.train(model, data, epochs=2, batch_size=16, **FIT, callbacks=[Unfreeze()], verbose=0)
    assert compiled_states.kept(model) == 0
    freezing.freeze(body)
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    assert compiled_states.kept(model) == 1
    # The head alone trains: the backbone's weights stay.
    before = [w.copy() for w in body.get_weights()]
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    for a, b in zip(body.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_a_model_compiled_elsewhere_between_runs_gets_the_kept_state_back_reset():
    data = _data()
    model = _model()
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    first = model.train_function
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(*data, epochs=1, verbose=0)
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    assert model.train_function is first
    assert type(model.optimizer).__name__ == "Adam" and int(model.optimizer.iterations) == 3
    assert model.get_compile_config()["optimizer"]["class_name"] == "Adam"


def test_at_most_max_states_are_kept(monkeypatch):
    monkeypatch.setattr(compiled_states, "MAX_STATES", 2)
    data = _data()
    model = _model()
    for rate in (1e-3, 2e-3, 3e-3):
        keras_transfer.train(model, data, epochs=1, batch_size=16, learning_rate=rate, **FIT, verbose=0)
    assert compiled_states.kept(model) == 2
    compiled_states.clear(model)
    assert compiled_states.kept(model) == 0


def test_a_cached_feature_head_keeps_nothing():
    data = _data()
    model = _model()
    freezing.freeze(model.get_layer("backbone"))
    keras_transfer.train(model, data, epochs=1, batch_size=16, verbose=0)  # feature_cache="auto"
    assert compiled_states.kept(model) == 0


def test_a_constraint_set_between_runs_compiles_anew_and_holds():
    data = _data()
    model = _model()
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    first = model.train_function
    kernel = model.get_layer("predictions").kernel
    kernel.constraint = keras.constraints.NonNeg()  # as a pruning mask is set on variables
    keras_transfer.train(model, data, epochs=1, batch_size=16, **FIT, verbose=0)
    assert model.train_function is not first
    assert float(np.min(kernel.numpy())) >= 0.0
