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


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", README, re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all blocks, in README order: later blocks may use earlier files."""
    return tmp_path_factory.mktemp("readme")


def _run(command, cwd):
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        },
    )


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_blocks_run(index, workdir):
    code = PYTHON_BLOCKS[index]
    result = _run([sys.executable, "-c", code], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"fine-tuned from the source, 10 labels per class: ([0-9.]+)", result.stdout)
    if "fine-tuned from the source" in code:
        # What the README's table shows, a user's own script gets (within run-to-run noise).
        row = re.search(r"MNIST 5-9 +cnn +10 +\S+ ±\S+ +\S+ ±\S+ +([0-9.]+) ±", README)
        assert match and row, result.stdout[-2000:]
        assert abs(float(match.group(1)) - float(row.group(1))) <= 0.02, (match.group(1), row.group(1))
    if "class FrozenBackbone" in code:  # "Writing a transfer method": the method did its job
        assert "backbone unchanged: True" in result.stdout, result.stdout[-2000:]
    if "export_saved_model" in code and "digits_example" in code:
        assert os.path.exists(workdir / "saved_models" / "digits_example" / "1" / "saved_model.pb")
        assert os.path.exists(workdir / "saved_models" / "digits_example" / "confusion.png")


def test_readme_commands_run_on_the_digit_folder(workdir):
    """The `keras-transfer` commands, line by line, on the folder the first block wrote."""
    assert len(SHELL_BLOCKS) == 1 and (workdir / "digits" / "1" / "broken.png").exists()
    outputs = []
    for line in SHELL_BLOCKS[0].strip().splitlines():
        result = _run(["bash", "-c", line], workdir)
        assert result.returncode == 0, (line, result.stderr[-3000:])
        outputs.append(result.stdout)
    assert "digits/1/broken.png" in outputs[0]  # the truncated file is reported
    assert "accuracy on the validation split: keras" in outputs[0] and "int8" in outputs[2]
    assert "in one stage for 5 epochs" in outputs[0] and "Epoch 6/" not in outputs[0]
    assert "wrote report.txt, metrics.json and confusion.png to" in outputs[1]
    assert outputs[3].startswith("digits/0/0.png: ") and "digits/2/7.png: " in outputs[3]
    assert outputs[4].startswith("digits/1/3.png: ")
    lines = outputs[5].strip().splitlines()
    assert len(lines) == 100 and all(line.startswith("digits/2/") for line in lines)
