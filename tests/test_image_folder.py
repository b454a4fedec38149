import collections
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing import write_fake_image
from testing import write_image_folder
from testing import write_truncated_png

import keras_transfer
from keras_transfer import image_folder

# Written in this order; folders sort as one, seven, zero.
DIGITS = {"zero": 0, "one": 1, "seven": 7}
CLASS_NAMES = ["one", "seven", "zero"]
PER_CLASS = 60


@pytest.fixture(scope="module")
def source(mnist):
    """60 real MNIST digits of each of 0, 1, 7 as uint8, labelled by CLASS_NAMES id."""
    xs, ys = [], []
    for name, digit in DIGITS.items():
        xs.append(mnist.x[mnist.y == digit][:PER_CLASS])
        ys += [CLASS_NAMES.index(name)] * PER_CLASS
    return np.concatenate(xs).astype(np.uint8), np.asarray(ys, np.int64)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, source):
    root = str(tmp_path_factory.mktemp("clean") / "digits")
    paths = write_image_folder(root, source[0], source[1], CLASS_NAMES)
    return root, paths


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, source):
    """The digits plus broken, hidden, ignored and oddly named files."""
    root = str(tmp_path_factory.mktemp("dirty") / "digits")
    x, y = source
    paths = write_image_folder(root, x, y, CLASS_NAMES)
    extra = write_image_folder(os.path.join(root, "zero", "more"), x[-1:], [0], ["nested"])
    upper = os.path.join(root, "zero", "EXTRA.PNG")  # extensions match in any case
    os.rename(write_image_folder(str(tmp_path_factory.mktemp("upper")), x[-2:-1], [0], ["z"])[0], upper)
    broken = [
        write_truncated_png(os.path.join(root, "one", "truncated.png"), x[0]),
        write_fake_image(os.path.join(root, "seven", "fake.png")),
        write_fake_image(os.path.join(root, "zero", "empty.jpg"), b""),
    ]
    write_fake_image(os.path.join(root, "zero", ".hidden.png"))  # hidden: ignored
    write_fake_image(os.path.join(root, "zero", "notes.txt"))  # not an image name: ignored
    write_image_folder(os.path.join(root, ".thumbnails"), x[:2], [0, 0], ["one"])  # hidden class
    valid = paths + [upper] + extra
    images = np.concatenate([x, x[-2:-1], x[-1:]])
    return root, valid, images, broken


def _hashes(images):
    return collections.Counter(np.asarray(image, np.uint8).tobytes() for image in images)


def test_scan_finds_sorted_classes_counts_and_skips_exactly_the_broken_files(dirty, capsys):
    root, valid, _, broken = dirty
    folder = image_folder.scan_image_folder(root, channels=1)
    assert folder.class_names == CLASS_NAMES
    assert folder.class_counts == {"one": 60, "seven": 60, "zero": 62}
    assert sorted(folder.paths) == sorted(valid) and folder.labels.dtype == np.int64
    for path, label in zip(folder.paths, folder.labels):
        assert os.path.relpath(path, root).split(os.sep)[0] == CLASS_NAMES[label]
    reasons = dict(folder.skipped)
    assert sorted(reasons) == sorted(broken)
    assert "PNG file cut short (truncated)" in reasons[broken[0]]
    assert reasons[broken[1]].startswith("Unknown image file format")
    assert reasons[broken[2]] == "empty file (0 bytes)"
    out = capsys.readouterr().out
    assert "Found 182 images in 3 classes (one: 60, seven: 60, zero: 62)" in out
    assert "ignored 1 files without an image extension; skipped 3 that could not be decoded" in out
    assert all(f"  {path}: {reasons[path]}" in out for path in broken)


def test_scan_prints_progress_on_long_scans(clean, monkeypatch, capsys):
    monkeypatch.setattr(image_folder, "_PROGRESS_EVERY", 0.0)
    image_folder.scan_image_folder(clean[0])
    assert "checked 180 of 180 images (" in capsys.readouterr().out
    # Filling the memory caches says how far it got too (each side's own).
    image_folder.image_folder_datasets(clean[0], image_size=8, channels=1, cache=True)
    out = capsys.readouterr().out
    assert "  checked and cached 180 of 180 images (" in out  # one pass for both sides


def test_split_is_seeded_disjoint_complete_and_stratified(clean):
    folder = image_folder.scan_image_folder(clean[0], verbose=False)
    train, validation = image_folder.split_image_folder(folder, 0.2, seed=3)
    again = image_folder.split_image_folder(folder, 0.2, seed=3)
    other = image_folder.split_image_folder(folder, 0.2, seed=4)
    assert again[1].paths == validation.paths and again[0].paths == train.paths
    assert set(other[1].paths) != set(validation.paths)
    assert not set(train.paths) & set(validation.paths)
    assert sorted(train.paths + validation.paths) == sorted(folder.paths)
    assert validation.class_counts == {"one": 12, "seven": 12, "zero": 12}
    assert train.class_counts == {"one": 48, "seven": 48, "zero": 48}
    # Labels travel with their paths; each side keeps the folder's order.
    label_of = dict(zip(folder.paths, folder.labels.tolist()))
    assert [label_of[p] for p in validation.paths] == validation.labels.tolist()
    assert validation.paths == [p for p in folder.paths if p in set(validation.paths)]
    # A tiny class still gets one image on each side.
    keep = np.r_[0:60, 60:62, 120:122]
    small = folder._replace(paths=[folder.paths[i] for i in keep], labels=folder.labels[keep])
    assert image_folder.split_image_folder(small, 0.2)[1].class_counts == {"one": 12, "seven": 1, "zero": 1}


def test_decoded_pixels_equal_the_source_digits(clean, source):
    x, _ = source
    loaded = image_folder.load_image_folder(clean[0], image_size=28, channels=1, verbose=False)
    assert loaded.x.shape == (180, 28, 28, 1) and loaded.x.dtype == np.float32
    index = [int(os.path.splitext(os.path.basename(p))[0]) for p in loaded.paths]
    np.testing.assert_array_equal(loaded.x, x[index].astype(np.float32))  # PNG is lossless
    np.testing.assert_array_equal(loaded.y, source[1][index])
    ds = image_folder.files_dataset(loaded.paths[:5], image_size=(32, 40), channels=3, batch_size=5)
    (batch,) = list(ds)  # images only without labels, in path order
    assert batch.shape == (5, 32, 40, 3)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])
    resized = tf.image.resize(loaded.x[:5], (32, 40)).numpy()[..., 0]
    np.testing.assert_allclose(batch[..., 1], resized, atol=1e-3)


def test_other_formats_decode_and_jpeg_is_close(tmp_path, source):
    x, y = source[0][::30], source[1][::30]
    for fmt in ("jpg", "bmp", "gif"):
        paths = write_image_folder(str(tmp_path / fmt), x, y, CLASS_NAMES, fmt=fmt)
        loaded = image_folder.load_image_folder(str(tmp_path / fmt), image_size=28, verbose=False)
        assert loaded.skipped == [] and sorted(loaded.paths) == sorted(paths)
        index = [int(os.path.splitext(os.path.basename(p))[0]) for p in loaded.paths]
        error = np.abs(loaded.x[..., :1] - x[index]).mean()
        assert error < (3.0 if fmt == "jpg" else 1e-6), (fmt, error)


def test_augmentation_changes_training_pixels_only(clean):
    kwargs = dict(image_size=28, channels=1, batch_size=16, shuffle=False, seed=0, verbose=False)
    plain = image_folder.image_folder_datasets(clean[0], **kwargs)
    augmented = image_folder.image_folder_datasets(clean[0], augment=True, **kwargs)
    assert augmented.train_files.paths == plain.train_files.paths
    (a, la), (b, lb) = next(iter(plain.train)), next(iter(augmented.train))
    np.testing.assert_array_equal(la, lb)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5.0
    assert float(tf.reduce_min(b)) >= 0.0 and float(tf.reduce_max(b)) <= 255.0
    for (a, la), (b, lb) in zip(plain.validation, augmented.validation):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    # train_plain: the training files in order, never augmented.
    first = next(iter(augmented.train_plain))
    np.testing.assert_array_equal(first[0], next(iter(plain.train))[0])


def test_image_augmentation_block():
    augment = image_folder.image_augmentation(seed=7)
    assert [layer.name for layer in augment.layers] == ["flip", "rotation", "zoom", "contrast"]
    seeds = [layer.seed for layer in augment.layers]
    assert len(set(seeds)) == 4
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    again = image_folder.image_augmentation(seed=7)
    np.testing.assert_allclose(augment(x, training=True), again(x, training=True), atol=1e-4)
    assert not np.allclose(augment(x, training=True), x)
    np.testing.assert_array_equal(augment(x, training=False), x)
    digits = image_folder.image_augmentation(flip=False, zoom=0, seed=0)
    assert [layer.name for layer in digits.layers] == ["rotation", "contrast"]
    assert isinstance(digits, keras.Sequential)
    with pytest.raises(ValueError, match="at least one transform"):
        image_folder.image_augmentation(flip=False, rotation=0, zoom=0, contrast=0)


def test_broken_files_neither_crash_an_epoch_nor_drop_batches(dirty):
    root, valid, images, _ = dirty
    data = image_folder.image_folder_datasets(
        root, image_size=28, channels=1, validation_split=0, batch_size=16, verbose=False
    )
    assert data.validation is None and data.validation_files is None
    assert len(data.skipped) == 3 and len(data.train_files.paths) == 182
    for _ in range(2):  # two epochs: every valid image exactly once each
        seen = [(x.numpy(), y.numpy()) for x, y in data.train]
        assert [len(y) for _, y in seen] == [16] * 11 + [6]
        x = np.concatenate([b[0] for b in seen])
        y = np.concatenate([b[1] for b in seen])
        assert _hashes(x) == _hashes(images)
        assert np.bincount(y).tolist() == [60, 60, 62]


def test_memory_cache_filled_by_the_scan_skips_broken_files_on_both_sides(dirty):
    """The scan's one decode checks and caches (one variable, a row per listed file):
    the batches equal decoding every epoch, training (shuffled) and validation alike."""
    kwargs = dict(image_size=28, channels=1, validation_split=0.25, batch_size=16, seed=1, verbose=False)
    memory = image_folder.image_folder_datasets(dirty[0], cache=True, **kwargs)
    plain = image_folder.image_folder_datasets(dirty[0], cache=False, **kwargs)
    assert len(memory.skipped) == 3 and memory.train_files.paths == plain.train_files.paths
    sides = (memory.train, memory.validation, memory.train_plain)
    found = [v for side in sides for v in _captured_variables(side)]
    (cache,) = {id(v): v for v in found}.values()  # one cache: both sides and train_plain
    assert tuple(cache.shape) == (185, 28, 28, 1)  # 182 valid + 3 broken rows (never gathered)
    assert [id(v) for v in _captured_variables(memory.train_plain)] == [id(cache)]
    assert _captured_variables(plain.train_plain) == []  # decoded from the files
    for side in ("train", "validation", "train_plain"):
        for _ in range(2):
            for (a, la), (b, lb) in zip(getattr(memory, side), getattr(plain, side), strict=True):
                np.testing.assert_array_equal(a, b)
                np.testing.assert_array_equal(la, lb)


def test_a_tiny_model_trains_on_a_folder_with_broken_files(dirty):
    keras.utils.set_random_seed(0)
    data = image_folder.image_folder_datasets(
        dirty[0], image_size=28, channels=1, validation_split=0.25, batch_size=16, seed=0, verbose=False
    )
    assert list(data.validation_files.class_counts.values()) == [15, 15, 16]  # 62 * 0.25 -> 16
    model = keras_transfer.build_classifier("mnist_mlp", data.num_classes, weights=None)
    keras_transfer.compile_classifier(model, jit_compile=False)
    before = model.evaluate(data.validation, verbose=0, return_dict=True)["accuracy"]
    history = model.fit(data.train, validation_data=data.validation, epochs=5, shuffle=False, verbose=0)
    after = history.history["val_accuracy"][-1]
    # Measured: 0.15 -> 0.91 on the 46 held-out digits, 0.99 on the training files.
    assert before < 0.6 and after >= 0.85, (before, after)
    assert history.history["accuracy"][-1] >= 0.95


def test_file_cache_is_keyed_by_the_files(clean, tmp_path):
    prefix = str(tmp_path / "cache" / "digits")
    kwargs = dict(image_size=28, channels=1, batch_size=64, shuffle=False, verbose=False)
    in_memory = image_folder.image_folder_datasets(clean[0], **kwargs)
    on_disk = image_folder.image_folder_datasets(clean[0], cache=prefix, **kwargs)
    for _ in range(2):
        for (a, la), (b, lb) in zip(in_memory.train, on_disk.train):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
    list(on_disk.validation)
    index_files = [f for f in os.listdir(tmp_path / "cache") if f.endswith(".index")]
    assert len(index_files) == 2  # train and validation, different digests
    shuffled = image_folder.image_folder_datasets(clean[0], **dict(kwargs, shuffle=True), cache=prefix)
    labels = np.concatenate([y for _, y in shuffled.train])
    assert len(labels) == 144 and not np.array_equal(labels, np.sort(labels))
    assert np.bincount(labels).tolist() == [48, 48, 48]
    # Its cached order differs, so it has its own cache; the ordered one still matches.
    assert len([f for f in os.listdir(tmp_path / "cache") if f.endswith(".index")]) == 3
    for (a, _), (b, _) in zip(in_memory.train, on_disk.train):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def tiny(tmp_path):
    """12 random 8x8 RGB PNGs, 6 per class (lossless: cached pixels are comparable)."""
    x = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    root = str(tmp_path / "tiny")
    write_image_folder(root, x, np.repeat([0, 1], 6), ["a", "b"])
    return root


GB = 10**9
TINY_KWARGS = dict(image_size=8, batch_size=4, shuffle=False, validation_split=0.25)


def test_auto_cache_is_memory_for_a_small_folder(tiny, capsys):
    plan = image_folder.plan_image_cache(12, 8)
    assert plan.kind == "memory" and plan.cache is True and plan.estimated_bytes == 12 * 8 * 8 * 3 * 4
    assert plan.available_bytes > 0
    data = image_folder.image_folder_datasets(tiny, **TINY_KWARGS)
    out = capsys.readouterr().out
    available = out.split("within half of the ", 1)[1].split(" of memory available", 1)[0]
    assert "Image cache: in memory (12 images of 8x8x3 float32 = 0.01 MB, within half of the " in out
    assert available.endswith(" GB") and float(available[:-3].replace(",", "")) > 0.1
    assert sum(len(y) for _, y in data.train) == 8 and sum(len(y) for _, y in data.validation) == 4


def test_auto_cache_is_a_file_when_memory_is_short_and_gives_the_same_batches(
    tiny, tmp_path, monkeypatch, capsys
):
    in_memory = image_folder.image_folder_datasets(tiny, cache=True, verbose=False, **TINY_KWARGS)
    # 12 images of 8x8x3 float32 are 9,216 bytes: more than half of 10,000 bytes available.
    monkeypatch.setattr(image_folder, "_memory_bytes", lambda: (10_000, 16 * GB))
    cache_dir = str(tmp_path / "image_cache")
    plan = image_folder.plan_image_cache(12, 8, cache_dir=cache_dir)
    assert plan.kind == "file" and plan.cache == os.path.join(cache_dir, "images")
    assert plan.estimated_bytes == 9216 and plan.available_bytes == 10_000
    on_disk = image_folder.image_folder_datasets(tiny, cache_dir=cache_dir, **TINY_KWARGS)
    line = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Image cache:")]
    assert line == [
        f"Image cache: files under {cache_dir} (12 images of 8x8x3 float32 = 0.01 MB, more than "
        f"half of the 0.01 MB of memory available; {line[0].split('; ')[1]}"
    ]
    assert line[0].endswith(" free on that disk).") and " GB free" in line[0]
    assert not os.path.exists(cache_dir) or not os.listdir(cache_dir)  # nothing written yet
    for epoch in range(2):
        for (a, la), (b, lb) in zip(in_memory.train, on_disk.train, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
        if epoch == 0:  # after one pass the training cache is on disk
            index = [f for f in os.listdir(cache_dir) if f.endswith(".index")]
            assert len(index) == 1 and index[0].startswith("images-")
    for (a, la), (b, lb) in zip(in_memory.validation, on_disk.validation, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert len([f for f in os.listdir(cache_dir) if f.endswith(".index")]) == 2  # + validation
    # files_dataset decides alone the same way, and says so when verbose.
    paths = on_disk.train_files.paths
    ds = image_folder.files_dataset(paths, image_size=8, cache_dir=cache_dir, verbose=True)
    assert capsys.readouterr().out.startswith(f"Image cache: files under {cache_dir} (8 images of 8x8x3")
    np.testing.assert_array_equal(np.concatenate(list(ds)), np.concatenate([x for x, _ in in_memory.train]))


def test_memory_cache_is_one_variable_and_gives_the_batches_of_decoding_every_epoch(tiny):
    """cache=True decodes once into one float32 variable; shuffled epochs, drop_remainder
    and images-only pipelines give the batches cache=False gives for the same seed."""
    kwargs = dict(image_size=8, batch_size=5, shuffle=True, seed=3, validation_split=0.0, verbose=False)
    memory = image_folder.image_folder_datasets(tiny, cache=True, drop_remainder=True, **kwargs)
    plain = image_folder.image_folder_datasets(tiny, cache=False, drop_remainder=True, **kwargs)
    assert memory.train.element_spec == plain.train.element_spec
    assert memory.train.element_spec[0].shape.as_list() == [5, 8, 8, 3]
    epochs = []
    for _ in range(3):
        batches = list(memory.train)
        assert len(batches) == 2  # 12 images, batch 5, the last 2 dropped
        for (a, la), (b, lb) in zip(batches, plain.train, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)
        epochs.append(np.concatenate([y for _, y in batches]))
    assert not all(np.array_equal(epochs[0], e) for e in epochs[1:])  # reshuffled each epoch
    # The cache is one variable of exactly the decoded size, captured by the pipeline.
    cached = [v for v in _captured_variables(memory.train) if v.name.startswith("image_cache")]
    assert [tuple(v.shape) for v in cached] == [(12, 8, 8, 3)] and cached[0].dtype == tf.float32
    paths = memory.train_files.paths
    ordered = image_folder.files_dataset(paths, image_size=8, batch_size=5, cache=True)
    np.testing.assert_array_equal(
        np.concatenate(list(ordered)),
        np.concatenate(list(image_folder.files_dataset(paths, image_size=8, batch_size=5, cache=False))),
    )


def _captured_variables(ds):
    """The variables the map functions of `ds` read (walks its input datasets)."""
    found, stack = [], [ds]
    while stack:
        node = stack.pop()
        function = getattr(node, "_map_func", None)
        if function is not None:
            found += [v for v in function.function.variables]
        stack += node._inputs()
    return found


def test_memory_cache_names_a_file_that_fails_after_the_scan(tiny):
    paths = sorted(str(p) for p in pathlib.Path(tiny).rglob("*.png"))
    with open(paths[7], "wb") as handle:
        handle.write(b"not an image")
    with pytest.raises(ValueError, match=r"failed to decode while filling the memory cache: .*\.png"):
        image_folder.files_dataset(paths, image_size=8, cache=True)


def test_memory_cache_under_a_strategy_scope_keeps_per_image_tensors(tiny):
    """Under a strategy scope a variable would be a distributed one: Dataset.cache() instead."""
    paths = sorted(str(p) for p in pathlib.Path(tiny).rglob("*.png"))
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        scoped = image_folder.files_dataset(paths, image_size=8, batch_size=5, cache=True)
    assert not _captured_variables(scoped)
    np.testing.assert_array_equal(
        np.concatenate(list(scoped)),
        np.concatenate(list(image_folder.files_dataset(paths, image_size=8, batch_size=5, cache=True))),
    )


def test_auto_cache_is_off_when_neither_memory_nor_disk_can_hold_it(monkeypatch, tmp_path):
    monkeypatch.setattr(image_folder, "_memory_bytes", lambda: (10_000, 16 * GB))
    monkeypatch.setattr(image_folder, "_free_disk_bytes", lambda folder: 5_000)
    plan = image_folder.plan_image_cache(12, 8, cache_dir=str(tmp_path))
    assert plan.kind == "none" and plan.cache is False
    assert plan.reason == (
        "off, every epoch decodes the images again (12 images of 8x8x3 float32 = 0.01 MB: more "
        f"than half of the 0.01 MB of memory available, and more than 90% of the 0.01 MB free at "
        f"{tmp_path}; pass cache_dir= a folder on a larger disk)"
    )


def test_a_100k_folder_at_224_goes_to_files_on_a_24_gb_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(image_folder, "_memory_bytes", lambda: (22 * GB, 24 * GB))
    monkeypatch.setattr(image_folder, "_free_disk_bytes", lambda folder: 500 * GB)
    plan = image_folder.plan_image_cache(100_000, 224, cache_dir=str(tmp_path))
    assert plan.estimated_bytes == 100_000 * 224 * 224 * 3 * 4 == 60_211_200_000
    assert plan.kind == "file" and plan.reason == (
        f"files under {tmp_path} (100,000 images of 224x224x3 float32 = 60.2 GB, more than half "
        "of the 22.0 GB of memory available; 500.0 GB free on that disk)"
    )
    # Explicit choices win: a prefix and False as given; True beyond the machine is refused...
    assert image_folder.plan_image_cache(100_000, 224, cache="/data/c").cache == "/data/c"
    assert image_folder.plan_image_cache(100_000, 224, cache=False).kind == "none"
    with pytest.raises(
        ValueError, match=r"60.2 GB, more than this machine's 24.0 GB of memory.*Received: cache=True"
    ):
        image_folder.plan_image_cache(100_000, 224, cache=True)
    # ... and beyond the memory available (but not the machine's) warned about.
    with pytest.warns(RuntimeWarning, match=r"= 22.3 GB, more than the 22.0 GB of memory available now"):
        plan = image_folder.plan_image_cache(37_000, 224, cache=True)
    assert plan.kind == "memory"


def test_cache_true_beyond_the_machine_is_refused_before_any_epoch(tiny, monkeypatch):
    monkeypatch.setattr(image_folder, "_memory_bytes", lambda: (1_000, 2_000))
    with pytest.raises(
        ValueError, match="12 images of 8x8x3 float32 = 0.01 MB, more than this machine's 0.00 MB"
    ):
        image_folder.image_folder_datasets(tiny, cache=True, verbose=False, **TINY_KWARGS)


def test_memory_is_read_from_proc_meminfo_and_capped_by_a_cgroup(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683568 kB\nMemFree:  100 kB\nMemAvailable:   23968168 kB\n")
    assert image_folder._read_numbers(str(meminfo))["MemAvailable"] == 23968168 * 1024
    available, total = image_folder._memory_bytes()
    if os.path.exists("/proc/meminfo"):
        assert 0 < available <= total
    monkeypatch.setattr(image_folder, "_cgroup_memory", lambda: (1 * GB, 2 * GB))
    assert image_folder._memory_bytes() == (1 * GB, 2 * GB)


def test_class_names_fix_ids_and_allow_a_partial_test_folder(clean, capsys):
    names = ["zero", "one", "nine", "seven"]
    folder = image_folder.scan_image_folder(clean[0], class_names=names)
    assert folder.class_names == names
    assert folder.class_counts == {"zero": 60, "one": 60, "nine": 0, "seven": 60}
    for path, label in zip(folder.paths, folder.labels):
        assert os.path.relpath(path, clean[0]).split(os.sep)[0] == names[label]
    assert "No images for classes: ['nine']" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"not in class_names: \['zero'\]"):
        image_folder.scan_image_folder(clean[0], class_names=["one", "seven"])
    with pytest.raises(ValueError, match="leaves class 'nine' empty"):
        image_folder.image_folder_datasets(clean[0], image_size=28, class_names=names, verbose=False)


def test_folder_errors(tmp_path, source):
    x, y = source
    with pytest.raises(FileNotFoundError, match="does not exist. Received: directory="):
        image_folder.scan_image_folder(str(tmp_path / "missing"))
    flat = tmp_path / "flat"
    write_image_folder(str(flat), x[:2], [0, 0], ["."])
    with pytest.raises(ValueError, match="No class folders .*found 2 image files directly"):
        image_folder.scan_image_folder(str(flat))
    with pytest.raises(NotADirectoryError):
        image_folder.scan_image_folder(str(flat / "00000.png"))
    single = tmp_path / "single"
    write_image_folder(str(single), x[:2], [0, 0], ["only"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        image_folder.scan_image_folder(str(single))
    broken = tmp_path / "broken"
    write_image_folder(str(broken), x[:2], [0, 0], ["good"])
    write_truncated_png(str(broken / "bad" / "a.png"))
    (broken / "empty_class").mkdir()
    with pytest.raises(ValueError, match=r"no valid image .*\['bad', 'empty_class'\]"):
        image_folder.scan_image_folder(str(broken), verbose=False)
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="No valid image in"):
        image_folder.scan_image_folder(str(tmp_path / "hollow"), class_names=["a", "b"], verbose=False)
    lonely = tmp_path / "lonely"
    write_image_folder(str(lonely), x[:3], [0, 0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="leaves class 'b' empty.*has 1 valid image,"):
        image_folder.image_folder_datasets(str(lonely), image_size=28, verbose=False)
    data = image_folder.image_folder_datasets(str(lonely), image_size=28, validation_split=0, verbose=False)
    assert data.train_files.class_counts == {"a": 2, "b": 1}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(validation_split=1.0), "validation_split must be a float in"),
        (dict(validation_split=-0.1), "validation_split must be a float in"),
        (dict(batch_size=0), "batch_size must be a positive int"),
        (dict(channels=2), "channels must be 1 or 3. Received: channels=2"),
        (dict(image_size=0), "image_size must be a positive int"),
        (dict(image_size=(28,)), "image_size must be a positive int"),
        (dict(cache=5), "cache must be 'auto', True, False or a file path prefix. Received: cache=5"),
        (dict(cache_dir=5), "cache_dir must be a folder path or None. Received: cache_dir=5"),
        (dict(seed=-1), "seed must be a non-negative int"),
        (dict(augment="yes"), "augment must be a bool"),
        (dict(drop_remainder=True, batch_size=200), "drop_remainder=True with 144 files"),
    ],
)
def test_bad_arguments(clean, kwargs, match):
    kwargs = dict(dict(image_size=28, verbose=False), **kwargs)
    with pytest.raises(ValueError, match=match):
        image_folder.image_folder_datasets(clean[0], **kwargs)


def test_files_dataset_argument_errors(clean):
    with pytest.raises(ValueError, match="at least one file"):
        image_folder.files_dataset([], image_size=28)
    with pytest.raises(ValueError, match="one per path"):
        image_folder.files_dataset(clean[1][:3], [0, 1], image_size=28)
    with pytest.raises(ValueError, match="integer class ids"):
        image_folder.files_dataset(clean[1][:2], [0.5, 1.0], image_size=28)
