"""The benchmark runner works end to end (`--smoke`: seconds, figures mean nothing).

Benchmarks are never timed tests: this only checks that every script runs and reports
every figure of the issue's table, with its goal, and the final `N/M goals met` line.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke(*only):
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke"]
    if only:
        command += ["--only", *only]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("=== Summary", 1)[1]
    lines = [line for line in summary.splitlines() if "goal " in line]
    final = result.stdout.strip().splitlines()[-1]
    met, total = map(int, re.fullmatch(r"(\d+)/(\d+) goals met", final).groups())
    assert total == len(lines) and 0 <= met <= total
    return summary.lower(), len(lines)


def _script_smoke(script, timeout):
    """Runs `benchmarks/<script> --smoke` (a script outside `run.py`) and returns the
    finished process, after checking it succeeded."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


# The quick run covers the fresh-process harness (mlp: TensorFlow and PyTorch rounds),
# the in-process kind (feature_cache) and the start-up ones. The CNN, the demo pipeline
# (a second `demo --smoke`, which test_cli runs already), ResNet50, the image pipeline,
# scaling and oneDNN (minutes on the slower CPUs) run with --run-large.
QUICK = {
    "mlp": ("MLP", "textbook", "PyTorch"),
    "feature_cache": ("feature cache",),
    "cli_startup": ("keras-transfer --help",),
    "import_cost": ("import keras_transfer", "from keras_transfer import train"),
}


def test_runner_smoke_reports_the_quick_figures():
    summary, count = _smoke(*QUICK)
    assert count == 6, summary
    for words in QUICK.values():
        for word in words:
            assert word.lower() in summary, word


@pytest.mark.large
def test_runner_smoke_reports_every_figure():
    summary, count = _smoke()
    assert count == 19, summary
    for words in (
        "MLP",
        "textbook",
        "PyTorch",
        "CNN",
        "demo",
        "feature cache",
        "matmul peak",
        "bf16",
        "image-folder",
        "peak RSS",
        "keras-transfer --help",
        "import keras_transfer",
        "scaling: scan throughput flatness",
        "scaling: peak RSS",
        "oneDNN (AVX2 code) vs TensorFlow's own kernels",
    ):
        assert words.lower() in summary, words


def _benchmark_modules():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import common
    import run

    return common, run


def test_machine_kind_labels():
    common, _ = _benchmark_modules()
    assert common.machine_kind("GenuineIntel", {"avx2", "avx512f", "amx_bf16", "amx_tile"}) == "intel-amx"
    assert common.machine_kind("GenuineIntel", {"avx2", "avx512f"}) == "intel-avx512"
    assert common.machine_kind("AuthenticAMD", {"avx2", "avx512f", "avx512_bf16"}) == "amd-avx512"
    assert common.machine_kind("AuthenticAMD", {"avx2", "fma"}) == "amd-avx2"
    # AMD's CPU family tells its cores apart (Intel's is 6 throughout: left out).
    assert common.machine_kind("AuthenticAMD", {"avx2", "avx512f"}, family=25) == "amd-avx512-f25"
    assert common.machine_kind("AuthenticAMD", {"avx2", "avx512f"}, family=26) == "amd-avx512-f26"
    assert common.machine_kind("GenuineIntel", {"avx2", "avx512f"}, family=6) == "intel-avx512"
    assert common._family({"cpu family": "25"}) == 25 and common._family({}) is None
    assert common.machine_kind("HygonGenuine", {"avx2"}) == "x86-avx2"


def test_spread_best_median_worst():
    common, _ = _benchmark_modules()
    speed = common.Spread([55_100.0, 61_200.0, 58_000.0], {"loss": 0.1})
    assert (speed.best, speed.median, speed.worst) == (61_200.0, 58_000.0, 55_100.0)
    assert speed.text() == "best 61.2k, median 58.0k, worst 55.1k samples/s over 3 rounds"
    seconds = common.Spread([5.5, 5.0, 6.0], lower_is_better=True)
    assert (seconds.best, seconds.worst) == (5.0, 6.0)


def test_demo_spread_pairs_the_runs_of_both_logs(tmp_path):
    _benchmark_modules()
    import demo_pipeline

    keras_log, torch_log = tmp_path / "keras.log", tmp_path / "torch.log"
    keras_log.write_text(
        "Runs: 1 source(s) x 1 targets\n"
        "source mnist_cnn: MNIST 0-4 test accuracy 0.9933 (15.1s)\n"
        "  MNIST 5-9 [mnist_cnn] k=1 seed 0 scratch: 0.6813 (8.0s)\n"
        "  MNIST 5-9 [mnist_cnn] k=1 seed 0 frozen: 0.6987 (4.0s)\n"
        "  MNIST 5-9 [mnist_cnn] k=5 seed 0 scratch: 0.8933 (6.0s)\n"
        "  MNIST 5-9 [mnist_cnn] all seed 0 frozen: 0.9000 (9.9s)\n"
    )
    torch_log.write_text(
        "PyTorch 2.13.0+cpu: 2 thread(s)\n"
        "source mnist_cnn: MNIST 0-4 test accuracy 0.9900 (12.0s)\n"
        "  MNIST 5-9 [mnist_cnn] k=1 seed 0 scratch: 0.6700 (7.0s)\n"
        "  MNIST 5-9 [mnist_cnn] k=1 seed 0 frozen: 0.7000 (2.0s)\n"
        "  MNIST 5-9 [mnist_cnn] k=5 seed 0 scratch: 0.8800 (7.0s)\n"
    )
    keras_runs = demo_pipeline.per_run_seconds(keras_log)
    assert keras_runs[("MNIST 5-9 [mnist_cnn]", "k=5", "0", "scratch")] == 6.0
    assert keras_runs[("MNIST 5-9 [mnist_cnn]", "all", "0", "frozen")] == 9.9
    assert keras_runs[("source", "mnist_cnn")] == 15.1 and len(keras_runs) == 5
    spread = demo_pipeline.run_spread(keras_runs, demo_pipeline.per_run_seconds(torch_log))
    # Only the runs both logs have: the "all" frozen run is the toolkit's alone.
    assert spread == (
        "source (1 run): toolkit 15.1-15.1 s, PyTorch 12.0-12.0 s, 0.79x; "
        "scratch (2 runs): toolkit 6.0-8.0 s, PyTorch 7.0-7.0 s, 1.00x; "
        "frozen (1 run): toolkit 4.0-4.0 s, PyTorch 2.0-2.0 s, 0.50x"
    )
    assert demo_pipeline.run_spread(keras_runs, {}) is None


def test_results_file_keeps_the_scripts_not_rerun(tmp_path):
    common, run = _benchmark_modules()
    path = str(tmp_path / "results" / "amd-avx512.json")
    info = {"kind": "amd-avx512", "cpu": "AMD EPYC"}
    run.save_results(path, info, {"mlp": ([common.Figure("a", 2.0, 1.5)], 10.0)})
    run.save_results(path, info, {"cnn": ([common.Figure("b", 1.0, 1.3)], 20.0)})
    with open(path) as handle:
        saved = json.load(handle)
    assert list(saved["scripts"]) == ["mlp", "cnn"]
    assert saved["scripts"]["mlp"]["figures"][0]["value"] == 2.0
    assert saved["scripts"]["mlp"]["figures"][0]["met"] is True
    assert saved["scripts"]["cnn"]["figures"][0]["met"] is False
    assert saved["machine"]["cpu"] == "AMD EPYC"
    assert os.listdir(tmp_path / "results") == ["amd-avx512.json"]  # no temporary file left


@pytest.mark.large
def test_demo_profile_splits_each_run_into_steps_tracing_and_the_rest():
    result = _script_smoke("demo_profile.py", timeout=900)
    pattern = r"(scratch|frozen): ([\d.]+) s .*steps ([\d.]+) s .*tracing ([\d.]+) s, the rest (-?[\d.]+) s"
    runs = re.findall(pattern, result.stdout)
    assert [run[0] for run in runs] == ["scratch", "frozen"], result.stdout
    for _, total, steps, tracing, rest in runs:
        total, steps, tracing, rest = map(float, (total, steps, tracing, rest))
        assert steps > 0 and tracing > 0 and rest >= 0
        assert abs(steps + tracing + rest - total) < 0.02


@pytest.mark.large
def test_tf_data_stall_times_each_deletion_in_both_modes():
    result = _script_smoke("tf_data_stall.py", timeout=600)
    lines = re.findall(
        r"lifetime ([\d.]+) s: delete autotune on ([\d.]+) s, pipeline_options \(off\) ([\d.]+) s",
        result.stdout,
    )
    assert [float(lifetime) for lifetime, _, _ in lines] == [0.2, 0.4], result.stdout
    summaries = re.findall(
        r"^(autotune on|pipeline_options \(off\)): (\d+) of 2 deletions", result.stdout, re.M
    )
    assert [mode for mode, _ in summaries] == ["autotune on", "pipeline_options (off)"], result.stdout


@pytest.mark.large
def test_xla_break_even_times_train_in_both_modes():
    result = _script_smoke("xla_break_even.py", timeout=900)
    rows = re.findall(r"(\d+) steps: ([\d.]+) s no XLA, ([\d.]+) s XLA", result.stdout)
    # --smoke: 512 digits are 4 steps an epoch, 1 and 2 epochs.
    assert [int(steps) for steps, _, _ in rows] == [4, 8], result.stdout
    assert all(float(a) > 0 and float(b) > 0 for _, a, b in rows)
    assert "threshold 5,000 steps" in result.stdout
