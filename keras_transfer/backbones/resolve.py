"""What a `backbone` argument is: the one place that decides, for builders, workflows
and the recipe.

A backbone can be given as a registry name (`"resnet50"`), a TF Hub handle or SavedModel
folder (`"hub:<handle>"`, or the folder's path), a `HubLayer`, a `.keras` model file, a
user's `keras.Model` (a source model), or a classifier this toolkit built (reused as a
source: its own backbone and preprocessing are unpacked, not nested). `resolve_backbone`
says which, whether its weights count as pretrained (they decide whether the backbone
starts frozen and whether training has a head stage), and which recipe suits it.
"""

import dataclasses
import os

import keras

from keras_transfer import saving
from keras_transfer.backbones import hub
from keras_transfer.backbones import registry
from keras_transfer.backbones.preprocessing import BackbonePreprocessing

KINDS = ("registry", "hub", "classifier", "model")


@dataclasses.dataclass(frozen=True)
class ResolvedBackbone:
    """A backbone argument, resolved.

    Attributes:
        kind: `"registry"`, `"hub"` (a handle, SavedModel folder or `HubLayer`),
            `"classifier"` (a model `build_classifier` made) or `"model"` (any other
            `keras.Model`).
        value: the registry name, `"hub:<handle>"` or `HubLayer`, or the `keras.Model`.
        pretrained: whether the weights are trained ones (a registry backbone with
            `weights`, a Hub module, a source model), so the backbone starts frozen.
        recipe: `"pretrained"` (a large ImageNet-style backbone) or `"small"` (a small
            model trained here, a user's source model): the `training.RECIPES` entry.
    """

    kind: str
    value: object
    pretrained: bool
    recipe: str


def is_saved_model(path):
    """Whether `path` is a TF2 SavedModel folder (it holds a `saved_model.pb`)."""
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb"))


def is_classifier(model):
    """Whether `model` has the layout `build_classifier` makes (and so can be unpacked)."""
    names = [layer.name for layer in model.layers]
    return (
        "backbone" in names
        and "predictions" in names
        and isinstance(model.get_layer("backbone"), (keras.Model, hub.HubLayer))
        and len(getattr(model, "inputs", None) or ()) == 1
    )


def _classifier_recipe(model):
    body = model.get_layer("backbone")
    if isinstance(body, hub.HubLayer):
        return "pretrained"
    names = [layer.name for layer in model.layers]
    if "preprocessing" in names and isinstance(model.get_layer("preprocessing"), BackbonePreprocessing):
        return resolve_backbone(model.get_layer("preprocessing").backbone).recipe
    return "small"


def resolve_backbone(backbone, weights="imagenet"):
    """Resolves a `backbone` argument (see the module docstring) for `weights`.

    A `.keras` path is loaded (compile=False); a folder with a `saved_model.pb` becomes
    `"hub:<folder>"`. Unknown names and paths raise `ValueError` / `FileNotFoundError`
    saying what is accepted, as do an empty `"hub:"` handle and a truncated or corrupt
    `.keras` file.

    Example:

    >>> from keras_transfer.backbones import resolve_backbone
    >>> resolve_backbone("resnet50")
    ResolvedBackbone(kind='registry', value='resnet50', pretrained=True, recipe='pretrained')
    >>> resolve_backbone("mnist_cnn", weights=None).pretrained
    False
    >>> resolve_backbone("hub:https://tfhub.dev/google/some/feature_vector/5").recipe
    'pretrained'
    """
    if isinstance(backbone, hub.HubLayer):
        return ResolvedBackbone("hub", backbone, True, "pretrained")
    if isinstance(backbone, keras.Model):
        if is_classifier(backbone):
            return ResolvedBackbone("classifier", backbone, True, _classifier_recipe(backbone))
        return ResolvedBackbone("model", backbone, True, "small")
    if isinstance(backbone, os.PathLike):
        backbone = os.fspath(backbone)
    if not isinstance(backbone, str):
        raise ValueError(
            "backbone must be a registry name or a keras.Model (or 'hub:<handle>', a HubLayer, "
            f"a .keras file, a SavedModel folder). Received: backbone={backbone!r}"
        )
    if backbone.startswith("hub:"):
        if not backbone[len("hub:") :].strip():
            raise ValueError(
                "backbone 'hub:<handle>' needs a handle after 'hub:': a TF Hub / Kaggle URL "
                "(e.g. 'hub:https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5') "
                f"or a local SavedModel folder ('hub:/path/to/folder'). Received: backbone={backbone!r}"
            )
        return ResolvedBackbone("hub", backbone, True, "pretrained")
    if backbone.endswith(".keras"):
        if not os.path.isfile(backbone):
            raise FileNotFoundError(f"No such model file: {backbone} (backbone).")
        return resolve_backbone(saving.load_model(backbone, compile=False))
    if is_saved_model(backbone):
        return ResolvedBackbone("hub", "hub:" + backbone, True, "pretrained")
    if os.sep in backbone and os.path.exists(backbone):
        raise ValueError(
            f"backbone {backbone}: not a .keras model file or a SavedModel folder (with saved_model.pb)."
        )
    spec = registry.get_backbone_spec(backbone)
    return ResolvedBackbone(
        "registry", spec.name, weights is not None, "pretrained" if spec.pretrained else "small"
    )
