"""A multi-worker cluster of processes on this machine (127.0.0.1), for tests and benchmarks.

Each worker is `python -m speakergender.train ... --strategy multi-worker` with its own
TF_CONFIG; all of them list the same free ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def tf_configs(ports: list[int]) -> list[str]:
    """TF_CONFIG for each worker of a cluster on these local ports (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            for index in range(len(ports))]


def start_workers(train_args: list[str], ports: list[int], log_dir: Path,
                  env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Starts one `speakergender.train` process per port; worker i logs to log_dir/worker{i}.log.

    Args:
      train_args: the train CLI's arguments, without --strategy (the same for every worker).
      ports: the cluster's ports, one per worker.
      log_dir: where each worker's stdout and stderr go (appended to, across restarts).
      env: the workers' environment (default: this process's).

    Returns:
      The worker processes, in index order.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for index, config in enumerate(tf_configs(ports)):
        with open(log_dir / f"worker{index}.log", "a") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "speakergender.train", *train_args,
                 "--strategy", "multi-worker"],
                stdout=log, stderr=subprocess.STDOUT,
                env={**(env or os.environ), "TF_CONFIG": config}))
    return processes


def wait_for_first_checkpoint(state_path: Path, chief: subprocess.Popen,
                              timeout: float = 300.0) -> None:
    """Returns once the run's state file records a finished epoch, the chief has exited, or
    `timeout` seconds have passed (the caller checks which)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and chief.poll() is None:
        try:
            if json.loads(state_path.read_text()).get("epoch", -1) >= 0:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not written yet, or caught mid-replace
        time.sleep(0.05)
