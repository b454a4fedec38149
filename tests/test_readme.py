"""The README's commands and code blocks are what CI and users run: keep them true."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def test_ci_runs_exactly_the_readme_test_command():
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_command = [b.strip() for b in bash_blocks if "pytest" in b]
    assert len(test_command) == 1
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert test_command[0] in ci.splitlines()
    assert any("keras-transfer demo" in b for b in bash_blocks)


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_readme_python_blocks_run(index, tmp_path):
    code = re.findall(r"```python\n(.*?)```", README, re.S)[index]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if "export_saved_model" in code:
        assert os.path.exists(tmp_path / "saved_models" / "digits_example" / "1" / "saved_model.pb")
        assert os.path.exists(tmp_path / "saved_models" / "digits_example" / "confusion.png")
