"""End-to-end workflows on image folders: train, evaluate, export, predict.

What `keras-transfer train | evaluate | export | predict` run, as functions a script can
call too. A training run lives in `<output>/<name>/train/` (checkpoints, crash backups,
`model.keras`, `labels.txt`, report and plots); exports go beside it in the TF Serving
layout `<output>/<name>/<version>/` and, for TFLite, `<output>/<name>/tflite/<version>/`.
TF Serving only loads the integer folders, so the rest never confuses it.
"""

import contextlib
import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import backbones
from keras_transfer import builders
from keras_transfer import evaluation as evaluation_lib
from keras_transfer import export as export_lib
from keras_transfer import saving
from keras_transfer import training
from keras_transfer.backbones import hub
from keras_transfer.data import image_folder
from keras_transfer.data import images as images_lib
from keras_transfer.export import tflite as tflite_lib
from keras_transfer.training import distributed
from keras_transfer.training import run_folder
from keras_transfer.utils import checks
from keras_transfer.utils import choices
from keras_transfer.utils import files

TFLITE_KINDS = choices.TFLITE_KINDS


@dataclasses.dataclass
class TrainResult:
    """What `train_from_folder` produced.

    Attributes:
        model: the trained `keras.Model`.
        class_names: list of str, in class-id order.
        history: `TwoStageHistory` (or the `History` of a one-stage run).
        evaluation: `Evaluation` on the test folder (or the validation split).
        run_dir: str. `<output>/<name>/train`.
        model_path: str. The saved `model.keras`.
        export: `ExportResult` or `None`.
        skipped: list of (path, reason): image files that could not be decoded.
    """

    model: keras.Model
    class_names: list
    history: object
    evaluation: object
    run_dir: str
    model_path: str
    export: object
    skipped: list


@dataclasses.dataclass
class ExportResult:
    """Paths written by `export_model` and the accuracy of each exported file.

    Attributes:
        saved_model: str. The SavedModel version folder.
        tflite: dict. Kind (`"float32"`, `"int8"`) -> `.tflite` path.
        accuracy: dict. `"keras"` and each TFLite kind -> accuracy on the evaluation
            data, when data was given.
    """

    saved_model: str
    tflite: dict
    accuracy: dict


def _quiet(line):
    del line


def _parse_weights(weights):
    if weights is None or str(weights).lower() in ("none", "random"):
        return None
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if path.endswith(".keras") or backbones.is_saved_model(path):
            raise ValueError(
                f"{path} is a whole model, not a weights file: weights (--weights) takes "
                "imagenet, none, or a .weights.h5 file saved from that backbone. To build on "
                f"this model, pass it as the backbone (--backbone {path})."
            )
    return weights


def _model_geometry(backbone, image_size):
    """(height, width, channels) the classifier will take."""
    if isinstance(backbone, keras.Model):
        # A source model keeps its own input; resizing it is not possible.
        shape = tuple(backbone.input.shape[1:])
        if image_size is not None and images_lib.check_image_size(image_size) != shape[:2]:
            raise ValueError(
                f"The source model takes {shape[:2]} images. Received: image_size={image_size!r}"
            )
        return shape
    if isinstance(backbone, str) and backbone.startswith("hub:"):
        size, channels = image_size or hub.DEFAULT_INPUT_SHAPE[:2], hub.DEFAULT_INPUT_SHAPE[2]
    else:
        spec = backbones.get_backbone_spec(backbone)
        size, channels = image_size or spec.default_size, spec.channels
        # Refused before the (possibly long) folder scan.
        if image_size is not None and min(images_lib.check_image_size(image_size)) < spec.min_size:
            raise ValueError(
                f"Backbone {spec.name!r} needs images of at least {spec.min_size}x{spec.min_size}: "
                f"raise image_size (--image-size {spec.min_size} or more; its default is "
                f"{spec.default_size}). Received: image_size={image_size!r}"
            )
    return images_lib.check_image_size(size) + (channels,)


RUN_FILE = "run.json"
# Training state a rerun resumes from (under `<output>/<name>/train/`).
_STATE = ("head", "fine_tune", "all", "head.weights.h5")


def _backbone_id(backbone):
    if isinstance(backbone, keras.Model):
        return f"model:{backbone.name}"
    return str(backbone)


def _schedule(method):
    """`(method, its FineTune)`: the method as given when it schedules the run with a
    `FineTune`, else composed with the default `FineTune(patience=3)`."""
    method = training.get_method(method) if method is not None else training.FineTune(patience=3)
    members = method.methods if isinstance(method, training.Compose) else [method]
    fine = next((m for m in members if isinstance(m, training.FineTune)), None)
    if fine is None:
        fine = training.FineTune(patience=3)
        method = training.Compose([fine, *members])
    return method, fine


def _recorded_method(method):
    """The method's config as `run.json` records it; a `ValueError` before any work when
    a setting is an in-memory object (e.g. `Distill(teacher=model)`), naming it."""
    config = training.method_config(method)
    try:
        json.dumps(config)
    except (TypeError, ValueError):
        members = method.methods if isinstance(method, training.Compose) else [method]
        bad = [
            f"{member.name}: {key}={type(value).__name__}"
            for member in members
            for key, value in member.get_config().items()
            if not _json_ok(value)
        ]
        raise ValueError(
            "train_from_folder records the method's settings in run.json, so each must be a "
            "number, a string (e.g. a path to a .keras file) or a list of these; these are "
            f"in-memory objects: {', '.join(bad) or config}. Save the object (model.save(path)) "
            "and pass its path instead."
        ) from None
    return config


def _json_ok(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _run_config(backbone_arg, weights, class_names, shape, pretrained, recipe, method, data=None):
    return {
        "data": data,
        "method": _recorded_method(method),
        "methods": sorted(m.name for m in getattr(method, "methods", [method])),
        "recipe": dataclasses.asdict(recipe),
        "backbone": _backbone_id(backbone_arg),
        "weights": None if weights is None else str(weights),
        "class_names": list(class_names),
        "image_size": [int(v) for v in shape],
        "stages": 2 if pretrained else 1,
    }


def _backup_epoch(directory):
    """Epochs done according to a `BackupAndRestore` backup in `directory`, or None."""
    path = os.path.join(directory, "backup", "training_metadata.json")
    try:
        with open(path) as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _differences(previous, config):
    """What changed from `previous` (a `run.json`, `None` or `{}`) to `config`, as one
    phrase, or `None` when the saved state may be loaded into this run's model."""
    if previous is None:
        return f"no {RUN_FILE} records its configuration"
    # What the saved state must match to be loaded into this model; the recipe and the
    # method's settings (epochs, rates) are recorded but may change between runs (e.g.
    # more epochs on a rerun); which methods run ("methods") may not.
    structural = [key for key in config if key not in ("recipe", "method")]
    changed = [key for key in structural if previous.get(key) != config[key]]
    if not changed:
        return None
    if not previous:
        changed = ["format"]
    return "; ".join(
        "other data (file list or sizes)"
        if key == "data"
        else f"{key} {previous.get(key)!r} -> {config[key]!r}"
        if key != "class_names"
        else f"classes {len(previous.get(key) or [])} -> {len(config[key])}"
        + ("" if len(previous.get(key) or []) != len(config[key]) else " (other names)")
        for key in changed
    )


def _read_run_file(directory):
    record = os.path.join(directory, RUN_FILE)
    if not os.path.exists(record):
        return None
    try:
        with open(record) as handle:
            previous = json.load(handle)
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _move_aside(directory):
    aside = run_folder.stale_name(directory)
    if files.is_chief():
        os.replace(directory, aside)
    return aside


def _pending_dir(run_dir):
    """Where a run of another configuration trains while `run_dir` holds a finished
    run: renamed to `run_dir` once it has succeeded."""
    return run_dir.rstrip(os.sep) + ".next"


def _prepare_run_dir(run_dir, config, log):
    """Where this run trains, after comparing its configuration with the `run.json` of a
    previous run in `run_dir`, and saying what the rerun does.

    - The same configuration: it trains in `run_dir`, resuming a crash backup (each
      stage's `best.keras` is replaced only by a better epoch).
    - Another configuration (data, classes, backbone, ...): its checkpoints could not
      be loaded into this model. If `run_dir` holds a finished run (`model.keras`), that
      run stays as it is and usable, and this run trains in `run_dir.next`, swapped in
      when it has succeeded (`_finish_run_dir`); otherwise the stale state is moved aside
      (`run_dir.stale`) and this run starts fresh in `run_dir`.

    Writes this run's `run.json` into the folder it trains in, unless a `run.json` of
    the same structure is there (it is rewritten with the outputs, at the end).
    Returns that folder.
    """
    state = [name for name in (*_STATE, "model.keras") if os.path.exists(os.path.join(run_dir, name))]
    previous = _read_run_file(run_dir)
    why = _differences(previous, config) if state else None
    work_dir = run_dir
    if why is not None:
        if os.path.exists(os.path.join(run_dir, "model.keras")):
            work_dir = _pending_dir(run_dir)
            log(
                f"The run in {run_dir} belongs to another configuration ({why}): it stays as it is "
                f"(and usable) until this run has succeeded; training in {work_dir}."
            )
            pending = _read_run_file(work_dir)
            if os.path.exists(work_dir):
                again = _differences(pending, config)
                if again is None:
                    log(f"Resuming the unfinished run of this configuration in {work_dir}.")
                else:
                    aside = _move_aside(work_dir)
                    log(
                        f"{work_dir} holds an unfinished run of another configuration ({again}): "
                        f"moved it to {aside}."
                    )
            previous = _read_run_file(work_dir)
        else:
            aside = _move_aside(run_dir)
            log(
                f"The checkpoints in {run_dir} belong to another configuration ({why}): moved them "
                f"to {aside}; starting fresh."
            )
            previous = None
    elif state:
        done = {name: _backup_epoch(os.path.join(run_dir, name)) for name in ("head", "fine_tune", "all")}
        if config["stages"] == 1 and done["all"] is not None:
            log(f"Resuming the interrupted run in {run_dir} from epoch {done['all'] + 1}.")
        elif config["stages"] == 2 and done["fine_tune"] is not None:
            log(
                f"Resuming the interrupted run in {run_dir}: stage 2 from epoch "
                f"{done['fine_tune'] + 1} (stage 1 is done)."
            )
        elif config["stages"] == 2 and os.path.exists(os.path.join(run_dir, "head.weights.h5")):
            log(f"Resuming the run in {run_dir}: stage 1 is done, starting stage 2.")
        elif config["stages"] == 2 and done["head"] is not None:
            log(f"Resuming the interrupted run in {run_dir}: stage 1 from epoch {done['head'] + 1}.")
        else:
            log(
                f"A finished run of the same configuration is in {run_dir}: training again "
                "(there is no crash backup to resume from); its best checkpoints are replaced "
                "only by better epochs, its outputs once this run has succeeded."
            )
        before = (previous or {}).get("method")
        if before is not None and before != config["method"]:
            log(
                f"The method's settings changed since that run ({before} -> {config['method']}): "
                "training with the new ones."
            )
    if files.is_chief():
        os.makedirs(work_dir, exist_ok=True)
    if previous is None or _differences(previous, config) is not None:
        _write_run_file(work_dir, config)
    return work_dir


def _write_run_file(directory, config):
    with files.atomic_path(os.path.join(directory, RUN_FILE)) as staging:
        with open(staging, "w") as handle:
            json.dump(config, handle, indent=2)


def _finish_run_dir(run_dir, work_dir, log):
    """Swaps a run trained in `run_dir.next` into `run_dir` (the previous run to
    `run_dir.stale`), once its outputs are written."""
    if work_dir == run_dir or not files.is_chief():
        return
    aside = None
    if os.path.exists(run_dir):
        aside = run_folder.stale_name(run_dir)
        os.replace(run_dir, aside)
    os.replace(work_dir, run_dir)
    log(f"This run is now in {run_dir}" + (f"; the previous run is in {aside}." if aside else "."))


def check_run_folder(run_dir, *, name_given=True):
    """Refuses a damaged crash backup in any stage folder of the training run folder
    `run_dir` (`<output>/<name>/train`, or its `.next`), before any work: a
    `ValueError` naming the file and what to do. `keras-transfer train` and
    `train_from_folder` call it first."""
    _check_backups(run_dir, name_given)


def _check_backups(run_dir, name_given):
    """Refuses a damaged crash backup in any stage folder of the run, before any work."""
    hint = (
        "pass another name= (--name) to train into a new folder"
        if name_given
        else ("pass name= (--name) to train into a new folder")
    )
    for directory in (run_dir, _pending_dir(run_dir)):
        for stage in ("head", "fine_tune", "all"):
            run_folder.check_backup(os.path.join(directory, stage, "backup"), hint=hint)


def _folder_fingerprint(data_dir, folder):
    """A hash of the training and validation files (paths relative to `data_dir`,
    sizes, labels): another data set, or other files in a split, is another run."""
    import hashlib

    digest = hashlib.sha256()
    for part in (folder.train_files, folder.validation_files):
        if part is None:
            digest.update(b"none;")
            continue
        for path, label in zip(part.paths, part.labels):
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            digest.update(f"{os.path.relpath(path, data_dir)}|{size}|{int(label)};".encode())
        digest.update(b"/")
    return digest.hexdigest()[:16]


def train_from_folder(
    data_dir,
    *,
    backbone="resnet50",
    weights="imagenet",
    method=None,
    name=None,
    output="saved_models",
    image_size=None,
    validation_split=0.2,
    test_dir=None,
    seed=0,
    export=True,
    log=print,
    strategy=None,
):
    """Trains a classifier on a class-per-folder image directory, end to end.

    The training is a transfer method (`method`, default `FineTune(patience=3)`: the
    recipe for the backbone, `training.recipe_for`), with what a real run needs around
    it: images are scanned (corrupt files are skipped and listed), split into train and
    validation with a seed, and augmented in tf.data (unless the recipe's `augment` is
    off); a pretrained backbone trains its new head (backbone frozen), then its top
    `unfreeze_fraction` of layers (BatchNorm stays frozen); a small source model trains
    every layer at once; early stopping restores the best weights, and every stage
    keeps a best checkpoint and a crash backup, so a rerun resumes. A randomly
    initialised backbone (`weights=None`) is trained whole in one stage for the recipe's
    `epochs` at its `scratch_learning_rate` (or the `learning_rate` the method sets)
    instead. The model to ship (`method.finalize(model)`) is saved as `model.keras`,
    evaluated (report, confusion matrix, learning curves) and exported. The run folder's
    `run.json` records the method's config.

    Args:
        data_dir: str. `data_dir/<class name>/<image files>`.
        backbone: str or `keras.Model`. A registry name (`keras-transfer backbones`),
            `"hub:<handle>"`, or a source model. Defaults to `"resnet50"`.
        weights: `"imagenet"`, `None`/`"none"`, or a weights file for the backbone.
            Defaults to `"imagenet"`.
        method: a `training.TransferMethod`, its name (`"fine_tune:epochs=3"`), or a
            list that composes. Recipe fields (`head_epochs`, `epochs`, `learning_rate`,
            `batch_size`, `min_steps`, `augment`, `patience`, ...) are `FineTune`'s:
            `method=FineTune(epochs=3, batch_size=16)`. A method that does not schedule
            the run itself joins the default `FineTune(patience=3)`.
        name: str. Model name in `output`. Defaults to the folder's name.
        output: str. Defaults to `"saved_models"`.
        image_size: int or (height, width). Defaults to the backbone's default size.
        validation_split: float. Share of each class held out for validation.
            Defaults to `0.2`.
        test_dir: str. A separate folder with the same classes to report on. Defaults
            to reporting on the validation split.
        seed: int. Split, shuffle, augmentation and initialisation seed.
        export: `True` (a SavedModel), `False`, or TFLite kinds to export beside the
            SavedModel (`("float32", "int8")`). Defaults to `True`.
        strategy: a `tf.distribute.Strategy`, `"mirrored"` or `"multi-worker"` (see
            `keras_transfer.training.distributed`: the model is built under its scope;
            under several workers the feature cache is off and only the chief writes).
            Defaults to `None` (one device).
        log: callable for progress lines (and Keras progress output), or `None` for
            silence. Defaults to `print`.

    Returns:
        `TrainResult`.

    Example:

    >>> import os, tempfile, numpy as np, tensorflow as tf
    >>> from keras_transfer import training, workflows
    >>> root = tempfile.mkdtemp()
    >>> for label in ("dark", "light"):
    ...     os.makedirs(os.path.join(root, "shades", label))
    ...     for i in range(6):
    ...         value = 40 * i if label == "dark" else 255 - 40 * i
    ...         tf.io.write_file(os.path.join(root, "shades", label, f"{i}.png"),
    ...                          tf.io.encode_png(tf.fill((8, 8, 1), tf.constant(value, tf.uint8))))
    >>> result = workflows.train_from_folder(
    ...     os.path.join(root, "shades"), backbone="mnist_mlp", weights=None,
    ...     method=training.FineTune(epochs=1, batch_size=4),
    ...     output=os.path.join(root, "out"), log=None)
    >>> result.class_names, os.path.basename(result.export.saved_model)
    (['dark', 'light'], '1')
    """
    method, fine = _schedule(method)
    _recorded_method(method)  # a setting run.json cannot record is refused before any work
    name_given = name is not None
    if name is None:
        name = os.path.basename(os.path.normpath(os.path.abspath(data_dir)))
        what = f"name (from the data folder {data_dir!r}; pass name= / --name)"
    else:
        what = "name"
    checks.safe_name(what, name)  # nothing is written outside `output`
    _check_backups(os.path.join(output, name, "train"), name_given)
    tflite = () if isinstance(export, bool) else tuple(export)
    verbose = "auto" if log is not None else 0
    scan_verbose = log is not None
    log = log or _quiet
    weights = _parse_weights(weights)
    backbone_arg = backbone
    strategy = distributed.resolve_strategy(strategy)  # before the scan: a bad name fails at once
    resolved = backbones.resolve_backbone(backbone, weights)
    backbone = resolved.value
    shape = _model_geometry(backbone, image_size)
    run_dir = os.path.join(output, name, "train")
    keras.utils.set_random_seed(seed)
    recipe = fine.resolve(backbone)
    batch_size, augment, patience = recipe.batch_size, recipe.augment, recipe.patience

    folder = image_folder.image_folder_datasets(
        data_dir,
        image_size=shape[:2],
        channels=shape[2],
        validation_split=validation_split,
        seed=seed,
        batch_size=batch_size,
        augment=augment,
        verbose=scan_verbose,
    )
    class_names = list(folder.class_names)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = builders.build_classifier(
            backbone,
            len(class_names),
            weights=weights,
            input_shape=shape,
        )
    model = method.build(model)  # e.g. adapters inserted: the model trained, saved and exported
    pretrained = resolved.pretrained
    config = _run_config(
        backbone_arg,
        weights,
        class_names,
        shape,
        pretrained,
        recipe,
        method,
        data=_folder_fingerprint(data_dir, folder),
    )
    # Checkpoints go to `work_dir` (`run_dir`, or `run_dir.next` beside a finished run of
    # another configuration); the outputs (model.keras, labels.txt, run.json, reports,
    # plots) are written there at the end only, once training has succeeded.
    work_dir = _prepare_run_dir(run_dir, config, log)
    # The folder pipeline yields the same decoded images every epoch unless it augments,
    # so a frozen backbone's features can be computed once (stage 1).
    train_kwargs = dict(verbose=verbose, feature_cache=not augment, strategy=strategy)
    if distributed.is_multi_worker(strategy):
        train_kwargs["feature_cache"] = False  # the strategy.run loop trains the model itself
    if pretrained and augment and recipe.head_epochs:
        log(
            "Feature cache off: augmentation is on, so every epoch sees new images "
            "(--no-augment trains the head on features computed once)."
        )
    if pretrained:
        stage2 = (
            f"the top {recipe.unfreeze_fraction:.0%} of the backbone for {recipe.epochs} "
            f"epochs at {recipe.learning_rate:g} (BatchNorm frozen)"
        )
        stages = (
            f"Stage 1: the head for {recipe.head_epochs} epochs at "
            f"{recipe.head_learning_rate:g}; stage 2: {stage2}"
            if recipe.head_epochs
            else f"One stage: {stage2}"
        )
        log(
            f"Recipe for a {resolved.recipe} backbone. {stages}; cosine decay, "
            f"label smoothing {recipe.label_smoothing:g}, at least {recipe.min_steps} steps "
            f"per stage. Checkpoints in {work_dir}."
        )
        history = method.run(model, folder.train, folder.validation, workdir=work_dir, **train_kwargs)
    else:
        rate = recipe.learning_rate if "learning_rate" in fine.overrides else recipe.scratch_learning_rate
        hooks = [m for m in getattr(method, "methods", [method]) if m is not fine]
        log(
            f"Randomly initialised backbone: training everything in one stage for "
            f"{recipe.epochs} epochs at {rate:g} (cosine decay, label smoothing "
            f"{recipe.label_smoothing:g}, at least {recipe.min_steps} steps; no head stage, so "
            f"head_epochs/--head-epochs is not used). Checkpoints in {work_dir}."
        )
        # BatchNorm from random weights in a short run: its moving statistics would stay
        # near their initial values (a chance-level model in inference mode and in every
        # export), so they are re-estimated on the training images, unaugmented.
        passes = -(-len(folder.train_files.paths) // recipe.batch_size)
        steps = recipe.epochs * training.run_length(passes, recipe.epochs, recipe.min_steps)
        recalibration = []
        if training.batchnorm_run_is_short(model, steps):
            recalibration = [
                training.RecalibrateBatchNorm(
                    folder.train_plain, batch_size=recipe.batch_size, model=model, log=log
                )
            ]
        history = training.train(
            model,
            folder.train,
            folder.validation,
            epochs=recipe.epochs,
            learning_rate=rate,
            batch_size=recipe.batch_size,
            label_smoothing=recipe.label_smoothing,
            cosine=recipe.cosine,
            min_steps=recipe.min_steps,
            workdir=os.path.join(work_dir, "all"),
            recalibrate_batchnorm=False,
            callbacks=recalibration,
            patience=patience,
            method=hooks or None,
            **train_kwargs,
        )
        ran = getattr(history, "epoch", None)
        if ran and ran[-1] + 1 < recipe.epochs:
            log(
                f"Early stopping: stopped after epoch {ran[-1] + 1} of {recipe.epochs}, val_loss had not "
                f"improved for {patience} epochs (the best epoch's weights are kept; "
                "--patience 0 turns early stopping off)."
            )
    model = method.finalize(model)

    if test_dir is not None:
        eval_data = load_labelled_folder(test_dir, model, class_names, log=log)
        eval_title = f"test folder {test_dir}"
    elif folder.validation is not None:
        eval_data = _arrays(folder.validation)
        eval_title = "validation split"
    else:
        eval_data = None
    evaluation = None
    # Every output is written to a staging folder and moved in when all are written: an
    # interrupted or failed end leaves the previous run's outputs as they were.
    with files.atomic_path(work_dir, is_dir=True) as staging:
        model.save(os.path.join(staging, "model.keras"))
        export_lib.write_labels(staging, class_names)
        _write_run_file(staging, config)
        if eval_data is not None:
            evaluation = report_evaluation(
                model, eval_data, class_names, staging, title=eval_title, log=log, shown_as=run_dir
            )
            evaluation_lib.plot_history(
                history, os.path.join(staging, "learning_curves.png"), title=f"{name}: {model.name}"
            )
    _finish_run_dir(run_dir, work_dir, log)
    model_path = os.path.join(run_dir, "model.keras")
    log(f"saved {model_path}")
    exported = None
    if export:
        calibration = _calibration_sample(folder.train_files, shape, seed) if tflite else None
        exported = export_model(
            model,
            os.path.join(output, name),
            class_names=class_names,
            tflite=tflite,
            calibration_data=calibration,
            eval_data=eval_data,
            eval_title=eval_title if eval_data is not None else None,
            log=log,
        )
    return TrainResult(
        model=model,
        class_names=class_names,
        history=history,
        evaluation=evaluation,
        run_dir=run_dir,
        model_path=model_path,
        export=exported,
        skipped=list(folder.skipped),
    )


def find_learning_rate_from_folder(
    data_dir,
    *,
    backbone="resnet50",
    weights="imagenet",
    method=None,
    image_size=None,
    validation_split=0.2,
    seed=0,
    steps=100,
    min_lr=1e-7,
    max_lr=10.0,
    plot=None,
    log=print,
):
    """The learning-rate finder on the model `train_from_folder` would train.

    The model is built exactly as `train_from_folder` builds it (the same backbone
    resolution, geometry, folder pipeline and split, `build_classifier`, and
    `method.build`), and measured on the training split (never the validation split)
    with the recipe's batch size, label smoothing and augmentation: a pretrained
    backbone's first stage (the head on the frozen backbone) when the recipe has one,
    else the whole model. Nothing is written but the plot.

    Args:
        data_dir, backbone, weights, method, image_size, validation_split, seed: as
            `train_from_folder`'s.
        steps, min_lr, max_lr: as `training.find_learning_rate`'s.
        plot: str. Where to save the plot. Defaults to `None`.
        log: callable for progress lines, or `None`. Defaults to `print`.

    Returns:
        `training.LRFinderResult`.

    Example:

    >>> import os, tempfile, numpy as np, tensorflow as tf
    >>> from keras_transfer import workflows
    >>> root = tempfile.mkdtemp()
    >>> for label in ("dark", "light"):
    ...     os.makedirs(os.path.join(root, label))
    ...     for i in range(6):
    ...         value = 40 * i if label == "dark" else 255 - 40 * i
    ...         tf.io.write_file(os.path.join(root, label, f"{i}.png"),
    ...                          tf.io.encode_png(tf.fill((8, 8, 1), tf.constant(value, tf.uint8))))
    >>> result = workflows.find_learning_rate_from_folder(
    ...     root, backbone="mnist_mlp", weights=None, steps=8, log=None)
    >>> len(result.losses) <= 8 and result.suggestion is not None
    True
    """
    method, fine = _schedule(method)
    log = log or _quiet
    weights = _parse_weights(weights)
    resolved = backbones.resolve_backbone(backbone, weights)
    backbone = resolved.value
    shape = _model_geometry(backbone, image_size)
    keras.utils.set_random_seed(seed)
    recipe = fine.resolve(backbone)
    folder = image_folder.image_folder_datasets(
        data_dir,
        image_size=shape[:2],
        channels=shape[2],
        validation_split=validation_split,
        seed=seed,
        batch_size=recipe.batch_size,
        augment=recipe.augment,
        verbose=log is not _quiet,
    )
    model = builders.build_classifier(backbone, len(folder.class_names), weights=weights, input_shape=shape)
    model = method.build(model)
    stage = "the whole model"
    if resolved.pretrained and recipe.head_epochs:
        model.get_layer(fine.backbone).trainable = False
        stage = "the head on the frozen backbone (stage 1)"
    hooks = [m for m in getattr(method, "methods", [method]) if m is not fine]
    log(
        f"LR finder on {stage}: {steps} steps from {min_lr:g} to {max_lr:g}, batch {recipe.batch_size}, "
        f"label smoothing {recipe.label_smoothing:g}, on the training split."
    )
    result = training.find_learning_rate(
        model,
        folder.train,
        min_lr=min_lr,
        max_lr=max_lr,
        steps=steps,
        batch_size=recipe.batch_size,
        label_smoothing=recipe.label_smoothing,
        method=hooks or None,
        seed=seed,
        plot=plot,
        verbose=0,
    )
    log(result.summary())
    rate = recipe.head_learning_rate if stage.startswith("the head") else recipe.scratch_learning_rate
    if resolved.pretrained and not recipe.head_epochs:
        rate = recipe.learning_rate
    log(f"the recipe's rate for this stage: {rate:g}" + (f"; plot {plot}" if plot else ""))
    return result


def _calibration_sample(files, shape, seed, size=256):
    """int8 calibration data: a random sample of training images, through tf.data."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(files.paths))[:size]
    return image_folder.files_dataset(
        [files.paths[i] for i in chosen],
        image_size=shape[:2],
        channels=shape[2],
        batch_size=32,
        cache=False,
    )


def _arrays(dataset):
    """Concatenates a dataset of (images, labels) batches into arrays."""
    batches = [(np.asarray(x), np.asarray(y)) for x, y in dataset]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def load_trained(path):
    """Loads a trained classifier and its class names.

    Args:
        path: str. A `model.keras` file, or a training run folder that holds one
            (`<output>/<name>/train` or `<output>/<name>`). Class names are read from
            `labels.txt` beside the model (`"0"`, `"1"`, ... without one).

    Returns:
        (`keras.Model`, list of class names).
    """
    model_path = _model_file(path)
    if model_path is None:
        raise FileNotFoundError(
            f"No Keras model at {path!r}: pass a .keras file or a training run folder "
            "(`<output>/<name>/train`, written by `keras-transfer train`)."
        )
    model = saving.load_model(model_path)
    labels = os.path.join(os.path.dirname(model_path), "labels.txt")
    num_classes = int(model.output.shape[-1])
    if os.path.exists(labels):
        class_names = export_lib.read_labels(os.path.dirname(model_path))
    else:
        class_names = [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{labels} lists {len(class_names)} classes but the model has {num_classes}.")
    return model, class_names


def load_labelled_folder(directory, model, class_names, log=print):
    """Reads a class-per-folder directory as arrays `(x, y)` in the model's class ids.

    The folder's class names must be among the model's; a folder may hold only some
    of them (a partial test set). Files that cannot be decoded are skipped and listed.
    """
    shape = tuple(model.input.shape[1:])
    loaded = image_folder.load_image_folder(
        directory,
        image_size=shape[:2],
        channels=shape[2],
        class_names=list(class_names),
        verbose=log not in (None, _quiet),
    )
    return loaded.x, loaded.y


def report_evaluation(model, data, class_names, directory, title="evaluation data", log=print, shown_as=None):
    """Evaluates, prints the report and writes report.txt, metrics.json and confusion.png
    (to `directory`; the log line names `shown_as` instead when given, e.g. the final
    folder of a staging one)."""
    log = log or _quiet
    result = evaluation_lib.evaluate_classifier(model, data, class_names=class_names)
    log(f"Evaluation on the {title}:\n{result}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "report.txt"), "w") as handle:
        handle.write(f"{title}\n{result}\n")
    with open(os.path.join(directory, "metrics.json"), "w") as handle:
        json.dump(
            {"accuracy": result.accuracy, "report": result.report_dict, "data": title}, handle, indent=2
        )
    evaluation_lib.plot_confusion_matrix(result, os.path.join(directory, "confusion.png"))
    log(f"wrote report.txt, metrics.json and confusion.png to {shown_as or directory}")
    return result


def evaluate_model(model_path, data_dir, *, output=None, log=print):
    """Evaluates a trained model on a class-per-folder directory.

    Writes `report.txt`, `metrics.json` and `confusion.png` to `output` (defaults to
    `<model folder>/evaluation`). Returns the `Evaluation`.
    """
    model, class_names = load_trained(model_path)
    data = load_labelled_folder(data_dir, model, class_names, log=log)
    directory = output or os.path.join(
        os.path.dirname(os.path.abspath(_model_file(model_path))), "evaluation"
    )
    return report_evaluation(model, data, class_names, directory, title=f"folder {data_dir}", log=log)


def default_name(model_path):
    """The model name a training run was saved under (`<output>/<name>/train/...`)."""
    path = os.path.abspath(_model_file(model_path) or model_path)
    folder = os.path.dirname(path)
    if os.path.basename(folder) == "train":
        return os.path.basename(os.path.dirname(folder))
    return os.path.splitext(os.path.basename(path))[0]


def _model_file(path):
    """The `.keras` file at `path`, or in the training run folder `path`, or `None`."""
    for candidate in (path, os.path.join(path, "model.keras"), os.path.join(path, "train", "model.keras")):
        if os.path.isfile(candidate) and candidate.endswith(".keras"):
            return candidate
    return None


def export_model(
    model,
    base_dir,
    *,
    class_names=None,
    version=None,
    tflite=(),
    calibration_data=None,
    eval_data=None,
    eval_title="the evaluation data",
    log=print,
):
    """Exports a SavedModel (TF Serving) and optional TFLite files, and checks them.

    The SavedModel goes to `base_dir/<version>/`; TFLite files to
    `base_dir/tflite/<version>/model_<kind>.tflite` with a `labels.txt`. With
    `eval_data`, the accuracy of the Keras model and of each TFLite file on it is
    printed side by side.

    Args:
        model: `keras.Model`.
        base_dir: str. `<output>/<name>`.
        class_names: list of str.
        version: int. Defaults to the next version.
        tflite: iterable of `"float32"` and/or `"int8"`.
        calibration_data: `(x, y)` or images, for int8 calibration (required for it).
        eval_data: `(x, y)` arrays to check the accuracy on.
        eval_title: str. What `eval_data` is, for the accuracy line (e.g.
            `"validation split"`, `"folder flowers/"`).
        log: callable. Defaults to `print`.

    Returns:
        `ExportResult`.
    """
    log = log or _quiet
    kinds = list(tflite)
    bad = [kind for kind in kinds if kind not in TFLITE_KINDS]
    if bad:
        raise ValueError(f"TFLite kinds are {TFLITE_KINDS}. Received: tflite={kinds!r}")
    if "int8" in kinds and calibration_data is None:
        raise ValueError("int8 TFLite needs calibration_data (a sample of training images).")
    path = export_lib.export_saved_model(model, base_dir, version=version, class_names=class_names)
    log(f"SavedModel exported to {path}")
    version = int(os.path.basename(path))
    written = {}
    if kinds:
        directory = os.path.join(base_dir, "tflite", str(version))
        # Written to a staging folder and moved into place: a failed conversion leaves
        # no tflite/<version>/ behind (a mixed-precision model converts from a float32
        # copy, see tflite.float32_copy).
        with files.atomic_path(directory, is_dir=True) as staging:
            export_lib.write_labels(staging, export_lib.read_labels(path))
            float_model = tflite_lib.float32_copy(model)
            for kind in kinds:
                tflite_lib.export_tflite(
                    float_model,
                    os.path.join(staging, f"model_{kind}.tflite"),
                    quantization="int8" if kind == "int8" else None,
                    representative_data=calibration_data,
                )
        for kind in kinds:
            file = os.path.join(directory, f"model_{kind}.tflite")
            written[kind] = file
            log(f"TFLite {kind} exported to {file} ({os.path.getsize(file) / 1e6:.2f} MB)")
    accuracy = {}
    if eval_data is not None:
        x, y = eval_data
        accuracy["keras"] = evaluation_lib.evaluate_classifier(model, (x, y)).accuracy
        for kind, file in written.items():
            accuracy[kind] = tflite_lib.evaluate_tflite(file, x, y)
        title = eval_title or "the evaluation data"
        title = title if title.startswith("the ") else f"the {title}"
        log(f"accuracy on {title}: " + ", ".join(f"{kind} {value:.4f}" for kind, value in accuracy.items()))
    return ExportResult(saved_model=path, tflite=written, accuracy=accuracy)


@dataclasses.dataclass
class Prediction:
    """Top classes of one image file (`error` says why a file could not be read)."""

    path: str
    top: list
    error: str = None


def expand_image_paths(paths):
    """`paths` with each folder replaced by the image files under it (recursively,
    sorted; PNG, JPEG, GIF, BMP by extension). Files are kept as given."""
    expanded = []
    for path in paths:
        if not os.path.isdir(path):
            expanded.append(path)
            continue
        found = []
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            found.extend(
                os.path.join(folder, name)
                for name in sorted(names)
                if name.lower().endswith(images_lib.IMAGE_EXTENSIONS)
            )
        if not found:
            raise FileNotFoundError(f"No image files (PNG, JPEG, GIF, BMP) under {path}.")
        expanded.extend(found)
    return expanded


def predict_files(model_path, files, *, top=3):
    """Top classes for image files, from a `.keras` model, a SavedModel or a `.tflite`.

    Files that are missing or cannot be decoded get an `error` instead of classes; the
    others are still predicted.

    Args:
        model_path: str. A `.keras` file or training run folder, a SavedModel version
            folder (its `serving_default` signature decodes the files' bytes itself),
            or a `.tflite` file (with `labels.txt` beside it).
        files: list of image paths; a folder stands for every image file under it.
        top: int. Classes to return per file. Defaults to `3`.

    Returns:
        list of `Prediction(path, top=[(class name, probability), ...], error)`, in
        `files` order, best class first.
    """
    files = expand_image_paths(list(files))
    if not files:
        raise ValueError("No image files to predict.")
    top = checks.positive_int("top", top)
    saved_model = os.path.isdir(model_path) and os.path.exists(os.path.join(model_path, "saved_model.pb"))
    if saved_model:
        served = tf.saved_model.load(model_path).signatures["serving_default"]
        class_names = export_lib.read_labels(model_path)
    elif model_path.endswith(".tflite"):
        runner = tflite_lib.TFLiteClassifier(model_path)
        shape = tuple(runner.input_shape[1:])
        class_names = export_lib.read_labels(os.path.dirname(model_path))
    else:
        model, class_names = load_trained(model_path)
        shape = tuple(model.input.shape[1:])
    errors = {f: "no such file" for f in files if not os.path.isfile(f)}
    present = [f for f in files if f not in errors]
    if present:
        errors.update(
            image_folder.check_image_files(present, channels=3 if saved_model else shape[2], verbose=False)
        )
    readable = [f for f in present if f not in errors]
    probabilities = np.zeros((0, len(class_names)), np.float32)
    if readable and saved_model:
        contents = tf.constant([tf.io.read_file(f).numpy() for f in readable])
        probabilities = served(image_bytes=contents)["probabilities"].numpy()
    elif readable:
        x = image_folder.files_dataset(
            readable, image_size=shape[:2], channels=shape[2], batch_size=256, cache=False
        )
        x = np.concatenate([batch.numpy() for batch in x])
        if model_path.endswith(".tflite"):
            probabilities = runner.predict(x)
        else:
            probabilities = model.predict(x, verbose=0)
    by_path = dict(zip(readable, probabilities))
    top = min(top, len(class_names))
    results = []
    for path in files:
        if path in errors:
            results.append(Prediction(path, [], errors[path]))
            continue
        row = by_path[path]
        best = np.argsort(-row)[:top]
        results.append(Prediction(path, [(class_names[i], float(row[i])) for i in best]))
    return results
