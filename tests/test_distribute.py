"""tf.distribute: MirroredStrategy through `fit`, MultiWorkerMirroredStrategy through the
`strategy.run` loop (two worker processes on 127.0.0.1), crash resume, chief-only writes.

The workers are tests/distribute_worker.py processes (TF_CONFIG per process).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import keras_transfer
from keras_transfer.training import distributed

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(mode, out, workdir=None, tf_config=None, env=None):
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    environment.pop("TF_CONFIG", None)
    if tf_config is not None:
        environment["TF_CONFIG"] = json.dumps(tf_config)
    args = [sys.executable, WORKER, mode, str(out)] + ([str(workdir)] if workdir else [])
    return subprocess.Popen(
        args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _cluster(ports, index):
    return {
        "cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    }


def _finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    code, output = _finish(_launch("single", folder / "w.npz"))
    assert code == 0, output
    return np.load(folder / "w.npz")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers")
    ports = _free_ports(2)
    workers = [
        _launch("multi-worker", folder / f"w{i}.npz", folder / "run", _cluster(ports, i)) for i in range(2)
    ]
    results = [_finish(w) for w in workers]
    for code, output in results:
        assert code == 0, output
    return folder, [np.load(folder / f"w{i}.npz") for i in range(2)], [o for _, o in results]


@pytest.mark.fault("S01")
def test_two_workers_end_equal_to_each_other_and_to_one_process(two_workers, single_run):
    folder, (w0, w1), outputs = two_workers
    assert int(w0["epochs"]) == int(w1["epochs"]) == 3
    np.testing.assert_array_equal(w0["weights"], w1["weights"])
    # The same global batches of 32, split over two workers: equal to one process's
    # `fit` within float tolerance.
    np.testing.assert_allclose(w0["weights"], single_run["weights"], atol=1e-4)
    np.testing.assert_allclose(w0["val_loss"], single_run["val_loss"], atol=1e-4)
    assert "Epoch 3/3" in outputs[0] and "Epoch 3/3" not in outputs[1]  # the chief reports


@pytest.mark.fault("S02")
def test_only_the_chief_writes(two_workers):
    folder, _, _ = two_workers
    run = folder / "run"
    assert (run / "best.keras").is_file()
    leftovers = [name for name in os.listdir(run) if name.startswith(".")]
    assert leftovers == []  # no staging files of either worker
    reloaded = keras_transfer.load_model(str(run / "best.keras"))
    assert reloaded.output.shape[-1] == 2


@pytest.mark.fault("S03")
def test_killed_worker_then_both_restarted_resume_from_the_backup(tmp_path, single_run):
    ports = _free_ports(2)
    run = tmp_path / "run"
    chief = _launch("multi-worker", tmp_path / "a0.npz", run, _cluster(ports, 0))
    dying = _launch("multi-worker", tmp_path / "a1.npz", run, _cluster(ports, 1), env={"DIE_AT_EPOCH": "2"})
    code, output = _finish(dying)
    assert code == 3, output  # killed at the start of its third epoch
    metadata = run / "backup" / "training_metadata.json"
    deadline = time.time() + 60
    while time.time() < deadline and not (
        metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 2
    ):
        time.sleep(0.2)
    chief.kill()  # its next collective would wait for the dead worker
    chief.communicate()
    assert json.loads(metadata.read_text())["epoch"] == 2
    ports = _free_ports(2)
    restarted = [_launch("multi-worker", tmp_path / f"b{i}.npz", run, _cluster(ports, i)) for i in range(2)]
    results = [_finish(w) for w in restarted]
    for code, output in results:
        assert code == 0, output
    assert "Resumed from the crash backup: epoch 2 of 3." in results[0][1]
    b0, b1 = (np.load(tmp_path / f"b{i}.npz") for i in range(2))
    assert int(b0["epochs"]) == 1  # only the third epoch ran again
    np.testing.assert_array_equal(b0["weights"], b1["weights"])
    # The batches come in the same order every epoch: the resumed run ends where an
    # uninterrupted one does.
    np.testing.assert_allclose(b0["weights"], single_run["weights"], atol=1e-4)


@pytest.mark.fault("S04")
def test_mirrored_two_replicas_default_steps_per_execution(tmp_path):
    code, output = _finish(_launch("mirrored", tmp_path / "m.npz"))
    assert code == 0, output
    result = np.load(tmp_path / "m.npz")
    assert int(result["replicas"]) == 2 and int(result["epochs"]) == 3
    assert "MirroredStrategy with 2 replicas: one step per call" in output
    np.testing.assert_allclose(result["two"], result["one"], atol=1e-5)


@pytest.mark.fault("S05")
def test_unknown_strategy_name():
    with pytest.raises(ValueError, match=r"strategy must be a tf.distribute.Strategy or one of .*'tpu'"):
        distributed.resolve_strategy("tpu")


@pytest.mark.fault("S06")
def test_malformed_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": "127.0.0.1:1"}, "task": {}}))
    with pytest.raises(ValueError, match='TF_CONFIG needs a "cluster" mapping each job'):
        distributed.resolve_strategy("multi-worker")
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})
    )
    with pytest.raises(ValueError, match='The "task" of TF_CONFIG must name a job'):
        distributed.check_tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
        distributed.check_tf_config()


@pytest.mark.fault("S07")
def test_model_built_outside_the_scope():
    strategy = tf.distribute.MirroredStrategy()
    model = keras_transfer.build_classifier("mnist_mlp", 2, weights=None)
    x = np.zeros((8, 28, 28, 1), "float32")
    with pytest.raises(ValueError, match="was not built under this strategy's scope"):
        keras_transfer.train(model, (x, np.zeros(8, int)), epochs=1, strategy=strategy, verbose=0)


@pytest.mark.fault("S08")
def test_multi_worker_refuses_what_it_cannot_run(tmp_path):
    code, output = _finish(_launch("refusals", tmp_path / "r.npz"))
    assert code == 0, output
    assert "ACCEPTED" not in output, output
    assert "REFUSED steps_per_execution above 1 fails under a multi-replica" in output
    assert "REFUSED The multi-worker loop trains the model itself" in output
    assert "REFUSED feature_cache=True and recalibrate_batchnorm run on one machine" in output


@pytest.mark.fault("S09")
def test_cli_train_with_the_mirrored_strategy(tmp_path, capsys):
    from testing import write_image_folder

    from keras_transfer import cli

    rng = np.random.default_rng(0)
    write_image_folder(
        str(tmp_path / "data"),
        rng.integers(0, 255, (12, 28, 28, 1)).astype(np.uint8),
        np.arange(12) % 2,
        ["a", "b"],
    )
    argv = [
        "train",
        "--data",
        str(tmp_path / "data"),
        "--output",
        str(tmp_path / "out"),
        "--strategy",
        "mirrored",
    ]
    argv += ["--backbone", "mnist_mlp", "--weights", "none", "--batch-size", "4", "--min-steps", "0"]
    argv += ["--patience", "0", "--no-augment", "--epochs", "1"]
    assert cli.main(argv) == 0
    model = keras_transfer.load_model(str(tmp_path / "out" / "data" / "train" / "model.keras"))
    assert model.output.shape[-1] == 2


@pytest.mark.fault("S10")
def test_cli_unknown_strategy(tmp_path, capsys):
    from keras_transfer import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", str(tmp_path), "--strategy", "tpu"])
    assert exit_info.value.code == 2
    assert "argument --strategy: invalid choice: 'tpu'" in capsys.readouterr().err
