"""`keras-transfer demo methods`: which transfer method to pick, measured on the demo's targets.

From the same CNN source (trained on MNIST digits 0-4, as the demo trains it), every
method of `METHOD_ROWS` fine-tunes a classifier for each target (MNIST 5-9 and the UCI
digits) at each label budget (10 per class and the whole pool by default), averaged over
seeds, with the library's recipe for a small source model (`training.RECIPES["small"]`):
full fine-tuning, each parameter-efficient or compression method composed with it, and
training from scratch. Distillation has its own rows: the demo's MLP trained alone
against the same MLP distilled from the fine-tuned CNN (same data, same steps).

Every run is the call a user makes (`demo.run_method`: `transfer_weights`, then
`fine_tune(..., method=...)`), then `method.finalize` (what would be shipped: LoRA
merged, pruning masks stripped) and `evaluate_classifier` on the test split. The first
seed's whole-pool model of each method is exported (SavedModel and TFLite float32) to
measure its size on disk, dense and gzip-compressed.

The table goes to the log and to `OUTPUT/demo/methods.json` (+ `methods.txt`), the plot
to `OUTPUT/demo/methods.png`.
"""

import dataclasses
import gzip
import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np

from keras_transfer import builders
from keras_transfer import data
from keras_transfer import evaluation
from keras_transfer import export
from keras_transfer import freezing
from keras_transfer.distillation import Distill
from keras_transfer.training import method as method_lib

# (label, method): the rows of the table, in order. `None` is full fine-tuning (the
# recipe alone), "scratch" the same architecture from random weights.
METHOD_ROWS = (
    ("full fine-tune", None),
    ("bias-only", "bias_only"),
    ("LoRA rank 8", "lora:rank=8"),
    ("adapters 64", "adapters:bottleneck=64"),
    ("partial, top 2 blocks", "partial:blocks=2"),
    ("discriminative LR", "discriminative_lr"),
    ("gradual unfreezing", "gradual_unfreezing"),
    ("pruned 80%", "prune:sparsity=0.8"),
    ("scratch", "scratch"),
)


@dataclasses.dataclass
class MethodRow:
    """One line of the table: a method on a target at a budget, over seeds."""

    target: str
    budget: object
    method: str
    spec: object
    accuracies: list
    seconds: list
    trainable: int
    total: int
    sizes: dict = dataclasses.field(default_factory=dict)

    @property
    def accuracy(self):
        return float(np.mean(self.accuracies))

    @property
    def spread(self):
        return float((max(self.accuracies) - min(self.accuracies)) / 2)

    def as_dict(self):
        return {
            "target": self.target,
            "budget": self.budget,
            "method": self.method,
            "spec": self.spec
            if isinstance(self.spec, (str, type(None)))
            else method_lib.method_config(self.spec),
            "accuracy": round(self.accuracy, 4),
            "spread": round(self.spread, 4),
            "accuracies": [round(a, 4) for a in self.accuracies],
            "seconds": round(float(np.mean(self.seconds)), 2),
            "trainable": self.trainable,
            "total": self.total,
            "trainable_percent": round(100.0 * self.trainable / max(1, self.total), 3),
            "sizes": self.sizes,
        }


def _folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, names in os.walk(path) for f in names)


def _gzip_bytes(path):
    """Bytes of `path` (a file, or every file of a folder, concatenated) after gzip."""
    paths = (
        [path]
        if os.path.isfile(path)
        else sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    )
    total = 0
    for file_path in paths:
        with open(file_path, "rb") as handle:
            total += len(gzip.compress(handle.read(), compresslevel=9))
    return total


def export_sizes(model, class_names):
    """Sizes in bytes of `model` exported as a SavedModel (its `variables/` folder) and as
    a float32 TFLite file, each dense and gzip-compressed."""
    directory = tempfile.mkdtemp(prefix="keras_transfer_sizes_")
    try:
        saved = export.export_saved_model(model, os.path.join(directory, "saved"), class_names=class_names)
        tflite = export.export_tflite(model, os.path.join(directory, "model.tflite"))
        variables = os.path.join(saved, "variables")
        return {
            "saved_model_variables": _folder_bytes(variables),
            "saved_model_variables_gzip": _gzip_bytes(variables),
            "tflite": _folder_bytes(tflite),
            "tflite_gzip": _gzip_bytes(tflite),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _budget_label(budget):
    return "all" if budget == "all" else f"k={budget}"


def _trained_count(method, model):
    weights = method.trainable_weights(model) if method is not None else model.trainable_weights
    return int(sum(int(np.prod(w.shape)) for w in weights))


def run_methods_target(source_model, target, settings, budgets, seeds, *, rows=METHOD_ROWS, log=print):
    """Every method of `rows` (and distillation) on one target; returns `[MethodRow]`."""
    from keras_transfer import demo

    num_classes = len(target.class_names)
    initial = {}
    for seed in seeds:  # one head initialisation per seed, shared by every method
        keras.utils.set_random_seed(1000 + seed)
        initial[seed] = builders.build_classifier("mnist_cnn", num_classes, weights=None).get_weights()
    student_initial = {}
    for seed in seeds:
        keras.utils.set_random_seed(2000 + seed)
        student_initial[seed] = builders.build_classifier(
            "mnist_mlp", num_classes, weights=None
        ).get_weights()
    results = []
    for budget in budgets:
        by_label = {}
        teachers = {}
        for seed in seeds:
            if budget == "all":
                train_data = target.pool
            else:
                train_data = data.few_shot(*target.pool, budget, seed=seed)
            for label, spec in rows:
                keras.utils.set_random_seed(seed)
                model = builders.build_classifier("mnist_cnn", num_classes, weights=None)
                model.set_weights(initial[seed])
                method = method_lib.get_method(spec) if spec not in (None, "scratch") else None
                if method is not None:
                    model = method.build(model)  # adapters: a new model with the same layers
                start = time.time()
                demo.run_method(
                    "scratch" if spec == "scratch" else "fine-tune",
                    model,
                    train_data,
                    settings.recipe,
                    source=source_model,
                    seed=seed,
                    transfer_method=method,
                )
                seconds = time.time() - start
                trained = _trained_count(method, model)
                final = method.finalize(model) if method is not None else model
                accuracy = evaluation.evaluate_classifier(final, target.test).accuracy
                row = by_label.setdefault(
                    label,
                    MethodRow(
                        target.title,
                        budget,
                        label,
                        spec,
                        [],
                        [],
                        trained,
                        freezing.count_parameters(model).total,
                    ),
                )
                row.accuracies.append(accuracy)
                row.seconds.append(seconds)
                if spec is None:
                    teachers[seed] = final
                if seed == seeds[0] and budget == budgets[-1]:
                    row.sizes = export_sizes(final, target.class_names)
                log(
                    f"  {target.title} {_budget_label(budget)} seed {seed} {label}: {accuracy:.4f} "
                    f"({trained:,} trained, {seconds:.1f}s)"
                )
            # Distillation: the MLP student alone vs distilled from this seed's fine-tuned CNN.
            student_rows = [("MLP student alone", None)]
            if seed in teachers:
                student_rows.append(("MLP student distilled", Distill(teacher=teachers[seed])))
            for label, method in student_rows:
                keras.utils.set_random_seed(seed)
                student = builders.build_classifier("mnist_mlp", num_classes, weights=None)
                student.set_weights(student_initial[seed])
                start = time.time()
                demo.run_method(
                    "scratch", student, train_data, settings.recipe, seed=seed, transfer_method=method
                )
                seconds = time.time() - start
                final = method.finalize(student) if method is not None else student
                accuracy = evaluation.evaluate_classifier(final, target.test).accuracy
                row = by_label.setdefault(
                    label,
                    MethodRow(
                        target.title,
                        budget,
                        label,
                        "distill" if method is not None else "scratch",
                        [],
                        [],
                        _trained_count(method, student),
                        freezing.count_parameters(student).total,
                    ),
                )
                row.accuracies.append(accuracy)
                row.seconds.append(seconds)
                if seed == seeds[0] and budget == budgets[-1]:
                    row.sizes = export_sizes(final, target.class_names)
                log(
                    f"  {target.title} {_budget_label(budget)} seed {seed} {label}: "
                    f"{accuracy:.4f} ({seconds:.1f}s)"
                )
        results.extend(by_label.values())
    return results


def _size_cell(sizes, key):
    if not sizes:
        return f"{'-':>15}"
    return f"{sizes[key] / 1024:>6.0f}/{sizes[key + '_gzip'] / 1024:>5.0f} KB"


def format_methods_table(rows):
    """The table: one line per (target, budget, method)."""
    header = (
        f"{'target':<11} {'labels':>6}  {'method':<22} {'trained':>9} {'%':>6}  {'accuracy':>14}"
        f"  {'time':>6}  {'SavedModel vars':>15}  {'TFLite':>15}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        budget = "all" if row.budget == "all" else f"k={row.budget}"
        lines.append(
            f"{row.target:<11} {budget:>6}  {row.method:<22} {row.trainable:>9,} "
            f"{100.0 * row.trainable / max(1, row.total):>5.1f}%  {row.accuracy:>7.3f} ±{row.spread:.3f}"
            f"  {float(np.mean(row.seconds)):>5.1f}s  {_size_cell(row.sizes, 'saved_model_variables')}"
            f"  {_size_cell(row.sizes, 'tflite')}"
        )
    lines.append("sizes: dense/gzip of the first seed's whole-pool (or largest-budget) model")
    return "\n".join(lines)


def plot_methods(rows, path):
    """Test accuracy of each method, one panel per (target, budget)."""
    plt = evaluation.pyplot()
    panels = list(dict.fromkeys((row.target, row.budget) for row in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (target, budget) in zip(axes[0], panels):
        mine = [row for row in rows if (row.target, row.budget) == (target, budget)]
        positions = np.arange(len(mine))
        ax.barh(
            positions, [row.accuracy for row in mine], xerr=[row.spread for row in mine], color="tab:blue"
        )
        ax.set_yticks(
            positions, [f"{row.method} ({100.0 * row.trainable / max(1, row.total):.1f}%)" for row in mine]
        )
        ax.invert_yaxis()
        low = min(row.accuracy for row in mine)
        ax.set_xlim(max(0.0, low - 0.1), 1.0)
        ax.set_xlabel("test accuracy (trained share of parameters)")
        ax.set_title(f"{target}, {'all labels' if budget == 'all' else f'{budget} labels/class'}")
    fig.tight_layout()
    return evaluation.save_figure(fig, path)


def run_methods_demo(
    output_dir="saved_models",
    *,
    budgets=(10, "all"),
    seeds=(0, 1),
    settings=None,
    rows=METHOD_ROWS,
    smoke=False,
    log=print,
):
    """Runs every method on both demo targets; prints the table, writes
    `OUTPUT/demo/methods.json`, `methods.txt` and `methods.png`.

    Args:
        output_dir: str. Defaults to `"saved_models"`.
        budgets: labelled examples per class, `"all"` for the whole pool. Defaults to
            `(10, "all")`.
        seeds: seeds to average over. Defaults to `(0, 1)`.
        settings: `demo.Settings` (or a name in `demo.SETTINGS`). Defaults to the
            library's `training.RECIPES["small"]`.
        rows: `(label, method)` pairs; `None` is full fine-tuning, `"scratch"` random
            weights. Defaults to `METHOD_ROWS`.
        smoke: bool. A seconds-long run (one seed, k=5, few steps) for tests.
        log: callable for progress lines. Defaults to `print`.

    Returns:
        dict with `table` (str), `rows` (`[MethodRow]`), `json` and `plot` (paths).
    """
    from keras_transfer import demo

    settings = demo.SETTINGS[settings] if isinstance(settings, str) else (settings or demo.Settings())
    if smoke:
        settings = demo.shortened(settings)
        budgets, seeds = (5,), (0,)
    for label, spec in rows:  # a typo fails here, before any training
        if spec not in (None, "scratch"):
            method_lib.get_method(spec)
    start = time.time()
    report_dir = os.path.join(output_dir, "demo")
    os.makedirs(report_dir, exist_ok=True)
    source_task, targets, mnist_source = demo.load_tasks(verbose=True)
    log(
        f"Methods: {len(rows)} + distillation on {len(targets)} targets x {len(budgets)} budgets x "
        f"{len(seeds)} seed(s), from one CNN source"
    )
    source_model, source_accuracy, _ = demo.train_source("mnist_cnn", source_task, settings, log=log)
    all_rows = []
    for target in targets:
        all_rows.extend(
            run_methods_target(source_model, target, settings, budgets, seeds, rows=rows, log=log)
        )
    table = format_methods_table(all_rows)
    log("\nTest accuracy (mean ±half-range over seeds " + ", ".join(map(str, seeds)) + "):")
    log(table)
    json_path = os.path.join(report_dir, "methods.json")
    with open(json_path, "w") as handle:
        json.dump(
            {
                "mnist": mnist_source,
                "recipe": dataclasses.asdict(settings.recipe),
                "source_accuracy": round(float(source_accuracy), 4),
                "seeds": list(seeds),
                "seconds": round(time.time() - start, 1),
                "rows": [row.as_dict() for row in all_rows],
            },
            handle,
            indent=2,
        )
    with open(os.path.join(report_dir, "methods.txt"), "w") as handle:
        handle.write(table + "\n")
    plot = plot_methods(all_rows, os.path.join(report_dir, "methods.png"))
    log(f"\n{time.time() - start:.0f}s; table and plot in {report_dir}")
    return {"table": table, "rows": all_rows, "json": json_path, "plot": plot}
