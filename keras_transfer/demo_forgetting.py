"""`keras-transfer demo forgetting`: does the source task survive transfer?

A CNN source is trained on MNIST digits 0-4 (as the demo trains it), then reused for
digits 5-9 with a new head, by each method of `FORGETTING_ROWS`: naive fine-tuning
first (the library's recipe for a small source model, `training.RECIPES["small"]`),
then the same run regularised toward the source (L2-SP, EWC) and with a copy of the
source head trained beside the new one (LwF on the source's outputs, replay of a small
buffer of source digits). After each run the source
task is measured again on its test split with the source head kept beside the new one
(`forgetting.measure_retention`: the source's head on the fine-tuned backbone, or the
method's own copy of it, `method.source_head`, for methods that train one).

Every run is the call a user makes (`demo.run_method`: `transfer_weights`, then
`fine_tune(..., method=...)`). The table (method, target accuracy, source accuracy after
transfer, drop in points, time; mean and half-range over seeds) goes to the log and to
`OUTPUT/demo/forgetting.json` (+ `forgetting.txt`).

The regularisers' strengths were chosen by `select_forgetting_settings` on validation
data carved from the pools (20% of the target pool, 20% of the source pool with a source
trained on the other 80%, seed 100), never on the test splits: see `SELECTED`.
"""

import dataclasses
import json
import os
import tempfile
import time

import keras
import numpy as np

from keras_transfer import builders
from keras_transfer import data
from keras_transfer import evaluation
from keras_transfer.forgetting import retention
from keras_transfer.training import method as method_lib

# The settings `select_forgetting_settings` chose (MNIST 5-9, whole pool, seed 100; see
# the module docstring and the README): L2-SP's `alpha` and EWC's `strength`.
SELECTED = {"l2_sp": {"alpha": 0.01}, "ewc": {"strength": 1e4}}
FISHER_BATCHES = 20  # source batches (of 32) for EWC's Fisher information


def _l2_sp(source_model, source_train, workdir, **settings):
    from keras_transfer.forgetting import L2SP

    return L2SP(source_model, **{**SELECTED["l2_sp"], **settings})


def _ewc(source_model, source_train, workdir, **settings):
    from keras_transfer.forgetting import EWC

    # The Fisher values are saved beside the table: a later row, seed or demo run with
    # the same source reads them back instead of computing them again.
    return EWC(
        source_model,
        source_train,
        fisher_path=os.path.join(workdir, "forgetting_fisher.npz") if workdir else None,
        **{"fisher_batches": FISHER_BATCHES, **SELECTED["ewc"], **settings},
    )


def _lwf(source_model, source_train, workdir, **settings):
    from keras_transfer.forgetting import LwF

    return LwF(source_model, **settings)  # the paper's T=2, weight 1 (the defaults)


def _replay(source_model, source_train, workdir, **settings):
    from keras_transfer.forgetting import Replay

    # A buffer of 20 source digits per class (100 in all), the default.
    return Replay(source_model, source_train, **settings)


@dataclasses.dataclass(frozen=True)
class ForgettingRow:
    """A row of the table: its label, the registered method it needs (`None`: naive
    fine-tuning) and `build(source_model, source_train, workdir, **settings)` returning
    the method (or `None`)."""

    label: str
    method: object
    build: object


# The rows, in order: naive fine-tuning first. A row whose method is not registered
# (another family's, on a branch without it) is skipped with a line.
FORGETTING_ROWS = (
    ForgettingRow("naive fine-tune", None, lambda source_model, source_train, workdir, **_: None),
    ForgettingRow("L2-SP", "l2_sp", _l2_sp),
    ForgettingRow("EWC", "ewc", _ewc),
    ForgettingRow("LwF", "lwf", _lwf),
    ForgettingRow("replay", "replay", _replay),
)


@dataclasses.dataclass
class ForgettingResult:
    """One line of the table: a method at a budget, over seeds."""

    method: str
    budget: object
    target: list
    source_after: list
    source_before: float
    seconds: list
    settings: dict = dataclasses.field(default_factory=dict)

    @staticmethod
    def _spread(values):
        return float((max(values) - min(values)) / 2)

    @property
    def drops(self):
        return [100.0 * (self.source_before - after) for after in self.source_after]

    def as_dict(self):
        return {
            "method": self.method,
            "budget": self.budget,
            "settings": self.settings,
            "target_accuracy": round(float(np.mean(self.target)), 4),
            "target_spread": round(self._spread(self.target), 4),
            "source_accuracy_before": round(self.source_before, 4),
            "source_accuracy_after": round(float(np.mean(self.source_after)), 4),
            "source_spread": round(self._spread(self.source_after), 4),
            "drop_points": round(float(np.mean(self.drops)), 2),
            "target_accuracies": [round(a, 4) for a in self.target],
            "source_accuracies_after": [round(a, 4) for a in self.source_after],
            "seconds": round(float(np.mean(self.seconds)), 1),
        }


def available_rows(rows=FORGETTING_ROWS, log=print):
    """The rows whose method is registered; a line for each one skipped.

    Example:

    >>> from keras_transfer import demo_forgetting
    >>> [row.label for row in demo_forgetting.available_rows()]
    ['naive fine-tune', 'L2-SP', 'EWC', 'LwF', 'replay']
    """
    registered = {name for name, _ in method_lib.list_methods()}
    kept = []
    for row in rows:
        if row.method is not None and row.method not in registered:
            log(f"skipping row {row.label!r}: no transfer method {row.method!r} is registered here")
            continue
        kept.append(row)
    return kept


def run_forgetting_runs(
    source_model,
    source_train,
    source_test,
    target,
    recipe,
    budgets,
    seeds,
    *,
    rows,
    settings_by_row=None,
    workdir=None,
    source_before=None,
    log=print,
):
    """Every row on `target` at each budget and seed; returns `[ForgettingResult]`.

    `target` is `(pool, test, num_classes)`; accuracies are measured on `test` and on
    `source_test` (the source task, `measure_retention`)."""
    from keras_transfer import demo

    pool, test, num_classes = target
    if source_before is None:
        source_before = evaluation.evaluate_classifier(source_model, source_test).accuracy
    initial = {}
    for seed in seeds:  # one head initialisation per seed, shared by every row
        keras.utils.set_random_seed(1000 + seed)
        initial[seed] = builders.build_classifier("mnist_cnn", num_classes, weights=None).get_weights()
    results = []
    for budget in budgets:
        by_label = {}
        for seed in seeds:
            train_data = pool if budget == "all" else data.few_shot(*pool, budget, seed=seed)
            for row in rows:
                settings = dict((settings_by_row or {}).get(row.label, {}))
                method = row.build(source_model, source_train, workdir, **settings)
                if hasattr(method, "fisher"):
                    method.fisher  # EWC's Fisher values first: the run's random state stays the seed's
                keras.utils.set_random_seed(seed)
                model = builders.build_classifier("mnist_cnn", num_classes, weights=None)
                model.set_weights(initial[seed])
                if method is not None:
                    model = method.build(model)
                start = time.time()
                demo.run_method(
                    "fine-tune",
                    model,
                    train_data,
                    recipe,
                    source=source_model,
                    seed=seed,
                    transfer_method=method,
                )
                seconds = time.time() - start
                final = method.finalize(model) if method is not None else model
                accuracy = evaluation.evaluate_classifier(final, test).accuracy
                kept = retention.measure_retention(
                    final,
                    source_model,
                    source_test,
                    head=getattr(method, "source_head", None),
                    before=source_before,
                )
                result = by_label.setdefault(
                    row.label,
                    ForgettingResult(
                        row.label,
                        budget,
                        [],
                        [],
                        float(source_before),
                        [],
                        {**_row_settings(row), **settings},
                    ),
                )
                result.target.append(accuracy)
                result.source_after.append(kept.after)
                result.seconds.append(seconds)
                log(
                    f"  {_budget_label(budget)} seed {seed} {row.label}: target {accuracy:.4f}, source "
                    f"{kept.before:.4f} -> {kept.after:.4f} ({kept.drop:+.1f} points dropped, {seconds:.1f}s)"
                )
        results.extend(by_label.values())
    return results


def _row_settings(row):
    return dict(SELECTED.get(row.method, {})) if row.method else {}


def _budget_label(budget):
    return "all" if budget == "all" else f"k={budget}"


def format_forgetting_table(results):
    """The table: one line per (budget, method)."""
    header = (
        f"{'labels':>6}  {'method':<18} {'target accuracy':>16}  {'source after':>14}  "
        f"{'drop (points)':>13}  {'time':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        row = result.as_dict()
        lines.append(
            f"{_budget_label(result.budget):>6}  {result.method:<18} "
            f"{row['target_accuracy']:>8.3f} ±{row['target_spread']:.3f}  "
            f"{row['source_accuracy_after']:>6.3f} ±{row['source_spread']:.3f}  "
            f"{row['drop_points']:>+13.1f}  {row['seconds']:>5.1f}s"
        )
    if results:
        lines.append(
            f"source accuracy before transfer: {results[0].source_before:.3f} (MNIST 0-4 test split)"
        )
    return "\n".join(lines)


def run_forgetting_demo(
    output_dir="saved_models",
    *,
    budgets=("all", 10),
    seeds=(0, 1),
    settings=None,
    rows=FORGETTING_ROWS,
    smoke=False,
    log=print,
):
    """Runs every row on MNIST 0-4 -> 5-9; prints the table, writes
    `OUTPUT/demo/forgetting.json` and `forgetting.txt`.

    Args:
        output_dir: str. Defaults to `"saved_models"`.
        budgets: labelled target examples per class, `"all"` for the whole pool.
            Defaults to `("all", 10)`.
        seeds: seeds to average over. Defaults to `(0, 1)`.
        settings: `demo.Settings` (or a name in `demo.SETTINGS`). Defaults to the
            library's `training.RECIPES["small"]`.
        rows: `ForgettingRow`s. Defaults to `FORGETTING_ROWS`.
        smoke: bool. A seconds-long run (one seed, k=5, few steps, small source
            sets) for tests.
        log: callable for progress lines. Defaults to `print`.

    Returns:
        dict with `table` (str), `results` (`[ForgettingResult]`) and `json` (path).
    """
    from keras_transfer import demo

    settings = demo.SETTINGS[settings] if isinstance(settings, str) else (settings or demo.Settings())
    if smoke:
        settings = demo.shortened(settings)
        budgets, seeds = (5,), (0,)
    start = time.time()
    report_dir = os.path.join(output_dir, "demo")
    os.makedirs(report_dir, exist_ok=True)
    source_task, targets, mnist_source = demo.load_tasks(verbose=True)
    if smoke:
        (x, y), (tx, ty) = source_task
        source_task = ((x[:300], y[:300]), (tx[:200], ty[:200]))
    target = targets[0]  # MNIST 5-9
    rows = available_rows(rows, log=log)
    log(
        f"Forgetting: {len(rows)} methods on MNIST 0-4 -> {target.title} x {len(budgets)} budget(s) x "
        f"{len(seeds)} seed(s), from one CNN source; the source task re-measured after each run"
    )
    source_model, source_accuracy, _ = demo.train_source("mnist_cnn", source_task, settings, log=log)
    results = run_forgetting_runs(
        source_model,
        source_task[0],
        source_task[1],
        (target.pool, target.test, len(target.class_names)),
        settings.recipe,
        budgets,
        seeds,
        rows=rows,
        settings_by_row={"EWC": {"fisher_batches": 2}} if smoke else None,
        workdir=report_dir,
        source_before=source_accuracy,
        log=log,
    )
    table = format_forgetting_table(results)
    log("\nMNIST 0-4 -> 5-9 (mean ±half-range over seeds " + ", ".join(map(str, seeds)) + "):")
    log(table)
    json_path = os.path.join(report_dir, "forgetting.json")
    with open(json_path, "w") as handle:
        json.dump(
            {
                "mnist": mnist_source,
                "recipe": dataclasses.asdict(settings.recipe),
                "source_accuracy": round(float(source_accuracy), 4),
                "selected": SELECTED,
                "seeds": list(seeds),
                "seconds": round(time.time() - start, 1),
                "rows": [result.as_dict() for result in results],
            },
            handle,
            indent=2,
        )
    with open(os.path.join(report_dir, "forgetting.txt"), "w") as handle:
        handle.write(table + "\n")
    log(f"\n{time.time() - start:.0f}s; table in {report_dir}")
    return {"table": table, "results": results, "json": json_path}


def select_forgetting_settings(
    candidates=None,
    *,
    budget="all",
    seed=100,
    settings=None,
    margin=1.0,
    rows=FORGETTING_ROWS,
    log=print,
):
    """Chooses each regulariser's setting on validation data, never on the test splits.

    The source is trained on 80% of the MNIST 0-4 pool and its retention measured on the
    other 20%; the target runs train on 80% of the MNIST 5-9 pool and are scored on
    the other 20% (stratified, `seed`). For each row, the candidate kept is the one
    with the smallest source drop among those whose target validation accuracy is
    within `margin` points of naive fine-tuning's (the largest target accuracy if
    none is).

    Args:
        candidates: `{row label: [settings dict, ...]}`. Defaults to L2-SP
            `alpha` in 0.01, 0.1, 1, 10 and EWC `strength` in 1e2, 1e3, 1e4, 1e5.
        budget: labels per class or `"all"`. Defaults to `"all"`.
        seed: int. Of the splits and the runs. Defaults to `100`.
        settings: `demo.Settings`. Defaults to the library's.
        margin: float. Points of target accuracy a setting may give up. Defaults to `1.0`.
        rows, log: as `run_forgetting_demo`'s.

    Returns:
        dict `{row label: {"chosen": settings, "scores": [...]}}`.
    """
    from sklearn.model_selection import train_test_split

    from keras_transfer import demo

    settings = demo.SETTINGS[settings] if isinstance(settings, str) else (settings or demo.Settings())
    candidates = candidates or {
        "L2-SP": [{"alpha": a} for a in (0.01, 0.1, 1.0, 10.0)],
        "EWC": [{"strength": s} for s in (1e2, 1e3, 1e4, 1e5)],
    }
    source_task, targets, _ = demo.load_tasks(verbose=True)

    def carve(x, y):
        x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
        return (x_fit, y_fit), (x_val, y_val)

    source_fit, source_val = carve(*source_task[0])
    target_fit, target_val = carve(*targets[0].pool)
    source_model, _, _ = demo.train_source(
        "mnist_cnn", (source_fit, source_val), settings, seed=seed, log=log
    )
    before = evaluation.evaluate_classifier(source_model, source_val).accuracy
    by_label = {row.label: row for row in available_rows(rows, log=log)}
    target = (target_fit, target_val, len(targets[0].class_names))
    workdir = tempfile.mkdtemp(prefix="keras_transfer_select_")  # EWC's Fisher values, computed once

    def score(row, options):
        (result,) = run_forgetting_runs(
            source_model,
            source_fit,
            source_val,
            target,
            settings.recipe,
            (budget,),
            (seed,),
            rows=[row],
            settings_by_row={row.label: options},
            workdir=workdir,
            source_before=before,
            log=log,
        )
        return {"settings": options, "target": result.target[0], "drop": result.drops[0]}

    naive = score(by_label["naive fine-tune"], {})
    chosen = {"naive fine-tune": {"chosen": {}, "scores": [naive]}}
    for label, options in candidates.items():
        if label not in by_label:
            continue
        scores = [score(by_label[label], option) for option in options]
        close = [s for s in scores if 100.0 * (naive["target"] - s["target"]) <= margin]
        best = (
            min(close, key=lambda s: (s["drop"], -s["target"]))
            if close
            else max(scores, key=lambda s: s["target"])
        )
        chosen[label] = {"chosen": best["settings"], "scores": scores}
        log(
            f"select {label}: {best['settings']} (validation: target {best['target']:.4f}, "
            f"drop {best['drop']:+.1f})"
        )
    return chosen
