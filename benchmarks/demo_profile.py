"""Where one run of the demo spends its time: the compiled steps, tracing, the rest.

    python benchmarks/demo_profile.py [--smoke]

Runs exactly what `keras-transfer demo` runs for one cell of its table
(`demo.run_method`, then `evaluation.evaluate_classifier` on the test split), for the
MNIST 5-9 target at k = 10 labelled digits per class, seed 0, `demo.Settings().recipe`
(400 augmented steps at batch 32), from a source `mnist_cnn` trained for one epoch
(its weights do not change the speed). One warm-up run of each method first (the
process's first-time costs), then one scratch and one frozen run under `cProfile`.

For each, it prints the run's seconds and three parts of them, read off the profile:
**steps**, the time inside TensorFlow's execute call (`TFE_Py_Execute`: the compiled
multi-step train function, and the evaluation's predict calls); **tracing**, the
cumulative time of `tf.function` tracing (`tracing_compilation.trace_function`); and
the **rest** (Keras's per-call Python, callbacks, weight transfer, evaluation outside
the steps). `benchmarks/README.md` quotes it next to the demo figure of `run.py`.
Not in `run.py`: it explains a figure, it is not a goal. `--smoke` runs 20 steps.
"""

import argparse
import cProfile
import pstats
import time


def _part(stats, predicate):
    """Cumulative seconds of the profiled functions matching `predicate(file, name)`,
    outermost calls only (a function nested in another match is not counted twice)."""
    return sum(
        cumulative
        for (file, _, name), (_, primitive_calls, _, cumulative, _) in stats.stats.items()
        if predicate(file, name) and primitive_calls
    )


def profile_run(method, model, initial, train, test, recipe, source):
    from keras_transfer import demo
    from keras_transfer import evaluation

    model.set_weights(initial)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    demo.run_method(method, model, train, recipe, source=source, seed=0)
    accuracy = evaluation.evaluate_classifier(model, test).accuracy
    profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    steps = _part(stats, lambda file, name: "TFE_Py_Execute" in name)
    tracing = _part(
        stats, lambda file, name: file.endswith("tracing_compilation.py") and name == "trace_function"
    )
    return seconds, steps, tracing, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 steps per run (checks that it runs)")
    args = parser.parse_args()

    import keras

    from keras_transfer import builders
    from keras_transfer import data
    from keras_transfer import demo
    from keras_transfer import training

    settings = demo.shortened(demo.Settings()) if args.smoke else demo.Settings()
    recipe = settings.recipe
    source_task, targets, _ = demo.load_tasks(verbose=False)
    keras.utils.set_random_seed(0)
    source = builders.build_classifier("mnist_cnn", 5, weights=None)
    training.train(source, source_task[0], epochs=1, verbose=0, seed=0)
    target = targets[0]
    model = builders.build_classifier("mnist_cnn", len(target.class_names), weights=None)
    initial = model.get_weights()
    train = data.few_shot(*target.pool, 10, seed=0)
    steps = demo.steps_for(recipe, len(train[1]))
    print(f"{target.title}, k=10 ({len(train[1])} images), {steps} steps at batch {recipe.batch_size} a run")
    for method in ("scratch", "frozen"):
        profile_run(method, model, initial, train, target.test, recipe, source)  # warm-up
    for method in ("scratch", "frozen"):
        seconds, inside, tracing, accuracy = profile_run(
            method, model, initial, train, target.test, recipe, source
        )
        print(
            f"{method}: {seconds:.2f} s (test accuracy {accuracy:.3f}): steps {inside:.2f} s "
            f"({inside / steps * 1e3:.1f} ms per step, evaluation included), tracing {tracing:.2f} s, "
            f"the rest {seconds - inside - tracing:.2f} s"
        )


if __name__ == "__main__":
    main()
