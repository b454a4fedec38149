"""The `keras-transfer demo` pipeline written in plain PyTorch (the benchmark's baseline).

    python benchmarks/torch_demo.py [--smoke] [--output DIR] [--json PATH]
        [--sources cnn,mlp] [--budgets 1,5,10,all] [--seeds 0,1]

(`--sources`, `--budgets`, `--seeds`: the options of `keras-transfer demo`, parsed alike.)

What it does, mirroring `keras_transfer.demo.run_demo` run by run:

* Data: the same source task and targets, the same splits and the same few-shot samples
  (`keras_transfer.demo.load_tasks` and `keras_transfer.data.few_shot`, so this process
  imports TensorFlow for the loaders; that time is "data", outside "train+eval").
* Models: `build_classifier("mnist_cnn" / "mnist_mlp")` layer for layer: pixels / 255 ->
  [Conv 3x3 64 relu -> max-pool 2 -> Conv 3x3 128 relu -> max-pool 2 ->] Flatten ->
  Dense 128 relu (the backbone) -> Dropout 0.2 -> Dense num_classes (the head), with
  Keras's initialisation (Glorot-uniform kernels, zero biases).
* Recipe (`keras_transfer.demo.Settings`: `training.RECIPES["small"]`): Adam (epsilon 1e-7)
  with cosine decay to zero
  over each run, cross-entropy with label smoothing 0.1, batch 32 drawn from a reshuffled
  repeated stream of the run's examples, the same numbers of steps (400 per few-shot run,
  20 epochs for "all", 10 epochs for the source, validated after each), the same learning
  rates (scratch 3e-3, frozen head 1e-2, fine-tune 3e-3, source 1e-3). Augmentation on each
  batch: random shift 0.1, rotation 0.05 x 2 pi, zoom 0.1 (the Keras layers' parameter
  ranges, zero fill, bilinear), composed into one affine transform per image and applied
  with `affine_grid` / `grid_sample`.
* Runs: per target and seed one random initialisation shared by the three methods;
  fine-tune and frozen copy the source backbone (the head stays new); frozen trains the
  head only (backbone `requires_grad=False`). Test accuracy of every run on the whole test
  set, the same table (`demo.format_table`), `results.json`.
* Plots: the same three kinds of figures through the same matplotlib code (source curves,
  accuracy against labels, a confusion matrix per target, with sklearn's report).
* Export: each target's chosen model (fine-tuned from the first source, largest budget,
  first seed, as the demo picks it) saved as a `state_dict` and as TorchScript
  (`torch.jit.trace`), reloaded and its test accuracy checked. It does NOT do what the
  toolkit's export does beyond that: no TF-Serving signature / labels file layout, no
  TFLite float32 and int8 (calibrated) conversions and their evaluation. So the export
  phases are not equivalent and are reported separately.

It runs eagerly in float32 on 2 CPU threads or, when that is slower at the moment (a
shared machine: two OpenMP threads were measured up to 10x slower than one under load),
on 1: `--threads auto` (the default) times a few steps with each and keeps the faster.
As a competent plain loop would, it keeps the convolutions in `channels_last`, the data
as tensors, and draws each run's batch indices and augmentation parameters at once: no
per-step Python work beyond the step itself. It prints the same progress
lines and table as the demo, and with `--json` writes phase timings for
`benchmarks/demo_pipeline.py`.
"""

import argparse
import copy
import dataclasses
import inspect
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from keras_transfer import cli  # noqa: E402
from keras_transfer import data as data_lib  # noqa: E402
from keras_transfer import demo  # noqa: E402
from keras_transfer import evaluation  # noqa: E402

# Models.


def _glorot(module):
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class Classifier(nn.Module):
    """pixels (N, 1, 28, 28) 0-255 -> backbone -> dropout -> dense head (logits)."""

    def __init__(self, backbone, num_classes, units=128):
        super().__init__()
        if backbone == "mnist_cnn":
            self.backbone = nn.Sequential(
                nn.Conv2d(1, 64, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(5 * 5 * 128, units),
                nn.ReLU(),
            )
        elif backbone == "mnist_mlp":
            self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, units), nn.ReLU())
        else:
            raise ValueError(f"Unknown backbone {backbone!r}")
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(units, num_classes)
        _glorot(self)
        # channels_last: oneDNN's fast layout for these convolutions and poolings on CPU
        # (NCHW max-pooling alone was measured 10x slower here).
        self.to(memory_format=torch.channels_last)

    def forward(self, pixels):
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.head(self.dropout(self.backbone(pixels * (1.0 / 255.0))))


def _initial_state(backbone, num_classes, seed):
    torch.manual_seed(seed)
    return copy.deepcopy(Classifier(backbone, num_classes).state_dict())


# The augmentation of `keras_transfer.data.default_augmentation` (its defaults), which
# `train(..., augment=True)` applies.
_AUGMENT = inspect.signature(data_lib.default_augmentation).parameters
TRANSLATION, ROTATION, ZOOM = (_AUGMENT[name].default for name in ("translation", "rotation", "zoom"))

# Training.


def _augmentation_matrices(count, recipe, generator):
    """`count` affine matrices (count, 2, 3) in affine_grid's normalised coordinates:
    translate then rotate then zoom (the order of `data.default_augmentation`)."""

    def uniform(low, high):
        return torch.rand(count, generator=generator) * (high - low) + low

    # Shifts are fractions of the size; normalised coordinates span 2 (align_corners).
    shift_x = uniform(-TRANSLATION, TRANSLATION) * 2 * 28 / 27
    shift_y = uniform(-TRANSLATION, TRANSLATION) * 2 * 28 / 27
    angle = uniform(-ROTATION, ROTATION) * 2 * math.pi
    zoom = uniform(1 - ZOOM, 1 + ZOOM)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    return torch.stack(
        [
            torch.stack([cos, -sin, shift_x], 1),
            torch.stack([sin, cos, shift_y], 1),
        ],
        1,
    )


def _augment(images, matrices):
    grid = F.affine_grid(matrices, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def fit(model, x, y, steps, learning_rate, recipe, seed, validation=None, params=None, epochs=1):
    """`steps` Adam steps on batches of 32 from a reshuffled repeated stream of (x, y);
    returns a Keras-like history (`epochs` of them, each validated when `validation` is
    given, as the demo's source)."""
    generator = torch.Generator().manual_seed(seed)
    batch = recipe.batch_size
    epochs_of_data = math.ceil(steps * batch / len(x))
    order = torch.argsort(torch.rand(epochs_of_data, len(x), generator=generator), dim=1).flatten()
    order = order[: steps * batch].view(steps, batch)
    matrices = (
        _augmentation_matrices(steps * batch, recipe, generator).view(steps, batch, 2, 3)
        if recipe.augment
        else None
    )
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate, eps=1e-7, foreach=True)
    chunks = max(1, min(epochs, steps))
    history = {"loss": [], "accuracy": []}
    if validation is not None:
        history.update(val_loss=[], val_accuracy=[])
    model.train()
    step = 0
    for chunk in range(chunks):
        end = steps * (chunk + 1) // chunks
        losses, correct, seen = [], 0, 0
        while step < end:
            rate = (
                learning_rate * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0)))
                if recipe.cosine
                else learning_rate
            )
            for group in optimizer.param_groups:
                group["lr"] = rate
            index = order[step]
            images, labels = x[index], y[index]
            if matrices is not None:
                images = _augment(images, matrices[step])
            logits = model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            correct += int((logits.detach().argmax(1) == labels).sum()) if validation is not None else 0
            seen += len(labels)
            step += 1
        history["loss"].append(float(torch.stack(losses).mean()))
        history["accuracy"].append(correct / max(seen, 1))
        if validation is not None:
            val_loss, val_accuracy = evaluate(model, *validation, recipe=recipe)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_accuracy)
            model.train()
    return history


def predict(model, x):
    model.eval()
    with torch.inference_mode():
        return model(x)


def evaluate(model, x, y, recipe=None):
    logits = predict(model, x)
    smoothing = recipe.label_smoothing if recipe is not None else 0.0
    loss = float(F.cross_entropy(logits, y, label_smoothing=smoothing))
    return loss, float((logits.argmax(1) == y).float().mean())


def _tensors(x, y):
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(np.asarray(y, np.int64))


def steps_for(recipe, budget, size):
    return demo.steps_for(recipe, size)


# The pipeline.


def run_pipeline(
    output_dir,
    *,
    sources=("cnn", "mlp"),
    budgets=(1, 5, 10, "all"),
    seeds=(0, 1),
    settings=None,
    smoke=False,
    log=print,
):
    """The demo's pipeline in PyTorch; returns `{table, results, timings, ...}`."""
    settings = settings or demo.Settings()
    if smoke:
        settings = demo.shortened(settings)
        budgets, seeds, sources = (1, 5), (0,), tuple(sources)[:1]
    recipe = settings.recipe
    backbones_by_source = {"cnn": "mnist_cnn", "mlp": "mnist_mlp"}
    timings = {}
    start = time.perf_counter()
    report_dir = os.path.join(output_dir, "demo")
    os.makedirs(report_dir, exist_ok=True)
    source_task, targets, mnist_source = demo.load_tasks(verbose=True)
    (sx, sy), (stx, sty) = source_task
    source_train, source_test = _tensors(sx, sy), _tensors(stx, sty)
    tests = {t.name: _tensors(*t.test) for t in targets}
    pools = {t.name: _tensors(*t.pool) for t in targets}
    samples = {
        (t.name, budget, seed): _tensors(*data_lib.few_shot(*t.pool, budget, seed=seed))
        for t in targets
        for budget in budgets
        if budget != "all"
        for seed in seeds
    }
    timings["data"] = time.perf_counter() - start
    log(
        f"Runs: {len(sources)} source(s) x {len(targets)} targets x {len(budgets)} budgets x "
        f"{len(seeds)} seed(s) x {len(demo.METHODS)} methods"
    )

    train_start = time.perf_counter()
    chosen, rows, histories = {}, [], {}
    for source in sources:
        backbone = backbones_by_source[source]
        run_start = time.perf_counter()
        torch.manual_seed(0)
        source_model = Classifier(backbone, 5)
        steps = settings.source_epochs * (len(sx) // recipe.batch_size)
        histories[source] = fit(
            source_model,
            *source_train,
            steps,
            settings.source_learning_rate,
            recipe,
            seed=0,
            validation=source_test,
            epochs=settings.source_epochs,
        )
        _, accuracy = evaluate(source_model, *source_test)
        log(
            f"source {backbone}: MNIST 0-4 test accuracy {accuracy:.4f} "
            f"({time.perf_counter() - run_start:.1f}s)"
        )
        for target in targets:
            num_classes = len(target.class_names)
            initial = {seed: _initial_state(backbone, num_classes, 1000 + seed) for seed in seeds}
            results = {}
            for budget in budgets:
                for seed in seeds:
                    x, y = pools[target.name] if budget == "all" else samples[(target.name, budget, seed)]
                    steps = steps_for(recipe, budget, len(x))
                    for method in demo.METHODS:
                        run_start = time.perf_counter()
                        model = Classifier(backbone, num_classes)
                        model.load_state_dict(initial[seed])
                        params = None
                        if method != "scratch":
                            model.backbone.load_state_dict(source_model.backbone.state_dict())
                        if method == "frozen":
                            model.backbone.requires_grad_(False)
                            params = list(model.head.parameters())
                        rate = {
                            "scratch": recipe.scratch_learning_rate,
                            "frozen": recipe.head_learning_rate,
                            "fine-tune": recipe.learning_rate,
                        }[method]
                        fit(model, x, y, steps, rate, recipe, seed=seed, params=params)
                        _, accuracy = evaluate(model, *tests[target.name])
                        results.setdefault((method, budget), []).append(accuracy)
                        log(
                            f"  {target.title} [{backbone}] {demo._budget_label(budget)} seed {seed} "
                            f"{method}: {accuracy:.4f} ({time.perf_counter() - run_start:.1f}s)"
                        )
                        if (method, budget, source) == (
                            "fine-tune",
                            budgets[-1],
                            sources[0],
                        ) and target.name not in chosen:
                            chosen[target.name] = (accuracy, model)
            rows.append((target.title, source, results))
    timings["train_eval"] = time.perf_counter() - train_start

    plot_start = time.perf_counter()
    table = demo.format_table(rows, budgets)
    for source, history in histories.items():
        evaluation.plot_history(
            history,
            os.path.join(report_dir, f"source_{source}_curves.png"),
            title=f"{source} source on MNIST 0-4",
        )
    demo.plot_budgets(rows, budgets, os.path.join(report_dir, "accuracy_vs_labels.png"))
    from sklearn import metrics

    for target in targets:
        accuracy, model = chosen[target.name]
        x, y = tests[target.name]
        y_pred = predict(model, x).argmax(1).numpy()
        y_true = y.numpy()
        labels = list(range(len(target.class_names)))
        kwargs = dict(labels=labels, target_names=target.class_names, zero_division=0)
        result = evaluation.Evaluation(
            accuracy=float(np.mean(y_true == y_pred)),
            report=metrics.classification_report(y_true, y_pred, digits=3, **kwargs),
            report_dict=metrics.classification_report(y_true, y_pred, output_dict=True, **kwargs),
            confusion_matrix=metrics.confusion_matrix(y_true, y_pred, labels=labels),
            class_names=target.class_names,
            y_true=y_true,
            y_pred=y_pred,
        )
        evaluation.plot_confusion_matrix(
            result,
            os.path.join(report_dir, f"{target.name}_confusion.png"),
            title=f"{target.title}: fine-tune, {demo._budget_label(budgets[-1])}, {sources[0]} "
            f"(acc {result.accuracy:.3f})",
        )
    timings["plots"] = time.perf_counter() - plot_start

    export_start = time.perf_counter()
    exports = {}
    for target in targets:
        accuracy, model = chosen[target.name]
        directory = os.path.join(output_dir, target.name)
        os.makedirs(directory, exist_ok=True)
        model.eval()
        torch.save(model.state_dict(), os.path.join(directory, "state_dict.pt"))
        x, y = tests[target.name]
        with torch.no_grad():
            traced = torch.jit.trace(model, x[:1])
        path = os.path.join(directory, "model.pt")
        traced.save(path)
        loaded = torch.jit.load(path)
        with torch.inference_mode():
            exported_accuracy = float((loaded(x).argmax(1) == y).float().mean())
        exports[target.name] = {"path": path, "accuracy": exported_accuracy}
        log(
            f"exported {target.title} (accuracy {accuracy:.4f}) to {path}; TorchScript test "
            f"accuracy {exported_accuracy:.4f}"
        )
    timings["export"] = time.perf_counter() - export_start
    timings["total"] = time.perf_counter() - start

    summary = demo.write_results(
        report_dir,
        rows,
        table,
        log,
        {
            "mnist": mnist_source,
            "recipe": dataclasses.asdict(recipe),
            "seeds": list(seeds),
            "timings": {k: round(v, 2) for k, v in timings.items()},
            "exports": exports,
        },
    )
    log("\nPhases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return {"table": table, "results": summary["results"], "timings": timings, "exports": exports}


def pick_threads(candidates=(2, 1), steps=15):
    """The faster thread count for CNN training steps right now: on a busy machine two
    OpenMP threads were measured 10x slower than one (every parallel region waits for a
    descheduled thread), on an idle one faster. Takes a second or two."""
    model = Classifier("mnist_cnn", 5)
    optimizer = torch.optim.Adam(model.parameters(), eps=1e-7, foreach=True)
    images, labels = torch.rand(32, 1, 28, 28) * 255, torch.randint(0, 5, (32,))
    best = None
    for threads in candidates:
        torch.set_num_threads(threads)
        seconds = []
        for repeat in range(2):
            start = time.perf_counter()
            for _ in range(steps if repeat else 3):
                loss = F.cross_entropy(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            seconds.append(time.perf_counter() - start)
        if best is None or seconds[-1] < best[1]:
            best = (threads, seconds[-1])
    torch.set_num_threads(best[0])
    return best[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join("saved_models", "torch_demo"))
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run")
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch threads, or 'auto': the faster of 2 and 1 right now (default)",
    )
    parser.add_argument("--json", help="also write results and phase timings to this file")
    # The same options, parsed the same way, as `keras-transfer demo`'s.
    parser.add_argument("--sources", default="cnn,mlp", help="source models: cnn, mlp (default: cnn,mlp)")
    parser.add_argument(
        "--budgets",
        type=cli._budgets,
        default=(1, 5, 10, "all"),
        help="labels per class (default: 1,5,10,all)",
    )
    parser.add_argument("--seeds", type=cli._seeds, default=(0, 1), help="seeds (default: 0,1)")
    args = parser.parse_args(argv)
    if args.threads == "auto":
        threads = pick_threads()
    else:
        threads = int(args.threads)
        torch.set_num_threads(threads)
    print(f"PyTorch {torch.__version__}: {threads} thread(s)", flush=True)
    result = run_pipeline(
        args.output,
        sources=tuple(s.strip() for s in args.sources.split(",")),
        budgets=args.budgets,
        seeds=args.seeds,
        smoke=args.smoke,
        log=lambda line: print(line, flush=True),
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                dict({k: result[k] for k in ("results", "timings", "exports")}, threads=threads),
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
