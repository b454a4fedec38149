"""An MNIST-M-style domain built offline: MNIST digits blended with real colour photos.

Ganin et al. built MNIST-M by blending each MNIST digit with a random patch of a colour
photograph from BSDS500: `|patch - digit|` per channel, the digit binarised to 0/255, so
the strokes take the inverted colours of the photo under them. This module does the
same with the colour photographs bundled with scikit-image (`skimage.data`: nothing is
downloaded), so it is **MNIST-M-style, not MNIST-M**: other photographs, and the digits
of whichever MNIST copy `load_mnist` found. It is seeded (which photo and which crop
each digit gets) and cached on disk per seed.
"""

import hashlib
import os

import numpy as np

from keras_transfer.data import datasets

# Real colour photographs that scikit-image ships in its own package data.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)


def load_photos(names=PHOTOS):
    """The colour photographs `names` of `skimage.data` as uint8 (H, W, 3) arrays.

    Example:

    >>> from keras_transfer.data import mnist_m
    >>> [photo.shape for photo in mnist_m.load_photos(("astronaut", "coffee"))]
    [(512, 512, 3), (400, 600, 3)]
    """
    import skimage.data

    photos = []
    for name in names:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise ValueError(f"skimage.data has no photograph {name!r}. Received: photos={list(names)!r}")
        image = loader()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] < 3:
            raise ValueError(f"skimage.data.{name} is not a colour photograph (shape {image.shape}).")
        photos.append(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    return photos


def mnist_m_style(x, seed=0, photos=PHOTOS, binarize=True):
    """Blends each digit with a random crop of a real colour photograph, as MNIST-M.

    For each digit, a photo is drawn from `photos` and a crop of the digit's size at a
    random place in it; the result is `|crop - digit|` per channel (Ganin et al.'s
    recipe), the digit first binarised to 0/255 (theirs too) unless `binarize=False`.

    Args:
        x: array (N, H, W) or (N, H, W, 1). Grayscale digits in 0-255.
        seed: int. Chooses the photos and crops: the same seed gives the same images.
            Defaults to `0`.
        photos: names of `skimage.data` colour photographs. Defaults to `PHOTOS`.
        binarize: bool. Digit pixels > 0 become 255 first. Defaults to `True`.

    Returns:
        uint8 array (N, H, W, 3).

    Example:

    >>> import numpy as np
    >>> from keras_transfer.data import mnist_m_style
    >>> digits = np.zeros((2, 28, 28), "float32"); digits[:, 10:18, 12:16] = 255
    >>> images = mnist_m_style(digits, seed=0)
    >>> images.shape, images.dtype.name, bool((images == mnist_m_style(digits, seed=0)).all())
    ((2, 28, 28, 3), 'uint8', True)

    Reference:
    - [Ganin et al., 2016](https://arxiv.org/abs/1505.07818) (MNIST-M, section 5.2.2)
    """
    x = np.asarray(x, np.float32)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(
            f"x must be grayscale digits (N, H, W) or (N, H, W, 1). Received: x of shape {x.shape}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
    images = load_photos(photos)
    digits = np.where(x > 0, 255.0, 0.0) if binarize else np.clip(x, 0.0, 255.0)
    rng = np.random.default_rng(seed)
    height, width = x.shape[1:]
    out = np.empty(x.shape + (3,), np.uint8)
    which = rng.integers(0, len(images), len(x))
    for index, digit in enumerate(digits):
        photo = images[which[index]]
        top = rng.integers(0, photo.shape[0] - height + 1)
        left = rng.integers(0, photo.shape[1] - width + 1)
        crop = photo[top : top + height, left : left + width].astype(np.float32)
        out[index] = np.abs(crop - digit[..., None]).astype(np.uint8)
    return out


def _default_cache_dir():
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets", "keras_transfer")


def load_mnist_m_style(x=None, y=None, *, seed=0, cache_dir=None, verbose=False):
    """The MNIST-M-style images of digits `x` (default: `load_mnist()`), cached on disk.

    The cache file is keyed by the seed and a hash of the digits, so another seed or
    other digits build (and cache) new images; a cached load equals a fresh build.

    Args:
        x: grayscale digits (N, H, W[, 1]) in 0-255. Defaults to `load_mnist().x`.
        y: their labels. Defaults to `load_mnist().y` (with `x=None`).
        seed: int. See `mnist_m_style`. Defaults to `0`.
        cache_dir: str. Defaults to `~/.keras/datasets/keras_transfer`. `False`: no cache.
        verbose: bool. Say whether the cache was used. Defaults to `False`.

    Returns:
        `Images(x, y, "mnist_m_style")`, `x` float32 (N, H, W, 3) in 0-255.

    Example:

    >>> import numpy as np, tempfile
    >>> from keras_transfer.data import load_mnist_m_style
    >>> digits = np.zeros((3, 28, 28), "float32"); digits[:, 8:20, 13:15] = 255
    >>> folder = tempfile.mkdtemp()
    >>> first = load_mnist_m_style(digits, np.arange(3), seed=1, cache_dir=folder)
    >>> again = load_mnist_m_style(digits, np.arange(3), seed=1, cache_dir=folder)
    >>> first.x.shape, bool((first.x == again.x).all()), first.source
    ((3, 28, 28, 3), True, 'mnist_m_style')
    """
    if x is None:
        mnist = datasets.load_mnist(verbose=verbose)
        x, y = mnist.x, mnist.y
    x = np.asarray(x, np.float32)
    y = np.zeros(len(x), np.int64) if y is None else np.asarray(y).astype(np.int64)
    if cache_dir is False:
        return datasets.Images(mnist_m_style(x, seed=seed).astype(np.float32), y, "mnist_m_style")
    key = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()[:12]
    path = os.path.join(cache_dir or _default_cache_dir(), f"mnist_m_style_seed{int(seed)}_{key}.npz")
    if os.path.exists(path):
        with np.load(path) as arrays:
            images = arrays["x"]
        if verbose:
            print(f"MNIST-M-style: {len(images):,} images from the cache {path}")
    else:
        images = mnist_m_style(x, seed=seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = f"{path}.{os.getpid()}.tmp.npz"
        np.savez_compressed(staging, x=images)
        os.replace(staging, path)
        if verbose:
            print(f"MNIST-M-style: built {len(images):,} images (seed {seed}), cached in {path}")
    return datasets.Images(images.astype(np.float32), y, "mnist_m_style")
