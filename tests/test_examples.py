import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


@pytest.mark.parametrize("script", EXAMPLES, ids=os.path.basename)
def test_example_runs_in_smoke_mode(script, tmp_path):
    result = subprocess.run(
        [sys.executable, script, "--smoke", "--output", str(tmp_path)], cwd=tmp_path,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported to" in result.stdout
    exported = glob.glob(str(tmp_path / "*" / "1" / "saved_model.pb"))
    assert exported, os.listdir(tmp_path)
