"""The feature cache trains exactly the model plain training would train."""

import os

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import feature_cache
from keras_transfer.forgetting import heads


@pytest.fixture(scope="module")
def split_digits(mnist):
    return (mnist.x[:600], mnist.y[:600]), (mnist.x[4500:], mnist.y[4500:])


@pytest.fixture(scope="module")
def source(split_digits):
    """A CNN trained briefly on real digits: its backbone is the frozen source."""
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    keras_transfer.train(model, split_digits[0], epochs=1, verbose=0, seed=0)
    return model


def frozen_twins(source, count=2, dropout=0.0):
    """`count` identical classifiers on the source's frozen backbone."""
    models = []
    for _ in range(count):
        keras.utils.set_random_seed(1)
        model = keras_transfer.build_classifier(source, 10, dropout=dropout)
        models.append(model)
    for model in models[1:]:
        model.set_weights(models[0].get_weights())
    return models


def test_cached_training_equals_plain_training(source, split_digits, capsys):
    train, test = split_digits
    cached, plain = frozen_twins(source)
    backbone_before = cached.get_layer("backbone").get_weights()
    keras_transfer.train(cached, train, test, epochs=3, batch_size=32, seed=7, verbose=2, learning_rate=1e-2)
    said = capsys.readouterr().out
    # Dropout at rate 0 is deterministic, so the cut goes past it.
    assert "Feature cache on" in said and "600 training images through 'output_dropout' once" in said
    history = keras_transfer.train(
        plain,
        train,
        test,
        epochs=3,
        batch_size=32,
        seed=7,
        verbose=0,
        feature_cache=False,
        learning_rate=1e-2,
    )
    # Same architecture, same object graph: the cache trained the model's own head.
    assert [layer.name for layer in cached.layers] == [layer.name for layer in plain.layers]
    head_cached = cached.get_layer("predictions").get_weights()[0]
    head_plain = plain.get_layer("predictions").get_weights()[0]
    assert not np.allclose(head_cached, frozen_twins(source, 1)[0].get_layer("predictions").get_weights()[0])
    np.testing.assert_allclose(head_cached, head_plain, atol=2e-4)
    np.testing.assert_allclose(
        cached.predict(test[0], verbose=0), plain.predict(test[0], verbose=0), atol=2e-4
    )
    for before, after in zip(backbone_before, cached.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(before, after)
    assert history.history["val_accuracy"][-1] > 0.7  # chance is 0.1


def test_a_second_train_of_the_same_model_uses_the_cache_again(source, split_digits, capsys):
    """Each split calls the head's layers in a head model: those calls are not the
    model's own graph, so the next `train` (and `split_frozen_features`) still cuts."""
    train, _ = split_digits
    model, plain = frozen_twins(source)
    initial = model.get_weights()
    flops = keras_transfer.model_flops(model)
    for _ in range(2):
        model.set_weights(initial)
        keras_transfer.train(model, train, epochs=1, batch_size=32, seed=3, verbose=2)
        assert "Feature cache on" in capsys.readouterr().out
    split = keras_transfer.split_frozen_features(model)
    assert split.cut == "output_dropout"
    assert split.features.output is model.get_layer("output_dropout").output
    # The head's calls in the head models count nowhere: FLOPs, the head's input.
    assert keras_transfer.model_flops(model) == flops
    assert heads.head_features(model) is model.get_layer("predictions").input
    keras_transfer.train(plain, train, epochs=1, batch_size=32, seed=3, verbose=0, feature_cache=False)
    np.testing.assert_allclose(
        model.get_layer("predictions").get_weights()[0],
        plain.get_layer("predictions").get_weights()[0],
        atol=2e-4,
    )


def test_head_shares_the_models_layers(source, split_digits, tmp_path):
    model = frozen_twins(source, 1)[0]
    split = keras_transfer.split_frozen_features(model)
    assert split.cut == "output_dropout"
    assert all(any(layer is m for m in model.layers) for layer in split.head.layers[1:])
    x = split_digits[1][0][:16]
    features = split.features.predict(x, verbose=0)
    np.testing.assert_allclose(
        split.head.predict(features, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    keras_transfer.train(model, split_digits[0], epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_features_on_disk_equal_features_in_memory(source, split_digits, tmp_path):
    split = keras_transfer.split_frozen_features(frozen_twins(source, 1)[0])
    x, y = split_digits[0][0][:100], split_digits[0][1][:100]
    in_memory, labels = keras_transfer.compute_features(split.features, (x, y))
    on_disk, disk_labels = keras_transfer.compute_features(
        split.features, (x, y), memory_limit=0, cache_dir=str(tmp_path)
    )
    assert isinstance(on_disk, np.memmap) and os.listdir(tmp_path)
    np.testing.assert_allclose(on_disk, in_memory, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(disk_labels, y)
    batches = list(
        feature_cache.feature_dataset(
            on_disk, disk_labels, batch_size=32, shuffle=True, seed=0, drop_remainder=True
        )
    )
    assert [tuple(b[0].shape) for b in batches] == [(32, 128)] * 3
    seen = np.concatenate([b[1].numpy() for b in batches])
    assert len(set(seen.tolist())) > 1


def test_compute_features_traces_a_model_once_and_follows_its_weights(source, split_digits):
    import gc
    import weakref

    from keras_transfer.training import feature_cache as feature_cache_lib

    features = keras_transfer.split_frozen_features(frozen_twins(source, 1)[0]).features
    x, y = split_digits[0][0][:96], split_digits[0][1][:96]  # batches of 64 and 32
    forward = feature_cache_lib._traced_forward(features)
    assert forward.experimental_get_tracing_count() == 0
    first, _ = keras_transfer.compute_features(features, (x, y))
    traces = forward.experimental_get_tracing_count()
    assert traces > 0  # compute_features ran this function
    again, _ = keras_transfer.compute_features(features, (x, y))
    assert forward.experimental_get_tracing_count() == traces  # no new trace
    np.testing.assert_array_equal(again, first)
    # The kept function reads the model's variables: new weights, new features.
    features.set_weights([w * 0.5 for w in features.get_weights()])
    halved, _ = keras_transfer.compute_features(features, (x, y))
    assert np.abs(halved - first).max() > 1e-3
    np.testing.assert_allclose(halved, features.predict(x, verbose=0), atol=1e-5)
    # It does not keep the model alive, and goes with it.
    model = weakref.ref(features)
    assert model() in feature_cache_lib._FORWARD
    del features, forward
    gc.collect()
    assert model() is None


def test_a_dataset_of_known_length_goes_straight_into_one_array_or_file(source, split_digits, tmp_path):
    import tensorflow as tf

    features = keras_transfer.split_frozen_features(frozen_twins(source, 1)[0]).features
    x, y = split_digits[0][0][:100], split_digits[0][1][:100]
    reference, _ = keras_transfer.compute_features(features, (x, y))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # 32, 32, 32, 4
    in_memory, labels = keras_transfer.compute_features(features, dataset)
    assert type(in_memory) is np.ndarray and in_memory.shape == (100, 128)
    np.testing.assert_allclose(in_memory, reference, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    # Beyond memory_limit a dataset's features go to disk too (before, only arrays did).
    on_disk, _ = keras_transfer.compute_features(features, dataset, memory_limit=0, cache_dir=str(tmp_path))
    assert isinstance(on_disk, np.memmap) and on_disk.shape == (100, 128) and os.listdir(tmp_path)
    np.testing.assert_allclose(on_disk, reference, atol=1e-6)
    # Unknown length: gathered and joined; the same features.
    unknown = dataset.filter(lambda images, targets: True)
    assert int(unknown.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    np.testing.assert_allclose(keras_transfer.compute_features(features, unknown)[0], reference, atol=1e-6)
    with pytest.raises(ValueError, match="repeats forever"):
        keras_transfer.compute_features(features, dataset.repeat())
    with pytest.raises(ValueError, match="more than count=50"):
        keras_transfer.compute_features(features, unknown, count=50)


def test_cache_is_off_with_augmentation_or_a_trainable_backbone(source, split_digits, capsys):
    model = frozen_twins(source, 1)[0]
    keras_transfer.train(model, split_digits[0], epochs=1, verbose=2, augment=True)
    assert "Feature cache off: augmentation is on" in capsys.readouterr().out
    plan = keras_transfer.plan_feature_cache(model, dataset_input=True)
    assert not plan.use and "tf.data.Dataset" in plan.reason
    keras_transfer.unfreeze(model.get_layer("backbone"))
    plan = keras_transfer.plan_feature_cache(model)
    assert not plan.use and "trainable" in plan.reason
    with_dropout = frozen_twins(source, 1, dropout=0.5)[0]
    assert keras_transfer.plan_feature_cache(with_dropout).split.cut == "backbone"  # dropout is in the head
    with pytest.raises(ValueError, match="feature_cache must be"):
        keras_transfer.plan_feature_cache(model, feature_cache="yes")


def test_checkpoints_and_resume_keep_the_whole_model(source, split_digits, tmp_path):
    model = frozen_twins(source, 1)[0]

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        keras_transfer.train(
            model, *split_digits, epochs=4, verbose=0, workdir=str(tmp_path), callbacks=[Crash()]
        )
    best = keras.saving.load_model(str(tmp_path / "best.keras"))
    assert best.input.shape == (None, 28, 28, 1) and best.get_layer("backbone") is not None
    fresh = frozen_twins(source, 1)[0]
    history = keras_transfer.train(
        fresh, *split_digits, epochs=4, verbose=0, workdir=str(tmp_path), patience=1
    )
    assert history.epoch[0] == 2  # resumed after the two finished epochs
