"""utils.files: atomic writes (atomic_path) and the chief of a tf.distribute cluster (is_chief)."""

import json
import os

import pytest

from keras_transfer.utils import files


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


def set_tf_config(monkeypatch, cluster, task_type, index):
    config = {"cluster": cluster, "task": {"type": task_type, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def test_the_file_appears_only_on_success(tmp_path):
    path = tmp_path / "model.keras"
    with files.atomic_path(path) as staging:
        assert os.path.dirname(staging) == str(tmp_path)  # beside the final file
        name = os.path.basename(staging)
        assert name.startswith(".model.tmp-") and name.endswith(".keras"), name
        write(staging, "new")
        assert not path.exists()  # nothing at the final path while writing
    assert os.listdir(tmp_path) == ["model.keras"] and read(path) == "new"


def test_an_existing_file_is_replaced(tmp_path):
    path = tmp_path / "m.tflite"
    write(path, "old")
    with files.atomic_path(str(path)) as staging:
        write(staging, "new")
        assert read(path) == "old"
    assert os.listdir(tmp_path) == ["m.tflite"] and read(path) == "new"


def test_staging_names_are_unique_and_keep_the_extensions(tmp_path):
    path = tmp_path / "head.weights.h5"
    with files.atomic_path(path) as first, files.atomic_path(path) as second:
        assert first != second
        assert first.endswith(".weights.h5") and os.path.basename(first).startswith(".head.tmp-")
        write(first, "1")
        write(second, "2")
    assert os.listdir(tmp_path) == ["head.weights.h5"]


@pytest.mark.parametrize("previous", [None, "old"])
def test_an_exception_leaves_nothing_and_the_previous_file_unchanged(tmp_path, previous):
    path = tmp_path / "m.tflite"
    if previous is not None:
        write(path, previous)
    with pytest.raises(RuntimeError, match="conversion failed"):
        with files.atomic_path(path) as staging:
            write(staging, "half a fi")
            raise RuntimeError("conversion failed")
    assert os.listdir(tmp_path) == ([] if previous is None else ["m.tflite"])
    if previous is not None:
        assert read(path) == previous


def test_a_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    write(path, "old")

    def broken(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        with files.atomic_path(path) as staging:
            write(staging, "new")
    assert os.listdir(tmp_path) == ["m.tflite"] and read(path) == "old"


def test_keyboard_interrupt_cleans_up_too(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(tmp_path / "1", is_dir=True) as staging:
            write(os.path.join(staging, "saved_model.pb"), "partial")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_a_folder_is_made_and_renamed_into_place(tmp_path):
    final = tmp_path / "digits" / "1"
    with files.atomic_path(final, is_dir=True) as staging:
        assert os.path.isdir(staging) and os.listdir(staging) == []  # made for the writer
        os.makedirs(os.path.join(staging, "variables"))
        write(os.path.join(staging, "labels.txt"), "cat\n")
        assert not final.exists()
    assert os.listdir(tmp_path / "digits") == ["1"]  # the parent is made, no staging left
    assert sorted(os.listdir(final)) == ["labels.txt", "variables"]


def test_into_an_existing_folder_the_entries_are_moved(tmp_path):
    final = tmp_path / "tflite" / "1"
    os.makedirs(final)
    write(final / "labels.txt", "old")
    write(final / "model_int8.tflite", "int8")
    with files.atomic_path(final, is_dir=True) as staging:
        write(os.path.join(staging, "labels.txt"), "new")
        write(os.path.join(staging, "model_float32.tflite"), "float32")
    assert os.listdir(tmp_path / "tflite") == ["1"]
    assert sorted(os.listdir(final)) == ["labels.txt", "model_float32.tflite", "model_int8.tflite"]
    assert read(final / "labels.txt") == "new" and read(final / "model_int8.tflite") == "int8"


def test_a_failed_folder_write_removes_the_parents_it_made_only(tmp_path):
    (tmp_path / "digits").mkdir()
    with pytest.raises(ValueError):
        with files.atomic_path(tmp_path / "digits" / "tflite" / "1", is_dir=True) as staging:
            write(os.path.join(staging, "labels.txt"), "cat\n")
            raise ValueError("bad calibration data")
    assert os.listdir(tmp_path) == ["digits"] and os.listdir(tmp_path / "digits") == []


def test_bad_final_path():
    with pytest.raises(ValueError, match=r"Received: final_path='models/'"):
        with files.atomic_path("models/"):
            pass


def test_is_chief_without_tf_config():
    assert files.is_chief()


def test_is_chief_in_a_cluster(monkeypatch):
    workers = ["host1:2222", "host2:2222"]
    with_chief = {"chief": ["host0:2222"], "worker": workers}
    set_tf_config(monkeypatch, with_chief, "chief", 0)
    assert files.is_chief()
    set_tf_config(monkeypatch, with_chief, "worker", 0)
    assert not files.is_chief()  # the chief job writes
    set_tf_config(monkeypatch, {"worker": workers}, "worker", 0)
    assert files.is_chief()  # no chief job: worker 0 writes
    set_tf_config(monkeypatch, {"worker": workers}, "worker", 1)
    assert not files.is_chief()
    set_tf_config(monkeypatch, with_chief, "worker", 1)
    assert not files.is_chief()
    set_tf_config(monkeypatch, {"worker": workers, "ps": ["host3:2222"]}, "ps", 0)
    assert not files.is_chief()
    set_tf_config(monkeypatch, with_chief, "evaluator", 0)
    assert files.is_chief()  # outside the training cluster, as for tf.distribute
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": workers}}))
    assert files.is_chief()  # no task: a process on its own


def test_a_bad_tf_config_says_what_was_received(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match=r"JSON object. Received: TF_CONFIG='\{not json'"):
        files.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": "1"}}))
    with pytest.raises(ValueError, match=r'integer "index". Received: TF_CONFIG='):
        files.is_chief()


@pytest.mark.parametrize("is_dir", [False, True])
def test_a_non_chief_write_leaves_nothing_at_the_final_path(tmp_path, monkeypatch, is_dir):
    set_tf_config(monkeypatch, {"worker": ["host1:2222", "host2:2222"]}, "worker", 1)
    final = tmp_path / "digits" / "model.keras"
    with files.atomic_path(final, is_dir=is_dir) as staging:
        assert not staging.startswith(str(tmp_path))  # a throw-away location
        assert os.path.basename(staging) == "model.keras"  # the writer's extension checks pass
        if is_dir:
            assert os.path.isdir(staging)
            staging = os.path.join(staging, "saved_model.pb")
        write(staging, "the worker's copy")  # the save still runs on every worker
        scratch = os.path.dirname(staging)
    assert os.listdir(tmp_path) == []  # not even the parent folder
    assert not os.path.exists(scratch)  # the throw-away copy is deleted


def test_a_non_chief_failure_propagates_and_cleans_up(tmp_path, monkeypatch):
    set_tf_config(monkeypatch, {"chief": ["host0:2222"], "worker": ["host1:2222"]}, "worker", 0)
    write(tmp_path / "m.tflite", "chief's")
    with pytest.raises(RuntimeError, match="collective failed"):
        with files.atomic_path(tmp_path / "m.tflite") as staging:
            write(staging, "half")
            raise RuntimeError("collective failed")
    assert not os.path.exists(staging)
    assert os.listdir(tmp_path) == ["m.tflite"] and read(tmp_path / "m.tflite") == "chief's"
