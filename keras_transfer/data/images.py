"""Decoding encoded images (PNG, JPEG, GIF, BMP) into model-ready pixels.

One function, used everywhere an image file becomes a tensor: the image-folder
pipelines, `keras-transfer predict`, and the encoded-bytes signature of exported
SavedModels. Sharing it means a served PNG gives exactly the pixels training saw.
"""

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def check_image_size(image_size):
    """`image_size` (an int or (height, width)) as a (height, width) tuple, or raises."""
    size = image_size
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"image_size must be a positive int or (height, width). Received: image_size={image_size!r}"
        )
    return size


def decode_image(contents, image_size, channels=3):
    """Decodes one encoded image to float32 pixels (0-255) of a fixed size.

    Works eagerly and inside `tf.data` / `tf.function` graphs. The image is decoded
    with `channels` channels (colour images become grayscale for `channels=1` with
    the ITU-R 601 luma weights, grayscale ones are repeated for `channels=3`, alpha
    is dropped), then resized with bilinear
    interpolation to `image_size`, keeping values in the 0-255 range the models'
    own preprocessing expects.

    Args:
        contents: scalar `tf.string`. The file's bytes (PNG, JPEG, GIF or BMP).
        image_size: int or (height, width). Output size.
        channels: int. 1 or 3. Defaults to `3`.

    Returns:
        A float32 tensor of shape (height, width, channels).

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import images
    >>> png = tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8))
    >>> tuple(images.decode_image(png, 16, channels=3).shape)
    (16, 16, 3)
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3. Received: channels={channels!r}")
    size = check_image_size(image_size)
    # Decode at the file's own channel count (GIF and BMP can't decode to 1 channel),
    # then adapt: drop alpha, average colour to grey with the usual luma weights, or
    # repeat grey to RGB. Every format goes through the same conversion.
    image = tf.cast(tf.io.decode_image(contents, channels=0, expand_animations=False), tf.float32)
    native = tf.shape(image)[-1]
    if channels == 1:
        image = tf.cond(
            native >= 3,
            lambda: tf.image.rgb_to_grayscale(image[..., :3]),
            lambda: image[..., :1],
        )
    else:
        image = tf.cond(
            native >= 3,
            lambda: image[..., :3],
            lambda: tf.repeat(image[..., :1], 3, axis=-1),
        )
    image = tf.ensure_shape(image, (None, None, channels))
    image = tf.image.resize(image, size, method="bilinear")
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, size + (channels,))


def decode_images(batch, image_size, channels=3):
    """Decodes a 1-D `tf.string` batch of encoded images to (N, H, W, C) float32.

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import images
    >>> png = tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8))
    >>> tuple(images.decode_images(tf.stack([png, png]), (4, 6), channels=1).shape)
    (2, 4, 6, 1)
    """
    size = check_image_size(image_size)
    return tf.map_fn(
        lambda contents: decode_image(contents, size, channels),
        batch,
        fn_output_signature=tf.TensorSpec(size + (channels,), tf.float32),
    )


def read_image(path, image_size, channels=3):
    """Reads and decodes one image file (see `decode_image`).

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import images
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> tf.io.write_file(path, tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)))
    >>> tuple(images.read_image(path, 4).shape)
    (4, 4, 3)
    """
    return decode_image(tf.io.read_file(path), image_size, channels)
