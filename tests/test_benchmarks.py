"""The benchmark runner works end to end (`--smoke`: seconds, figures mean nothing).

Benchmarks are never timed tests: this only checks that every script runs and reports
every figure of the issue's table, with its goal, and the final `N/M goals met` line.
"""

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


# The demo pipeline (a second `demo --smoke`, which test_cli runs already) and ResNet50
# (minutes on the slower CPUs) run with --run-large.
QUICK = {
    "mlp": ("MLP", "textbook", "PyTorch"),
    "cnn": ("CNN",),
    "feature_cache": ("feature cache",),
    "image_pipeline": ("image-folder",),
    "cli_startup": ("keras-transfer --help",),
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
    assert count == 14, summary
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
        "scaling: scan throughput flatness",
        "scaling: peak RSS",
    ):
        assert words.lower() in summary, words
