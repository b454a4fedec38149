"""Learning without Forgetting (Li & Hoiem): the source head kept, trained toward the
source model's own outputs on the target images, while the new head learns the labels.

Built on the distillation module: the soft targets are the source model's outputs
(`distillation.compute_teacher_outputs`, once before training when the images are the
same every epoch), and the loss of the kept head is `SoftenedDistillation`'s
temperature-softened KL with `T**2` scaling, as a Keras loss (`SoftTargetLoss`) of the
two-output `SourceHeadTrainer`.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.data import datasets as data_lib
from keras_transfer.distillation import distill
from keras_transfer.forgetting import heads
from keras_transfer.training import method as method_lib


@keras.saving.register_keras_serializable(package="keras_transfer")
class SoftTargetLoss(keras.losses.Loss):
    """`distillation.SoftenedDistillation` as a Keras loss: `y_true` is the source
    model's output (the soft targets), `y_pred` the kept head's.

    The value is `T**2 * KL(softmax(t / T) || softmax(s / T))` averaged over the batch
    (`t`, `s` the logits, `log` of probabilities for softmax outputs). It is a batch
    mean, so it takes no per-example sample weights.

    Args:
        temperature: float > 0. Defaults to `2.0` (Li & Hoiem's `T`).
        teacher_probabilities: bool. `y_true` are probabilities. Defaults to `True`.
        student_probabilities: bool. `y_pred` are probabilities. Defaults to `True`.
        name: str. Defaults to `"soft_target_loss"`.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.forgetting import SoftTargetLoss
    >>> p = np.array([[0.7, 0.2, 0.1]], "float32")
    >>> round(float(SoftTargetLoss(2.0)(p, p)), 6)
    0.0
    """

    def __init__(
        self,
        temperature=2.0,
        teacher_probabilities=True,
        student_probabilities=True,
        name="soft_target_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.temperature = heads.number("temperature", temperature, positive=True)
        self.teacher_probabilities = bool(teacher_probabilities)
        self.student_probabilities = bool(student_probabilities)
        self._distillation = distill.SoftenedDistillation(
            self.temperature, self.teacher_probabilities, self.student_probabilities
        )

    def call(self, y_true, y_pred):
        return self._distillation.compute_loss(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature,
            teacher_probabilities=self.teacher_probabilities,
            student_probabilities=self.student_probabilities,
        )
        return config


def soft_targets(source, images, *, batch_size=256):
    """The source model's outputs on `images` (an array), in inference mode, computed
    with `distillation.compute_teacher_outputs`: what `LwF` trains the kept head
    toward (it softens them with `T` in `SoftTargetLoss`).

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import soft_targets
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> x = np.random.default_rng(0).random((3, 28, 28, 1), "float32") * 255
    >>> bool(np.allclose(soft_targets(source, x), source.predict(x, verbose=0), atol=1e-6))
    True
    """
    outputs = keras.Model(source.inputs, {distill.FINAL_OUTPUT: source.outputs[0]}, name="source_outputs")
    return distill.compute_teacher_outputs(outputs, np.asarray(images, np.float32), batch_size=batch_size)[
        distill.FINAL_OUTPUT
    ]


def _with_soft_targets(dataset, source):
    """`(x, y)` batches -> `(x, {"predictions": y, "source_predictions": source(x)})`,
    the source run on each batch as it comes (after any augmentation)."""

    def add(x, y):
        return x, {heads.TARGET: y, heads.SOURCE: tf.stop_gradient(source(x, training=False))}

    return data_lib.finish_pipeline(dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE))


def _cached(x, y, outputs, batch_size, *, shuffle=False, seed=None):
    ds = tf.data.Dataset.from_tensor_slices((x, {heads.TARGET: y, heads.SOURCE: outputs})).cache()
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=shuffle and len(x) >= batch_size)
    return data_lib.finish_pipeline(ds)


@method_lib.register_method
class LwF(method_lib.TransferMethod):
    """Learning without Forgetting: the source task's head is kept beside the new one,
    trained toward the source model's own outputs on the target images.

    The setting is a target model that shares the source's backbone and has a new
    head (`transfer_weights(source, model, exclude="predictions")`). A copy of the
    source's head (`heads.copy_head`) sits on the target model's features and trains
    with it (`SourceHeadTrainer`), the loss of a step being

    `CE(y, target head) + weight * T**2 * KL(softmax(t / T) || softmax(s / T))`

    with `t` the source model's outputs on the step's images (`soft_targets`, logits
    `log p`) and `s` the kept head's; so the shared backbone learns the new task while
    keeping the old head's answers on the new images, with no source data. After the
    run `source_head` is the trained copy (`with_source_head(model, method.source_head)`
    predicts both tasks) and `finalize(model)` is the target model alone, as saved and
    exported.

    Augmentation: the soft targets must be the source's outputs on the very images the
    step sees. With arrays and no augmentation the source runs once over the training
    images before training (`distillation.compute_teacher_outputs`) and its outputs ride
    along every epoch; with augmentation, or a `tf.data.Dataset` (the image-folder
    pipeline of `keras-transfer train`, which augments), the source runs on each batch
    in the input pipeline, after augmentation (`cache=True` computes them once for a
    dataset that yields the same images every epoch).

    Li & Hoiem also warm up the new head first (backbone and old head frozen): with
    `FineTune`, its head stage does that. Their loss weight `lambda_o = 1` multiplies
    the soft cross-entropy without the `T**2` factor, i.e. `weight = 1 / T**2 = 0.25`
    here. The defaults are the paper's `T = 2` and `weight = 1` (Hinton's `T**2`
    scaling, as `Distill`), checked on validation splits of MNIST 0-4 -> 5-9 (`python
    examples/lwf_digits.py --validate`, one seed): weights 0.25, 1 and 4 at `T = 2`
    scored within 0.2 points of each other (the mean of target and source validation
    accuracy, 0.977-0.979), `T = 4` 0.987 (3 validation images more), naive
    fine-tuning 0.807.

    Args:
        source: `keras.Model` or a `.keras` file: the model trained on the source task
            (never changed). CLI: `lwf:source=source.keras`. A model in memory stays in
            the config as the object itself (not JSON-writable: give a path for that).
        weight: float >= 0. Weight of the kept head's loss against the new task's.
            Defaults to `1.0`.
        temperature: float > 0. Softens both distributions. Defaults to `2.0` (the
            paper's `T`).
        head_layer: str. The head layer, in the source and in the target model.
            Defaults to `"predictions"`.
        cache: `"auto"` (arrays without augmentation), `True` or `False`: compute the
            soft targets once before training (else on each batch). Defaults to `"auto"`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer.forgetting import LwF
    >>> source = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> _ = keras_transfer.transfer_weights(source, model, exclude="predictions")
    >>> x, y = np.random.default_rng(0).random((16, 28, 28, 1)) * 255, np.array([0, 1] * 8)
    >>> method = LwF(source, weight=1.0, temperature=2.0)
    >>> history = keras_transfer.train(model, (x, y), epochs=1, batch_size=8, method=method, verbose=0)
    >>> sorted(k for k in history.history if "loss" in k)
    ['loss', 'predictions_loss', 'source_predictions_loss']
    >>> method.source_head.units, method.finalize(model) is model
    (3, True)

    Reference:
    - [Li & Hoiem, 2016](https://arxiv.org/abs/1606.09282) (Learning without Forgetting)
    """

    name = "lwf"
    summary = "learning without forgetting: the source head kept, trained toward the source's outputs"

    def __init__(self, source=None, weight=1.0, temperature=2.0, head_layer="predictions", cache="auto"):
        self.source = heads.check_source(source)
        self.weight = heads.number("weight", weight)
        self.temperature = heads.number("temperature", temperature, positive=True)
        if not isinstance(head_layer, str) or not head_layer:
            raise ValueError(f"head_layer must be a layer name. Received: head_layer={head_layer!r}")
        self.head_layer = head_layer
        if cache not in ("auto", True, False):
            raise ValueError(f"cache must be 'auto', True or False. Received: cache={cache!r}")
        self.cache = cache
        self.source_head = None
        self._source_model = None
        self._head_for = None

    @property
    def source_model(self):
        """The source as a `keras.Model` (loaded once from its path)."""
        if self._source_model is None:
            self._source_model = heads.load_source(self.source)
        return self._source_model

    def trainer(self, model):
        """The `SourceHeadTrainer` of `model` and the kept head (copied from the source
        on the first call for `model`, then reused: a two-stage `FineTune` trains the
        same copy in both stages)."""
        if self.source_head is None or self._head_for is not model:
            self.source_head = heads.copy_head(self.source_model, self.head_layer)
            self._head_for = model
        return heads.SourceHeadTrainer(
            model,
            self.source_head,
            self.head_layer,
            source_loss=SoftTargetLoss(
                self.temperature,
                distill.outputs_probabilities(self.source_model),
                getattr(self.source_head, "activation", None) is keras.activations.softmax,
            ),
            source_weight=self.weight,
        )

    def plan_cache(self, context):
        """`(use, reason)`: whether the soft targets are computed once before training."""
        if self.cache is False:
            return False, "cache=False"
        if context.augment:
            return False, "augmentation is on: the source runs on each augmented batch"
        if isinstance(context.train_data, tf.data.Dataset) and self.cache == "auto":
            return False, "the training data is a tf.data.Dataset: the source runs on each batch"
        return True, "the training images are the same every epoch"

    def fit_setup(self, context):
        from keras_transfer.training.fit import as_dataset

        model = context.model
        trainer = self.trainer(model)
        source = self.source_model
        if tuple(source.input.shape[1:]) != tuple(model.input.shape[1:]):
            raise ValueError(
                f"The source model takes images of shape {tuple(source.input.shape[1:])} and the target "
                f"model {tuple(model.input.shape[1:])}: LwF runs the source on the target images. "
                f"Received: source={self.source!r}"
            )
        use, reason = self.plan_cache(context)
        if context.verbose:
            print(f"LwF soft targets {'computed once' if use else 'per batch'}: {reason}.")
        if not use:
            train_ds = as_dataset(
                context.train_data,
                model,
                batch_size=context.batch_size,
                shuffle=True,
                seed=context.seed,
                drop_remainder=True,
                augment=context.augment,
            )
            validation_ds = None
            if context.validation_data is not None:
                validation_ds = _with_soft_targets(
                    as_dataset(context.validation_data, model, batch_size=context.batch_size), source
                )
            return method_lib.FitSetup(trainer, _with_soft_targets(train_ds, source), validation_ds)
        start = time.time()
        x, y = heads.training_arrays(context.train_data, model, context.batch_size)
        train_ds = _cached(x, y, soft_targets(source, x), context.batch_size, shuffle=True, seed=context.seed)
        validation_ds = None
        if context.validation_data is not None:
            vx, vy = heads.training_arrays(context.validation_data, model, context.batch_size)
            validation_ds = _cached(vx, vy, soft_targets(source, vx), context.batch_size)
        if context.verbose:
            print(
                f"LwF soft targets: the source ran once over {len(x):,} training images "
                f"({time.time() - start:.1f}s)."
            )
        return method_lib.FitSetup(trainer, train_ds, validation_ds)

    def get_config(self):
        config = {"source": self.source}
        for key, default in (
            ("weight", 1.0),
            ("temperature", 2.0),
            ("head_layer", "predictions"),
            ("cache", "auto"),
        ):
            if getattr(self, key) != default:
                config[key] = getattr(self, key)
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return False
        mine, theirs = self.get_config(), other.get_config()
        same_source = mine.pop("source") is theirs.pop("source") or self.source == other.source
        return same_source and mine == theirs

    __hash__ = None
