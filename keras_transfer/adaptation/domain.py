"""What DANN and CORAL share: unlabelled target images, the features they align, and
the model fitted (`DomainAdapter`) on paired source and target batches.

A run fits a `DomainAdapter` around the user's classifier on the zip of two pipelines:
`(source images, source labels)` batches as `train` makes them, and batches of the same
size of unlabelled target images (shuffled, repeated). Each step runs the classifier on
both halves at once and adds `weight * domain_loss(source features, target features)` to
the cross-entropy of the source labels; target labels are never read. Validation data
stays plain labelled `(images, labels)`. The model kept is the user's classifier:
anything the domain loss owns (DANN's domain classifier) lives in the adapter only.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.data import datasets as data_lib
from keras_transfer.training import method as method_lib
from keras_transfer.utils import keras_internals

SOURCE = "source"
TARGET = "target"


def feature_tensor(model, feature_layer=None):
    """The symbolic tensor whose values are aligned: `feature_layer`'s output, or by
    default the input of the classifier's head (`output_dropout`, else `predictions`:
    the backbone's pooled features).

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.adaptation import domain
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> tuple(domain.feature_tensor(model).shape)
    (None, 128)
    """
    names = [layer.name for layer in model.layers]
    if feature_layer is None:
        for name in ("output_dropout", "predictions"):
            if name in names:
                return model.get_layer(name).input
        raise ValueError(
            f"Model {model.name!r} has no `output_dropout` or `predictions` layer whose input would be "
            f"its features; name one (its layers: {names}). Received: feature_layer=None"
        )
    if feature_layer not in names:
        raise ValueError(
            f"Model {model.name!r} has no layer {feature_layer!r} (its layers: {names}). "
            f"Received: feature_layer={feature_layer!r}"
        )
    return keras_internals.node_output(model.get_layer(feature_layer))


def flatten_features(features):
    """Features of any rank as a (batch, width) matrix.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.adaptation import domain
    >>> tuple(domain.flatten_features(np.zeros((2, 3, 4))).shape)
    (2, 12)
    """
    if len(features.shape) > 2:
        return keras.ops.reshape(features, (keras.ops.shape(features)[0], -1))
    return features


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainAdapter(keras.Model):
    """The model a domain-adaptation run fits: `classifier` plus a domain loss.

    Called on `{"source": images, "target": images}`, it runs the classifier on both at
    once, adds `weight * domain_loss(source features, target features)` to the step's
    loss (`add_loss`) and returns the predictions on the source images, which the
    compiled loss scores against the source labels. Called on images, it is the
    classifier.

    Args:
        classifier: `keras.Model`. The model trained and kept.
        domain_loss: a `keras.layers.Layer` called as `domain_loss([source, target],
            training=...)` on flattened features, returning a scalar (DANN's
            `DomainClassifierLoss`, CORAL's `CORALLoss`).
        weight: float. The domain loss's weight. Defaults to `1.0`.
        feature_layer: str or `None`. See `feature_tensor`. Defaults to `None`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.adaptation import CORALLoss, DomainAdapter
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> adapter = DomainAdapter(model, CORALLoss())
    >>> x = np.random.rand(4, 28, 28, 1).astype("float32") * 255
    >>> tuple(adapter({"source": x, "target": x}).shape), float(adapter.losses[0])
    ((4, 3), 0.0)
    """

    def __init__(
        self, classifier, domain_loss, weight=1.0, feature_layer=None, name="domain_adapter", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.classifier = classifier
        self.domain_loss = domain_loss
        self.weight = float(weight)
        self.feature_layer = feature_layer
        features = feature_tensor(classifier, feature_layer)
        self.joint = keras.Model(
            classifier.inputs, [features, classifier.outputs[0]], name=f"{name}_features_and_outputs"
        )
        self.domain_loss_tracker = keras.metrics.Mean(name="domain_loss")

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict):
            return self.classifier(inputs, training=training)
        source, target = inputs[SOURCE], inputs[TARGET]
        count = keras.ops.shape(source)[0]
        both = keras.ops.concatenate(
            [keras.ops.cast(source, "float32"), keras.ops.cast(target, "float32")], 0
        )
        features, outputs = self.joint(both, training=training)
        features = flatten_features(features)
        loss = self.domain_loss([features[:count], features[count:]], training=training)
        self.add_loss(self.weight * loss)
        self.domain_loss_tracker.update_state(loss)
        return outputs[:count]

    def get_config(self):
        return {
            "classifier": keras.saving.serialize_keras_object(self.classifier),
            "domain_loss": keras.saving.serialize_keras_object(self.domain_loss),
            "weight": self.weight,
            "feature_layer": self.feature_layer,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        config["domain_loss"] = keras.saving.deserialize_keras_object(config["domain_loss"])
        return cls(**config)


def load_target(target, model):
    """The unlabelled target images as a float32 array in `model`'s input geometry.

    `target` is an array (N, H, W, C) or (N, H, W) in 0-255, resized and given the
    model's channel count (`data.adapt_images`) if they differ, or the path of a
    class-per-folder image directory (`image_folder.load_image_folder`; its labels are
    ignored).

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.adaptation import load_target
    >>> model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None, input_shape=(28, 28, 3))
    >>> load_target(np.zeros((2, 14, 14)), model).shape
    (2, 28, 28, 3)
    """
    from keras_transfer import data
    from keras_transfer.data import image_folder

    height, width, channels = tuple(model.input.shape[1:])
    if isinstance(target, (str, os.PathLike)):
        loaded = image_folder.load_image_folder(
            os.fspath(target), image_size=(height, width), channels=channels, verbose=False
        )
        x = loaded.x
    else:
        x = np.asarray(target, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (height, width, channels):
            x = data.adapt_images(x, size=(height, width), channels=channels).numpy()
    if len(x) == 0:
        raise ValueError(f"The target holds no images. Received: target={_describe(target)}")
    return np.asarray(x, np.float32)


def _describe(target):
    if isinstance(target, (str, os.PathLike)):
        return repr(os.fspath(target))
    shape = getattr(target, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else repr(target)


def check_target(target):
    """`target` as kept in the method's config: an array (not copied) or a folder path.

    Example:

    >>> from keras_transfer.adaptation import domain
    >>> domain.check_target("/no/such/folder")
    Traceback (most recent call last):
    ...
    ValueError: target must be an existing image folder or an array. Received: target='/no/such/folder'
    """
    if target is None:
        raise ValueError(
            "Domain adaptation needs unlabelled target images: an array (N, H, W, C) or an image "
            "folder (--method dann:target=FOLDER). Received: target=None"
        )
    if isinstance(target, (str, os.PathLike)):
        if not os.path.isdir(os.fspath(target)):
            raise ValueError(
                f"target must be an existing image folder or an array. Received: target={_describe(target)}"
            )
        return os.fspath(target)
    shape = getattr(target, "shape", None)
    if shape is None or len(shape) not in (3, 4) or shape[0] == 0:
        raise ValueError(
            "target must be a non-empty array of images (N, H, W) or (N, H, W, C), or an image folder. "
            f"Received: target={_describe(target)}"
        )
    return target


def check_number(name, value, low, low_open=False):
    """`value` as a float if it is a number `>= low` (`> low` with `low_open`), else a
    `ValueError` naming `name` and the value received.

    Example:

    >>> from keras_transfer.adaptation import domain
    >>> domain.check_number("weight", 2, 0.0)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    value = float(value)
    if value < low or (low_open and value == low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}. Received: {name}={value!r}")
    return value


class DomainAdaptation(method_lib.TransferMethod):
    """Base of the unsupervised domain-adaptation methods (`DANN`, `CORAL`): subclasses
    set `name`, `summary` and `domain_loss()`; this class pairs the batches, fits the
    `DomainAdapter` and keeps the classifier."""

    defaults = {"weight": 1.0, "feature_layer": None, "seed": 0}

    def __init__(self, target=None, weight=1.0, feature_layer=None, seed=0):
        self.target = check_target(target)
        self.weight = check_number("weight", weight, 0.0)
        if feature_layer is not None and not isinstance(feature_layer, str):
            raise ValueError(
                f"feature_layer must be a layer name or None. Received: feature_layer={feature_layer!r}"
            )
        self.feature_layer = feature_layer
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer. Received: seed={seed!r}")
        self.seed = int(seed)
        self.adapter = None

    def domain_loss(self):
        """The `DomainAdapter`'s `domain_loss` layer (a new one per run)."""
        raise NotImplementedError

    def target_dataset(self, model, batch_size):
        """Batches of `batch_size` unlabelled target images, shuffled and repeated."""
        x = load_target(self.target, model)
        ds = tf.data.Dataset.from_tensor_slices(x).cache()
        ds = ds.shuffle(len(x), seed=self.seed, reshuffle_each_iteration=True).repeat()
        return ds.batch(batch_size, drop_remainder=True)

    def fit_setup(self, context):
        from keras_transfer.training.fit import as_dataset

        model = context.model
        source = as_dataset(
            context.train_data,
            model,
            batch_size=context.batch_size,
            shuffle=True,
            seed=context.seed,
            drop_remainder=True,
            augment=context.augment,
        )
        batch_size = source.element_spec[0].shape[0] or context.batch_size
        target = self.target_dataset(model, int(batch_size))
        paired = tf.data.Dataset.zip((source, target)).map(
            lambda labelled, images: ({SOURCE: labelled[0], TARGET: images}, labelled[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        paired = data_lib.finish_pipeline(paired)
        validation = None
        if context.validation_data is not None:
            validation = as_dataset(context.validation_data, model, batch_size=context.batch_size)
        self.adapter = DomainAdapter(model, self.domain_loss(), self.weight, self.feature_layer)
        return method_lib.FitSetup(self.adapter, paired, validation, wrap_callbacks=True)

    def finalize(self, model):
        """The plain classifier: the domain loss's weights stay in the adapter."""
        return model

    def get_config(self):
        config = {"target": self.target}
        for key, default in type(self).defaults.items():
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        a, b = mine.pop("target"), theirs.pop("target")
        same = (
            a is b
            or (isinstance(a, str) and a == b)
            or (not isinstance(a, str) and not isinstance(b, str) and np.array_equal(a, b))
        )
        return same and mine == theirs

    __hash__ = None
