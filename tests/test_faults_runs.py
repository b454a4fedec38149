"""The README table's R rows: run folders and the command line (one test per row)."""

import filecmp
import json
import os
import shutil

import keras
import numpy as np
import pytest
from testing import write_image_folder

import keras_transfer
from keras_transfer import cli
from keras_transfer import workflows
from keras_transfer.training import run_folder

TINY = ["--backbone", "mnist_mlp", "--weights", "none", "--batch-size", "4", "--min-steps", "0"]
TINY += ["--patience", "0", "--no-augment", "--epochs", "1"]


def _images(seed, n=12):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 28, 28, 1)).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    two = str(root / "two")
    write_image_folder(two, _images(0), np.arange(12) % 2, ["a", "b"])
    three = str(root / "three")
    write_image_folder(three, _images(1), np.arange(12) % 3, ["a", "b", "c"])
    return root, two, three


@pytest.fixture(scope="module")
def trained(folders):
    """One finished `keras-transfer train` run (2 classes) in `<root>/out/shapes/train`."""
    root, two, _ = folders
    output = str(root / "out")
    assert cli.main(["train", "--data", two, "--output", output, "--name", "shapes", *TINY]) == 0
    return output, os.path.join(output, "shapes", "train")


def _copy_run(trained, tmp_path):
    output, run_dir = trained
    copy = str(tmp_path / "out")
    shutil.copytree(output, copy)
    return copy, os.path.join(copy, "shapes", "train")


def _arrays(seed, n=32, classes=2):
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 28, 28, 1)) * 255).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(int) if classes == 2 else np.arange(n) % classes
    return x, y


def _error(capsys, argv):
    code = cli.main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    """`train(workdir=...)` for 4 epochs on an easy task: a good `best.keras`."""
    workdir = str(tmp_path_factory.mktemp("best") / "work")
    x, y = _arrays(0)
    keras.utils.set_random_seed(0)
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    keras_transfer.train(model, (x, y), (x, y), epochs=4, batch_size=16, workdir=workdir, verbose=0)
    return workdir, (x, y)


@pytest.mark.fault("R01")
def test_worse_rerun_keeps_the_better_best_checkpoint(best_run, tmp_path, capsys):
    workdir = str(tmp_path / "work")
    shutil.copytree(best_run[0], workdir)
    x, y = best_run[1]
    before = run_folder.read_record(workdir)["best"]
    shutil.copy(os.path.join(workdir, "best.keras"), tmp_path / "before.keras")
    keras.utils.set_random_seed(1)  # an untrained model: val_loss about 0.76 against about 0.58
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    history = keras_transfer.train(
        model, (x, y), (x, y), epochs=1, learning_rate=1e-9, batch_size=16, workdir=workdir, verbose=2
    )
    out = capsys.readouterr().out
    assert history.history["val_loss"][0] > before  # the rerun is worse...
    assert f"Training again in {workdir} (same data and model, a finished run)" in out
    assert f"best.keras (val_loss {before:.5g}) is replaced only by a better epoch" in out
    assert filecmp.cmp(os.path.join(workdir, "best.keras"), tmp_path / "before.keras", shallow=False)
    assert run_folder.read_record(workdir)["best"] == before  # ...and changes nothing


@pytest.mark.fault("R02")
def test_rerun_on_other_data_starts_fresh_and_keeps_the_old_folder(best_run, tmp_path, capsys):
    workdir = str(tmp_path / "work")
    shutil.copytree(best_run[0], workdir)
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    keras_transfer.train(model, _arrays(5), epochs=1, batch_size=16, workdir=workdir, verbose=2)
    out = capsys.readouterr().out
    assert f"Started fresh in {workdir}: its checkpoints are from another run (other data; monitor" in out
    assert f"moved it to {workdir}.stale" in out
    assert filecmp.cmp(
        os.path.join(workdir + ".stale", "best.keras"), os.path.join(best_run[0], "best.keras"), shallow=False
    )
    assert run_folder.read_record(workdir)["monitor"] == "loss"


def _head_run(workdir, data, classes):
    model = keras_transfer.build_classifier("mnist_mlp", classes, weights=None)
    keras_transfer.fine_tune(
        model, data, data, head_epochs=1, epochs=0, min_steps=0, batch_size=16, workdir=workdir, verbose=2
    )
    return model


@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    """Stage 1 of `fine_tune(workdir=...)` done: `head.weights.h5` on 2 classes."""
    workdir = str(tmp_path_factory.mktemp("head") / "work")
    model = _head_run(workdir, _arrays(0), 2)
    return workdir, model


@pytest.mark.fault("R03")
def test_stage_one_weights_of_other_data_are_not_reused(head_run, tmp_path, capsys):
    workdir = str(tmp_path / "work")
    shutil.copytree(head_run[0], workdir)
    capsys.readouterr()
    model = _head_run(workdir, _arrays(7), 2)
    out = capsys.readouterr().out
    head = os.path.join(workdir, "head.weights.h5")
    assert f"Stage 1 trained again: {head} is from another run (other data)" in out
    assert "Stage 1 already done" not in out
    assert os.path.exists(head + ".stale")
    old = head_run[1].get_layer("predictions").get_weights()[0]
    assert not np.allclose(model.get_layer("predictions").get_weights()[0], old)


@pytest.mark.fault("R04")
def test_stage_one_weights_of_another_class_count_are_not_reused(head_run, tmp_path, capsys):
    workdir = str(tmp_path / "work")
    shutil.copytree(head_run[0], workdir)
    capsys.readouterr()
    model = _head_run(workdir, _arrays(0, classes=3), 3)
    out = capsys.readouterr().out
    assert "is from another run (classes 2 -> 3; other data)" in out
    assert model.output.shape[-1] == 3


@pytest.mark.fault("R05")
def test_cli_rerun_says_it_resumes_from_the_crash_backup(trained, tmp_path, capsys):
    output, run_dir = _copy_run(trained, tmp_path)
    model, _ = workflows.load_trained(run_dir)
    backup = os.path.join(run_dir, "all", "backup")
    os.makedirs(backup)
    model.save_weights(os.path.join(backup, "latest.weights.h5"))
    with open(os.path.join(backup, "training_metadata.json"), "w") as handle:
        json.dump({"epoch": 1}, handle)
    data = json.load(open(os.path.join(run_dir, "run.json")))
    argv = ["train", "--data", os.path.join(os.path.dirname(trained[0]), "two"), "--output", output]
    assert data["class_names"] == ["a", "b"]
    assert cli.main([*argv, "--name", "shapes", *TINY[:-1], "2"]) == 0
    out = capsys.readouterr().out
    assert f"Resuming the interrupted run in {run_dir} from epoch 2." in out
    assert f"Resumed the interrupted run in {run_dir}/all (same data and model) from its crash backup" in out
    assert "Epoch 2/2" in out and "Epoch 1/2" not in out


def _outputs(run_dir):
    names = ("labels.txt", "model.keras", "run.json", "report.txt", "metrics.json", "learning_curves.png")
    return {name: open(os.path.join(run_dir, name), "rb").read() for name in names}


@pytest.mark.fault("R06")
def test_failed_rerun_with_other_classes_leaves_the_previous_run(
    trained, folders, tmp_path, monkeypatch, capsys
):
    output, run_dir = _copy_run(trained, tmp_path)
    before = _outputs(run_dir)

    def interrupted(*args, **kwargs):
        raise RuntimeError("the machine went down")

    monkeypatch.setattr(keras_transfer.training, "train", interrupted)
    code = cli.main(["train", "--data", folders[2], "--output", output, "--name", "shapes", *TINY])
    captured = capsys.readouterr()
    assert code == 1 and "the machine went down" in captured.err
    assert f"The run in {run_dir} belongs to another configuration (other data" in captured.out
    assert "classes 2 -> 3): it stays as it is (and usable) until this run has succeeded" in captured.out
    assert _outputs(run_dir) == before  # labels.txt, model.keras, reports: the previous run's
    assert workflows.load_trained(run_dir)[1] == ["a", "b"]
    assert json.load(open(os.path.join(run_dir + ".next", "run.json")))["class_names"] == ["a", "b", "c"]


@pytest.mark.fault("R07")
def test_rerun_failing_while_writing_outputs_leaves_the_previous_ones(trained, tmp_path, monkeypatch, capsys):
    output, run_dir = _copy_run(trained, tmp_path)
    before = _outputs(run_dir)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(workflows.evaluation_lib, "plot_history", disk_full)
    data = os.path.join(os.path.dirname(trained[0]), "two")
    code = cli.main(["train", "--data", data, "--output", output, "--name", "shapes", *TINY])
    captured = capsys.readouterr()
    assert code == 1 and "No space left on device" in captured.err
    assert "A finished run of the same configuration" in captured.out
    assert _outputs(run_dir) == before
    assert not [name for name in os.listdir(os.path.dirname(run_dir)) if ".tmp-" in name]


@pytest.mark.fault("R08")
def test_cli_name_with_dot_dot_is_refused(tmp_path, capsys, folders):
    output = str(tmp_path / "out")
    code, err = _error(
        capsys, ["train", "--data", folders[1], "--output", output, "--name", "../../x", *TINY]
    )
    assert code == 2
    assert err == (
        "keras-transfer train: error: --name must be a plain folder name inside --output (no '/' or "
        "'\\', not '..', not absolute, not empty). Received: --name '../../x'"
    )
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(output)


@pytest.mark.fault("R09")
def test_cli_absolute_name_is_refused(tmp_path, capsys, folders):
    target = str(tmp_path / "elsewhere")
    code, err = _error(capsys, ["train", "--data", folders[1], "--output", str(tmp_path), "--name", target])
    assert code == 2 and f"Received: --name {target!r}" in err
    assert not os.path.exists(target)


@pytest.mark.fault("R10")
def test_train_from_folder_name_with_a_separator_is_refused(tmp_path, folders):
    with pytest.raises(ValueError, match=r"name must be a plain folder name .* Received: name='a/b'"):
        workflows.train_from_folder(folders[1], name="a/b", output=str(tmp_path), weights=None, log=None)
    assert os.listdir(tmp_path) == []


@pytest.mark.fault("R11")
def test_cli_data_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "cat.png"
    path.write_bytes(b"x")
    code, err = _error(capsys, ["train", "--data", str(path), *TINY])
    assert code == 2 and err == (
        f"keras-transfer train: error: --data {path} is a file: --data takes a folder with one "
        "sub-folder per class (DIR/<class name>/<images>)."
    )


@pytest.mark.fault("R12")
def test_cli_data_missing(tmp_path, capsys):
    code, err = _error(capsys, ["lr-find", "--data", str(tmp_path / "nope")])
    assert code == 2 and err == (
        f"keras-transfer lr-find: error: --data {tmp_path / 'nope'}: no such folder "
        "(expected DIR/<class name>/<images>)."
    )


@pytest.mark.fault("R13")
def test_cli_data_without_class_folders(tmp_path, capsys):
    code, err = _error(capsys, ["evaluate", "model.keras", "--data", str(tmp_path)])
    assert code == 2 and f"--data {tmp_path} has no class folders" in err


@pytest.mark.fault("R14")
def test_cli_zero_epochs(capsys, folders):
    code, err = _error(capsys, ["train", "--data", folders[1], *TINY[:-1], "0"])
    assert code == 2 and err == (
        "keras-transfer train: error: --epochs must be a positive integer (0 only with --head-epochs N "
        "for a pretrained backbone: the head alone). Received: --epochs 0"
    )


@pytest.mark.fault("R15")
def test_cli_negative_learning_rate(capsys, folders):
    code, err = _error(capsys, ["train", "--data", folders[1], *TINY, "--lr", "-0.001"])
    assert code == 2 and err == (
        "keras-transfer train: error: --lr must be a positive learning rate (a number > 0). "
        "Received: --lr -0.001"
    )


@pytest.mark.fault("R16")
def test_cli_validation_split_above_one(capsys, folders):
    code, err = _error(capsys, ["train", "--data", folders[1], *TINY, "--validation-split", "1.5"])
    assert code == 2 and err.endswith(
        "--validation-split must be a fraction in [0, 1). Received: --validation-split 1.5"
    )


@pytest.mark.fault("R17")
def test_cli_recipe_flags_out_of_range(capsys, folders):
    cases = {
        "--unfreeze-fraction": ("2", "a fraction in [0, 1]"),
        "--patience": ("-1", "an integer >= 0"),
        "--min-steps": ("-3", "an integer >= 0"),
        "--head-lr": ("0", "a positive learning rate"),
    }
    for flag, (value, expected) in cases.items():
        code, err = _error(capsys, ["train", "--data", folders[1], *TINY, flag, value])
        assert code == 2 and f"{flag} must be {expected}" in err and f"Received: {flag} " in err


@pytest.mark.fault("R18")
def test_cli_weights_file_missing(tmp_path, capsys, folders):
    missing = str(tmp_path / "mlp.weights.h5")
    code, err = _error(
        capsys, ["train", "--data", folders[1], "--backbone", "mnist_mlp", "--weights", missing]
    )
    assert code == 2 and err == (
        f"keras-transfer train: error: --weights {missing}: no such file. --weights takes imagenet, "
        "none, or a .weights.h5 file saved from that backbone."
    )


def _truncate_backup(run_dir, stage="all"):
    backup = os.path.join(run_dir, stage, "backup")
    model, _ = workflows.load_trained(run_dir)
    os.makedirs(backup)
    path = os.path.join(backup, "latest.weights.h5")
    model.save_weights(path)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 3)
    with open(os.path.join(backup, "training_metadata.json"), "w") as handle:
        json.dump({"epoch": 1}, handle)
    return backup, path


@pytest.mark.fault("R19")
def test_cli_truncated_crash_backup(trained, tmp_path, capsys):
    output, run_dir = _copy_run(trained, tmp_path)
    backup, path = _truncate_backup(run_dir)
    data = os.path.join(os.path.dirname(trained[0]), "two")
    code, err = _error(capsys, ["train", "--data", data, "--output", output, "--name", "shapes", *TINY])
    assert code == 2
    assert err.startswith(f"keras-transfer train: error: The crash backup {path} is damaged (")
    assert err.endswith(
        f"so the interrupted run cannot resume from it: delete the folder {backup} to start that stage "
        "again, or pass another --name to train into a new folder."
    )
    assert "Epoch" not in capsys.readouterr().out


@pytest.mark.fault("R20")
def test_train_workdir_with_a_truncated_backup_is_refused(best_run, tmp_path):
    workdir = str(tmp_path / "work")
    shutil.copytree(best_run[0], workdir)
    backup = os.path.join(workdir, "backup")
    os.makedirs(backup)
    with open(os.path.join(backup, "latest.weights.h5"), "wb") as handle:
        handle.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    with pytest.raises(
        ValueError, match=r"The crash backup .*latest.weights.h5 is damaged .* delete the folder"
    ):
        keras_transfer.train(model, best_run[1], best_run[1], epochs=1, workdir=workdir, verbose=0)


@pytest.mark.fault("R21")
def test_cli_export_version_that_exists(trained, capsys):
    output, run_dir = trained
    code, err = _error(capsys, ["export", run_dir, "--output", output, "--version", "1"])
    path = os.path.join(output, "shapes", "1")
    assert code == 2 and err == (
        f"keras-transfer export: error: --version 1: {path} exists already (an export is never "
        "overwritten): pass another --version, or none for the next one."
    )
