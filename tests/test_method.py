"""The TransferMethod extension point: registry, composition, and the method contract."""

import numpy as np
import pytest
import testing

import keras_transfer
from keras_transfer import data
from keras_transfer import training
from keras_transfer.training import method as method_lib


@pytest.fixture(scope="module")
def few_digits(mnist):
    return data.few_shot(*data.subset_classes(mnist.x, mnist.y, range(3)), k=8, seed=0)


def test_methods_are_listed_by_name_with_a_summary():
    methods = dict(method_lib.list_methods())
    assert {"feature_cache", "fine_tune"} <= set(methods)
    assert all(summary and "\n" not in summary for summary in methods.values())


def test_a_method_is_rebuilt_from_its_name_its_config_or_a_list():
    method = method_lib.get_method("fine_tune:recipe=small,epochs=3,learning_rate=1e-4,augment=false")
    assert method == training.FineTune("small", epochs=3, learning_rate=1e-4, augment=False)
    assert method_lib.get_method(method_lib.method_config(method)) == method
    composed = method_lib.get_method(["feature_cache", "fine_tune:epochs=0"])
    assert isinstance(composed, method_lib.Compose)
    assert method_lib.get_method(method_lib.method_config(composed)) == composed
    with pytest.raises(ValueError, match="Unknown transfer method 'no_such_method'.*fine_tune"):
        method_lib.get_method("no_such_method")
    with pytest.raises(ValueError, match="key=value"):
        method_lib.get_method("fine_tune:epochs")
    with pytest.raises(ValueError, match="unknown"):
        method_lib.get_method("fine_tune:epoch=3")


def test_two_methods_that_each_schedule_the_run_cannot_be_combined():
    with pytest.raises(ValueError, match="cannot be combined"):
        method_lib.Compose([training.FineTune(), training.FineTune(epochs=2)])


def test_a_new_method_is_one_class_and_one_decorator(few_digits, tmp_path):
    calls = []

    @method_lib.register_method
    class CountEpochs(method_lib.TransferMethod):
        name = "test_count_epochs"
        summary = "counts epochs (a test method)"

        def callbacks(self, model):
            import keras

            return [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: calls.append(epoch))]

    assert ("test_count_epochs", "counts epochs (a test method)") in method_lib.list_methods()
    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    keras_transfer.train(model, few_digits, epochs=2, method="test_count_epochs", verbose=0)
    assert calls == [0, 1]
    # It composes with the two-stage schedule: its callbacks join both stages.
    calls.clear()
    keras_transfer.fine_tune(
        model,
        few_digits,
        recipe="small",
        head_epochs=1,
        epochs=1,
        min_steps=2,
        method=CountEpochs(),
        verbose=0,
    )
    assert calls == [0, 1]


def test_feature_cache_passes_the_method_contract(few_digits, tmp_path):
    model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None, freeze_backbone=True)
    method = training.FeatureCache()
    testing.run_method_contract(
        method, model, few_digits, str(tmp_path), run_kwargs={"epochs": 2, "verbose": 0}
    )
    assert {id(w) for w in method.trainable_weights(model)} == {
        id(w) for w in model.get_layer("predictions").weights
    }


def test_fine_tune_passes_the_method_contract(few_digits, tmp_path):
    source = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    model = keras_transfer.build_classifier(source, 3)
    method = training.FineTune("small", head_epochs=1, epochs=1, unfreeze_fraction=0.5, min_steps=4)
    testing.run_method_contract(
        method, model, few_digits, str(tmp_path), source=source, run_kwargs={"verbose": 0}
    )
    trained = {id(w) for w in method.trainable_weights(model)}
    backbone = model.get_layer("backbone")
    assert {id(w) for w in backbone.get_layer("fc1").weights} <= trained  # the top half
    assert not {id(w) for w in backbone.get_layer("conv1").weights} & trained  # the bottom


def test_the_contract_catches_a_method_that_trains_more_than_it_says(few_digits, tmp_path):
    class HeadOnly(method_lib.TransferMethod):
        name = "test_head_only"

        def trainable_weights(self, model):
            return model.get_layer("predictions").weights  # but nothing is frozen

    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    with pytest.raises(AssertionError, match="which it does not train"):
        testing.run_method_contract(
            HeadOnly(), model, few_digits, str(tmp_path), run_kwargs={"epochs": 1, "verbose": 0}
        )


def test_a_methods_penalties_join_the_loss_of_every_step(few_digits, tmp_path):
    import keras

    class ShrinkHead(method_lib.TransferMethod):
        name = "test_shrink_head"

        def penalties(self, model):
            kernel = model.get_layer("predictions").kernel
            return [lambda: 10.0 * keras.ops.sum(keras.ops.square(kernel))]

    norms = {}
    for method in (None, ShrinkHead()):
        keras.utils.set_random_seed(0)
        model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
        history = keras_transfer.train(
            model, few_digits, epochs=3, min_steps=30, method=method, learning_rate=1e-2, verbose=0
        )
        norms[method is None] = float(np.sum(np.square(model.get_layer("predictions").kernel.numpy())))
    assert norms[False] < 0.5 * norms[True], norms  # the penalty pulled the head's weights in
    assert history.history["loss"][-1] > 0
    path = str(tmp_path / "penalised.keras")
    model.save(path)  # the penalties are code: the model reloads with its plain loss
    loaded = keras_transfer.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(few_digits[0][:4], verbose=0), model.predict(few_digits[0][:4], verbose=0), atol=1e-6
    )
