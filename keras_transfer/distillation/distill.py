"""Knowledge distillation as a transfer method: `Distill`, on `keras.distillation`.

A student (the model given to `train`) learns from the hard labels and from a teacher's
temperature-softened outputs (Hinton et al.), optionally also from a teacher layer's
features. With the same images every epoch (no augmentation), the teacher runs once over
the data and its outputs are reused every epoch, as the feature cache reuses a frozen
backbone's outputs; otherwise it runs in every step. Both give the same student.

The toolkit's classifiers output softmax probabilities. Softmax is shift-invariant, so
`log(p)` is a valid logit vector for `p`: the softened distribution of a model with
probabilities `p` is `softmax(log(p) / T)`, that is `p ** (1/T)` normalised. This works
for any teacher, including a SavedModel that only serves probabilities, and is exact up
to the clip of `p` at 1e-30 (a probability that underflowed to zero).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import data as data_lib
from keras_transfer.losses import WithPenalties
from keras_transfer.training import method as method_lib
from keras_transfer.utils import keras_internals

IMAGES = "images"  # the key of the images in a batch that carries teacher outputs
TEACHER = "teacher"  # the key of the teacher's outputs in such a batch
FINAL_OUTPUT = "final_output"  # the teacher's output among them (Keras's Distiller name)
_SMALLEST_PROBABILITY = 1e-30


def outputs_probabilities(model):
    """Whether `model` ends in a softmax (probabilities) rather than logits."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, keras.layers.Softmax):
        return True
    return getattr(last, "activation", None) is keras.activations.softmax


def as_logits(outputs, probabilities):
    """`log(outputs)` (clipped at 1e-30) when `outputs` are probabilities, else `outputs`."""
    if not probabilities:
        return outputs
    outputs = keras.ops.cast(outputs, "float32")
    return keras.ops.log(keras.ops.clip(outputs, _SMALLEST_PROBABILITY, 1.0))


@keras.saving.register_keras_serializable(package="keras_transfer")
class SoftenedDistillation(keras.distillation.LogitsDistillation):
    """`keras.distillation.LogitsDistillation` for models that output probabilities.

    The loss is `T**2 * KL(softmax(t / T) || softmax(s / T))`, averaged over the batch,
    with `t` and `s` the teacher's and the student's logits; a model that outputs
    probabilities `p` has the logits `log(p)` (softmax is shift-invariant). Keras's
    `KLDivergence` clips both softened distributions to `[1e-7, 1]`.

    Args:
        temperature: float. Softens both distributions. Defaults to `3.0`.
        teacher_probabilities: bool. The teacher outputs probabilities. Defaults to `True`.
        student_probabilities: bool. The student outputs probabilities. Defaults to `True`.
        loss: as in `LogitsDistillation`. Defaults to `keras.losses.KLDivergence()`
            (also for `"kl_divergence"`: Keras's `LogitsDistillation` would apply that
            string's function to the tempered logits, not to their softmax).

    Example:

    >>> import numpy as np
    >>> from keras_transfer.distillation import SoftenedDistillation
    >>> p = np.array([[0.7, 0.2, 0.1]], "float32")
    >>> round(float(SoftenedDistillation(3.0).compute_loss(p, p)), 6)
    0.0
    """

    def __init__(self, temperature=3.0, teacher_probabilities=True, student_probabilities=True, loss=None):
        self.teacher_probabilities = bool(teacher_probabilities)
        self.student_probabilities = bool(student_probabilities)
        if loss is None or loss == "kl_divergence":
            # Keras applies the T**2-scaled softmax KL only for a `KLDivergence` instance:
            # the string (its default) gives the `kl_divergence` function, which it
            # applies to the tempered logits themselves (keras 3.15.1).
            loss = keras.losses.KLDivergence()
        super().__init__(temperature=temperature, loss=loss)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return super().compute_loss(
            as_logits(teacher_outputs, self.teacher_probabilities),
            as_logits(student_outputs, self.student_probabilities),
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher_probabilities=self.teacher_probabilities, student_probabilities=self.student_probabilities
        )
        return config


def _layer_names(losses, *attributes):
    """The layer names the losses read, in order, without repeats."""
    names = []
    for loss in losses:
        for attribute in attributes or ("teacher_layer_name", "student_layer_name"):
            layer = getattr(loss, attribute, None)
            if layer and layer not in names:
                names.append(layer)
    return names


def _single(tensors):
    return tensors[0] if len(tensors) == 1 else tensors


def _images(x):
    return x[IMAGES] if isinstance(x, dict) and IMAGES in x else x


@keras.saving.register_keras_serializable(package="keras_transfer")
class Distiller(keras.distillation.Distiller):
    """`keras.distillation.Distiller` that also trains on teacher outputs computed once.

    A batch's inputs are either images (the teacher runs on them in the step, as in
    Keras's `Distiller`) or `{"images": images, "teacher": outputs}`, where `outputs` is
    what `teacher_outputs(images)` returned beforehand (`compute_teacher_outputs`): the
    step then never runs the teacher. The student's hard-label loss is the compiled
    `loss`; penalties of a `losses.WithPenalties` loss are added unweighted (not scaled by
    `student_loss_weight`), and so are the student's own regularisation losses.

    Args:
        teacher: `keras.Model`. Frozen by the distiller.
        student: `keras.Model`. The model that trains.
        distillation_losses: `keras.distillation.DistillationLoss` or a list of them.
        distillation_loss_weights: list of floats, one per loss. Defaults to ones.
        student_loss_weight: float in [0, 1]. The hard-label share `alpha` of the loss
            `alpha * hard + (1 - alpha) * distillation`. Defaults to `0.5`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.distillation import Distiller, SoftenedDistillation
    >>> teacher = keras_transfer.build_classifier("mnist_cnn", 3, weights=None)
    >>> student = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> distiller = Distiller(teacher, student, SoftenedDistillation(3.0))
    >>> sorted(distiller.teacher_outputs(np.zeros((2, 28, 28, 1))))
    ['final_output']
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses,
        distillation_loss_weights=None,
        student_loss_weight=0.5,
        name="distiller",
        **kwargs,
    ):
        losses = (
            list(distillation_losses)
            if isinstance(distillation_losses, (list, tuple))
            else [distillation_losses]
        )
        weights = (
            [1.0] * len(losses) if distillation_loss_weights is None else list(distillation_loss_weights)
        )
        if len(weights) != len(losses):
            raise ValueError(
                f"distillation_loss_weights needs one weight per loss ({len(losses)}). "
                f"Received: distillation_loss_weights={distillation_loss_weights!r}"
            )
        # Keras's Distiller reads a named layer's `output`, which for a nested model (the
        # classifiers' `backbone`) is its own graph's: it is given the losses without
        # layer names, and the extractors below read the outputs where the layers are called.
        plain = [loss for loss in losses if not _layer_names([loss])]
        super().__init__(
            teacher,
            student,
            plain or [keras.distillation.FeatureDistillation()],
            student_loss_weight=student_loss_weight,
            name=name,
            **kwargs,
        )
        for loss in losses:
            loss.validate_model_compatibility(teacher, student)
        self.distillation_losses = losses
        self.distillation_loss_weights = weights
        teacher_layers = _layer_names(losses, "teacher_layer_name")
        student_layers = _layer_names(losses, "student_layer_name")
        self.teacher_outputs = keras.Model(
            _single(teacher.inputs),
            {
                FINAL_OUTPUT: teacher.outputs[0],
                **{n: keras_internals.node_output(teacher.get_layer(n)) for n in teacher_layers},
            },
            name=f"{name}_teacher_outputs",
        )
        self.student_features = (
            keras.Model(
                _single(student.inputs),
                {n: keras_internals.node_output(student.get_layer(n)) for n in student_layers},
                name=f"{name}_student_features",
            )
            if student_layers
            else None
        )
        self.student_loss_fn = None

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)
        self.student_loss_fn = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss

    def call(self, inputs, training=None, **kwargs):
        return self.student(_images(inputs), training=training, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        images = _images(x)
        if y_pred is None:
            y_pred = self(images, training=training)
        hard, penalties = self.student_loss_fn, []
        if isinstance(hard, WithPenalties):
            hard, penalties = hard.loss, hard.penalties
        student_loss = 0.0
        if self.student_loss_weight > 0.0 and y is not None:
            if isinstance(hard, keras.losses.Loss):
                student_loss = hard(y, y_pred, sample_weight=sample_weight)
            else:  # a loss function ("sparse_categorical_crossentropy"): per-example values
                per_example = hard(y, y_pred)
                if sample_weight is not None:
                    per_example = per_example * keras.ops.cast(sample_weight, per_example.dtype)
                student_loss = keras.ops.mean(per_example)
        distillation_loss = 0.0
        if self.student_loss_weight < 1.0:
            if isinstance(x, dict) and TEACHER in x:
                teacher = x[TEACHER]
            else:
                teacher = self.teacher_outputs(images, training=False)
            student = {FINAL_OUTPUT: y_pred}
            if self.student_features is not None:
                student.update(self.student_features(images, training=training))
            for loss, weight in zip(self.distillation_losses, self.distillation_loss_weights):
                teacher_value = teacher[getattr(loss, "teacher_layer_name", None) or FINAL_OUTPUT]
                student_value = student[getattr(loss, "student_layer_name", None) or FINAL_OUTPUT]
                distillation_loss = distillation_loss + weight * loss.compute_loss(
                    teacher_value, student_value
                )
        total = self.student_loss_weight * student_loss + (1.0 - self.student_loss_weight) * distillation_loss
        for penalty in penalties:
            total = total + keras.ops.cast(penalty(), "float32")
        if self.student.losses:
            total = total + keras.ops.sum(self.student.losses)
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distillation_loss)
        self.total_loss_tracker.update_state(total)
        return total


def load_teacher(teacher):
    """A teacher as a `keras.Model`, and whether it outputs probabilities.

    Args:
        teacher: a `keras.Model`; a `.keras` file (`keras_transfer.load_model`); or a
            SavedModel folder exported by `export_saved_model` (a version folder with
            `saved_model.pb`, or its parent: the highest version), called through its
            `serve` signature (`keras.layers.TFSMLayer`), which outputs `probabilities`.

    Returns:
        `(model, probabilities)`.

    Raises:
        ValueError: for anything else, saying what was received.
    """
    if isinstance(teacher, keras.Model):
        return teacher, outputs_probabilities(teacher)
    if not isinstance(teacher, (str, os.PathLike)):
        raise ValueError(
            "teacher must be a keras.Model, a .keras file or a SavedModel folder. "
            f"Received: teacher={teacher!r}"
        )
    path = os.fspath(teacher)
    if os.path.isfile(path) and path.endswith(".keras"):
        from keras_transfer.saving import load_model

        model = load_model(path, compile=False)
        return model, outputs_probabilities(model)
    version = saved_model_version(path)
    if version is None:
        raise ValueError(
            "teacher must be a .keras file or a SavedModel folder (with saved_model.pb, or "
            f"numbered versions of one). Received: teacher={teacher!r}"
        )
    layer = keras.layers.TFSMLayer(version, call_endpoint="serve", name="saved_model_teacher")
    signature = tf.saved_model.load(version).signatures["serve"]
    (input_name, spec), *others = signature.structured_input_signature[1].items()
    if others or "probabilities" not in signature.structured_outputs:
        raise ValueError(
            "A SavedModel teacher needs a `serve` signature with one image input and a "
            f"`probabilities` output, as export_saved_model writes. Received: teacher={teacher!r}"
        )
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=input_name)
    outputs = layer(inputs)["probabilities"]
    return keras.Model(inputs, outputs, name="teacher"), True


def saved_model_version(path):
    """`path` if it holds `saved_model.pb`, else its highest numbered version folder
    that does, else `None`."""
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
    ]
    return os.path.join(path, str(max(versions))) if versions else None


def compute_teacher_outputs(teacher_outputs, images, *, batch_size=256, verbose=0):
    """Runs `teacher_outputs` (a `Distiller.teacher_outputs` model) once over `images`
    (an array) in batches, in inference mode; returns `{name: array}`."""
    predict = tf.function(lambda batch: teacher_outputs(batch, training=False), reduce_retracing=True)
    progress = keras.utils.Progbar(len(images), unit_name="image") if verbose else None
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        parts.append({name: value.numpy() for name, value in predict(tf.constant(batch)).items()})
        if progress is not None:
            progress.update(start + len(batch))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _arrays(data, model, batch_size):
    """`(images, labels)` float32 / int64 arrays from arrays or a dataset of batches,
    checked against `model` (`as_dataset`)."""
    from keras_transfer.training.fit import as_dataset

    checked = as_dataset(data, model, batch_size=batch_size)
    if not isinstance(data, tf.data.Dataset):
        x = np.asarray(data[0], np.float32)
        return (x[..., None] if x.ndim == 3 else x), np.asarray(data[1]).astype(np.int64)
    images, labels = [], []
    for batch_images, batch_labels in checked:
        images.append(batch_images.numpy().astype(np.float32))
        labels.append(batch_labels.numpy().astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _cached_dataset(x, y, outputs, batch_size, *, shuffle=False, seed=None):
    """The batches of `({"images": x, "teacher": outputs}, y)`: the example order of
    `make_dataset` with the same seed (cache, shuffle, batch)."""
    ds = tf.data.Dataset.from_tensor_slices(({IMAGES: x, TEACHER: outputs}, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data_lib.batch_and_augment(ds, batch_size, drop_remainder=shuffle and len(x) >= batch_size)


def _parse_features(features):
    if features is None:
        return None
    if (
        isinstance(features, (tuple, list))
        and len(features) == 2
        and all(isinstance(f, str) for f in features)
    ):
        teacher_layer, student_layer = features
    elif isinstance(features, str) and features.count(":") <= 1 and features.strip(":"):
        teacher_layer, _, student_layer = features.partition(":")
        student_layer = student_layer or teacher_layer
    else:
        raise ValueError(
            "features must be None, a layer name (the same in teacher and student), "
            "'teacher_layer:student_layer' or a pair of names. "
            f"Received: features={features!r}"
        )
    if not teacher_layer or not student_layer:
        raise ValueError(f"features names an empty layer. Received: features={features!r}")
    return f"{teacher_layer}:{student_layer}"


def _number(name, value, low, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number. Received: {name}={value!r}")
    value = float(value)
    if value < low or (low_open and value == low) or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"{name} must be in {bounds}. Received: {name}={value!r}")
    return value


class _RestoreTrainable(keras.callbacks.Callback):
    """Gives a teacher back the `trainable` flags it had before the distiller froze it."""

    def __init__(self, teacher):
        super().__init__()
        self.layers = [(layer, layer.trainable) for layer in keras_internals.flatten_layers(teacher)]
        self.variables = [(variable, variable.trainable) for variable in teacher.weights]

    def on_train_end(self, logs=None):
        for layer, trainable in self.layers:
            layer.trainable = trainable
        for variable, trainable in self.variables:
            variable.trainable = trainable


@method_lib.register_method
class Distill(method_lib.TransferMethod):
    """Knowledge distillation: the student (the model `train` is given) learns from the
    hard labels and from a teacher's temperature-softened outputs, optionally also from
    one of its layers.

    The loss of each step is `alpha * CE(y, s) + (1 - alpha) * T**2 * KL(softmax(t / T)
    || softmax(s / T))` with `alpha = student_loss_weight` and `t`, `s` the logits of
    teacher and student (`log` of their probabilities for softmax models; see the module
    docstring), plus `feature_weight * (1 - alpha) * MSE` of the `features` layers. It is
    fitted as a `Distiller` (`keras.distillation.Distiller`). The teacher never changes:
    the distiller freezes it, and a teacher given in memory gets its `trainable` flags
    back when the run ends.

    With `cache` on, the teacher runs once over the training (and validation) images
    and its outputs ride along with the images every epoch, instead of running in
    every step. The student trains the same either way (same seed, same batches) up to
    float round-off.

    Composes with `FineTune` (each stage distills; `train_from_folder` and the CLI
    compose it so), not with `FeatureCache` (both choose the fitted model).

    Args:
        teacher: `keras.Model`, a `.keras` file, or a SavedModel folder written by
            `export_saved_model` (a version folder, or its parent: the highest
            version). Its input and output shapes must match the student's. A model in
            memory stays in the config as the object itself: such a config cannot be
            written to JSON (a run's `run.json`); give a path for that.
        temperature: float > 0. Softens both distributions. Defaults to `3.0`.
        student_loss_weight: float in [0, 1]. The hard-label share `alpha`.
            Defaults to `0.5`.
        features: `None`, a layer name present in both models, `"teacher:student"`
            layer names, or a pair of them: also distil that layer's output (MSE; the
            two outputs must have the same shape). A SavedModel teacher has no layers
            to offer. Defaults to `None`.
        feature_weight: float >= 0. Weight of the feature loss against the softened
            outputs' (1). Defaults to `1.0`.
        cache: `"auto"` (arrays without augmentation), `True` (also a
            `tf.data.Dataset` that yields the same images every epoch: it is read once
            into memory and reshuffled each epoch) or `False` (the teacher runs every
            step). Defaults to `"auto"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.distillation import Distill
    >>> teacher = keras_transfer.build_classifier("mnist_cnn", 2, weights=None)
    >>> student = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> x, y = np.random.rand(16, 28, 28, 1) * 255, np.array([0, 1] * 8)
    >>> before = teacher.get_weights()[0].copy()
    >>> history = keras_transfer.train(student, (x, y), epochs=1, method=Distill(teacher), verbose=0)
    >>> sorted(k for k in history.history if "loss" in k)
    ['distillation_loss', 'loss', 'student_loss', 'total_loss']
    >>> bool((teacher.get_weights()[0] == before).all())
    True
    >>> Distill(teacher, temperature=4).get_config()["temperature"]
    4.0

    Reference:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531) (knowledge distillation)
    - [Romero et al., 2015](https://arxiv.org/abs/1412.6550) (FitNets: feature distillation)
    """

    name = "distill"
    summary = "knowledge distillation: a teacher's temperature-softened outputs plus the hard labels"

    def __init__(
        self,
        teacher=None,
        temperature=3.0,
        student_loss_weight=0.5,
        features=None,
        feature_weight=1.0,
        cache="auto",
    ):
        if teacher is None:
            raise ValueError(
                "Distill needs a teacher: a keras.Model, a .keras file or a SavedModel folder "
                "(--method distill:teacher=PATH). Received: teacher=None"
            )
        if not isinstance(teacher, keras.Model):
            if not isinstance(teacher, (str, os.PathLike)):
                raise ValueError(
                    "teacher must be a keras.Model, a .keras file or a SavedModel folder. "
                    f"Received: teacher={teacher!r}"
                )
            path = os.fspath(teacher)
            if not (os.path.isfile(path) and path.endswith(".keras")) and saved_model_version(path) is None:
                raise ValueError(
                    "teacher must be a .keras file or a SavedModel folder (with saved_model.pb, "
                    f"or numbered versions of one). Received: teacher={teacher!r}"
                )
            teacher = path
        if cache not in ("auto", True, False):
            raise ValueError(f"cache must be 'auto', True or False. Received: cache={cache!r}")
        self.teacher = teacher
        self.temperature = _number("temperature", temperature, 0.0, low_open=True)
        self.student_loss_weight = _number("student_loss_weight", student_loss_weight, 0.0, 1.0)
        self.features = _parse_features(features)
        self.feature_weight = _number("feature_weight", feature_weight, 0.0)
        self.cache = cache
        self._loaded = None
        self._restore = None

    @property
    def teacher_model(self):
        """The teacher as a `keras.Model` (loaded once from its path)."""
        return self.load()[0]

    def load(self):
        """`(teacher model, whether it outputs probabilities)`, loaded once."""
        if self._loaded is None:
            self._loaded = load_teacher(self.teacher)
        return self._loaded

    def distiller(self, student):
        """The `Distiller` of `student` and the teacher with this method's losses."""
        teacher, probabilities = self.load()
        if tuple(teacher.outputs[0].shape[1:]) != tuple(student.outputs[0].shape[1:]):
            raise ValueError(
                f"The teacher's outputs have shape {tuple(teacher.outputs[0].shape[1:])} and the "
                f"student's {tuple(student.outputs[0].shape[1:])}: they must predict the same "
                f"classes. Received: teacher={self.teacher!r}"
            )
        losses = [SoftenedDistillation(self.temperature, probabilities, outputs_probabilities(student))]
        weights = [1.0]
        if self.features is not None:
            teacher_layer, student_layer = self.features.split(":")
            for role, model, layer in (
                ("teacher", teacher, teacher_layer),
                ("student", student, student_layer),
            ):
                if layer not in {sub.name for sub in model.layers}:
                    raise ValueError(
                        f"The {role} has no layer {layer!r} to distil features from (its layers: "
                        f"{[sub.name for sub in model.layers]}). Received: features={self.features!r}"
                    )
            shapes = [
                tuple(m.get_layer(n).output.shape[1:])
                for m, n in ((teacher, teacher_layer), (student, student_layer))
            ]
            if shapes[0] != shapes[1]:
                raise ValueError(
                    f"Feature distillation needs outputs of the same shape; the teacher's {teacher_layer!r} "
                    f"has {shapes[0]} and the student's {student_layer!r} {shapes[1]}. "
                    f"Received: features={self.features!r}"
                )
            losses.append(keras.distillation.FeatureDistillation("mse", teacher_layer, student_layer))
            weights.append(self.feature_weight)
        return Distiller(teacher, student, losses, weights, student_loss_weight=self.student_loss_weight)

    def plan_cache(self, context):
        """`(use, reason)`: whether the teacher's outputs are computed once."""
        dataset = isinstance(context.train_data, tf.data.Dataset)
        if self.cache is False:
            return False, "cache=False"
        if context.augment:
            return False, "augmentation is on: every epoch sees new images"
        if dataset and self.cache == "auto":
            return False, (
                "the training data is a tf.data.Dataset, which may change between epochs; "
                "pass arrays, or cache=True if it yields the same images every epoch"
            )
        return True, "the training images are the same every epoch"

    def fit_setup(self, context):
        from keras_transfer.training.fit import as_dataset

        student = context.model
        # The teacher's flags before the distiller freezes it, given back when the run ends.
        self._restore = (
            _RestoreTrainable(self.teacher_model) if isinstance(self.teacher, keras.Model) else None
        )
        distiller = self.distiller(student)
        use, reason = self.plan_cache(context)
        if context.verbose:
            print(f"Teacher-output cache {'on' if use else 'off'}: {reason}.")
        if not use:
            train_ds = as_dataset(
                context.train_data,
                student,
                batch_size=context.batch_size,
                shuffle=True,
                seed=context.seed,
                drop_remainder=True,
                augment=context.augment,
            )
            validation_ds = None
            if context.validation_data is not None:
                validation_ds = as_dataset(context.validation_data, student, batch_size=context.batch_size)
            return method_lib.FitSetup(distiller, train_ds, validation_ds, wrap_callbacks=True)
        start = time.time()
        x, y = _arrays(context.train_data, student, context.batch_size)
        outputs = compute_teacher_outputs(distiller.teacher_outputs, x, verbose=context.verbose)
        train_ds = _cached_dataset(x, y, outputs, context.batch_size, shuffle=True, seed=context.seed)
        validation_ds = None
        if context.validation_data is not None:
            vx, vy = _arrays(context.validation_data, student, context.batch_size)
            v_outputs = compute_teacher_outputs(distiller.teacher_outputs, vx, verbose=context.verbose)
            validation_ds = _cached_dataset(vx, vy, v_outputs, context.batch_size)
        if context.verbose:
            print(
                f"Teacher-output cache: the teacher ran once over {len(x):,} training images "
                f"({time.time() - start:.1f}s)."
            )
        return method_lib.FitSetup(distiller, train_ds, validation_ds, wrap_callbacks=True)

    def callbacks(self, model):
        return [self._restore] if self._restore is not None else []

    def get_config(self):
        config = {"teacher": self.teacher}
        for key, default in (
            ("temperature", 3.0),
            ("student_loss_weight", 0.5),
            ("features", None),
            ("feature_weight", 1.0),
            ("cache", "auto"),
        ):
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        same_teacher = mine.pop("teacher") is theirs.pop("teacher") or self.teacher == other.teacher
        return same_teacher and mine == theirs

    __hash__ = None
