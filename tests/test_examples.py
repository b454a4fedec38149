import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ResNet50 from random weights, even at smoke size, takes minutes on these CPUs (its
# BatchNorm re-estimation compiles a forward pass of the whole network): --run-large.
LARGE = ("image_folder_resnet50.py",)
EXAMPLES = [
    pytest.param(path, marks=pytest.mark.large) if os.path.basename(path) in LARGE else path
    for path in sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))
]


@pytest.mark.parametrize("script", EXAMPLES, ids=os.path.basename)
def test_example_runs_in_smoke_mode(script, tmp_path):
    result = subprocess.run(
        [sys.executable, script, "--smoke", "--output", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported to" in result.stdout
    exported = glob.glob(str(tmp_path / "*" / "1" / "saved_model.pb"))
    assert exported, os.listdir(tmp_path)
