"""Multi-worker training (MultiWorkerMirroredStrategy) with worker processes on 127.0.0.1:
the same model as one worker with the same global batch, a worker killed and the run resumed,
and TF_CONFIG handling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import helpers
from speakergender import cluster, local_cluster

# A tiny model on numbers (no audio front end), so that two worker processes start and train in
# seconds: dense, batch normalization, then the logit; weighted clips; 43 rows, so the last
# global batch (3 rows) splits unevenly. No shuffle: Keras' fit and the loop see the same epochs.
TINY_FIT_CODE = """
def fit_tiny(mode, output):
    import keras
    import numpy as np
    import tensorflow as tf
    from speakergender import cluster
    strategy = (cluster.multi_worker_strategy() if mode == "multi-worker"
                else tf.distribute.get_strategy())
    from speakergender import distributed_training, training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(43, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(size=43) > 0).astype("float32")
    weights = rng.uniform(0.5, 1.5, size=43).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(8)
    validation = tf.data.Dataset.from_tensor_slices((x[:12] + 0.1, y[:12])).batch(8)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        hidden = keras.layers.BatchNormalization(momentum=0.5)(hidden)
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        training.compile_model(model, 0.01)
        model.optimizer.build(model.trainable_variables)
    log = keras.callbacks.CSVLogger(output + ".history.csv")
    if mode == "multi-worker":
        distributed_training.fit(model, strategy, data, validation, epochs=3, initial_epoch=0,
                                 callbacks=[log], verbose=0)
    else:
        model.fit(data, validation_data=validation, epochs=3, callbacks=[log], verbose=0)
    np.savez(output, *[np.asarray(weight) for weight in model.weights])
"""


def test_two_workers_fit_a_tiny_model_as_one_worker_does(tmp_path):
    configs = local_cluster.tf_configs(local_cluster.free_ports(2))
    processes = [subprocess.Popen(
        [helpers.PYTHON, "-c", TINY_FIT_CODE + "\nimport sys\nfit_tiny(*sys.argv[1:])",
         "multi-worker", str(tmp_path / f"worker{index}.npz")],
        env={**helpers.python_env(), "TF_CONFIG": config}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for index, config in enumerate(configs)]
    try:
        namespace: dict = {}
        exec(TINY_FIT_CODE, namespace)
        namespace["fit_tiny"]("one-worker", str(tmp_path / "single.npz"))
    finally:
        _finish(processes, timeout=180)

    single, chief, worker = (_weights(tmp_path / f"{name}.npz")
                             for name in ("single", "worker0", "worker1"))
    for chief_weight, worker_weight in zip(chief, worker, strict=True):
        np.testing.assert_array_equal(chief_weight, worker_weight)
    # 18 Adam steps of 0.01 against float32 rounding (moments summed over replicas, gradients
    # summed in another order).
    for single_weight, chief_weight in zip(single, chief, strict=True):
        np.testing.assert_allclose(chief_weight, single_weight, atol=1e-5, rtol=0)
    single_history = pd.read_csv(tmp_path / "single.npz.history.csv")
    chief_history = pd.read_csv(tmp_path / "worker0.npz.history.csv")
    assert list(chief_history.columns) == list(single_history.columns)
    assert list(chief_history["epoch"]) == [0, 1, 2]
    for column in single_history.columns:
        np.testing.assert_allclose(chief_history[column], single_history[column], atol=1e-5,
                                   err_msg=column)
    assert single_history["loss"].iloc[-1] < single_history["loss"].iloc[0]


# One stage of the scratch CNN without dropout: replicas draw their own dropout masks, so with
# it two workers could only match one worker approximately. Everything else is the real path
# (train_model, pipeline, checkpoints, batch normalization). Run as a script by each worker,
# and in the test's own process for the one-worker reference.
TRAIN_CODE = """
def train_and_save(mode, corpus, work_dir, progress_dir, output):
    from pathlib import Path
    import numpy as np
    import tensorflow as tf
    from speakergender import cluster
    strategy = (cluster.multi_worker_strategy() if mode == "multi-worker"
                else tf.distribute.get_strategy())
    from speakergender import corpora, splits, training
    from speakergender.config import AugmentParams, FrontEndParams, TrainParams
    from speakergender.models.scratch import build_scratch_cnn
    from speakergender.models.stages import Stage

    table = corpora.load_corpus(corpus).table
    train_table, validation_table = splits.split_rows(
        table, splits.validation_split(table, 0.34, 0))
    front_end = FrontEndParams()
    params = TrainParams(epochs=2, batch_size=8, deterministic=True,
                         augment=AugmentParams.none())
    model, history = training.train_model(
        lambda: build_scratch_cnn(front_end, dropout=0.0),
        lambda model: [Stage("training", params.epochs, params.learning_rate)],
        train_table, validation_table, front_end, params, Path(work_dir), strategy=strategy,
        verbose=0, progress_dir=Path(progress_dir))
    np.savez(output, *[np.asarray(weight) for weight in model.weights])
    history.to_csv(output + ".history.csv", index=False)
"""


def _start_worker(args: list[str], tf_config: str) -> subprocess.Popen:
    return subprocess.Popen(
        [helpers.PYTHON, "-c", TRAIN_CODE + "\nimport sys\ntrain_and_save(*sys.argv[1:])", *args],
        env={**helpers.python_env(), "TF_CONFIG": tf_config}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _train_one_worker(corpus: str, work_dir: Path) -> None:
    """TRAIN_CODE in this process, under the default strategy (`model.fit`)."""
    namespace: dict = {}
    exec(TRAIN_CODE, namespace)
    namespace["train_and_save"]("one-worker", corpus, str(work_dir), str(work_dir),
                                str(work_dir.parent / "single.npz"))


def _finish(processes: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert process.returncode == 0, output[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{index}"] for index in range(len(saved.files))]


@pytest.mark.slow  # three processes build and trace the audio model: 1.5-2 minutes on 2 cores
def test_two_workers_train_the_model_one_worker_trains(tmp_path, tmp_path_factory):
    corpus = str(helpers.synthetic_corpus(tmp_path_factory))
    chief_dir, scratch_dir = tmp_path / "chief", tmp_path / "worker1"
    configs = local_cluster.tf_configs(local_cluster.free_ports(2))
    processes = [
        _start_worker(["multi-worker", corpus, str(chief_dir), str(chief_dir),
                       str(tmp_path / "chief.npz")], configs[0]),
        _start_worker(["multi-worker", corpus, str(scratch_dir), str(chief_dir),
                       str(tmp_path / "worker1.npz")], configs[1]),
    ]
    try:
        _train_one_worker(corpus, tmp_path / "single")
    finally:
        _finish(processes, timeout=300)

    single, chief, worker = (_weights(tmp_path / f"{name}.npz")
                             for name in ("single", "chief", "worker1"))
    single_history = pd.read_csv(tmp_path / "single.npz.history.csv")
    # Both workers hold the same model, batch-norm moving statistics included.
    for chief_weight, worker_weight in zip(chief, worker, strict=True):
        np.testing.assert_array_equal(chief_weight, worker_weight)
    # And it is the one-worker model, to float32 rounding: batch statistics are summed over
    # the replicas (E[x^2] - E[x]^2) where one worker computes them in two passes, gradients
    # are summed in another order, and (below) epoch 2 draws other crops and another shuffle.
    # Four Adam steps of 1e-3 move weights 20 times further than this tolerance.
    for single_weight, chief_weight in zip(single, chief, strict=True):
        np.testing.assert_allclose(chief_weight, single_weight, atol=1e-4, rtol=0)
    chief_history = pd.read_csv(tmp_path / "chief.npz.history.csv")
    assert list(chief_history.columns) == list(single_history.columns)
    assert list(chief_history["epoch"]) == list(single_history["epoch"]) == [0, 1]
    # Epoch 1 sees the same batches: its loss, averaged over two steps, the second from the
    # weights the first left, agrees to float32 rounding.
    first, single_first = chief_history.iloc[0], single_history.iloc[0]
    for column in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert first[column] == pytest.approx(single_first[column], abs=1e-5), column
    # From epoch 2 on Keras' fit is an iteration of the dataset ahead (it makes one iterator
    # it does not use), so its crops and shuffle differ: close, not equal.
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(chief_history[column], single_history[column], atol=0.01,
                                   err_msg=column)
    # The chief checkpointed into its folder, the other worker into its scratch folder.
    for folder in (chief_dir, scratch_dir):
        assert json.loads((folder / "state.json").read_text())["epoch"] == 1


def test_replica_shares_cut_each_global_batch_once():
    import tensorflow as tf

    from speakergender.distributed_training import replica_shares

    # Global batches of 8, 8 and 3 rows, then 1 row: fewer than two replicas, dropped.
    rows = tf.data.Dataset.range(19).batch(8).concatenate(
        tf.data.Dataset.range(19, 20).batch(1))
    batches = rows.map(lambda ids: (ids, -ids))

    def shares(worker: int, workers: int, replicas: int) -> list[list[int]]:
        context = tf.distribute.InputContext(workers, worker, replicas)
        return [[int(row) for row in ids] for ids, negated in replica_shares(batches, context)
                if np.array_equal(negated, -ids)]

    two_workers = [shares(worker, 2, 2) for worker in (0, 1)]
    assert two_workers == [[[0, 1, 2, 3], [8, 9, 10, 11], [16]],
                           [[4, 5, 6, 7], [12, 13, 14, 15], [17, 18]]]
    # Two replicas on each of two workers: one element per local replica, in replica order;
    # the 3-row batch is now too small as well.
    assert shares(1, 2, 4) == [[4, 5], [6, 7], [12, 13], [14, 15]]


def test_tf_config_roles():
    def role(cluster_spec: dict, task_type: str, index: int) -> cluster.WorkerRole:
        return cluster.role_from_tf_config({"TF_CONFIG": json.dumps(
            {"cluster": cluster_spec, "task": {"type": task_type, "index": index}})})

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert role(workers, "worker", 0).is_chief and not role(workers, "worker", 1).is_chief
    assert role(workers, "worker", 1).workers == 2
    with_chief = {"chief": ["127.0.0.1:0"], **workers}
    assert role(with_chief, "chief", 0).is_chief and not role(with_chief, "worker", 0).is_chief
    assert role(with_chief, "worker", 1).workers == 3
    for environ in ({}, {"TF_CONFIG": "not json"}, {"TF_CONFIG": '{"cluster": {}}'}):
        with pytest.raises(cluster.ClusterConfigError):
            cluster.role_from_tf_config(environ)
    with pytest.raises(cluster.ClusterConfigError, match="not in its cluster"):
        role(workers, "worker", 2)


def test_multi_worker_without_tf_config_is_refused(tmp_path, tmp_path_factory, monkeypatch,
                                                   capsys):
    from speakergender import train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    status = train.main(["--data-dir", str(helpers.synthetic_corpus(tmp_path_factory)),
                         "--output", str(tmp_path / "run"), "--strategy", "multi-worker"])
    assert status == 2
    assert "TF_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _train_args(corpus: Path, output: Path) -> list[str]:
    return ["--data-dir", str(corpus), "--output", str(output), "--logdir",
            str(output.parent / "logs"), "--batch-size", "8", "--epochs", "4", "--folds", "0",
            "--patience", "100", "--condition-tests", "none", "--no-augment", "--quiet"]


def _log(log_dir: Path, worker: int) -> str:
    return (log_dir / f"worker{worker}.log").read_text()


@pytest.mark.slow  # two clusters of two workers one after the other: 2-4 minutes on 2 cores
def test_a_killed_worker_and_a_restart_finish_the_run(tmp_path, tmp_path_factory):
    corpus = helpers.synthetic_corpus(tmp_path_factory)
    output, log_dir = tmp_path / "run", tmp_path / "logs"
    args = _train_args(corpus, output)
    state_path = output / "work" / "holdout" / "state.json"
    # The workers' scratch folders go here (tempfile reads TMPDIR).
    env = {**helpers.python_env(), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    workers = local_cluster.start_workers(args, local_cluster.free_ports(2), log_dir, env)
    try:
        local_cluster.wait_for_first_checkpoint(state_path, workers[0])
        assert workers[0].poll() is None, "the run ended before a worker could be killed:\n" + \
            _log(log_dir, 0)[-3000:]
        os.kill(workers[1].pid, signal.SIGKILL)
        # The chief's collective ops abort once the coordination service misses the dead
        # worker's heartbeats; it exits and says how to go on.
        assert workers[0].wait(timeout=120) == 1
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
    assert "Restart every worker with the same command" in _log(log_dir, 0)
    killed_at = json.loads(state_path.read_text())["epoch"]
    assert 0 <= killed_at < 3
    assert not (output / "metrics.json").exists()

    # The supported recovery: every worker restarted, with the same command.
    scratch_left = list((tmp_path / "tmp").glob("speakergender-worker1-*"))
    workers = local_cluster.start_workers(args, local_cluster.free_ports(2), log_dir, env)
    try:
        for worker in workers:
            assert worker.wait(timeout=400) == 0, _log(log_dir, 0)[-3000:]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for index in (0, 1):
        assert f"resuming training from epoch {killed_at + 2}" in _log(log_dir, index)
    history = pd.read_csv(output / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]  # every configured epoch once, in order
    assert (output / "1" / "saved_model.pb").is_file()
    assert json.loads((output / "metrics.json").read_text())["folds"][0]["fold"] == "holdout"
    assert not (output / "work").exists()
    # Only the chief wrote the run's outputs; the other worker removed its scratch folder
    # (the killed one could not remove its own).
    assert f"the chief writes the results to {output}" in _log(log_dir, 1)
    assert len(scratch_left) == 1
    assert list((tmp_path / "tmp").glob("speakergender-worker1-*")) == scratch_left
