"""The demo is a user's script: every run is a public call with the library's recipe."""

import numpy as np
import pytest

import keras_transfer
from keras_transfer import data
from keras_transfer import demo
from keras_transfer import training


@pytest.fixture(scope="module")
def tiny_tasks(mnist, uci_digits):
    source_x, source_y = data.subset_classes(mnist.x, mnist.y, range(5))
    source = ((source_x[:256], source_y[:256]), (source_x[256:384], source_y[256:384]))
    target = demo.Target(
        "uci_digits",
        "UCI digits",
        (uci_digits.x[:600], uci_digits.y[:600]),
        (uci_digits.x[600:800], uci_digits.y[600:800]),
        [str(d) for d in range(10)],
    )
    return source, target


def test_demo_settings_are_the_library_recipe():
    assert demo.Settings().recipe is training.RECIPES["small"]
    guide = demo.SETTINGS["keras-guide"].recipe
    assert (guide.learning_rate, guide.label_smoothing, guide.augment, guide.cosine) == (
        1e-3,
        0.0,
        False,
        False,
    )
    assert guide.min_steps == training.RECIPES["small"].min_steps  # the same budget
    changed = demo.Settings().replace(min_steps=30, source_epochs=2, epochs=None)
    assert (changed.recipe.min_steps, changed.source_epochs, changed.recipe.epochs) == (30, 2, 20)
    assert demo.steps_for(training.RECIPES["small"], 50) == 400


def test_every_demo_run_is_a_fine_tune_call(tiny_tasks, monkeypatch):
    source, target = tiny_tasks
    settings = demo.shortened(demo.Settings())
    calls = []
    real = training.fine_tune

    def recording(model, train_data, *args, **kwargs):
        calls.append(kwargs)
        return real(model, train_data, *args, **kwargs)

    monkeypatch.setattr(training, "fine_tune", recording)
    source_model, accuracy, history = demo.train_source("mnist_mlp", source, settings)
    # Chance is 0.2; one epoch on the tiny set measured 0.49 to 0.6 from run to run.
    assert len(history.history["val_accuracy"]) == settings.source_epochs and accuracy > 0.35
    runs = []
    results = demo.run_target(
        source_model,
        "mnist_mlp",
        target,
        settings,
        (5,),
        (0,),
        log=lambda line: None,
        on_run=lambda method, budget, acc, model: runs.append((method, model)),
    )
    assert [kwargs["recipe"] for kwargs in calls] == [settings.recipe] * 3
    assert calls[0]["learning_rate"] == settings.recipe.scratch_learning_rate  # scratch
    assert (calls[1]["head_epochs"], calls[1]["epochs"]) == (settings.recipe.epochs, 0)  # frozen
    assert set(calls[2]) == {"recipe", "seed", "verbose"}  # fine-tune: the recipe as it is
    assert sorted(results) == [("fine-tune", 5), ("frozen", 5), ("scratch", 5)]
    # Each figure is evaluate_classifier's on the test split, for the model as trained.
    model = runs[-1][1]
    expected = keras_transfer.evaluate_classifier(model, target.test).accuracy
    assert results[("fine-tune", 5)] == [pytest.approx(expected)]
    assert all(0.0 <= np.mean(v) <= 1.0 for v in results.values())


def test_the_methods_table_runs_every_row_and_writes_json_and_plot(tmp_path):
    import json

    from keras_transfer import demo_methods

    lines = []
    result = demo_methods.run_methods_demo(
        str(tmp_path),
        rows=(("full fine-tune", None), ("bias-only", "bias_only")),
        smoke=True,
        log=lines.append,
    )
    written = json.loads((tmp_path / "demo" / "methods.json").read_text())
    rows = {(row["target"], row["method"]): row for row in written["rows"]}
    for target in ("MNIST 5-9", "UCI digits"):
        full, bias = rows[(target, "full fine-tune")], rows[(target, "bias-only")]
        assert full["trainable"] == full["total"] > 100_000
        assert 0 < bias["trainable"] < 0.01 * bias["total"]  # biases and the head only
        assert 0.0 <= bias["accuracy"] <= 1.0 and len(full["accuracies"]) == 1
        alone, distilled = rows[(target, "MLP student alone")], rows[(target, "MLP student distilled")]
        assert alone["total"] == distilled["total"] < full["total"]
        sizes = full["sizes"]
        assert 0 < sizes["saved_model_variables_gzip"] < sizes["saved_model_variables"]
        assert 0 < sizes["tflite_gzip"] < sizes["tflite"]
    assert (tmp_path / "demo" / "methods.png").stat().st_size > 10_000
    assert "bias-only" in result["table"] and result["table"] in "\n".join(lines)
    with pytest.raises(ValueError, match="Unknown transfer method"):
        demo_methods.run_methods_demo(str(tmp_path), rows=(("typo", "bias_onyl"),), smoke=True)
