"""tf.data pipelines from class-per-folder image directories.

The layout is the one `keras.utils.image_dataset_from_directory` reads:

```
directory/
    class_a/  a_001.png  a_002.jpg  ...
    class_b/  b_001.png  ...
```

Class names are the sorted sub-folder names (hidden ones ignored), images are the files
below each class folder whose extension is in `images.IMAGE_EXTENSIONS` (any case,
sub-folders included, hidden files ignored). Unlike `image_dataset_from_directory`,
every file is decoded once up front, in parallel, with the same decoder training
uses (`images.decode_image`): empty, truncated and non-image files, and images of
more than `max_pixels` pixels (read from the header, before decoding: 50 megapixels
by default, `images.DEFAULT_MAX_PIXELS`), are skipped and reported (path and
reason) instead of failing mid-epoch with "Invalid PNG data", or
silently dropping whole batches under `ignore_errors()`.

Images are float32, raw 0-255, resized to the backbone's input size; the model's own
preprocessing layer maps them to what its backbone expects.

The pieces:

- `scan_image_folder`: list and check the files -> `ImageFolder(paths, labels,
  class_names, skipped)`.
- `split_image_folder`: a seeded train/validation split, stratified per class.
- `files_dataset`: the tf.data pipeline over given paths (decode, cache, shuffle,
  batch, augment, prefetch); also for an explicit test folder.
- `plan_image_cache`: where the decoded images are cached (`cache="auto"`, the
  default: in memory when they fit in half the available memory, else in files).
- `image_folder_datasets`: all of the above -> `FolderData(train, validation, ...)`.
- `load_image_folder`: a small folder as numpy arrays `(x, y)`.
- `image_augmentation` (in `augmentation`): flip / rotation / zoom / contrast block for tf.data.
"""

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import time
import warnings
import zlib
from typing import NamedTuple
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_transfer import data
from keras_transfer.data import augmentation as augmentation_lib
from keras_transfer.data import images
from keras_transfer.data.augmentation import image_augmentation  # noqa: F401 (its old place)
from keras_transfer.utils import checks

AUTOTUNE = tf.data.AUTOTUNE

# The check decodes at this size: the resize cannot fail, the decode is what is tested.
_CHECK_SIZE = (8, 8)
# Images decoded per batch while a memory cache is filled.
_FILL_BATCH = 256
# Shuffle window of a file-cached training set (a memory cache shuffles all of it).
FILE_CACHE_SHUFFLE_BUFFER = 1024
# Progress lines of a long scan come at most this often (seconds).
_PROGRESS_EVERY = 5.0
# At most this many skipped files are printed one per line (all are in `.skipped`).
_MAX_PRINTED = 20
# `cache="auto"` keeps decoded images in memory while they take at most this share of
# the available memory (the rest is for the model, its activations and the framework).
MEMORY_CACHE_FRACTION = 0.5
# ... and writes a file cache only while it takes at most this share of the free disk.
DISK_CACHE_FRACTION = 0.9
# Bytes per cached value: the pipeline caches decoded, resized float32 pixels.
_CACHED_ITEMSIZE = np.dtype(np.float32).itemsize


class ImageFolder(NamedTuple):
    """Image files of a class-per-folder directory and their labels.

    Returned by `scan_image_folder` (and, for each side of a split, by
    `split_image_folder`).

    Attributes:
        paths: list of str. Valid image files, sorted by class then path.
        labels: `np.ndarray` int64. Class id of each path.
        class_names: list of str. Class id -> name.
        skipped: list of `(path, reason)`. Files that could not be decoded (empty in a
            split).
        directory: str. The folder scanned.

    The number of images is `len(folder.paths)` (`len(folder)` counts the fields).
    """

    paths: list
    labels: np.ndarray
    class_names: list
    skipped: list = ()
    directory: Optional[str] = None

    @property
    def class_counts(self):
        """Images per class, as a dict `{class_name: count}`."""
        counts = np.bincount(np.asarray(self.labels, np.int64), minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}


@dataclasses.dataclass
class FolderData:
    """What `image_folder_datasets` returns.

    Attributes:
        train: `tf.data.Dataset` of `(images, labels)` batches (shuffled, augmented if
            asked).
        validation: `tf.data.Dataset` of `(images, labels)` batches, in the order of
            `validation_files`, or `None` when `validation_split=0`.
        class_names: list of str. Class id -> name.
        skipped: list of `(path, reason)`. Files that could not be decoded.
        train_files: `ImageFolder` of the training files (`paths`, `labels`).
        validation_files: `ImageFolder` of the validation files, or `None`.
        train_plain: `tf.data.Dataset` of the training files in `train_files` order,
            without shuffling or augmentation (for calibration or a report): read
            from the memory cache when there is one, else decoded from the files.
    """

    train: tf.data.Dataset
    validation: Optional[tf.data.Dataset]
    class_names: list
    skipped: list
    train_files: ImageFolder
    validation_files: Optional[ImageFolder]
    train_plain: tf.data.Dataset

    @property
    def num_classes(self):
        return len(self.class_names)


class FolderImages(NamedTuple):
    """A folder loaded as arrays by `load_image_folder`.

    Attributes:
        x: `np.ndarray` (N, height, width, channels) float32, 0-255.
        y: `np.ndarray` (N,) int64 class ids.
        paths: list of str, the file of each image.
        class_names: list of str.
        skipped: list of `(path, reason)`.
    """

    x: np.ndarray
    y: np.ndarray
    paths: list
    class_names: list
    skipped: list


# Arguments.


def _check_channels(channels):
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels!r}")
    return int(channels)


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None. Received: seed={seed!r}")
    return None if seed is None else int(seed)


def _check_batch_size(batch_size):
    return checks.positive_int("batch_size", batch_size)


def _check_cache(cache):
    if isinstance(cache, bool) or (isinstance(cache, (str, os.PathLike)) and os.fspath(cache)):
        return os.fspath(cache) if not isinstance(cache, bool) else cache
    raise ValueError(f"cache must be 'auto', True, False or a file path prefix. Received: cache={cache!r}")


def _check_cache_dir(cache_dir):
    if cache_dir is None or (isinstance(cache_dir, (str, os.PathLike)) and os.fspath(cache_dir)):
        return None if cache_dir is None else os.fspath(cache_dir)
    raise ValueError(f"cache_dir must be a folder path or None. Received: cache_dir={cache_dir!r}")


def _check_drop_remainder(drop_remainder, batch_size, count):
    if drop_remainder and batch_size > count:
        raise ValueError(
            f"drop_remainder=True with {count} files and batch_size={batch_size} gives "
            f"no batch. Received: batch_size={batch_size}"
        )


def _check_augment(augment):
    if augment is not None and not isinstance(augment, bool) and not callable(augment):
        raise ValueError(f"augment must be a bool, None, or a callable. Received: augment={augment!r}")


# Listing and checking files.


def _is_hidden(name):
    return name.startswith(".")


def _is_image_file(name):
    return not _is_hidden(name) and os.path.splitext(name)[1].lower() in images.IMAGE_EXTENSIONS


def _list_class_files(class_dir):
    """Image files below `class_dir` (recursively, hidden entries skipped), sorted."""
    found, others = [], 0
    for root, dirs, files in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if _is_image_file(name):
                found.append(os.path.join(root, name))
            elif not _is_hidden(name):
                others += 1
    return sorted(found), others


def _clean_reason(error):
    """The useful part of a TensorFlow error message ("Invalid PNG data, size 440")."""
    message = getattr(error, "message", None) or str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.S)
    return message.strip() or type(error).__name__


def _decode_error(path, channels, max_pixels):
    """Decodes one file eagerly; returns the reason it fails, or `None`."""
    try:
        images.read_image(path, _CHECK_SIZE, channels, max_pixels=max_pixels)
    except (tf.errors.OpError, OSError, ValueError) as error:
        return _clean_reason(error)
    return None


def check_image_files(paths, *, channels=3, max_pixels=images.DEFAULT_MAX_PIXELS, verbose=True):
    """Decodes every file once, in parallel, and returns the ones that fail.

    Each file goes through `images.decode_image`, the decoder of the training
    pipeline, prediction and the serving signature, so a file that passes here
    decodes there too (with the same `channels`). The decoding runs as a parallel
    `tf.data` map; only the few failures are decoded again, one by one, to get their
    error message. The image size is read from the header first: an image of more
    than `max_pixels` pixels is not decoded (a 218 KB PNG can declare 15000x15000
    pixels, 2.7 GB as float32) and is listed with the reason.

    Args:
        paths: list of str. Image files.
        channels: int. 1 or 3, as the pipeline will decode them. Defaults to `3`.
        max_pixels: int or `None`. Larger images (height x width, from the header)
            are listed as failing. Defaults to `images.DEFAULT_MAX_PIXELS` (50
            megapixels); `None` for no limit.
        verbose: bool. Print progress every few seconds on long scans. Defaults to
            `True`.

    Returns:
        A list of `(path, reason)` for the files that cannot be decoded, in `paths`
        order.

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import image_folder
    >>> root = tempfile.mkdtemp()
    >>> good, bad = os.path.join(root, "good.png"), os.path.join(root, "bad.png")
    >>> tf.io.write_file(good, tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8)))
    >>> tf.io.write_file(bad, "not an image")
    >>> [(os.path.basename(p), reason[:26]) for p, reason in
    ...  image_folder.check_image_files([good, bad], verbose=False)]
    [('bad.png', 'Unknown image file format.')]
    """
    channels = _check_channels(channels)
    max_pixels = images.check_max_pixels(max_pixels)
    paths = [os.fspath(p) for p in paths]
    return _check_files(paths, channels, max_pixels, verbose)


def _check_files(paths, channels, max_pixels, verbose, fill=None):
    """`check_image_files` on checked arguments. With `fill` (a `_CacheFill`), each file
    is decoded at the pipeline's size instead and its pixels written to the cache row
    of its index in `paths`: one decode both checks it and caches it."""
    reasons = {}
    to_decode = []
    for index, path in enumerate(paths):
        try:
            size = os.path.getsize(path)
        except OSError as error:
            reasons[index] = f"cannot read: {error.strerror or error}"
            continue
        if size == 0:
            reasons[index] = "empty file (0 bytes)"
        else:
            to_decode.append(index)
    if to_decode:
        indices = np.asarray(to_decode, np.int64)
        ds = tf.data.Dataset.from_tensor_slices((indices, np.asarray(paths, object)[indices].astype(str)))

        def decode(index, path):
            if fill is not None:
                return index, fill.load(path)
            image = images.decode_image(tf.io.read_file(path), _CHECK_SIZE, channels, max_pixels=max_pixels)
            # Return a value computed from the pixels, so the decode cannot be pruned.
            return index, tf.reduce_max(image)

        ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
        ds = data.with_pipeline_options(ds.ignore_errors().batch(_FILL_BATCH).prefetch(2))
        decoded = np.zeros(len(paths), bool)
        start = last = time.time()
        done = 0
        what = "checked and cached" if fill is not None else "checked"
        for batch_indices, values in ds:
            if fill is not None:
                fill.write(batch_indices, values)
            decoded[batch_indices.numpy()] = True
            done += len(batch_indices)
            now = time.time()
            if verbose and now - last >= _PROGRESS_EVERY:
                last = now
                print(
                    f"  {what} {done:,} of {len(to_decode):,} images ({done / (now - start):,.0f} files/s)",
                    flush=True,
                )
        for index in to_decode:
            if not decoded[index]:
                # Decoded alone to get the message; one that passes now had a
                # transient read error, and is kept (and cached).
                reason = _decode_error(paths[index], channels, max_pixels)
                if reason is not None:
                    reasons[index] = reason
                elif fill is not None:
                    fill.write(tf.constant([index], tf.int64), fill.load(paths[index])[None])
    return [(paths[index], reasons[index]) for index in sorted(reasons)]


def scan_image_folder(
    directory, *, class_names=None, channels=3, max_pixels=images.DEFAULT_MAX_PIXELS, verbose=True
):
    """Lists the images of a class-per-folder directory and checks that each decodes.

    Class names are the sorted names of the sub-folders of `directory` (hidden ones
    ignored); a class's images are the files below its folder, sub-folders included,
    whose extension (any case) is in `images.IMAGE_EXTENSIONS`. Hidden files and files
    with other extensions are ignored. Every image is decoded once with
    `images.decode_image` (see `check_image_files`): empty, truncated and non-image
    files, and images above `max_pixels` pixels (read from the header, never
    decoded), are skipped and reported, with the reason, in `skipped` (and printed when
    `verbose`), so a training epoch never meets them.

    Args:
        directory: str. The folder holding one sub-folder per class.
        class_names: list of str. Fixes which classes are read and their ids (e.g.
            the training classes when reading a test folder). Every class folder
            found must be in it; classes without a folder or images are allowed
            (a partial test set) and listed when `verbose`. Defaults to the sorted
            sub-folder names.
        channels: int. 1 or 3: the channels the pipeline decodes with. Defaults to `3`.
        max_pixels: int or `None`. Images with more pixels are skipped. Defaults to
            `images.DEFAULT_MAX_PIXELS` (50 megapixels); `None` for no limit.
        verbose: bool. Print the counts, the skipped files, and progress on long
            scans. Defaults to `True`.

    Returns:
        `ImageFolder(paths, labels, class_names, skipped, directory)`.

    Raises:
        FileNotFoundError: `directory` does not exist.
        NotADirectoryError: `directory` is a file.
        ValueError: no class folders, fewer than 2 classes, no valid image at all, a
            class folder (found by listing, i.e. without `class_names`) with no valid
            image, a class folder not in `class_names`, duplicate class names.

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import image_folder
    >>> root = tempfile.mkdtemp()
    >>> for name, value in [("dark", 0), ("light", 255)]:
    ...     os.makedirs(os.path.join(root, name))
    ...     for i in range(3):
    ...         tf.io.write_file(os.path.join(root, name, f"{i}.png"),
    ...                          tf.io.encode_png(tf.fill((8, 8, 1), tf.constant(value, tf.uint8))))
    >>> tf.io.write_file(os.path.join(root, "light", "broken.png"), "not an image")
    >>> folder = image_folder.scan_image_folder(root)  # doctest: +ELLIPSIS
    Found 6 images in 2 classes (dark: 3, light: 3); skipped 1 that could not be decoded:
      .../light/broken.png: Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required.
    >>> folder.class_names, folder.labels.tolist()
    (['dark', 'light'], [0, 0, 0, 1, 1, 1])
    """
    return _scan(directory, class_names, channels, max_pixels, verbose)


def _scan(directory, class_names, channels, max_pixels, verbose, prepare=None):
    """`scan_image_folder`. `prepare(paths)`, called with the listed files before they
    are checked, may return a `_CacheFill`: the check then caches them too."""
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise FileNotFoundError(f"The image folder does not exist. Received: directory={directory!r}")
    if not os.path.isdir(directory):
        raise NotADirectoryError(
            f"The image folder must be a directory, not a file. Received: directory={directory!r}"
        )
    channels = _check_channels(channels)
    entries = sorted(os.listdir(directory))
    found = [e for e in entries if not _is_hidden(e) and os.path.isdir(os.path.join(directory, e))]
    if class_names is None:
        if not found:
            loose = sum(_is_image_file(e) for e in entries)
            raise ValueError(
                f"No class folders in {directory}: expected one sub-folder per class, "
                f"`{directory}/<class_name>/<image>`"
                + (f"; found {loose} image files directly in it." if loose else ".")
                + f" Received: directory={directory!r}"
            )
        names = found
    else:
        if isinstance(class_names, str):
            raise ValueError(f"class_names must be a list of str. Received: class_names={class_names!r}")
        names = [str(name) for name in class_names]
        if len(set(names)) != len(names):
            raise ValueError(f"class_names has duplicates. Received: class_names={class_names!r}")
        unknown = [name for name in found if name not in names]
        if unknown:
            raise ValueError(
                f"{directory} has class folders that are not in class_names: {unknown}. "
                f"Received: class_names={names}"
            )
    if len(names) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes; {directory} has {len(names)}: {names}. "
            f"Received: class_names={class_names!r}"
        )

    paths, labels, others = [], [], 0
    for label, name in enumerate(names):
        class_dir = os.path.join(directory, name)
        files, other = _list_class_files(class_dir) if os.path.isdir(class_dir) else ([], 0)
        others += other
        paths += files
        labels += [label] * len(files)
    if verbose and len(paths) >= 2000:
        print(f"Checking {len(paths):,} images in {directory} ...", flush=True)
    fill = prepare(paths) if prepare is not None else None
    max_pixels = images.check_max_pixels(max_pixels)
    skipped = _check_files(paths, channels, max_pixels, verbose, fill)
    bad = {path for path, _ in skipped}
    keep = [i for i, path in enumerate(paths) if path not in bad]
    folder = ImageFolder(
        paths=[paths[i] for i in keep],
        labels=np.asarray([labels[i] for i in keep], np.int64),
        class_names=names,
        skipped=skipped,
        directory=directory,
    )
    counts = folder.class_counts
    empty = [name for name, count in counts.items() if count == 0]
    if verbose:
        _print_summary(folder, others, empty)
    if not folder.paths:
        raise ValueError(
            f"No valid image in {directory} (classes {names}; {len(skipped)} files could not "
            f"be decoded). Image extensions: {', '.join(images.IMAGE_EXTENSIONS)}."
        )
    if empty and class_names is None:
        raise ValueError(
            f"Class folders with no valid image in {directory}: {empty} (image "
            f"extensions: {', '.join(images.IMAGE_EXTENSIONS)}; {len(skipped)} files "
            "could not be decoded). Add images, or remove the folders."
        )
    return folder


def _print_summary(folder, others, empty):
    counts = ", ".join(f"{name}: {count}" for name, count in folder.class_counts.items())
    line = f"Found {len(folder.paths):,} images in {len(folder.class_names)} classes ({counts})"
    if others:
        line += f"; ignored {others} files without an image extension"
    if folder.skipped:
        line += f"; skipped {len(folder.skipped)} that could not be decoded:"
    print(line if folder.skipped else line + ".")
    for path, reason in folder.skipped[:_MAX_PRINTED]:
        print(f"  {path}: {reason}")
    if len(folder.skipped) > _MAX_PRINTED:
        print(f"  ... and {len(folder.skipped) - _MAX_PRINTED} more (all in `.skipped`).")
    if empty:
        print(f"No images for classes: {empty}")


# Splitting.


def split_image_folder(folder, validation_split=0.2, *, seed=0):
    """Splits an `ImageFolder` into training and validation files, per class.

    Each class sends `round(n * validation_split)` of its `n` images to validation,
    but at least one and at most `n - 1`, so both sides hold every class. The choice
    within a class depends only on `seed`, the class name and its files: the same
    seed gives the same split, and adding a class does not reshuffle the others.
    Both sides keep the order of `folder` (class, then path).

    Args:
        folder: `ImageFolder` (from `scan_image_folder`).
        validation_split: float in (0, 1). Defaults to `0.2`.
        seed: int, or `None` for a different split each call. Defaults to `0`.

    Returns:
        `(train, validation)`, two `ImageFolder`s with empty `skipped`.

    Raises:
        ValueError: `validation_split` outside (0, 1); a class with fewer than 2
            images (one side would have none of it).

    Example:

    >>> import numpy as np
    >>> from keras_transfer import image_folder
    >>> folder = image_folder.ImageFolder([f"{c}{i}.png" for c in "ab" for i in range(5)],
    ...                                   np.repeat([0, 1], 5), ["a", "b"])
    >>> train, validation = image_folder.split_image_folder(folder, 0.4, seed=1)
    >>> len(train.paths), len(validation.paths), validation.class_counts
    (6, 4, {'a': 2, 'b': 2})
    """
    validation_split = checks.fraction("validation_split", validation_split, low_open=True, high_open=True)
    seed = _check_seed(seed)
    labels = np.asarray(folder.labels, np.int64)
    is_validation = np.zeros(len(labels), bool)
    for label, name in enumerate(folder.class_names):
        members = np.flatnonzero(labels == label)
        n = len(members)
        if n < 2:
            raise ValueError(
                f"validation_split={validation_split} leaves class {name!r} empty on one "
                f"side: it has {n} valid image{'s' if n != 1 else ''}, and each class needs "
                "at least 2 (one for training, one for validation). Add images or use "
                f"validation_split=0. Received: validation_split={validation_split}"
            )
        count = min(max(int(np.floor(n * validation_split + 0.5)), 1), n - 1)
        key = zlib.crc32(name.encode("utf-8"))
        rng = np.random.default_rng(None if seed is None else [seed, key])
        is_validation[rng.choice(members, size=count, replace=False)] = True

    def side(mask):
        return ImageFolder(
            paths=[p for p, m in zip(folder.paths, mask) if m],
            labels=labels[mask],
            class_names=list(folder.class_names),
            skipped=[],
            directory=folder.directory,
        )

    return side(~is_validation), side(is_validation)


# Pipelines.


def _cache_file(prefix, paths, labels, size, channels):
    """`prefix-<digest>`: the digest of the files (name, size, mtime), labels and shape."""
    digest = hashlib.sha1(repr((size, channels)).encode())
    for path, label in zip(paths, labels):
        stat = os.stat(path)
        digest.update(f"{path}\0{int(label)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    parent = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(parent, exist_ok=True)
    return f"{prefix}-{digest.hexdigest()[:16]}"


# Where the decoded images are cached.


class ImageCachePlan(NamedTuple):
    """Where a pipeline caches its decoded images, and why (see `plan_image_cache`).

    Attributes:
        cache: what the pipeline caches with: `True` (memory), a file path prefix
            (str), or `False` (no cache: every epoch decodes the files again).
        kind: str. `"memory"`, `"file"` or `"none"`.
        reason: str. The choice and why, with the estimated and available sizes (the
            line `Image cache: <reason>.` printed when verbose).
        estimated_bytes: int. The decoded size: images x height x width x channels x 4
            (the pipeline caches float32 pixels).
        available_bytes: int or `None`. Memory available when planned (`None`: unknown).
    """

    cache: object
    kind: str
    reason: str
    estimated_bytes: int
    available_bytes: Optional[int]


def _read_numbers(path):
    """`{name: int}` of a `name value [kB]` file (/proc/meminfo, memory.stat), or `{}`."""
    numbers = {}
    try:
        with open(path) as handle:
            for line in handle:
                parts = line.replace(":", " ").split()
                if len(parts) >= 2 and parts[1].isdigit():
                    numbers[parts[0]] = int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
    except OSError:
        return {}
    return numbers


def _read_int(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_memory():
    """`(available, limit)` bytes under this process's cgroup memory limit, or `None`.

    Available is the limit minus the usage, plus the inactive page cache the kernel
    reclaims first (as container runtimes count it).
    """
    for folder, limit_name, usage_name, inactive_name in (
        ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
    ):
        limit = _read_int(os.path.join(folder, limit_name))
        if limit is None or limit >= 2**60:  # "max", or v1's "no limit" (about 2**63)
            continue
        usage = _read_int(os.path.join(folder, usage_name)) or 0
        inactive = _read_numbers(os.path.join(folder, "memory.stat")).get(inactive_name, 0)
        return max(limit - usage + inactive, 0), limit
    return None


def _memory_bytes():
    """`(available, total)` bytes of memory, each `None` where it cannot be read.

    Available is /proc/meminfo's `MemAvailable` (what can be allocated without
    swapping), or free pages from `os.sysconf` where there is no /proc; both are capped
    by a cgroup memory limit (a container's).
    """
    info = _read_numbers("/proc/meminfo")
    available, total = info.get("MemAvailable"), info.get("MemTotal")
    if available is None or total is None:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = total or page * os.sysconf("SC_PHYS_PAGES")
            available = available or page * os.sysconf("SC_AVPHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            pass
    limited = _cgroup_memory()
    if limited is not None:
        available = limited[0] if available is None else min(available, limited[0])
        total = limited[1] if total is None else min(total, limited[1])
    return available, total


def _free_disk_bytes(folder):
    """Free bytes on the disk `folder` is (or would be created) on, or `None`."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def default_cache_dir():
    """The folder of `cache="auto"`'s file caches: `$KERAS_HOME/keras_transfer/image_cache`
    (`~/.keras/keras_transfer/image_cache` without `KERAS_HOME`).

    In the home folder, not the temp folder (often a RAM disk, which would defeat the
    point) nor beside the data (often read-only or shared). A cache is named by a digest of
    its files, labels and image size, so a changed folder writes a new one; delete the
    folder to reclaim the space.

    Example:

    >>> from keras_transfer import image_folder
    >>> image_folder.default_cache_dir().endswith("image_cache")
    True
    """
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "keras_transfer", "image_cache")


def _size(num_bytes):
    return f"{num_bytes / 1e9:,.1f} GB" if num_bytes >= 1e8 else f"{num_bytes / 1e6:,.2f} MB"


def plan_image_cache(count, image_size, channels=3, *, cache="auto", cache_dir=None):
    """Decides where a pipeline of `count` images caches them, and says why.

    The decoded size is estimated as `count x height x width x channels x 4` bytes
    (the pipeline caches resized float32 pixels). With `cache="auto"`:

    - it is at most `MEMORY_CACHE_FRACTION` (half) of the memory available now
      (/proc/meminfo `MemAvailable`, capped by a cgroup limit): **in memory**;
    - else, while it is at most `DISK_CACHE_FRACTION` (90%) of the free disk space of
      `cache_dir`: **in files** there (written during the first epoch, read back by
      the next; a later run over the same files, labels and size reuses them);
    - else **no cache**: every epoch decodes the files again.

    An explicit choice wins: `True` is memory, a str is a file path prefix, `False` is
    no cache. `True` for images that cannot fit is refused, or warned about, before
    any image is decoded (see Raises / Warns).

    Args:
        count: int. Number of images.
        image_size: int or (height, width). The pipeline's image size.
        channels: int. 1 or 3. Defaults to `3`.
        cache: `"auto"`, bool or str (a file path prefix). Defaults to `"auto"`.
        cache_dir: str. The folder of `"auto"`'s file caches. Defaults to
            `default_cache_dir()`.

    Returns:
        `ImageCachePlan(cache, kind, reason, estimated_bytes, available_bytes)`.

    Raises:
        ValueError: `cache=True` for images larger than the machine's total memory
            (the process would be killed mid-epoch, or swap for hours).

    Warns:
        RuntimeWarning: `cache=True` for images larger than the memory available now.

    Example:

    >>> from keras_transfer import image_folder
    >>> plan = image_folder.plan_image_cache(1000, 32)
    >>> plan.kind, plan.estimated_bytes
    ('memory', 12288000)
    >>> plan.reason  # doctest: +ELLIPSIS
    'in memory (1,000 images of 32x32x3 float32 = 12.29 MB, within half of the ... GB of memory available)'
    """
    cache = _check_cache(cache)
    cache_dir = _check_cache_dir(cache_dir)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative int. Received: count={count!r}")
    size = images.check_image_size(image_size)
    channels = _check_channels(channels)
    estimated = int(count) * size[0] * size[1] * channels * _CACHED_ITEMSIZE
    available, total = _memory_bytes()
    what = f"{int(count):,} images of {size[0]}x{size[1]}x{channels} float32 = {_size(estimated)}"
    memory = "unknown memory available" if available is None else f"{_size(available)} of memory available"

    def plan(value, kind, reason):
        return ImageCachePlan(value, kind, reason, estimated, available)

    if cache is False:
        return plan(False, "none", "off (cache=False): every epoch decodes the images again")
    if cache is True:
        if total is not None and estimated > total:
            raise ValueError(
                f"cache=True keeps every decoded image in memory: {what}, more than this "
                f"machine's {_size(total)} of memory. Use cache='auto' (files when memory "
                "is short), a file path prefix, or cache=False. Received: cache=True"
            )
        if available is not None and estimated > available:
            warnings.warn(
                f"cache=True keeps every decoded image in memory: {what}, more than the "
                f"{memory} now; the process may swap or be killed while they are decoded. "
                "cache='auto' would cache them in files.",
                RuntimeWarning,
                stacklevel=3,
            )
        return plan(True, "memory", f"in memory (cache=True; {what}, {memory})")
    if cache != "auto":
        return plan(cache, "file", f"files {cache}-<digest> (cache={cache!r}; {what})")
    if available is None:
        return plan(True, "memory", f"in memory ({what}; the available memory cannot be read here)")
    if estimated <= MEMORY_CACHE_FRACTION * available:
        return plan(True, "memory", f"in memory ({what}, within half of the {memory})")
    folder = cache_dir or default_cache_dir()
    free = _free_disk_bytes(folder)
    if free is None or estimated <= DISK_CACHE_FRACTION * free:
        disk = "" if free is None else f"; {_size(free)} free on that disk"
        return plan(
            os.path.join(folder, "images"),
            "file",
            f"files under {folder} ({what}, more than half of the {memory}{disk})",
        )
    return plan(
        False,
        "none",
        f"off, every epoch decodes the images again ({what}: more than half of the {memory}, "
        f"and more than {DISK_CACHE_FRACTION:.0%} of the {_size(free)} free at {folder}; pass "
        "cache_dir= a folder on a larger disk)",
    )


def files_dataset(
    paths,
    labels=None,
    *,
    image_size,
    channels=3,
    batch_size=32,
    shuffle=False,
    seed=None,
    augment=None,
    cache="auto",
    cache_dir=None,
    drop_remainder=False,
    max_pixels=images.DEFAULT_MAX_PIXELS,
    verbose=False,
):
    """Builds a `tf.data` pipeline that decodes the given image files.

    Order: decode (`images.decode_image`, in parallel) -> cache -> shuffle -> batch
    -> augment -> `prefetch(AUTOTUNE)` (a memory cache: shuffle -> batch -> gather).
    Without shuffling, batches follow `paths`, so predictions line up with file names.
    The files are not checked: pass paths from `scan_image_folder` (a corrupt file
    would fail mid-epoch, or while a memory cache is filled).

    With `cache="auto"` (the default) the decoded images go to memory when they take
    at most half the memory available, else to files under `cache_dir`
    (`plan_image_cache` decides, before anything is decoded). With `cache=True` the
    images are decoded once, in parallel, when the pipeline is built, into one float32
    variable of exactly their size, and every epoch gathers its batches from it,
    shuffled as a whole (refused if they exceed the machine's memory, a warning if they
    exceed the memory available; built under a `tf.distribute` strategy scope, where a
    variable would be a distributed one, `Dataset.cache()` keeps them instead, filled
    by the first epoch). A file that fails to decode then is named in a `ValueError`.
    With `cache=False` the paths are shuffled and the images decoded every
    epoch (no memory). With a file path prefix, they are cached in `<prefix>-<digest>`
    files (the digest covers the files, labels and shape, so a changed folder never
    reads a stale cache): the paths are shuffled once before caching, and each epoch is
    reshuffled within a window of `FILE_CACHE_SHUFFLE_BUFFER` images.

    Args:
        paths: list of str. Image files.
        labels: array of int class ids, or `None` for images only.
        image_size: int or (height, width). The model's input size.
        channels: int. 1 or 3. Defaults to `3`.
        batch_size: int. Defaults to `32`.
        shuffle: bool. Reshuffle every epoch. Defaults to `False`.
        seed: int. Shuffle seed; also seeds `augment=True`. Defaults to `None`.
        augment: `None`/`False`, `True` (`augmentation_for(channels, seed=seed)`), or a
            callable / Keras layer applied to each batch of images.
        cache: `"auto"`, bool or str. `"auto"`: memory or files by size (see
            `plan_image_cache`); `True`: memory; a str: a file path prefix; `False`:
            none. Defaults to `"auto"`. (`"auto"` is never a prefix: write `"./auto"`
            for files named so.)
        cache_dir: str. Where `cache="auto"` writes a file cache. Defaults to
            `default_cache_dir()` (`~/.keras/keras_transfer/image_cache`).
        drop_remainder: bool. Drop a last partial batch (fixed batch shapes).
            Defaults to `False`.
        max_pixels: int or `None`. An image with more pixels fails (see
            `images.decode_image`). Defaults to `images.DEFAULT_MAX_PIXELS`.
        verbose: bool. Print the cache decision (`Image cache: ...`). Defaults to
            `False`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` (labels int64), or of `images`.

    Raises:
        ValueError: no paths, `labels` of another length, bad arguments,
            `drop_remainder=True` with fewer files than `batch_size`, or `cache=True`
            for more decoded images than the machine's memory.

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import image_folder
    >>> root = tempfile.mkdtemp()
    >>> paths = [os.path.join(root, f"{i}.png") for i in range(5)]
    >>> for path in paths:
    ...     tf.io.write_file(path, tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8)))
    >>> ds = image_folder.files_dataset(paths, [0, 1, 0, 1, 0], image_size=16, batch_size=2)
    >>> [tuple(x.shape) for x, y in ds]
    [(2, 16, 16, 3), (2, 16, 16, 3), (1, 16, 16, 3)]
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("files_dataset needs at least one file. Received: paths=[]")
    size = images.check_image_size(image_size)
    channels = _check_channels(channels)
    batch_size = _check_batch_size(batch_size)
    seed = _check_seed(seed)
    cache = _check_cache(cache)
    cache_dir = _check_cache_dir(cache_dir)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(paths),) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(
                "labels must be integer class ids, one per path. Received: "
                f"labels of shape {labels.shape} and dtype {labels.dtype} for {len(paths)} paths"
            )
        labels = labels.astype(np.int64)
    _check_drop_remainder(drop_remainder, batch_size, len(paths))
    _check_augment(augment)
    planned = plan_image_cache(len(paths), size, channels, cache=cache, cache_dir=cache_dir)
    if verbose:
        print(f"Image cache: {planned.reason}.")
    return _pipeline(
        paths,
        labels,
        size=size,
        channels=channels,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        cache=planned.cache,
        drop_remainder=drop_remainder,
        max_pixels=max_pixels,
        verbose=verbose,
    )


def _pipeline(
    paths,
    labels,
    *,
    size,
    channels,
    batch_size,
    shuffle,
    seed,
    augment,
    cache,
    drop_remainder,
    max_pixels,
    verbose=False,
    fill=None,
):
    """`files_dataset` on checked arguments, `cache` decided: `True`, a prefix or `False`.
    `fill`: a filled `_CacheFill` holding `paths` (read from it whatever `cache` says)."""
    order = np.arange(len(paths))
    if shuffle and isinstance(cache, str):
        # Mix the classes once, in the cached order (fixed for a seed; seed 0 for None,
        # the epochs reshuffle anyway), so a window shuffle is enough.
        order = np.random.default_rng(0 if seed is None else seed).permutation(len(paths))
    slices = np.asarray(paths, object)[order].astype(str)
    if labels is not None:
        slices = (slices, labels[order])
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle and cache is False:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path):
        return images.read_image(path, size, channels, max_pixels=max_pixels)

    augment = augmentation_lib.augmentation_for(channels, seed=seed) if augment is True else augment
    if fill is None and cache is True and not tf.distribute.has_strategy():
        fill = _fill_memory_cache(paths, load, (size[0], size[1], channels), max_pixels, verbose)
    if fill is not None:
        return _memory_pipeline(
            fill.pixels,
            fill.rows(paths),
            labels,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            augment=augment,
        )
    if labels is None:
        ds = ds.map(load, num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda path, label: (load(path), label), num_parallel_calls=AUTOTUNE)
    if cache is True:
        # Built under a distribution strategy: a variable would be a distributed one.
        ds = ds.cache()
    elif isinstance(cache, str):
        # The digest covers the cached order too: a shuffled and an ordered pipeline
        # over the same files must not read each other's cache.
        ds = ds.cache(
            _cache_file(
                cache,
                [paths[i] for i in order],
                labels[order] if labels is not None else [-1] * len(paths),
                size,
                channels,
            )
        )
    if shuffle and cache is not False:
        buffer = len(paths) if cache is True else min(len(paths), FILE_CACHE_SHUFFLE_BUFFER)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return data.batch_and_augment(ds, batch_size, drop_remainder=drop_remainder, augment=augment)


class _CacheFill:
    """One memory cache being filled: a float32 variable with one row of `image_shape`
    per path of `paths`, allocated once, written by `scatter_update` only and read by
    `tf.gather` only (a dense read would make the next sparse access copy it). `load`
    decodes a path into its row's pixels.

    One allocation of exactly the decoded size: `Dataset.cache()` kept each image as
    its own tensor, and the decode temporaries freed between them stayed in the
    allocator's arenas (`benchmarks/scaling.py`: peak RSS grew by 1.9x the planned cache
    at 50,000 images).
    """

    def __init__(self, paths, image_shape, load):
        self.load = load
        self._rows = {path: row for row, path in enumerate(paths)}
        shape = (len(paths), *image_shape)
        with tf.init_scope():
            self.pixels = tf.Variable(
                lambda: tf.raw_ops.Empty(shape=shape, dtype=tf.float32, init=False),
                trainable=False,
                name="image_cache",
            )

    def write(self, rows, values):
        self.pixels.scatter_update(tf.IndexedSlices(values, rows))

    def rows(self, paths):
        """The cache rows of `paths` (each one of the paths it was made for)."""
        return np.asarray([self._rows[path] for path in paths], np.int64)


def _fill_memory_cache(paths, load, image_shape, max_pixels, verbose=False):
    """Decodes `paths` once, in parallel, into a new `_CacheFill`, in order; a file that
    fails is named in a `ValueError` (the paths were meant to be checked)."""
    fill = _CacheFill(paths, image_shape, load)
    with tf.init_scope():
        decoded = tf.data.Dataset.from_tensor_slices(np.asarray(paths, object).astype(str))
        decoded = decoded.map(load, num_parallel_calls=AUTOTUNE).batch(_FILL_BATCH)
        decoded = data.with_pipeline_options(decoded.prefetch(2))
        position = 0
        start = last = time.time()
        try:
            for batch in decoded:
                count = int(batch.shape[0])
                fill.write(tf.range(position, position + count, dtype=tf.int64), batch)
                position += count
                now = time.time()
                if verbose and now - last >= _PROGRESS_EVERY:
                    last = now
                    print(
                        f"  cached {position:,} of {len(paths):,} images "
                        f"({position / (now - start):,.0f} images/s)",
                        flush=True,
                    )
        except tf.errors.OpError as error:
            batch = paths[position : position + _FILL_BATCH]
            failed = next((p for p in batch if _decode_error(p, image_shape[-1], max_pixels)), None)
            where = f": {failed}" if failed else f" (one of files {position:,}-{position + _FILL_BATCH:,})"
            raise ValueError(
                f"An image failed to decode while filling the memory cache{where}: "
                f"{_clean_reason(error)}. Pass paths from `scan_image_folder`, which skips such files."
            ) from None
    return fill


def _memory_pipeline(pixels, rows, labels, *, shuffle, seed, batch_size, drop_remainder, augment):
    """The pipeline of a filled memory cache: each epoch shuffles the indices of `rows`
    (the same permutation `Dataset.cache().shuffle` of the images gives for a seed: a
    shuffle's order depends on its seed and size only), batches them and gathers each
    batch's rows of `pixels`."""
    ds = tf.data.Dataset.range(len(rows))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    rows = tf.constant(rows)
    if labels is None:
        ds = ds.map(lambda index: tf.gather(pixels, tf.gather(rows, index)))
    else:
        targets = tf.constant(labels)
        ds = ds.map(lambda index: (tf.gather(pixels, tf.gather(rows, index)), tf.gather(targets, index)))
    return data.augment_batches(ds, augment)


def image_folder_datasets(
    directory,
    *,
    image_size,
    channels=3,
    validation_split=0.2,
    seed=0,
    batch_size=32,
    augment=False,
    cache="auto",
    cache_dir=None,
    shuffle=True,
    drop_remainder=False,
    class_names=None,
    verbose=True,
):
    """Training and validation `tf.data` pipelines from a class-per-folder directory.

    Scans and checks the folder (`scan_image_folder`: files that cannot be decoded
    are skipped and reported), splits it per class (`split_image_folder`), and builds
    the pipelines (`files_dataset`). Only the training set is shuffled, augmented and
    subject to `drop_remainder`; the validation set keeps `validation_files` order
    and every file. With the cache in memory, the scan decodes each file once, at
    `image_size`, into one float32 variable of a row per file: that one decode both
    checks the file and caches it, for both sides.

    Args:
        directory: str. One sub-folder per class.
        image_size: int or (height, width). The model's input size, e.g.
            `keras_transfer.get_backbone_spec(name).default_size`.
        channels: int. 1 or 3. Defaults to `3`.
        validation_split: float in [0, 1). Fraction of each class held out; `0` for
            no validation set. Defaults to `0.2`.
        seed: int. Seeds the split, the shuffling and `augment=True`. Defaults to `0`.
        batch_size: int. Defaults to `32`.
        augment: bool or callable. `True` for `augmentation_for(channels, seed=seed)`, or a
            callable / Keras layer applied to each training batch. Defaults to `False`.
        cache: `"auto"`, bool or str. `"auto"` caches the decoded images (training
            and validation together) in memory when they take at most half the memory
            available, else in files under `cache_dir` (`plan_image_cache`); `True`
            caches them in memory (refused beyond the machine's memory, a warning
            beyond the memory available), a str in files with that prefix (see
            `files_dataset`), `False` decodes every epoch. Defaults to `"auto"`.
        cache_dir: str. Where `cache="auto"` writes a file cache. Defaults to
            `default_cache_dir()` (`~/.keras/keras_transfer/image_cache`).
        shuffle: bool. Reshuffle the training set every epoch. Defaults to `True`.
        drop_remainder: bool. Drop the last partial training batch. Defaults to `False`.
        class_names: list of str. Fixes the classes and their ids (see
            `scan_image_folder`). Defaults to the sorted sub-folder names.
        verbose: bool. Print counts, skipped files, the split and the cache decision
            (`Image cache: in memory (... within half of the ... GB of memory
            available).`). Defaults to `True`.

    Returns:
        `FolderData` with `.train`, `.validation` (`None` when `validation_split=0`),
        `.class_names`, `.skipped`, `.train_files`, `.validation_files`, `.train_plain`.

    Raises:
        FileNotFoundError, NotADirectoryError, ValueError: see `scan_image_folder`,
            `split_image_folder` and `files_dataset`.

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import image_folder
    >>> root = tempfile.mkdtemp()
    >>> for name, value in [("dark", 0), ("light", 255)]:
    ...     os.makedirs(os.path.join(root, name))
    ...     for i in range(5):
    ...         tf.io.write_file(os.path.join(root, name, f"{i}.png"),
    ...                          tf.io.encode_png(tf.fill((8, 8, 1), tf.constant(value, tf.uint8))))
    >>> data = image_folder.image_folder_datasets(root, image_size=32, channels=1,
    ...                                           batch_size=4)  # doctest: +ELLIPSIS
    Image cache: in memory (10 images of 32x32x1 float32 = 0.04 MB, within half of the ... available).
    Found 10 images in 2 classes (dark: 5, light: 5).
    Using 8 files for training, 2 for validation.
    >>> images, labels = next(iter(data.validation))
    >>> data.class_names, tuple(images.shape), labels.numpy().tolist()
    (['dark', 'light'], (2, 32, 32, 1), [0, 1])
    """
    size = images.check_image_size(image_size)
    channels = _check_channels(channels)
    seed = _check_seed(seed)
    batch_size = _check_batch_size(batch_size)
    cache = _check_cache(cache)
    cache_dir = _check_cache_dir(cache_dir)
    _check_augment(augment)
    validation_split = checks.fraction("validation_split", validation_split, high_open=True)
    max_pixels = images.DEFAULT_MAX_PIXELS
    decided = {}

    def prepare(listed):
        # One decision for both sides: the training and validation caches are held
        # together. In memory, the scan's one decode of each file checks and caches it.
        plan = plan_image_cache(len(listed), size, channels, cache=cache, cache_dir=cache_dir)
        decided["plan"] = plan
        if verbose:
            print(f"Image cache: {plan.reason}.", flush=True)
        if plan.cache is not True or tf.distribute.has_strategy():
            return None
        load = functools.partial(images.read_image, image_size=size, channels=channels, max_pixels=max_pixels)
        decided["fill"] = _CacheFill(listed, (size[0], size[1], channels), load)
        return decided["fill"]

    folder = _scan(directory, class_names, channels, max_pixels, verbose, prepare)
    if validation_split > 0:
        train_files, validation_files = split_image_folder(folder, validation_split, seed=seed)
        if verbose:
            print(
                f"Using {len(train_files.paths):,} files for training, "
                f"{len(validation_files.paths):,} "
                "for validation."
            )
    else:
        train_files = folder._replace(skipped=[])
        validation_files = None
    _check_drop_remainder(drop_remainder, batch_size, len(train_files.paths))
    planned = decided["plan"]
    common = dict(
        size=size,
        channels=channels,
        batch_size=batch_size,
        cache=planned.cache,
        max_pixels=max_pixels,
        verbose=verbose,
        fill=decided.get("fill"),
    )
    train = _pipeline(
        train_files.paths,
        train_files.labels,
        shuffle=shuffle,
        seed=seed,
        augment=augment,
        drop_remainder=drop_remainder,
        **common,
    )

    def plain(files, **changes):  # in order, unaugmented, every sample
        options = {**common, **changes}
        return _pipeline(
            files.paths, files.labels, shuffle=False, seed=None, augment=None, drop_remainder=False, **options
        )

    validation = None if validation_files is None else plain(validation_files)
    # From the memory cache when there is one (the same pixels), else decoded every pass.
    train_plain = plain(train_files, cache=False)
    return FolderData(
        train=train,
        validation=validation,
        class_names=list(folder.class_names),
        skipped=list(folder.skipped),
        train_files=train_files,
        validation_files=validation_files,
        train_plain=train_plain,
    )


def load_image_folder(directory, *, image_size, channels=3, class_names=None, verbose=True):
    """Loads a small class-per-folder directory into numpy arrays.

    For accuracy reports, TFLite calibration and other small sets that fit in
    memory: the folder is scanned and checked like `image_folder_datasets` (files that
    cannot be decoded are skipped and reported), and decoded in parallel.

    Args:
        directory: str. One sub-folder per class.
        image_size: int or (height, width).
        channels: int. 1 or 3. Defaults to `3`.
        class_names: list of str. Fixes the classes and their ids; the folder may
            hold only some of them (see `scan_image_folder`). Defaults to the sorted
            sub-folder names.
        verbose: bool. Defaults to `True`.

    Returns:
        `FolderImages(x, y, paths, class_names, skipped)`, `x` float32 (N, H, W, C) in
        0-255 and `y` int64, in `paths` order (class, then path).

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import image_folder
    >>> root = tempfile.mkdtemp()
    >>> for name, value in [("dark", 0), ("light", 255)]:
    ...     os.makedirs(os.path.join(root, name))
    ...     tf.io.write_file(os.path.join(root, name, "a.png"),
    ...                      tf.io.encode_png(tf.fill((8, 8, 1), tf.constant(value, tf.uint8))))
    >>> loaded = image_folder.load_image_folder(root, image_size=8, channels=1, verbose=False)
    >>> loaded.x.shape, loaded.x.max(axis=(1, 2, 3)).tolist(), loaded.y.tolist()
    ((2, 8, 8, 1), [0.0, 255.0], [0, 1])
    """
    size = images.check_image_size(image_size)
    channels = _check_channels(channels)
    folder = scan_image_folder(directory, class_names=class_names, channels=channels, verbose=verbose)
    if len(folder.paths) == 0:
        x = np.zeros((0,) + size + (channels,), np.float32)
    else:
        ds = files_dataset(folder.paths, image_size=size, channels=channels, batch_size=256, cache=False)
        x = np.concatenate([batch.numpy() for batch in ds])
    return FolderImages(x, folder.labels, list(folder.paths), list(folder.class_names), list(folder.skipped))
