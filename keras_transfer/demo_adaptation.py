"""`keras-transfer demo adaptation`: unsupervised domain adaptation, measured.

A small CNN learns the ten MNIST digits (labelled source) and is scored on two
unlabelled targets: the UCI digits (another scanner and resolution) and an
MNIST-M-style domain (`data.mnist_m`: other MNIST digits blended with crops of
scikit-image's colour photographs, as Ganin et al. built MNIST-M; not MNIST-M itself).
Three rows: source only (`train` on the source), `DANN` and `CORAL` (the same `train`
call with `method=DANN(target=...)` / `CORAL(target=...)` on the target's unlabelled
training images). Target labels are used only to score: the test split for the table,
and a validation split (carved from the target's pool) that chose the settings below.
Every domain is 28x28 with 3 channels (grayscale digits replicated).

Each cell is the mean test accuracy over seeds +- half the range. The table goes to the
log and to `OUTPUT/demo/adaptation.json` (+ `adaptation.txt`, `adaptation.png`).
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
from keras_transfer.adaptation import CORAL
from keras_transfer.adaptation import DANN

SHAPE = (28, 28, 3)


@dataclasses.dataclass(frozen=True)
class AdaptationSettings:
    """How every row trains (the same `train` call; only `method` differs).

    Chosen on the targets' validation splits (seed 0), never on the test splits: DANN's
    weight among 0.1, 0.3, 1 (1 with Adam made the adversarial game diverge: features
    grew until the domain classifier's loss exploded and the classifier fell to chance;
    0.3 hurt the MNIST-M-style target), CORAL's among 30 to 10,000, 6 or 12 epochs,
    with or without cosine decay.

    Example:

    >>> from keras_transfer.demo_adaptation import AdaptationSettings
    >>> AdaptationSettings().dann_weight, AdaptationSettings().coral_weight
    (0.1, 3000.0)
    """

    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    cosine: bool = True
    dann_weight: float = 0.1
    dann_lambda_max: float = 1.0
    coral_weight: float = 3000.0


@dataclasses.dataclass
class Target:
    """A target domain: unlabelled training images, and labelled validation and test."""

    title: str
    unlabelled: np.ndarray
    validation: tuple
    test: tuple


def _three(x):
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def load_domains(seed=0, verbose=True):
    """`(source, validation, targets, mnist_copy)`: the MNIST source (half of the digits,
    split 80/20 into train and validation), and the two targets, each pool split
    60/20/20 into unlabelled training images, validation and test (stratified). The
    MNIST-M-style target is built from the other half of the MNIST digits."""
    from sklearn.model_selection import train_test_split

    mnist = data.load_mnist(verbose=verbose)
    x_src, x_m, y_src, y_m = train_test_split(
        mnist.x, mnist.y, test_size=0.5, stratify=mnist.y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_src, y_src, test_size=0.2, stratify=y_src, random_state=seed
    )
    mnist_m = data.load_mnist_m_style(x_m, y_m, seed=seed, verbose=verbose)
    uci = data.load_uci_digits(seed=seed)

    def target(title, x, y):
        x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
        x_unl, x_val_t, _, y_val_t = train_test_split(
            x_pool, y_pool, test_size=0.25, stratify=y_pool, random_state=seed
        )
        return Target(title, _three(x_unl), (_three(x_val_t), y_val_t), (_three(x_test), y_test))

    targets = [target("UCI digits", uci.x, uci.y), target("MNIST-M-style", mnist_m.x, mnist_m.y)]
    return (_three(x_train), y_train), (_three(x_val), y_val), targets, mnist.source


def _method(row, target, settings, seed):
    if row == "DANN":
        return DANN(
            target=target.unlabelled,
            weight=settings.dann_weight,
            lambda_max=settings.dann_lambda_max,
            seed=seed,
        )
    if row == "CORAL":
        return CORAL(target=target.unlabelled, weight=settings.coral_weight, seed=seed)
    return None


def train_row(row, source, target, settings, seed, initial):
    """One run, as a user writes it: `train(model, source, method=...)`; returns the model."""
    keras.utils.set_random_seed(seed)
    model = builders.build_classifier("mnist_cnn", 10, weights=None, input_shape=SHAPE)
    model.set_weights(initial)
    method = _method(row, target, settings, seed)
    training.train(
        model,
        source,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        cosine=settings.cosine,
        seed=seed,
        method=method,
        verbose=0,
    )
    return method.finalize(model) if method is not None else model


def _accuracy(model, split):
    return float(evaluation.evaluate_classifier(model, split).accuracy)


def run_adaptation(source, targets, settings, seeds, *, rows=("source only", "DANN", "CORAL"), log=print):
    """Every row on every target and seed. Returns `{row: {target: {"test": [...],
    "validation": [...], "seconds": [...]}}}`."""
    results = {row: {t.title: {"test": [], "validation": [], "seconds": []} for t in targets} for row in rows}
    for seed in seeds:
        keras.utils.set_random_seed(1000 + seed)
        initial = builders.build_classifier("mnist_cnn", 10, weights=None, input_shape=SHAPE).get_weights()
        for row in rows:
            # Source only does not see the target: one model serves both targets.
            shared = None
            for target in targets:
                start = time.time()
                if row == "source only" and shared is not None:
                    model, seconds = shared
                else:
                    model = train_row(row, source, target, settings, seed, initial)
                    seconds = time.time() - start
                    if row == "source only":
                        shared = (model, seconds)
                cell = results[row][target.title]
                cell["test"].append(_accuracy(model, target.test))
                cell["validation"].append(_accuracy(model, target.validation))
                cell["seconds"].append(seconds)
                log(
                    f"  seed {seed} {row:<11} {target.title:<13} test {cell['test'][-1]:.4f} "
                    f"validation {cell['validation'][-1]:.4f} ({seconds:.1f}s)"
                )
    return results


def _mean_spread(values):
    return float(np.mean(values)), float((max(values) - min(values)) / 2)


def format_adaptation_table(results):
    """Rows (source only, DANN, CORAL) x targets: mean test accuracy ±half-range, time."""
    titles = list(next(iter(results.values())))
    header = f"{'method':<12}" + "".join(f"  {title:>17}" for title in titles) + f"  {'time/run':>8}"
    lines = [header, "-" * len(header)]
    for row, cells in results.items():
        line = f"{row:<12}"
        for title in titles:
            mean, spread = _mean_spread(cells[title]["test"])
            line += f"  {mean:>9.3f} ±{spread:.3f}"
        seconds = [s for title in titles for s in cells[title]["seconds"]]
        line += f"  {float(np.mean(seconds)):>7.1f}s"
        lines.append(line)
    return "\n".join(lines)


def plot_adaptation(results, path):
    """Test accuracy per method, one group of bars per target."""
    plt = evaluation.pyplot()
    titles = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    width = 0.8 / len(results)
    for index, (row, cells) in enumerate(results.items()):
        stats = [_mean_spread(cells[title]["test"]) for title in titles]
        ax.bar(
            np.arange(len(titles)) + index * width,
            [m for m, _ in stats],
            width,
            yerr=[s for _, s in stats],
            label=row,
        )
    ax.set_xticks(np.arange(len(titles)) + width * (len(results) - 1) / 2, titles)
    ax.set_ylabel("target test accuracy (no target labels in training)")
    ax.set_ylim(0.0, 1.0)
    ax.legend()
    fig.tight_layout()
    return evaluation.save_figure(fig, path)


def run_adaptation_demo(output_dir="saved_models", *, seeds=(0, 1, 2), settings=None, smoke=False, log=print):
    """Source only vs DANN vs CORAL on both unlabelled targets; prints the table, writes
    `OUTPUT/demo/adaptation.json`, `adaptation.txt` and `adaptation.png`.

    Args:
        output_dir: str. Defaults to `"saved_models"`.
        seeds: seeds to average over. Defaults to `(0, 1, 2)`.
        settings: `AdaptationSettings`. Defaults to `AdaptationSettings()`.
        smoke: bool. A seconds-long run (one seed, one epoch on 256 source images) for tests.
        log: callable for progress lines. Defaults to `print`.

    Returns:
        dict with `table` (str), `results`, `json` and `plot` (paths).
    """
    settings = settings or AdaptationSettings()
    start = time.time()
    source, _, targets, mnist_copy = load_domains(verbose=True)
    if smoke:
        settings = dataclasses.replace(settings, epochs=1)
        seeds = tuple(seeds)[:1]
        source = (source[0][:256], source[1][:256])
        for target in targets:
            target.unlabelled = target.unlabelled[:256]
    report_dir = os.path.join(output_dir, "demo")
    os.makedirs(report_dir, exist_ok=True)
    log(
        f"Adaptation: MNIST ({len(source[0]):,} labelled source digits) -> "
        + ", ".join(f"{t.title} ({len(t.unlabelled):,} unlabelled, {len(t.test[0]):,} test)" for t in targets)
        + f"; seeds {', '.join(map(str, seeds))}"
    )
    results = run_adaptation(source, targets, settings, seeds, log=log)
    table = format_adaptation_table(results)
    log("\nTarget test accuracy (mean ±half-range over seeds " + ", ".join(map(str, seeds)) + "):")
    log(table)
    json_path = os.path.join(report_dir, "adaptation.json")
    summary = {
        row: {
            title: {
                "accuracy": round(_mean_spread(cell["test"])[0], 4),
                "spread": round(_mean_spread(cell["test"])[1], 4),
                "accuracies": [round(a, 4) for a in cell["test"]],
                "validation": [round(a, 4) for a in cell["validation"]],
                "seconds": round(float(np.mean(cell["seconds"])), 2),
            }
            for title, cell in cells.items()
        }
        for row, cells in results.items()
    }
    with open(json_path, "w") as handle:
        json.dump(
            {
                "mnist": mnist_copy,
                "settings": dataclasses.asdict(settings),
                "seeds": list(seeds),
                "seconds": round(time.time() - start, 1),
                "rows": summary,
            },
            handle,
            indent=2,
        )
    with open(os.path.join(report_dir, "adaptation.txt"), "w") as handle:
        handle.write(table + "\n")
    plot = plot_adaptation(results, os.path.join(report_dir, "adaptation.png"))
    log(f"\n{time.time() - start:.0f}s; table and plot in {report_dir}")
    return {"table": table, "results": results, "json": json_path, "plot": plot}
