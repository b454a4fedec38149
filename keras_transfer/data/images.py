"""Decoding encoded images (PNG, JPEG, GIF, BMP) into model-ready pixels.

One function, used everywhere an image file becomes a tensor: the image-folder
pipelines, `keras-transfer predict`, and the encoded-bytes signature of exported
SavedModels. Sharing it means a served PNG gives exactly the pixels training saw.
"""

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")

# Images with more pixels than this are refused before decoding (read from the header):
# a small file can declare a huge image (a 218 KB PNG of 15000x15000 pixels decodes to
# 675 MB of uint8 and 2.7 GB of float32). 50 megapixels is a 8660x5773 photo.
DEFAULT_MAX_PIXELS = 50_000_000
FORMATS = ("PNG", "JPEG", "GIF", "BMP")
_HEAD = 32  # header bytes read (the PNG IHDR, GIF screen and BMP DIB sizes are in them)


def check_max_pixels(max_pixels):
    """`max_pixels` (a positive int, or `None` for no limit) checked."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(
            f"max_pixels must be a positive integer or None (no limit). Received: max_pixels={max_pixels!r}"
        )
    return int(max_pixels)


def _uint(head, start, count, big_endian):
    """The unsigned integer of `count` bytes at `head[start:]` (int64 byte values)."""
    value = tf.constant(0, tf.int64)
    order = range(count) if big_endian else reversed(range(count))
    for i in order:
        value = value * 256 + head[start + i]
    return value


def image_header(contents):
    """Reads an encoded image's format and size from its header, without decoding it.

    Works eagerly and in graphs (the serving signature runs it for each item): PNG
    (IHDR chunk), JPEG (SOF marker, with `tf.image.extract_jpeg_shape`), GIF (logical
    screen) and BMP (DIB header).

    Args:
        contents: scalar `tf.string`. The file's bytes.

    Returns:
        `(format_index, height, width, complete)`: int32 index into `FORMATS` (-1 for
        another or unknown format), int64 height and width (-1 when unknown), and a
        bool that is `False` for a file visibly cut short (a PNG without its IEND
        chunk, a BMP shorter than its header says).

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import images
    >>> png = tf.io.encode_png(tf.zeros((5, 7, 1), tf.uint8))
    >>> [int(v) for v in images.image_header(png)]
    [0, 5, 7, 1]
    >>> int(images.image_header(tf.constant(b"not an image"))[0])
    -1
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    length = tf.strings.length(contents)
    padded = tf.strings.join([tf.strings.substr(contents, 0, _HEAD), b"\0" * _HEAD])
    padded = tf.strings.substr(padded, 0, _HEAD)
    head = tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)
    is_png = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 8), b"\x89PNG\r\n\x1a\n"),
        tf.logical_and(tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR"), tf.greater_equal(length, 24)),
    )
    is_jpeg = tf.equal(tf.strings.substr(padded, 0, 3), b"\xff\xd8\xff")
    is_gif = tf.logical_and(tf.equal(tf.strings.substr(padded, 0, 4), b"GIF8"), tf.greater_equal(length, 10))
    is_bmp = tf.logical_and(tf.equal(tf.strings.substr(padded, 0, 2), b"BM"), tf.greater_equal(length, 26))
    minus = tf.constant(-1, tf.int64)
    unknown = (tf.constant(-1, tf.int32), minus, minus, tf.constant(True))

    def png():
        tail = tf.strings.substr(contents, tf.maximum(length - 12, 0), 8)
        # The IEND chunk ends the file (data after it is rare; a cut file lacks it).
        has_end = tf.cond(
            tf.equal(tail, b"IEND\xaeB`\x82"),
            lambda: tf.constant(True),
            lambda: tf.greater(tf.size(tf.strings.split(tf.reshape(contents, [1]), b"IEND").values), 1),
        )
        return (
            tf.constant(0, tf.int32),
            _uint(head, 20, 4, True),
            _uint(head, 16, 4, True),
            has_end,
        )

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        return tf.constant(1, tf.int32), shape[0], shape[1], tf.constant(True)

    def gif():
        return tf.constant(2, tf.int32), _uint(head, 8, 2, False), _uint(head, 6, 2, False), tf.constant(True)

    def bmp():
        core = tf.equal(_uint(head, 14, 4, False), 12)  # BITMAPCOREHEADER: 16-bit sizes
        width = tf.where(core, _uint(head, 18, 2, False), _uint(head, 18, 4, False))
        height = tf.where(core, _uint(head, 20, 2, False), _uint(head, 22, 4, False))
        height = tf.where(height >= 2**31, 2**32 - height, height)  # top-down BMPs: negative
        complete = tf.greater_equal(tf.cast(length, tf.int64), _uint(head, 2, 4, False))
        return tf.constant(3, tf.int32), height, width, complete

    return tf.cond(
        is_png,
        png,
        lambda: tf.cond(
            is_jpeg, jpeg, lambda: tf.cond(is_gif, gif, lambda: tf.cond(is_bmp, bmp, lambda: unknown))
        ),
    )


def _text(*parts):
    """Joins strings and int tensors into one scalar string tensor (a message)."""
    return tf.strings.join(
        [tf.strings.as_string(p) if isinstance(p, tf.Tensor) and p.dtype != tf.string else p for p in parts]
    )


def _header_checks(contents, max_pixels, item=None, formats_only=False):
    """Checks of the header before decoding: pixel count, completeness, format.

    Returns the `tf.debugging.Assert` ops to make the decode depend on (in a graph:
    their message names `item`, a scalar string tensor such as `image_bytes[3]`).
    Eagerly, a failed check raises `tf.errors.InvalidArgumentError` at once.
    """
    kind, height, width, complete = image_header(contents)
    pixels = height * width
    limit = tf.constant(max_pixels if max_pixels is not None else 2**62, tf.int64)
    what = "The image" if item is None else item
    kind_name = tf.gather(tf.constant(FORMATS), tf.maximum(kind, 0))
    checks = [
        (
            tf.logical_or(tf.less(kind, 0), tf.less_equal(pixels, limit)),
            lambda: _text(
                what,
                " is ",
                width,
                "x",
                height,
                " pixels (",
                pixels,
                " pixels), above max_pixels=",
                limit,
                ": refused before decoding (it could exhaust memory). Resize it, or raise max_pixels.",
            ),
        ),
        (
            complete,
            lambda: _text(what, " is a ", kind_name, " file cut short (truncated); it cannot be decoded."),
        ),
    ]
    if formats_only:
        checks.append(
            (
                tf.greater_equal(kind, 0),
                lambda: _text(what, " is not a PNG, JPEG, GIF or BMP image (unknown header bytes)."),
            )
        )
    if tf.executing_eagerly():
        for ok, message in checks:
            if not bool(ok):
                raise tf.errors.InvalidArgumentError(None, None, message().numpy().decode())
        return []
    return [tf.debugging.Assert(ok, [message()]) for ok, message in checks]


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


def decode_image(contents, image_size, channels=3, *, max_pixels=DEFAULT_MAX_PIXELS):
    """Decodes one encoded image to float32 pixels (0-255) of a fixed size.

    The size is first read from the header (`image_header`): an image of more than
    `max_pixels` pixels, or a PNG or BMP file cut short, fails with a
    `tf.errors.InvalidArgumentError` saying so, before any decoding (a small file can
    declare a huge image).

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
        max_pixels: int or `None`. The largest image (height x width) decoded.
            Defaults to `DEFAULT_MAX_PIXELS` (50 megapixels); `None` for no limit.

    Returns:
        A float32 tensor of shape (height, width, channels).

    Raises:
        tf.errors.InvalidArgumentError: too many pixels, a file cut short, or bytes
            that do not decode.

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
    max_pixels = check_max_pixels(max_pixels)
    return _decode(contents, size, channels, _header_checks(contents, max_pixels))


def _decode(contents, size, channels, checks):
    # Decode at the file's own channel count (GIF and BMP can't decode to 1 channel),
    # then adapt: drop alpha, average colour to grey with the usual luma weights, or
    # repeat grey to RGB. Every format goes through the same conversion.
    with tf.control_dependencies(checks):
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


def decode_images(batch, image_size, channels=3, *, max_pixels=DEFAULT_MAX_PIXELS, name="image_bytes"):
    """Decodes a 1-D `tf.string` batch of encoded images to (N, H, W, C) float32.

    The serving decoder: each item's header is checked first (`image_header`), so an
    item that is not a PNG, JPEG, GIF or BMP, is cut short or has more than
    `max_pixels` pixels fails the batch with a message naming it (`name[index]`), e.g.
    `image_bytes[3] is not a PNG, JPEG, GIF or BMP image`. Bytes with a valid header
    that fail inside the decoder (corrupt compressed data) still give the decoder's
    own message, without the index.

    Args:
        batch: 1-D `tf.string` tensor of encoded images.
        image_size: int or (height, width). Output size.
        channels: int. 1 or 3. Defaults to `3`.
        max_pixels: int or `None`. See `decode_image`. Defaults to
            `DEFAULT_MAX_PIXELS`.
        name: str. What the items are called in the messages. Defaults to
            `"image_bytes"` (the serving signature's input).

    Example:

    >>> import tensorflow as tf
    >>> from keras_transfer import images
    >>> png = tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8))
    >>> tuple(images.decode_images(tf.stack([png, png]), (4, 6), channels=1).shape)
    (2, 4, 6, 1)
    """
    size = check_image_size(image_size)
    max_pixels = check_max_pixels(max_pixels)
    batch = tf.convert_to_tensor(batch, tf.string)
    indices = tf.range(tf.shape(batch, out_type=tf.int64)[0])

    def one(args):
        index, contents = args
        item = tf.strings.format(name + "[{}]", index)
        checks = _header_checks(contents, max_pixels, item=item, formats_only=True)
        return _decode(contents, size, channels, checks)

    return tf.map_fn(one, (indices, batch), fn_output_signature=tf.TensorSpec(size + (channels,), tf.float32))


def read_image(path, image_size, channels=3, *, max_pixels=DEFAULT_MAX_PIXELS):
    """Reads and decodes one image file (see `decode_image`).

    Example:

    >>> import os, tempfile, tensorflow as tf
    >>> from keras_transfer import images
    >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> tf.io.write_file(path, tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)))
    >>> tuple(images.read_image(path, 4).shape)
    (4, 4, 3)
    """
    return decode_image(tf.io.read_file(path), image_size, channels, max_pixels=max_pixels)
