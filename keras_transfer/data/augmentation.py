"""Augmentation for tf.data pipelines: one module for arrays and image folders.

`augment=True` means one thing on every path (`make_dataset`, `train`, `fine_tune`,
`files_dataset`, `image_folder_datasets`, `train_from_folder`):
`augmentation_for(channels)`, the block for the kind of image. Colour photos
(3 channels) get `image_augmentation` (horizontal flip, rotation, zoom, contrast: a
flipped photo keeps its class); single-channel images (digits, scans, text) get
`default_augmentation` (shift, rotation, zoom, no flip: a flipped digit is another
glyph). Pixel values stay in 0-255; each layer has its own seed.
"""

import keras


def augmentation_for(channels, seed=None):
    """What `augment=True` applies to images with `channels` channels.

    Example:

    >>> from keras_transfer.data import augmentation
    >>> [layer.name for layer in augmentation.augmentation_for(1).layers]
    ['translation', 'rotation', 'zoom']
    >>> [layer.name for layer in augmentation.augmentation_for(3).layers]
    ['flip', 'rotation', 'zoom', 'contrast']
    """
    if int(channels) == 3:
        return image_augmentation(seed=seed)
    return default_augmentation(seed=seed)


def default_augmentation(translation=0.1, rotation=0.05, zoom=0.1, flip=False, seed=None):
    """A light augmentation block for tf.data: shift, rotate, zoom (and optional flip).

    Example:

    >>> from keras_transfer.data import augmentation
    >>> augment = augmentation.default_augmentation()
    >>> [layer.name for layer in augment.layers]
    ['translation', 'rotation', 'zoom']
    """
    # One seed each: layers seeded alike draw the same numbers, and shift, rotation and
    # zoom would move together.
    seeds = [None] * 4 if seed is None else [seed + i for i in range(4)]
    layers = [
        keras.layers.RandomTranslation(
            translation, translation, fill_mode="constant", seed=seeds[0], name="translation"
        ),
        keras.layers.RandomRotation(rotation, fill_mode="constant", seed=seeds[1], name="rotation"),
        keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seeds[2], name="zoom"),
    ]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seeds[3], name="flip"))
    return keras.Sequential(layers, name="augmentation")


def image_augmentation(flip=True, rotation=0.1, zoom=0.1, contrast=0.1, seed=None):
    """An augmentation block for image batches in tf.data: flip, rotate, zoom, contrast.

    For photos (a horizontal flip keeps their class); use `flip=False` for digits or
    text. Each layer gets its own seed (`seed`, `seed + 1`, ...): layers seeded alike
    draw the same random numbers and would move together. A factor of `0` leaves its
    layer out. Pixel values stay in 0-255.

    Args:
        flip: bool or str. `True` for `"horizontal"`, or a `keras.layers.RandomFlip`
            mode (`"vertical"`, `"horizontal_and_vertical"`). Defaults to `True`.
        rotation: float. Fraction of a full turn, both ways. Defaults to `0.1`.
        zoom: float. Zoom in or out by up to this fraction. Defaults to `0.1`.
        contrast: float. Contrast factor range `[1 - contrast, 1 + contrast]`.
            Defaults to `0.1`.
        seed: int. Defaults to `None`.

    Returns:
        A `keras.Sequential` named `"augmentation"`; call it with `training=True`.

    Example:

    >>> from keras_transfer.data import augmentation
    >>> augment = augmentation.image_augmentation(seed=0)
    >>> [layer.name for layer in augment.layers]
    ['flip', 'rotation', 'zoom', 'contrast']
    """
    seeds = [None] * 4 if seed is None else [seed + i for i in range(4)]
    layers = []
    if flip:
        mode = "horizontal" if flip is True else flip
        layers.append(keras.layers.RandomFlip(mode, seed=seeds[0], name="flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, seed=seeds[1], name="rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, seed=seeds[2], name="zoom"))
    if contrast:
        layers.append(
            keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seeds[3], name="contrast")
        )
    if not layers:
        raise ValueError(
            "image_augmentation needs at least one transform. Received: "
            f"flip={flip!r}, rotation={rotation!r}, zoom={zoom!r}, contrast={contrast!r}"
        )
    return keras.Sequential(layers, name="augmentation")
