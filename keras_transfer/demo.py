"""`keras-transfer demo`: MNIST digits 0-4 -> digits 5-9 and -> UCI digits, few-shot.

A source model (the small CNN, and the classic MLP) is trained on MNIST digits 0-4. Two
targets follow, each with k = 1, 5, 10 labelled examples per class and with all of its
training pool: MNIST digits 5-9 (new classes, same scanner) and the UCI 8x8 digits (all
ten classes, another scanner and resolution). For each, three methods are compared on
held-out target data, averaged over seeds: training from scratch, feature extraction
(the source backbone frozen) and fine-tuning from the source weights.

Few-shot runs are many tiny trainings, where Keras's per-`fit` set-up would dominate: each
(target, method) gets one compiled model that every run resets (weights from a per-seed
snapshot, optimizer state zeroed) instead of rebuilding and retracing it. A run is a
finite stream of exactly its steps, executed `steps_per_execution` (100) at a time, so a
few-shot run is 4 calls into the compiled loop; target runs skip the accuracy metric
(only the source's learning curves need it) and score the test set with one traced call.
`results.json` records where the time went (`timings`: data, train_eval, plots, export).
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import builders
from keras_transfer import data
from keras_transfer import evaluation
from keras_transfer import freezing
from keras_transfer import training
from keras_transfer import weight_transfer
from keras_transfer import workflows

METHODS = ("scratch", "frozen", "fine-tune")


_SMALL = training.RECIPES["small"]


@dataclasses.dataclass
class Recipe:
    """The demo's run settings: `training.RECIPES["small"]`, the library's recipe for a
    small source model, spelled out per method (one source of truth for the numbers).

    Chosen on a validation split carved from each target's training pool (seeds 100,
    101), never on the test split. Each run is Adam with cosine decay to zero, label
    smoothing 0.1, and light augmentation in tf.data (`data.default_augmentation`:
    shift, rotate, zoom). `fine_tune(model, data)` on a small source model and
    `train_from_folder` get the same values.
    """

    batch_size: int = _SMALL.batch_size
    steps: int = _SMALL.min_steps  # optimizer steps of a few-shot run (k labels per class)
    all_epochs: int = _SMALL.epochs  # epochs over the whole pool for the "all" budget
    learning_rate: float = _SMALL.scratch_learning_rate  # scratch
    head_learning_rate: float = _SMALL.head_learning_rate  # the head on a frozen backbone
    fine_tune_learning_rate: float = _SMALL.learning_rate  # every layer, from the source weights
    source_learning_rate: float = 1e-3
    source_epochs: int = 10
    label_smoothing: float = _SMALL.label_smoothing
    translation: float = 0.1
    rotation: float = 0.05
    zoom: float = 0.1
    # Batches per compiled call (an execution setting, not part of the recipe: runs take
    # exactly their steps whatever it is).
    steps_per_execution: int = 100
    augment: bool = True
    cosine: bool = True

    def steps_for(self, budget, size):
        if budget == "all":
            return max(1, self.all_epochs * size // self.batch_size)
        return self.steps




def shortened(recipe):
    """The same recipe, shortened to a seconds-long run (for tests)."""
    return dataclasses.replace(recipe, steps=20, all_epochs=1, source_epochs=1, steps_per_execution=5)


# The plain recipe of the Keras transfer-learning guide, at the same training budget:
# Adam 1e-3 throughout, batch 32, no augmentation, no label smoothing, constant rate.
KERAS_GUIDE = Recipe(
    learning_rate=1e-3, head_learning_rate=1e-3, fine_tune_learning_rate=1e-3,
    label_smoothing=0.0, augment=False, cosine=False,
)
RECIPES = {"default": Recipe(), "keras-guide": KERAS_GUIDE}


@dataclasses.dataclass
class Target:
    name: str
    title: str
    pool: tuple
    test: tuple
    class_names: list


def load_tasks(seed=0, verbose=True):
    """The source task (MNIST 0-4) and both targets, each split 70/30 (stratified)."""
    from sklearn.model_selection import train_test_split

    mnist = data.load_mnist(verbose=verbose)
    uci = data.load_uci_digits()

    def split(x, y):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.3, stratify=y, random_state=seed
        )
        return (x_pool, y_pool), (x_test, y_test)

    source = split(*data.subset_classes(mnist.x, mnist.y, range(5)))
    digits = split(*data.subset_classes(mnist.x, mnist.y, range(5, 10)))
    targets = [
        Target("digits_5_9", "MNIST 5-9", *digits, [str(d) for d in range(5, 10)]),
        Target("uci_digits", "UCI digits", *split(uci.x, uci.y), [str(d) for d in range(10)]),
    ]
    return source, targets, mnist.source


class RunLengthCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay to zero (or a constant rate) over a run whose length and peak are set
    per run through variables, so runs of any length share one compiled model."""

    def __init__(self, learning_rate, decay=True):
        self.peak = tf.Variable(float(learning_rate), trainable=False, dtype="float32")
        self.total = tf.Variable(100.0, trainable=False, dtype="float32")
        self.decay = decay

    def __call__(self, step):
        if not self.decay:
            return tf.identity(self.peak)
        progress = tf.minimum(tf.cast(step, "float32") / self.total, 1.0)
        return self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def get_config(self):
        return {"learning_rate": float(self.peak.numpy()), "decay": self.decay}


class Runner:
    """One compiled classifier reused by many short runs."""

    def __init__(self, model, recipe, metrics=()):
        self.model = model
        self.recipe = recipe
        self.schedule = RunLengthCosine(recipe.learning_rate, decay=recipe.cosine)
        training.compile_classifier(
            model,
            optimizer=keras.optimizers.Adam(self.schedule),
            steps_per_execution=recipe.steps_per_execution,
            label_smoothing=recipe.label_smoothing,
            metrics=metrics,
        )
        # Inference on a whole test set in one traced call: no data adapter per run.
        self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def fit(self, dataset, steps, learning_rate, validation=None):
        """Trains the model's current weights from a fresh optimizer state for exactly
        `steps` steps of the (repeated) `dataset` (in 5 epochs, each validated, when
        `validation` is given)."""
        for variable in self.model.optimizer.variables:
            if "learning_rate" not in variable.path:
                variable.assign(tf.zeros_like(variable))
        epochs = 5 if validation is not None and steps >= 5 else 1
        per_epoch = steps // epochs
        self.schedule.peak.assign(learning_rate)
        self.schedule.total.assign(float(per_epoch * epochs))
        # A finite stream of exactly the run's batches: each compiled call runs
        # `steps_per_execution` of them, the last one what is left.
        return self.model.fit(
            dataset.take(per_epoch), epochs=epochs, validation_data=validation,
            shuffle=False, verbose=0,
        )

    def accuracy(self, x, y):
        # One batch: a fixed test set then has one shape, so nothing retraces.
        predicted = np.argmax(self._predict(tf.constant(x, tf.float32)).numpy(), axis=-1)
        return float(np.mean(predicted == y))


def _pipeline(x, y, recipe, seed):
    augment = None
    if recipe.augment:
        augment = data.default_augmentation(recipe.translation, recipe.rotation, recipe.zoom, seed=seed)
    return data.make_dataset(
        x, y, batch_size=recipe.batch_size, shuffle=True, seed=seed, repeat=True,
        drop_remainder=True, augment=augment,
    )


def _initial_weights(backbone, num_classes, seed):
    keras.utils.set_random_seed(seed)
    return builders.build_classifier(backbone, num_classes, weights=None).get_weights()


def train_source(backbone, source, recipe, seed=0, log=print):
    """Trains a source classifier on MNIST 0-4; returns it, its accuracy and history."""
    (x, y), test = source
    keras.utils.set_random_seed(seed)
    model = builders.build_classifier(backbone, 5, weights=None)
    runner = Runner(model, recipe, metrics=("accuracy",))  # for the learning curves
    start = time.time()
    steps = recipe.source_epochs * len(x) // recipe.batch_size
    history = runner.fit(_pipeline(x, y, recipe, seed), steps, recipe.source_learning_rate, validation=test)
    accuracy = runner.accuracy(*test)
    log(f"source {backbone}: MNIST 0-4 test accuracy {accuracy:.4f} ({time.time() - start:.1f}s)")
    return model, accuracy, history


def run_target(source_model, backbone, target, recipe, budgets, seeds, log=print, on_run=None):
    """Scratch / frozen / fine-tune runs on one target; returns {(method, budget): [acc]}."""
    num_classes = len(target.class_names)
    full = Runner(builders.build_classifier(backbone, num_classes, weights=None), recipe)
    frozen_model = builders.build_classifier(backbone, num_classes, weights=None)
    freezing.freeze(frozen_model.get_layer("backbone"))
    frozen = Runner(frozen_model, recipe)
    # One random initialisation per seed, shared by every budget and method.
    initial_by_seed = {seed: _initial_weights(backbone, num_classes, 1000 + seed) for seed in seeds}
    results = {}
    for budget in budgets:
        for seed in seeds:
            if budget == "all":
                x, y = target.pool
            else:
                x, y = data.few_shot(*target.pool, budget, seed=seed)
            dataset = _pipeline(x, y, recipe, seed)
            steps = recipe.steps_for(budget, len(x))
            for method in METHODS:
                start = time.time()
                runner = frozen if method == "frozen" else full
                runner.model.set_weights(initial_by_seed[seed])
                if method != "scratch":
                    weight_transfer.transfer_weights(source_model, runner.model, exclude="predictions")
                rate = {
                    "scratch": recipe.learning_rate,
                    "frozen": recipe.head_learning_rate,
                    "fine-tune": recipe.fine_tune_learning_rate,
                }[method]
                runner.fit(dataset, steps, rate)
                accuracy = runner.accuracy(*target.test)
                results.setdefault((method, budget), []).append(accuracy)
                log(
                    f"  {target.title} [{backbone}] {_budget_label(budget)} seed {seed} "
                    f"{method}: {accuracy:.4f} ({time.time() - start:.1f}s)"
                )
                if on_run is not None:
                    on_run(method, budget, accuracy, runner.model)
    return results


def _budget_label(budget):
    return "all" if budget == "all" else f"k={budget}"


def format_table(rows, budgets):
    """rows: list of (target title, source, {(method, budget): [accuracies]})."""
    header = f"{'target':<12} {'source':<6} {'labels/class':>12}  " + "  ".join(
        f"{m:>13}" for m in METHODS
    )
    lines = [header, "-" * len(header)]
    for title, source, results in rows:
        for budget in budgets:
            cells = []
            for method in METHODS:
                values = results.get((method, budget), [])
                if not values:
                    cells.append(f"{'-':>13}")
                    continue
                spread = (max(values) - min(values)) / 2
                cells.append(f"{np.mean(values):>7.3f} ±{spread:.3f}")
            lines.append(f"{title:<12} {source:<6} {str(budget):>12}  " + "  ".join(cells))
    return "\n".join(lines)


def plot_budgets(rows, budgets, path):
    """Accuracy against labels per class, one panel per (target, source)."""
    plt = evaluation._figure()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    ticks = [str(b) for b in budgets]
    for ax, (title, source, results) in zip(axes[0], rows):
        for method in METHODS:
            means = [np.mean(results[(method, b)]) for b in budgets]
            ax.plot(ticks, means, marker="o", label=method)
        ax.set_title(f"{title} ({source} source)")
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
    return evaluation._save(fig, path)


def write_results(report_dir, rows, table, log, summary):
    """Adds the mean accuracies of `rows` to `summary`; writes `results.json` and
    `results.txt` in `report_dir` and logs the table. Returns the summary."""
    seeds = summary.get("seeds", [])
    summary = dict(summary, results={
        f"{title} / {source}": {
            f"{method} / {budget}": float(np.mean(values))
            for (method, budget), values in results.items()
        }
        for title, source, results in rows
    })
    with open(os.path.join(report_dir, "results.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(report_dir, "results.txt"), "w") as handle:
        handle.write(table + "\n")
    log("\nTest accuracy (mean ±half-range over seeds " + ", ".join(map(str, seeds)) + "):")
    log(table)
    return summary


def run_demo(
    output_dir="saved_models",
    *,
    sources=("cnn", "mlp"),
    budgets=(1, 5, 10, "all"),
    seeds=(0, 1),
    recipe=None,
    smoke=False,
    report_name="demo",
    export_models=True,
    log=print,
):
    """Runs the whole demo; prints progress and the table; writes plots, results, models.

    Args:
        output_dir: str. Where `demo/` (table, plots) and the exported models go:
            each target's model fine-tuned from the first source at the largest budget,
            first seed, as a SavedModel (`digits_5_9/<version>/`,
            `uci_digits/<version>/`) and as TFLite float32 and int8
            (`<target>/tflite/<version>/`), with each file's test accuracy printed
            next to the Keras model's.
            Defaults to `"saved_models"`.
        sources: which source backbones: `"cnn"`, `"mlp"`. Defaults to both.
        budgets: labelled examples per class, `"all"` for the whole pool.
        seeds: seeds to average over. Defaults to `(0, 1)`.
        recipe: `Recipe`. Defaults to `Recipe()`.
        smoke: bool. A seconds-long run of the recipe (1 source, 1 seed, k=1 and 5, few
            steps) for tests.
        report_name: str. Folder under `output_dir` for the table, results and plots.
            Defaults to `"demo"`.
        export_models: bool. Export each target's model. Defaults to `True`.
        log: callable for progress lines. Defaults to `print`.

    Returns:
        dict with `table` (str), `results` (nested dict of mean accuracies), `exports`
        (paths) and `plots` (paths).
    """
    recipe = recipe or Recipe()
    if smoke:
        recipe = shortened(recipe)
        budgets, seeds, sources = (1, 5), (0,), tuple(sources)[:1]
    backbones_by_source = {"cnn": "mnist_cnn", "mlp": "mnist_mlp"}
    unknown = [s for s in sources if s not in backbones_by_source]
    if unknown:
        raise ValueError(f"sources must be 'cnn' and/or 'mlp'. Received: sources={list(sources)}")
    start = time.time()
    report_dir = os.path.join(output_dir, report_name)
    os.makedirs(report_dir, exist_ok=True)
    source_task, targets, mnist_source = load_tasks(verbose=True)
    # Where the time goes (in results.json): data, train_eval (source and target runs
    # with their test accuracies), plots (figures and the confusion evaluations), export.
    timings = {"data": time.time() - start, "plots": 0.0, "export": 0.0}
    log(
        f"Runs: {len(sources)} source(s) x {len(targets)} targets x {len(budgets)} budgets x "
        f"{len(seeds)} seed(s) x {len(METHODS)} methods"
    )

    # The model exported for each target is fixed in advance (not picked on test accuracy):
    # fine-tuned from the first source, at the largest budget, first seed.
    chosen, plots, rows = {}, [], []
    train_start = time.time()
    for source in sources:
        backbone = backbones_by_source[source]
        source_model, source_accuracy, history = train_source(backbone, source_task, recipe, log=log)
        plot_start = time.time()
        plots.append(evaluation.plot_history(
            history, os.path.join(report_dir, f"source_{source}_curves.png"),
            title=f"{source} source on MNIST 0-4",
        ))
        timings["plots"] += time.time() - plot_start
        for target in targets:

            def keep(method, budget, accuracy, model, target=target, source=source):
                if (method, budget, source) == ("fine-tune", budgets[-1], sources[0]) \
                        and target.name not in chosen:
                    chosen[target.name] = (accuracy, model.get_weights(), model, method, budget, source)

            results = run_target(source_model, backbone, target, recipe, budgets, seeds, log, keep)
            rows.append((target.title, source, results))

    timings["train_eval"] = time.time() - train_start - timings["plots"]
    plot_start = time.time()
    table = format_table(rows, budgets)
    plots.append(plot_budgets(rows, budgets, os.path.join(report_dir, "accuracy_vs_labels.png")))
    timings["plots"] += time.time() - plot_start
    exports, tflite_accuracy = {}, {}
    for target in targets:
        plot_start = time.time()
        accuracy, weights, model, method, budget, source = chosen[target.name]
        model.set_weights(weights)
        result = evaluation.evaluate_classifier(model, target.test, target.class_names)
        plots.append(evaluation.plot_confusion_matrix(
            result, os.path.join(report_dir, f"{target.name}_confusion.png"),
            title=f"{target.title}: {method}, {_budget_label(budget)}, {source} (acc {result.accuracy:.3f})",
        ))
        timings["plots"] += time.time() - plot_start
        if not export_models:
            continue
        export_start = time.time()
        # TFLite int8 is calibrated on target training images drawn from a tf.data pipeline.
        calibration = data.make_dataset(target.pool[0], batch_size=32, shuffle=True, seed=0)
        exported = workflows.export_model(
            model, os.path.join(output_dir, target.name), class_names=target.class_names,
            tflite=("float32", "int8"), calibration_data=calibration, eval_data=target.test,
            log=lambda line: None,
        )
        timings["export"] += time.time() - export_start
        exports[target.name] = exported.saved_model
        tflite_accuracy[target.name] = exported.accuracy
        log(f"exported {target.title} ({method}, {_budget_label(budget)}, {source} source, "
            f"accuracy {accuracy:.4f}) to {exported.saved_model}; TFLite in "
            f"{os.path.dirname(exported.tflite['int8'])}; test accuracy: "
            + ", ".join(f"{kind} {value:.4f}" for kind, value in exported.accuracy.items()))

    summary = write_results(report_dir, rows, table, log, {
        "mnist": mnist_source,
        "recipe": dataclasses.asdict(recipe),
        "seeds": list(seeds),
        "seconds": round(time.time() - start, 1),
        "timings": {key: round(value, 2) for key, value in timings.items()},
        "exports": exports,
        "export_accuracy": tflite_accuracy,
    })
    log(f"\nMNIST copy: {mnist_source}; {summary['seconds']:.0f}s; plots and results in {report_dir}")
    return {"table": table, "results": summary["results"], "exports": exports, "plots": plots}
