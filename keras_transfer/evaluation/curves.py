"""Learning curves: test accuracy against labelled examples per class, method by method.

`learning_curves(build_model, pool, test)` trains a model per (label budget, seed,
method) -- training from scratch, feature extraction, fine-tuning, or any
`TransferMethod` or callable -- on `data.few_shot` draws of the pool, evaluates each on
the test split with `evaluate_classifier`, and returns a `LearningCurves`: the
accuracies of every seed, their mean and spread, a table (`format`), JSON
(`to_json`) and a plot of accuracy against labels per class with the spread as a band
(`plot`). `keras-transfer demo`'s budgets table is this function's output.

Settings (the recipe, its learning rates) are chosen on validation data carved from
the pool, never on `target_test`: that split only measures.
"""

import dataclasses
import json
import time

import keras
import numpy as np

from keras_transfer.evaluation import metrics
from keras_transfer.evaluation import plots

BUILTIN = ("scratch", "frozen", "fine-tune")


def budget_label(budget):
    """`"all"` or `"k=<budget>"`."""
    return "all" if budget == "all" else f"k={budget}"


@dataclasses.dataclass
class LearningCurves:
    """Accuracies over label budgets and seeds, per method.

    Attributes:
        methods: the method labels, in order.
        budgets: labelled examples per class (`"all"`: the whole pool).
        seeds: the seeds, in order.
        accuracies: `{(method, budget): [test accuracy of each seed]}`.
        labels_per_class: `{budget: labelled examples per class used}` (for `"all"`,
            the pool's mean per class).
    """

    methods: list
    budgets: list
    seeds: list
    accuracies: dict
    labels_per_class: dict = dataclasses.field(default_factory=dict)

    def mean(self, method, budget):
        """Mean accuracy over the seeds."""
        return float(np.mean(self.accuracies[(method, budget)]))

    def spread(self, method, budget):
        """Half the range of the seeds' accuracies (the table's `±`)."""
        values = self.accuracies[(method, budget)]
        return float((max(values) - min(values)) / 2)

    def format(self, title="target", source="-"):
        """The table: one line per budget, `mean ±half-range` per method."""
        return format_table([(title, source, self.accuracies)], self.budgets, self.methods)

    def to_json(self):
        """A JSON string: methods, budgets, seeds, and per `"method / budget"` the
        accuracies, their mean and spread."""
        keys = [(m, b) for b in self.budgets for m in self.methods if (m, b) in self.accuracies]
        return json.dumps(
            {
                "methods": list(self.methods),
                "budgets": list(self.budgets),
                "seeds": list(self.seeds),
                "accuracies": {f"{m} / {b}": [float(v) for v in self.accuracies[(m, b)]] for m, b in keys},
                "mean": {f"{m} / {b}": self.mean(m, b) for m, b in keys},
                "spread": {f"{m} / {b}": self.spread(m, b) for m, b in keys},
            },
            indent=2,
        )

    def plot(self, path, title="learning curves"):
        """Saves accuracy against labels per class with a spread band; returns the path."""
        return plot_curves([(title, None, self.accuracies)], self.budgets, path, self.methods)


def format_table(rows, budgets, methods=BUILTIN):
    """The budgets table. `rows`: `(target title, source, {(method, budget): [acc]})`.

    Example:

    >>> from keras_transfer.evaluation import curves as lc
    >>> print(lc.format_table([("t", "cnn", {("scratch", 1): [0.5, 0.7]})], [1], ["scratch"]))
    target       source labels/class        scratch
    -----------------------------------------------
    t            cnn               1    0.600 ±0.100
    """
    header = f"{'target':<12} {'source':<6} {'labels/class':>12}  " + "  ".join(f"{m:>13}" for m in methods)
    lines = [header, "-" * len(header)]
    for title, source, results in rows:
        for budget in budgets:
            cells = []
            for method in methods:
                values = results.get((method, budget), [])
                if not values:
                    cells.append(f"{'-':>13}")
                    continue
                spread = (max(values) - min(values)) / 2
                cells.append(f"{np.mean(values):>7.3f} ±{spread:.3f}")
            lines.append(f"{title:<12} {source:<6} {str(budget):>12}  " + "  ".join(cells))
    return "\n".join(lines)


def plot_curves(rows, budgets, path, methods=BUILTIN):
    """Accuracy against labels per class, one panel per row, the seeds' range as a band."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    ticks = [str(b) for b in budgets]
    for ax, (title, source, results) in zip(axes[0], rows):
        for method in methods:
            present = [b for b in budgets if results.get((method, b))]
            if not present:
                continue
            values = [results[(method, b)] for b in present]
            xs = [ticks[budgets.index(b)] for b in present]
            ax.plot(xs, [np.mean(v) for v in values], marker="o", label=method)
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.2)
        ax.set_title(title if source is None else f"{title} ({source} source)")
        ax.set_xlabel("labelled examples per class")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend()
    return plots.save_figure(fig, path)


def _label(method):
    if isinstance(method, tuple) and len(method) == 2:
        return method[0]
    if isinstance(method, str):
        return method
    return getattr(method, "name", None) or getattr(method, "__name__", None) or type(method).__name__


def _runner(method, build_model):
    """`run(model, train_data, recipe, source, seed)` -> the model to evaluate."""
    from keras_transfer import demo  # `run_method`: one demo run, as a user writes it
    from keras_transfer.training import method as method_lib

    if isinstance(method, tuple) and len(method) == 2:
        method = method[1]
    if isinstance(method, str) and method in BUILTIN:

        def run(model, train_data, recipe, source, seed):
            demo.run_method(method, model, train_data, recipe, source=source, seed=seed)
            return model

        return run
    if isinstance(method, (str, method_lib.TransferMethod, list)):
        transfer = method_lib.get_method(method)

        def run(model, train_data, recipe, source, seed):
            # A fresh copy of the seed's model: a method may change its structure
            # (`build`: adapters) or strip it (`finalize`), and the next run starts over.
            fresh = build_model()
            fresh.set_weights(model.get_weights())
            model = transfer.build(fresh)
            demo.run_method(
                "fine-tune" if source is not None else "scratch",
                model,
                train_data,
                recipe,
                source=source,
                seed=seed,
                transfer_method=transfer,
            )
            return transfer.finalize(model)

        return run
    if callable(method):

        def run(model, train_data, recipe, source, seed):
            result = method(model, train_data, recipe=recipe, source=source, seed=seed)
            return result if isinstance(result, keras.Model) else model

        return run
    raise ValueError(
        f"methods are {BUILTIN}, TransferMethods (or their names), callables, or (label, method) "
        f"pairs. Received: {method!r}"
    )


def learning_curves(
    build_model,
    target_pool,
    target_test,
    *,
    methods=("scratch", "fine-tune"),
    budgets=(1, 5, 10, 50, "all"),
    seeds=(0, 1, 2),
    source=None,
    recipe=None,
    plot=None,
    log=None,
    title="target",
    on_run=None,
):
    """Trains and evaluates every (budget, seed, method); returns `LearningCurves`.

    Each seed has one random initialisation (`build_model()` under
    `keras.utils.set_random_seed(1000 + seed)`), shared by every budget and method, so
    methods differ only in what they do. For a budget `k`, the training set is
    `data.few_shot(*target_pool, k, seed=seed)` (`"all"`: the whole pool); each run's
    figure is `evaluate_classifier` on `target_test`.

    Args:
        build_model: callable `() -> keras.Model`, a fresh classifier for the target.
        target_pool: `(x, y)`, the labelled pool budgets are drawn from.
        target_test: `(x, y)`, the held-out test split (measures only).
        methods: each `"scratch"` (every layer from the seed's initialisation at the
            recipe's `scratch_learning_rate`), `"frozen"` (the source backbone frozen,
            the head trained), `"fine-tune"` (`fine_tune` with the recipe), a
            `TransferMethod` or its name (fine-tuned with it from `source`; the
            finalised model is evaluated), a callable `fn(model, train_data, *,
            recipe, source, seed)` that trains `model` (or returns the model to
            evaluate), or a `(label, method)` pair. Defaults to scratch and fine-tune.
        budgets: labelled examples per class, `"all"` for the whole pool. Defaults to
            `(1, 5, 10, 50, "all")`.
        seeds: Defaults to `(0, 1, 2)`.
        source: `keras.Model` whose weights (all but the head) start the transfer
            methods. Needed by all but scratch.
        recipe: `training.Recipe`. Defaults to `training.RECIPES["small"]`.
        plot: str. Where to save the plot. Defaults to `None`.
        log: callable for a line per run, or `None`. Defaults to `None`.
        title: str. For the log lines, table and plot. Defaults to `"target"`.
        on_run: callable `(method, budget, accuracy, model)` after each run.

    Returns:
        `LearningCurves`.

    Example:

    >>> import numpy as np, keras_transfer
    >>> from keras_transfer import training
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((40, 28, 28, 1)) * 255
    >>> y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int)
    >>> curves = keras_transfer.learning_curves(
    ...     lambda: keras_transfer.build_classifier("mnist_mlp", 2, weights=None),
    ...     (x[:30], y[:30]), (x[30:], y[30:]), methods=("scratch",), budgets=(2,), seeds=(0, 1),
    ...     recipe=training.RECIPES["small"].replace(epochs=1, min_steps=2))
    >>> len(curves.accuracies[("scratch", 2)]), 0.0 <= curves.mean("scratch", 2) <= 1.0
    (2, True)
    """
    from keras_transfer import data
    from keras_transfer import training

    if not callable(build_model):
        raise ValueError(f"build_model must be a callable returning a model. Received: {build_model!r}")
    budgets, seeds = list(budgets), list(seeds)
    if not budgets or not seeds or not methods:
        raise ValueError(
            f"methods, budgets and seeds must be non-empty. Received: methods={methods!r}, "
            f"budgets={budgets!r}, seeds={seeds!r}"
        )
    for budget in budgets:
        if budget != "all" and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budgets are positive integers or 'all'. Received: budget={budget!r}")
    labels = [_label(m) for m in methods]
    runners = [_runner(m, build_model) for m in methods]
    for label, method in zip(labels, methods):
        if label != "scratch" and source is None:
            raise ValueError(f"method {label!r} starts from a source model: pass source=.")
    recipe = recipe or training.RECIPES["small"]
    model = build_model()
    # One random initialisation per seed, shared by every budget and method.
    initial_by_seed = {}
    for seed in seeds:
        keras.utils.set_random_seed(1000 + seed)
        initial_by_seed[seed] = build_model().get_weights()
    num_classes = len(np.unique(target_pool[1]))
    results, per_class = {}, {}
    for budget in budgets:
        for seed in seeds:
            if budget == "all":
                x, y = target_pool
            else:
                x, y = data.few_shot(*target_pool, budget, seed=seed)
            per_class[budget] = len(y) / num_classes
            for label, run in zip(labels, runners):
                start = time.time()
                model.set_weights(initial_by_seed[seed])
                evaluated = run(model, (x, y), recipe, source, seed)
                accuracy = metrics.evaluate_classifier(evaluated, target_test).accuracy
                results.setdefault((label, budget), []).append(accuracy)
                if log is not None:
                    log(
                        f"  {title} {budget_label(budget)} seed {seed} "
                        f"{label}: {accuracy:.4f} ({time.time() - start:.1f}s)"
                    )
                if on_run is not None:
                    on_run(label, budget, accuracy, evaluated)
    curves = LearningCurves(labels, budgets, seeds, results, per_class)
    if plot is not None:
        curves.plot(plot, title=title)
    return curves
