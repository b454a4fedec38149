"""Learning curves: accuracy over label budgets and seeds; the demo's table is one."""

import json
import os

import keras
import numpy as np
import pytest

import keras_transfer
from keras_transfer import demo
from keras_transfer import evaluation
from keras_transfer import training
from keras_transfer.evaluation import curves as lc

RECIPE = training.RECIPES["small"].replace(epochs=1, head_epochs=0, min_steps=4, augment=False)


@pytest.fixture(scope="module")
def task(uci_digits):
    pool = (uci_digits.x[:400], uci_digits.y[:400])
    test = (uci_digits.x[400:600], uci_digits.y[400:600])
    keras.utils.set_random_seed(0)
    source = keras_transfer.build_classifier("mnist_mlp", 5, weights=None)
    return pool, test, source


def _build():
    return keras_transfer.build_classifier("mnist_mlp", 10, weights=None)


@pytest.fixture(scope="module")
def curves(task, tmp_path_factory):
    pool, test, source = task
    path = str(tmp_path_factory.mktemp("curves") / "curves.png")
    lines = []
    result = keras_transfer.learning_curves(
        _build,
        pool,
        test,
        methods=("scratch", "fine-tune", ("bias", "bias_only")),
        budgets=(1, 3),
        seeds=(0, 1),
        source=source,
        recipe=RECIPE,
        plot=path,
        log=lines.append,
        title="UCI",
    )
    return result, path, lines


def test_keys_shape_spread_and_plot(curves, task):
    result, path, lines = curves
    assert result.methods == ["scratch", "fine-tune", "bias"]
    assert sorted(result.accuracies) == sorted((m, b) for m in result.methods for b in (1, 3))
    assert all(len(v) == 2 for v in result.accuracies.values())  # one per seed
    values = result.accuracies[("scratch", 3)]
    assert result.mean("scratch", 3) == pytest.approx(np.mean(values))
    assert result.spread("scratch", 3) == pytest.approx((max(values) - min(values)) / 2)
    assert result.labels_per_class == {1: 1.0, 3: 3.0}
    assert len(lines) == 2 * 2 * 3 and lines[0].startswith("  UCI k=1 seed 0 scratch: ")
    table = result.format("UCI", "mlp")
    assert table.splitlines()[0].split()[-3:] == ["scratch", "fine-tune", "bias"]
    assert f"{result.mean('bias', 3):.3f} ±{result.spread('bias', 3):.3f}" in table
    written = json.loads(result.to_json())
    assert written["accuracies"]["fine-tune / 1"] == result.accuracies[("fine-tune", 1)]
    assert written["spread"]["scratch / 3"] == pytest.approx(result.spread("scratch", 3))
    assert os.path.getsize(path) > 10_000


def test_each_figure_is_the_evaluation_of_the_model_as_trained(task):
    pool, test, source = task
    runs = []
    calls = []

    def mine(model, train_data, *, recipe, source, seed):
        calls.append((len(train_data[1]), seed, recipe is RECIPE, source is not None))
        return None  # trains nothing: the seed's initialisation is evaluated

    result = keras_transfer.learning_curves(
        _build,
        pool,
        test,
        methods=(mine,),
        budgets=(2,),
        seeds=(0, 1),
        source=source,
        recipe=RECIPE,
        on_run=lambda method, budget, accuracy, model: runs.append(model.get_weights()),
    )
    assert calls == [(20, 0, True, True), (20, 1, True, True)]
    keras.utils.set_random_seed(1001)
    initial = _build()
    assert all(np.array_equal(a, b) for a, b in zip(runs[1], initial.get_weights()))
    expected = keras_transfer.evaluate_classifier(initial, test).accuracy
    assert result.accuracies[("mine", 2)][1] == pytest.approx(expected)


def test_bad_arguments(task):
    pool, test, source = task
    with pytest.raises(ValueError, match="source"):
        keras_transfer.learning_curves(_build, pool, test, methods=("fine-tune",), source=None)
    with pytest.raises(ValueError, match="budget=0"):
        keras_transfer.learning_curves(_build, pool, test, methods=("scratch",), budgets=(0,))
    with pytest.raises(ValueError, match="methods are"):
        keras_transfer.learning_curves(_build, pool, test, methods=(3,))


def test_the_demo_table_is_a_learning_curves_call(task, monkeypatch):
    pool, test, source = task
    calls = []
    real = evaluation.learning_curves

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "learning_curves", recording)
    target = demo.Target("uci_digits", "UCI digits", pool, test, [str(d) for d in range(10)])
    settings = demo.Settings().replace(epochs=1, head_epochs=0, min_steps=4)
    results = demo.run_target(source, "mnist_mlp", target, settings, (1,), (0,), log=lambda line: None)
    assert len(calls) == 1 and calls[0]["methods"] == demo.METHODS and calls[0]["recipe"] is settings.recipe
    assert sorted(results) == [("fine-tune", 1), ("frozen", 1), ("scratch", 1)]
    assert demo.format_table([("UCI digits", "mlp", results)], (1,)) == lc.format_table(
        [("UCI digits", "mlp", results)], (1,), demo.METHODS
    )
