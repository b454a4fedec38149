"""Functional classifiers: preprocessing -> backbone -> pooling -> dropout -> new head."""

import keras

from keras_transfer import backbones
from keras_transfer.backbones import hub
from keras_transfer.backbones.preprocessing import BackbonePreprocessing
from keras_transfer.backbones.resolve import resolve_backbone
from keras_transfer.utils import checks
from keras_transfer.utils import keras_internals

POOLINGS = ("avg", "max", "flatten", None)


def build_classifier(
    backbone,
    num_classes,
    *,
    weights="imagenet",
    input_shape=None,
    pooling="avg",
    dropout=0.2,
    freeze_backbone=None,
    activation="softmax",
    feature_layer=None,
    name=None,
):
    """Builds a Functional image classifier on a pretrained (or fresh) backbone.

    The model is `images -> backbone's own preprocessing -> backbone -> pooling ->
    Dropout(name="output_dropout") -> Dense(num_classes, name="predictions")`, so it
    takes raw pixels (0-255) and the stable layer names make weight transfer and
    freezing by name reliable. The backbone is the nested model named `"backbone"`;
    while frozen it is called with `training=False`. For fine-tuning, `unfreeze` and
    `fine_tune` keep its BatchNorm layers frozen by default, and Keras runs frozen
    BatchNorm layers in inference mode, so their statistics stay those of the source.

    A TF Hub module is a backbone too: `"hub:<handle>"` (a TF Hub / Kaggle URL or a
    local SavedModel directory) or a `keras_transfer.hub.HubLayer` (copied, with its
    weights), named `"backbone"`. TF Hub image modules take pixels in [0, 1], so the
    preprocessing is `keras.layers.Rescaling(1 / 255, name="preprocessing")` (0-255
    mapped to the layer's `value_range`; none with `HubLayer(..., value_range=None)`).
    A feature vector feeds the head directly; feature maps are pooled.

    Args:
        backbone: str, `keras.Model` or `HubLayer`. A registry name
            (`keras_transfer.list_backbones()`), `"hub:<handle>"`, a `HubLayer`, or a
            user's trained model (e.g. an MNIST CNN). A user model is cut below its
            old top (the input of its last layer, skipping a Dropout right before it, or
            `feature_layer`) and **cloned with its weights**, so fine-tuning never
            changes the source model.
        num_classes: int. Number of target classes.
        weights: `"imagenet"`, `None` or a local weights file, for a registry name.
            Ignored for a user model or a hub module (their own weights are used).
            Defaults to `"imagenet"`.
        input_shape: tuple. (height, width, channels). Defaults to the backbone's
            default size, the user model's input shape, or `(224, 224, 3)` for a hub
            module.
        pooling: str. `"avg"`, `"max"`, `"flatten"` or `None`, applied when the
            backbone returns feature maps. Defaults to `"avg"`.
        dropout: float. Rate of the `output_dropout` layer. Defaults to `0.2`.
        freeze_backbone: bool. Freeze the backbone (feature extraction). Defaults to
            `True` when it carries trained weights (a user model, a hub module or
            `weights` not `None`), `False` when it is randomly initialised.
        activation: str. Activation of the `predictions` layer. Defaults to
            `"softmax"`.
        feature_layer: str or int. For a user model, the layer whose output becomes the
            features. Defaults to the input of the model's last layer.
        name: str. Model name. Defaults to `"<backbone>_classifier"`.

    Returns:
        A Functional `keras.Model`.

    Raises:
        ValueError: unknown backbone name or pooling, bad `num_classes` (also 1 with a
            softmax head), an input shape the backbone can't take.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier(
    ...     "mobilenet_v2", num_classes=3, weights=None, input_shape=(32, 32, 3))
    >>> model.output.shape
    (None, 3)
    >>> model.get_layer("predictions").units
    3
    """
    num_classes = checks.positive_int("num_classes", num_classes)
    if num_classes == 1 and activation in ("softmax", keras.activations.softmax):
        raise ValueError(
            "num_classes=1 with a softmax head predicts 1.0 for every image and learns "
            "nothing: use num_classes=2 for two classes (the toolkit's loss takes integer "
            "class ids). Received: num_classes=1, activation='softmax'"
        )
    checks.one_of("pooling", pooling, POOLINGS)
    dropout = checks.fraction("dropout", dropout, high_open=True)

    resolved = resolve_backbone(backbone, weights)
    backbone = resolved.value
    pretrained = resolved.pretrained
    if resolved.kind == "classifier" and feature_layer is None:
        # A classifier this toolkit built: reuse its backbone and preprocessing rather
        # than nesting the whole model inside a new "backbone" (layers stay reachable
        # as model.get_layer("backbone").get_layer("fc1"), and freezing by name works).
        feature_model = _copy_model(backbone.get_layer("backbone"), name="backbone")
        source_shape = tuple(backbone.input.shape[1:])
        if input_shape is not None and tuple(input_shape) != source_shape:
            raise ValueError(
                f"The source model takes inputs of shape {source_shape}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        shape = source_shape
        preprocess = _copy_preprocessing(backbone)
        default_name = f"{backbone.name}_transfer"
    elif isinstance(backbone, keras.Model):  # a source model (or a classifier cut at feature_layer)
        feature_model = _feature_model(backbone, feature_layer)
        if input_shape is not None and tuple(input_shape) != tuple(feature_model.input.shape[1:]):
            raise ValueError(
                f"The source model takes inputs of shape {tuple(feature_model.input.shape[1:])}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        shape = tuple(feature_model.input.shape[1:])
        preprocess = None
        default_name = f"{backbone.name}_transfer"
    elif resolved.kind == "hub":
        feature_model = _hub_backbone(backbone)
        shape = tuple(input_shape or hub.DEFAULT_INPUT_SHAPE)
        preprocess = _hub_preprocessing(feature_model.value_range)
        default_name = "hub_classifier"
    else:
        spec = backbones.get_backbone_spec(backbone)
        feature_model = backbones.build_backbone(spec.name, weights, input_shape)
        shape = tuple(feature_model.input.shape[1:])
        preprocess = BackbonePreprocessing(spec.name, name="preprocessing")
        default_name = f"{spec.name}_classifier"
    frozen = pretrained if freeze_backbone is None else bool(freeze_backbone)
    feature_model.trainable = not frozen

    inputs = keras.Input(shape, name="images")
    x = preprocess(inputs) if preprocess is not None else inputs
    x = feature_model(x, training=False) if frozen else feature_model(x)
    if len(x.shape) == 4 and pooling is not None:
        pool = {
            "avg": keras.layers.GlobalAveragePooling2D,
            "max": keras.layers.GlobalMaxPooling2D,
            "flatten": keras.layers.Flatten,
        }[pooling]
        x = pool(name="pooling")(x)
    elif len(x.shape) > 2:
        x = keras.layers.Flatten(name="pooling")(x)
    x = keras.layers.Dropout(dropout, name="output_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name or default_name)


def _copy_model(model, name):
    """A clone of a nested Functional backbone (or a `HubLayer`), with its weights."""
    if isinstance(model, hub.HubLayer):
        return _hub_backbone(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.name = name
    return clone


def _copy_preprocessing(model):
    """A copy of the source classifier's `preprocessing` layer, or `None`."""
    try:
        layer = model.get_layer("preprocessing")
    except ValueError:
        return None
    copy = layer.__class__.from_config(layer.get_config())
    if layer.weights:
        copy.build(layer.input.shape)
        copy.set_weights(layer.get_weights())
    return copy


def _hub_backbone(backbone):
    """A `HubLayer` named `backbone`: new for `"hub:<handle>"`, else a copy with weights."""
    if isinstance(backbone, str):
        return hub.HubLayer(backbone[len("hub:") :], name="backbone")
    config = dict(backbone.get_config(), name="backbone", load_options=backbone.load_options)
    layer = hub.HubLayer.from_config(config)
    layer.set_weights(backbone.get_weights())
    return layer


def _hub_preprocessing(value_range):
    """0-255 pixels -> the module's `value_range` (TF Hub images: [0, 1])."""
    if value_range is None:
        return None
    low, high = value_range
    return keras.layers.Rescaling((high - low) / 255.0, offset=low, name="preprocessing")


def _feature_model(model, feature_layer):
    """A clone (with copied weights) of `model` up to its features, named `backbone`."""
    if not model.built or not getattr(model, "inputs", None):
        raise ValueError(
            f"The source model {model.name!r} has no defined inputs: build it on a "
            "keras.Input (Functional, or Sequential starting with keras.Input)."
        )
    if feature_layer is None:
        features = model.layers[-1].input
        while isinstance(keras_internals.keras_history(features).operation, keras.layers.Dropout):
            features = keras_internals.keras_history(features).operation.input
    else:
        layer = (
            model.layers[feature_layer] if isinstance(feature_layer, int) else model.get_layer(feature_layer)
        )
        features = keras_internals.node_output(layer)
    if isinstance(features, (list, tuple)):
        raise ValueError(
            "The features of the source model must be a single tensor. "
            f"Received: feature_layer={feature_layer!r}"
        )
    if len(model.inputs) != 1:
        raise ValueError(
            f"The source model {model.name!r} must have one input. Received: {len(model.inputs)} inputs"
        )
    cut = keras.Model(model.inputs[0], features, name="backbone")
    clone = keras.models.clone_model(cut)
    clone.set_weights(cut.get_weights())
    return clone
