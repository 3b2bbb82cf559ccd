"""A multi-worker training cluster: this process's role in it, read from TF_CONFIG.

TF_CONFIG is the JSON `tf.distribute.MultiWorkerMirroredStrategy` reads: every worker gets the
same `cluster` and its own `task`, e.g.
  {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}
The chief (a task of type "chief", else worker 0) writes checkpoints, reports and the export;
every other worker writes the same files into a scratch folder of its own and discards them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping


class ClusterConfigError(ValueError):
    """TF_CONFIG is missing or does not describe this process's place in a cluster."""


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process's place in the cluster."""

    task_type: str
    task_index: int
    workers: int  # every task that trains: chief and workers
    is_chief: bool

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.task_index}"


def role_from_tf_config(environ: Mapping[str, str] = os.environ) -> WorkerRole:
    """This process's role, from the TF_CONFIG environment variable.

    Raises:
      ClusterConfigError: TF_CONFIG is absent, not JSON, or names a task not in the cluster.
    """
    text = environ.get("TF_CONFIG")
    if not text:
        raise ClusterConfigError(
            "--strategy multi-worker needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
            "[\"127.0.0.1:12345\", \"127.0.0.1:12346\"]}, \"task\": {\"type\": \"worker\", "
            "\"index\": 0}}' (the same cluster on every worker, its own index on each)")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, task_index = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ClusterConfigError(f"TF_CONFIG is not a cluster description: {error}") from None
    if task_type not in ("chief", "worker"):
        raise ClusterConfigError(f"TF_CONFIG task type must be chief or worker, got {task_type}")
    addresses = cluster.get(task_type, [])
    if not 0 <= task_index < len(addresses):
        raise ClusterConfigError(
            f"TF_CONFIG task {task_type} {task_index} is not in its cluster ({len(addresses)} "
            f"{task_type} address(es))")
    workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    # TensorFlow's rule: the chief task if there is one, else worker 0.
    is_chief = task_type == "chief" or (task_index == 0 and not cluster.get("chief"))
    return WorkerRole(task_type, task_index, workers, is_chief)


def multi_worker_strategy():
    """MultiWorkerMirroredStrategy for the cluster in TF_CONFIG.

    It must be created before TensorFlow runs anything else: it configures the collective ops
    of the process's (not yet started) runtime. Its constructor returns at once; the first
    collective operation waits until every worker is up.
    """
    role_from_tf_config()  # a clear error before TensorFlow's own
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy) -> None:
    """Returns once every worker of `strategy` has reached this call (an all-reduce)."""
    import tensorflow as tf

    @tf.function  # run eagerly, a collective op costs a warning about its overhead
    def all_reduce():
        return strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(lambda: tf.constant(1.0)), axis=None)

    all_reduce()
