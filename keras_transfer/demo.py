"""`keras-transfer demo`: MNIST digits 0-4 -> digits 5-9 and -> UCI digits, few-shot.

A source model (the small CNN, and the classic MLP) is trained on MNIST digits 0-4. Two
targets follow, each with k = 1, 5, 10 labelled examples per class and with all of its
training pool: MNIST digits 5-9 (new classes, same scanner) and the UCI 8x8 digits (all
ten classes, another scanner and resolution). For each, three methods are compared on
held-out target data, averaged over seeds: training from scratch, feature extraction
(the source backbone frozen) and fine-tuning from the source weights.

Every run is a call a user makes (`run_method`): `transfer_weights` from the source,
then `fine_tune` with the library's recipe for a small source model
(`training.RECIPES["small"]`: augmentation, label smoothing, cosine decay, at least
`min_steps` steps), and `evaluate_classifier` on the test split. There is no demo-only
training loop: what the table shows, `fine_tune(model, (x, y))` gets.
Each target's table is one `evaluation.learning_curves` call (`run_target`): the same
code path a user's own learning curves take.
`results.json` records where the time went (`timings`: data, train_eval, plots, export).
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from keras_transfer import builders
from keras_transfer import data
from keras_transfer import evaluation
from keras_transfer import training
from keras_transfer import weight_transfer
from keras_transfer import workflows
from keras_transfer.evaluation import curves as learning_curves_lib

METHODS = ("scratch", "frozen", "fine-tune")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the demo trains with: the library's `training.Recipe` for every target run,
    and how the source model is trained on MNIST 0-4.

    The default recipe is `training.RECIPES["small"]`, chosen on validation splits
    carved from each target's training pool (seeds 100, 101), never on the test split.

    Example:

    >>> from keras_transfer import demo
    >>> settings = demo.Settings()
    >>> settings.recipe.learning_rate, settings.recipe.min_steps, settings.source_epochs
    (0.003, 400, 10)
    """

    recipe: training.Recipe = training.RECIPES["small"]
    source_epochs: int = 10
    source_learning_rate: float = 1e-3

    def replace(self, **changes):
        """A copy with `changes`: `Settings` fields, or `Recipe` fields for the recipe."""
        own = {f.name for f in dataclasses.fields(self)}
        recipe_changes = {k: v for k, v in changes.items() if k not in own}
        mine = {k: v for k, v in changes.items() if k in own and v is not None}
        return dataclasses.replace(
            self, **mine, recipe=mine.get("recipe", self.recipe).replace(**recipe_changes)
        )


def shortened(settings):
    """The same settings, shortened to a seconds-long run (for tests)."""
    return settings.replace(min_steps=20, epochs=1, head_epochs=0, source_epochs=1)


# The plain recipe of the Keras transfer-learning guide, at the same training budget:
# Adam 1e-3 throughout, batch 32, no augmentation, no label smoothing, constant rate.
KERAS_GUIDE = Settings(
    recipe=training.RECIPES["small"].replace(
        learning_rate=1e-3,
        head_learning_rate=1e-3,
        scratch_learning_rate=1e-3,
        label_smoothing=0.0,
        augment=False,
        cosine=False,
    )
)
SETTINGS = {"default": Settings(), "keras-guide": KERAS_GUIDE}


def steps_for(recipe, size):
    """Optimizer steps of one run on `size` images: `recipe.epochs` passes (full
    batches), or `recipe.min_steps` if that is more (what `training.train` runs).

    Example:

    >>> from keras_transfer import demo, training
    >>> demo.steps_for(training.RECIPES["small"], 50), demo.steps_for(training.RECIPES["small"], 2100)
    (400, 1300)
    """
    passes = max(1, size // recipe.batch_size)
    return recipe.epochs * training.run_length(passes, recipe.epochs, recipe.min_steps)


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
        x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
        return (x_pool, y_pool), (x_test, y_test)

    source = split(*data.subset_classes(mnist.x, mnist.y, range(5)))
    digits = split(*data.subset_classes(mnist.x, mnist.y, range(5, 10)))
    targets = [
        Target("digits_5_9", "MNIST 5-9", *digits, [str(d) for d in range(5, 10)]),
        Target("uci_digits", "UCI digits", *split(uci.x, uci.y), [str(d) for d in range(10)]),
    ]
    return source, targets, mnist.source


def train_source(backbone, source, settings, seed=0, log=print):
    """Trains a source classifier on MNIST 0-4 with `training.train`; returns it, its
    test accuracy and its history (validated on the test split each epoch, for the
    learning curves)."""
    (x, y), test = source
    recipe = settings.recipe
    keras.utils.set_random_seed(seed)
    model = builders.build_classifier(backbone, 5, weights=None)
    start = time.time()
    history = training.train(
        model,
        (x, y),
        test,
        epochs=settings.source_epochs,
        learning_rate=settings.source_learning_rate,
        batch_size=recipe.batch_size,
        label_smoothing=recipe.label_smoothing,
        cosine=recipe.cosine,
        augment=True if recipe.augment else None,
        seed=seed,
        verbose=0,
    )
    accuracy = evaluation.evaluate_classifier(model, test).accuracy
    log(f"source {backbone}: MNIST 0-4 test accuracy {accuracy:.4f} ({time.time() - start:.1f}s)")
    return model, accuracy, history


def run_method(method, model, train_data, recipe, *, source=None, seed=None, transfer_method=None):
    """One demo run, as a user writes it: `method` is `"scratch"` (every layer from
    `model`'s current weights at the recipe's `scratch_learning_rate`), `"frozen"` (the
    source backbone frozen, the head trained for the recipe's `epochs` at its
    `head_learning_rate`) or `"fine-tune"` (`fine_tune` with the recipe). Weights are
    copied from `source` (except the head) first, unless the method is scratch.
    `transfer_method` (a `TransferMethod` or its name, e.g. `"bias_only"`) joins the
    run (`fine_tune(..., method=)`); the caller ships `transfer_method.finalize(model)`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer import demo, training
    >>> source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    >>> model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    >>> x = np.random.rand(16, 28, 28, 1) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> recipe = training.RECIPES["small"].replace(epochs=1, min_steps=4)
    >>> len(demo.run_method("frozen", model, (x, y), recipe, source=source).history["loss"])
    1
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}. Received: method={method!r}")
    if method != "scratch" and source is None:
        raise ValueError(f"method {method!r} starts from a source model: pass source=.")
    if method != "scratch":
        weight_transfer.transfer_weights(source, model, exclude="predictions")
    common = dict(recipe=recipe, seed=seed, verbose=0)
    if transfer_method is not None:
        common["method"] = transfer_method
    if method == "scratch":
        return training.fine_tune(
            model,
            train_data,
            head_epochs=0,
            unfreeze_fraction=1.0,
            freeze_batchnorm=False,
            learning_rate=recipe.scratch_learning_rate,
            **common,
        )
    if method == "frozen":
        return training.fine_tune(model, train_data, head_epochs=recipe.epochs, epochs=0, **common)
    return training.fine_tune(model, train_data, **common)


def run_target(source_model, backbone, target, settings, budgets, seeds, log=print, on_run=None):
    """Scratch / frozen / fine-tune runs on one target; returns {(method, budget): [acc]}.

    A call of `evaluation.learning_curves` (the one code path for the budgets table)."""
    num_classes = len(target.class_names)
    curves = evaluation.learning_curves(
        lambda: builders.build_classifier(backbone, num_classes, weights=None),
        target.pool,
        target.test,
        methods=METHODS,
        budgets=budgets,
        seeds=seeds,
        source=source_model,
        recipe=settings.recipe,
        log=log,
        title=f"{target.title} [{backbone}]",
        on_run=on_run,
    )
    return curves.accuracies


_budget_label = learning_curves_lib.budget_label


def format_table(rows, budgets):
    """rows: list of (target title, source, {(method, budget): [accuracies]})."""
    return learning_curves_lib.format_table(rows, budgets, METHODS)


def plot_budgets(rows, budgets, path):
    """Accuracy against labels per class, one panel per (target, source), the seeds'
    range as a band."""
    return learning_curves_lib.plot_curves(rows, list(budgets), path, METHODS)


def write_results(report_dir, rows, table, log, summary):
    """Adds the mean accuracies of `rows` to `summary`; writes `results.json` and
    `results.txt` in `report_dir` and logs the table. Returns the summary."""
    seeds = summary.get("seeds", [])
    summary = dict(
        summary,
        results={
            f"{title} / {source}": {
                f"{method} / {budget}": float(np.mean(values)) for (method, budget), values in results.items()
            }
            for title, source, results in rows
        },
    )
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
    settings=None,
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
        settings: `Settings` (or a name in `SETTINGS`). Defaults to `Settings()`: the
            library's `training.RECIPES["small"]`.
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
    settings = SETTINGS[settings] if isinstance(settings, str) else (settings or Settings())
    if smoke:
        settings = shortened(settings)
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
        source_model, source_accuracy, history = train_source(backbone, source_task, settings, log=log)
        plot_start = time.time()
        plots.append(
            evaluation.plot_history(
                history,
                os.path.join(report_dir, f"source_{source}_curves.png"),
                title=f"{source} source on MNIST 0-4",
            )
        )
        timings["plots"] += time.time() - plot_start
        for target in targets:

            def keep(method, budget, accuracy, model, target=target, source=source):
                if (method, budget, source) == (
                    "fine-tune",
                    budgets[-1],
                    sources[0],
                ) and target.name not in chosen:
                    chosen[target.name] = (accuracy, model.get_weights(), model, method, budget, source)

            results = run_target(source_model, backbone, target, settings, budgets, seeds, log, keep)
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
        plots.append(
            evaluation.plot_confusion_matrix(
                result,
                os.path.join(report_dir, f"{target.name}_confusion.png"),
                title=(
                    f"{target.title}: {method}, {_budget_label(budget)}, {source} (acc {result.accuracy:.3f})"
                ),
            )
        )
        timings["plots"] += time.time() - plot_start
        if not export_models:
            continue
        export_start = time.time()
        # TFLite int8 is calibrated on target training images drawn from a tf.data pipeline.
        calibration = data.make_dataset(target.pool[0], batch_size=32, shuffle=True, seed=0)
        exported = workflows.export_model(
            model,
            os.path.join(output_dir, target.name),
            class_names=target.class_names,
            tflite=("float32", "int8"),
            calibration_data=calibration,
            eval_data=target.test,
            log=lambda line: None,
        )
        timings["export"] += time.time() - export_start
        exports[target.name] = exported.saved_model
        tflite_accuracy[target.name] = exported.accuracy
        log(
            f"exported {target.title} ({method}, {_budget_label(budget)}, {source} source, "
            f"accuracy {accuracy:.4f}) to {exported.saved_model}; TFLite in "
            f"{os.path.dirname(exported.tflite['int8'])}; test accuracy: "
            + ", ".join(f"{kind} {value:.4f}" for kind, value in exported.accuracy.items())
        )

    summary = write_results(
        report_dir,
        rows,
        table,
        log,
        {
            "mnist": mnist_source,
            "recipe": dataclasses.asdict(settings.recipe),
            "source": {"epochs": settings.source_epochs, "learning_rate": settings.source_learning_rate},
            "seeds": list(seeds),
            "seconds": round(time.time() - start, 1),
            "timings": {key: round(value, 2) for key, value in timings.items()},
            "exports": exports,
            "export_accuracy": tflite_accuracy,
        },
    )
    log(f"\nMNIST copy: {mnist_source}; {summary['seconds']:.0f}s; plots and results in {report_dir}")
    return {"table": table, "results": summary["results"], "exports": exports, "plots": plots}
