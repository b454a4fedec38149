"""Two-stage fine-tuning with the recipe that suits the backbone (`Recipe`, `fine_tune`)."""

import dataclasses
import os

import tensorflow as tf

from keras_transfer import freezing
from keras_transfer.backbones import resolve_backbone
from keras_transfer.training import method as method_lib
from keras_transfer.training import run_folder
from keras_transfer.training.fit import train
from keras_transfer.utils import checks
from keras_transfer.utils import files
from keras_transfer.utils import output


def check_recipe_fields(fields):
    """Checks the `Recipe` fields present in the dict `fields` (house wording).

    Raises:
        ValueError: negative epochs or `min_steps`, `batch_size` < 1, a learning rate
            <= 0, `unfreeze_fraction` outside [0, 1], `label_smoothing` outside [0, 1),
            negative `patience`.
    """
    for field in ("head_epochs", "epochs", "min_steps"):
        if field in fields:
            checks.non_negative_int(field, fields[field])
    if "batch_size" in fields:
        checks.positive_int("batch_size", fields["batch_size"])
    for field in ("head_learning_rate", "learning_rate", "scratch_learning_rate"):
        if field in fields:
            checks.positive_number(field, fields[field])
    if "unfreeze_fraction" in fields:
        checks.fraction("unfreeze_fraction", fields["unfreeze_fraction"])
    if "label_smoothing" in fields:
        checks.fraction("label_smoothing", fields["label_smoothing"], high_open=True)
    if fields.get("patience") is not None:
        checks.non_negative_int("patience", fields["patience"])


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How `fine_tune` trains: two stages, their lengths and rates, and the regularisers.

    Stage 1 trains the new head on the frozen backbone (skipped when `head_epochs` is
    0); stage 2 unfreezes the top `unfreeze_fraction` of the backbone (BatchNorm stays
    frozen) at `learning_rate`. Every stage uses label smoothing, cosine decay to zero,
    augmentation of array input (`data.augmentation.augmentation_for`: for digits shift,
    rotation, zoom)
    and a step budget: on a tiny set each stage still runs at least `min_steps` steps.

    Which recipe `fine_tune` and `keras-transfer train` use follows the kind of backbone
    (`recipe_for`), because the right rates differ by orders of magnitude:

    - `RECIPES["small"]`: a small model trained here as the source (`mnist_cnn`,
      `mnist_mlp`, any user `keras.Model`): every layer trained at 3e-3 from the source
      weights in one stage. Chosen on validation splits carved from the demo targets'
      pools (seeds 100 and 101, never the test split): it beat two stages, lower rates,
      and no augmentation there (see the README's demo table).
    - `RECIPES["pretrained"]`: a large ImageNet backbone (keras.applications with
      weights, a TF Hub module): the head at 1e-3, then the top 25% at 1e-5, the recipe
      of the Keras transfer-learning guide. Rates like 3e-3 would wreck ImageNet
      features. ImageNet weights cannot be downloaded where this toolkit was built, so
      this one follows the guide and was not tuned here.

    Args:
        head_epochs: int. Stage 1 epochs; `0` skips stage 1.
        epochs: int. Stage 2 epochs.
        head_learning_rate: float. Stage 1 peak rate.
        learning_rate: float. Stage 2 peak rate.
        unfreeze_fraction: float. Share of the backbone's layers, from the top,
            unfrozen in stage 2.
        freeze_batchnorm: bool. Keep BatchNorm frozen in stage 2. Defaults to `True`.
        label_smoothing: float. Defaults to `0.1`.
        cosine: bool. Cosine decay to zero over each stage. Defaults to `True`.
        augment: bool. Augment array input (a `tf.data.Dataset` augments in its own
            pipeline). Defaults to `True`.
        min_steps: int. Step budget of each stage for small sets (0: none).
            Defaults to `400`.
        batch_size: int. Defaults to `32`.
        scratch_learning_rate: float. Peak rate when the same architecture trains
            from random weights (`train_from_folder(weights=None)`, the demo's
            scratch runs). Defaults to `1e-3`.
        patience: int or `None`. Early stopping patience on `val_loss` in each stage
            (the best epoch's weights are kept). Defaults to `None` (none).

    Example:

    >>> from keras_transfer import training
    >>> recipe = training.RECIPES["small"]
    >>> recipe.learning_rate, recipe.unfreeze_fraction, recipe.min_steps
    (0.003, 1.0, 400)
    >>> training.recipe_for("resnet50").learning_rate
    1e-05
    """

    head_epochs: int
    epochs: int
    head_learning_rate: float
    learning_rate: float
    unfreeze_fraction: float
    freeze_batchnorm: bool = True
    label_smoothing: float = 0.1
    cosine: bool = True
    augment: bool = True
    min_steps: int = 400
    batch_size: int = 32
    scratch_learning_rate: float = 1e-3
    patience: int | None = None

    def __post_init__(self):
        check_recipe_fields(dataclasses.asdict(self))

    def replace(self, **changes):
        """A copy with `changes` (names of fields; `None` values are ignored)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Recipe has no field(s) {unknown}.")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES = {
    "small": Recipe(
        head_epochs=0,
        epochs=20,
        head_learning_rate=1e-2,
        learning_rate=3e-3,
        unfreeze_fraction=1.0,
        scratch_learning_rate=3e-3,
    ),
    "pretrained": Recipe(
        head_epochs=5,
        epochs=10,
        head_learning_rate=1e-3,
        learning_rate=1e-5,
        unfreeze_fraction=0.25,
    ),
}


def backbone_kind(backbone):
    """`"pretrained"` for a large ImageNet-style backbone, `"small"` for a source model.

    Args:
        backbone: what `build_classifier` takes (a registry name, `"hub:<handle>"`, a
            `HubLayer`, a user `keras.Model`), or a classifier `build_classifier` made
            (its `preprocessing` layer names its registry backbone).

    Example:

    >>> import keras_transfer
    >>> from keras_transfer import training
    >>> training.backbone_kind("efficientnet_b0"), training.backbone_kind("mnist_cnn")
    ('pretrained', 'small')
    >>> model = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> training.backbone_kind(model)
    'small'
    """
    return resolve_backbone(backbone).recipe


def recipe_for(backbone):
    """The default `Recipe` for a backbone (`RECIPES[backbone_kind(backbone)]`)."""
    return RECIPES[backbone_kind(backbone)]


def resolve_recipe(recipe, backbone, **overrides):
    """`recipe` (a `Recipe`, a name in `RECIPES`, or `None` for `recipe_for(backbone)`)
    with the `overrides` that are not `None`: what `fine_tune` and `train_from_folder`
    train with."""
    if recipe is None:
        recipe = recipe_for(backbone)
    elif isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(
                f"recipe must be one of {sorted(RECIPES)} or a Recipe. Received: recipe={recipe!r}"
            )
        recipe = RECIPES[recipe]
    return recipe.replace(**overrides)


@dataclasses.dataclass
class TwoStageHistory:
    """Both stages' metrics, epoch by epoch, and where the second stage started."""

    history: dict
    head_epochs: int
    recipe: Recipe = None


def fine_tune(
    model,
    train_data,
    validation_data=None,
    *,
    recipe=None,
    head_epochs=None,
    epochs=None,
    head_learning_rate=None,
    learning_rate=None,
    unfreeze_fraction=None,
    freeze_batchnorm=None,
    backbone="backbone",
    workdir=None,
    patience=None,
    verbose="auto",
    **train_kwargs,
):
    """Fine-tunes a classifier on its backbone with the recipe that suits the backbone.

    Stage 1 freezes the backbone and trains the new head at `head_learning_rate`
    (skipped when `head_epochs` is 0). Stage 2 unfreezes the top `unfreeze_fraction`
    of the backbone's layers (BatchNorm stays frozen by default), recompiles, and
    trains at `learning_rate`. Both stages use the `Recipe`'s label smoothing, cosine
    decay, augmentation of array input and step budget (`min_steps`), so ten labels
    per class still get hundreds of steps. The default recipe follows the backbone
    (`recipe_for(model)`): every layer at 3e-3 for a small source model, head then top
    25% at 1e-5 for an ImageNet backbone; any argument given overrides it. With a
    `workdir`, a crash loses nothing: stage 1's result is kept in
    `workdir/head.weights.h5` and each stage resumes from its `BackupAndRestore` backup.

    Args:
        model: `keras.Model` with a nested backbone (as `build_classifier` makes).
        train_data: `tf.data.Dataset` of `(images, labels)` or `(x, y)`.
        validation_data: same forms, optional.
        recipe: `Recipe`, or a name in `RECIPES` (`"small"`, `"pretrained"`).
            Defaults to `recipe_for(model)`.
        head_epochs: int. Stage 1 epochs (0 skips it). Defaults to the recipe's.
        epochs: int. Stage 2 epochs; `0` skips stage 2 (feature extraction: the head
            trained on the frozen backbone, which stays frozen). Defaults to the
            recipe's.
        head_learning_rate: float. Defaults to the recipe's.
        learning_rate: float. Stage 2 peak learning rate. Defaults to the recipe's.
        unfreeze_fraction: float. Share of the backbone's layers (from the top) to
            unfreeze. Defaults to the recipe's.
        freeze_batchnorm: bool. Keep BatchNorm frozen in stage 2. Defaults to the
            recipe's (`True`).
        backbone: str. Name of the backbone layer in `model`. Defaults to
            `"backbone"`.
        workdir: str. Checkpoints and backups; see `training_callbacks`.
        patience: int. Early stopping patience for each stage.
        verbose: `"auto"`, 0, 1 or 2; nothing is printed at 0. Defaults to `"auto"`.
        **train_kwargs: other `Recipe` fields (`min_steps`, `label_smoothing`,
            `batch_size`, ...) override the recipe's; the rest go to `train` (`seed`,
            `jit_compile`, ...).

    Returns:
        `TwoStageHistory` with `.history` (metrics over both stages) and `.recipe`.

    Raises:
        ValueError: a bad recipe field (negative epochs, a learning rate <= 0,
            `unfreeze_fraction` outside [0, 1], ...), raised before stage 1 starts; bad
            labels or NaN/inf images (see `train`).
        keras_transfer.errors.TrainingDiverged: the loss became NaN or inf.

    Example:

    >>> import numpy as np, keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_cnn", 2, weights=None, freeze_backbone=True)
    >>> x = np.random.rand(32, 28, 28, 1) * 255
    >>> y = (x[:, :14].mean(axis=(1, 2, 3)) > x[:, 14:].mean(axis=(1, 2, 3))).astype(int)
    >>> result = keras_transfer.fine_tune(model, (x, y), head_epochs=1, epochs=1,
    ...                                   recipe="small", min_steps=10, verbose=0)
    >>> len(result.history["loss"]), result.recipe.learning_rate
    (2, 0.003)
    """
    method = FineTune(
        recipe,
        backbone=backbone,
        patience=patience,
        head_epochs=head_epochs,
        epochs=epochs,
        head_learning_rate=head_learning_rate,
        learning_rate=learning_rate,
        unfreeze_fraction=unfreeze_fraction,
        freeze_batchnorm=freeze_batchnorm,
        **{key: train_kwargs.pop(key) for key in list(train_kwargs) if key in _RECIPE_FIELDS},
    )
    return method.run(model, train_data, validation_data, workdir=workdir, verbose=verbose, **train_kwargs)


_RECIPE_FIELDS = {field.name for field in dataclasses.fields(Recipe)}


@method_lib.register_method
class FineTune(method_lib.TransferMethod):
    """Two-stage fine-tuning as a transfer method (`fine_tune` is its function form).

    Stage 1 trains the head on the frozen backbone (`head_epochs`, skipped at 0), stage
    2 the top `unfreeze_fraction` of the backbone (`epochs`, skipped at 0: feature
    extraction), each a `train` call with the recipe's label smoothing, cosine decay,
    augmentation of arrays and step budget. Other methods given with it (`method=` of
    `run`, or a list) join both stages.

    Args:
        recipe: `Recipe`, a name in `RECIPES`, or `None` (`recipe_for(model)` when the
            run starts).
        backbone: str. Name of the backbone layer. Defaults to `"backbone"`.
        **overrides: `Recipe` fields (`epochs=`, `learning_rate=`, ...); `None` values
            are ignored.

    Example:

    >>> from keras_transfer.training import FineTune
    >>> method = FineTune("pretrained", epochs=3)
    >>> method.get_config()
    {'recipe': 'pretrained', 'epochs': 3}
    >>> FineTune.from_config(method.get_config()) == method
    True
    """

    name = "fine_tune"
    summary = "the head on the frozen backbone, then the top of the backbone (the recipe for the backbone)"

    def __init__(self, recipe=None, backbone="backbone", **overrides):
        if isinstance(recipe, dict):
            recipe = Recipe(**recipe)
        if isinstance(recipe, str) and recipe not in RECIPES:
            raise ValueError(
                f"recipe must be one of {sorted(RECIPES)} or a Recipe. Received: recipe={recipe!r}"
            )
        if recipe is not None and not isinstance(recipe, (str, Recipe)):
            raise ValueError(f"recipe must be a Recipe, a name or None. Received: recipe={recipe!r}")
        unknown = sorted(set(overrides) - _RECIPE_FIELDS)
        if unknown:
            raise ValueError(f"FineTune takes Recipe fields; unknown: {unknown}.")
        self.recipe = recipe
        self.backbone = backbone
        self.overrides = {key: value for key, value in overrides.items() if value is not None}
        check_recipe_fields(self.overrides)  # at once, not after stage 1
        if isinstance(recipe, Recipe):
            check_recipe_fields(dataclasses.asdict(recipe))

    def resolve(self, model):
        """The `Recipe` this method trains `model` with."""
        recipe = resolve_recipe(self.recipe, model, **self.overrides)
        check_recipe_fields(dataclasses.asdict(recipe))
        if recipe.head_epochs + recipe.epochs == 0:
            raise ValueError("Nothing to train: head_epochs and epochs are both 0.")
        return recipe

    def run(
        self,
        model,
        train_data,
        validation_data=None,
        *,
        workdir=None,
        verbose="auto",
        **train_kwargs,
    ):
        """Both stages on `model`; returns a `TwoStageHistory`. `train_kwargs` go to each
        `train` call (`seed`, `jit_compile`, `method`, ...)."""
        try:
            body = model.get_layer(self.backbone)
        except ValueError:
            raise ValueError(
                f"Model {model.name!r} has no layer named {self.backbone!r} to fine-tune. "
                f"Received: backbone={self.backbone!r}"
            ) from None
        recipe = self.resolve(model)
        verbose = output.resolve_verbose(verbose)
        arrays = not isinstance(train_data, tf.data.Dataset)
        stage_kwargs = {
            "batch_size": recipe.batch_size,
            "label_smoothing": recipe.label_smoothing,
            "cosine": recipe.cosine,
            "min_steps": recipe.min_steps,
            "patience": recipe.patience,
            "verbose": verbose,
            "augment": True if (recipe.augment and arrays) else None,
        }
        stage_kwargs.update(train_kwargs)
        head_path = os.path.join(workdir, "head.weights.h5") if workdir else None
        merged = {}

        def stage_dir(name):
            return os.path.join(workdir, name) if workdir else None

        freezing.freeze(body)
        if recipe.head_epochs > 0:
            if head_path and os.path.exists(head_path):
                stale = run_folder.stage_one_mismatch(
                    head_path, stage_dir("head"), model, train_data, validation_data
                )
                if stale is not None:
                    aside = run_folder.stale_name(head_path)
                    if files.is_chief():
                        os.replace(head_path, aside)
                    if verbose:
                        print(
                            f"Stage 1 trained again: {head_path} is from another run ({stale}); "
                            f"moved it to {aside}."
                        )
            if head_path and os.path.exists(head_path):
                model.load_weights(head_path)
                if verbose:
                    print(f"Stage 1 already done: loaded {head_path}.")
            else:
                first = train(
                    model,
                    train_data,
                    validation_data,
                    epochs=recipe.head_epochs,
                    learning_rate=recipe.head_learning_rate,
                    workdir=stage_dir("head"),
                    **stage_kwargs,
                )
                merged = {key: list(values) for key, values in first.history.items()}
                if head_path:
                    with files.atomic_path(head_path) as staging:  # a crash never leaves half a file
                        model.save_weights(staging)
        if recipe.epochs == 0:  # feature extraction: the head only, the backbone stays frozen
            return TwoStageHistory(history=merged, head_epochs=recipe.head_epochs, recipe=recipe)
        freezing.unfreeze(body, fraction=recipe.unfreeze_fraction, freeze_batchnorm=recipe.freeze_batchnorm)
        second = train(
            model,
            train_data,
            validation_data,
            epochs=recipe.head_epochs + recipe.epochs,
            initial_epoch=recipe.head_epochs,
            learning_rate=recipe.learning_rate,
            workdir=stage_dir("fine_tune"),
            **stage_kwargs,
        )
        for key, values in second.history.items():
            merged.setdefault(key, []).extend(values)
        return TwoStageHistory(history=merged, head_epochs=recipe.head_epochs, recipe=recipe)

    def get_config(self):
        config = {}
        if self.recipe is not None:
            config["recipe"] = (
                self.recipe if isinstance(self.recipe, str) else dataclasses.asdict(self.recipe)
            )
        if self.backbone != "backbone":
            config["backbone"] = self.backbone
        return {**config, **self.overrides}
