"""One worker against two worker processes on 127.0.0.1, same global batch; then a worker killed.

    python benchmarks/multiworker.py [--speakers 8] [--epochs 4] [--batch-size 16]

Every run is the train CLI on a synthetic corpus written here, hold-out split, no augmentation:
  1. one process, `--strategy default` (Keras' `model.fit`);
  2. two processes, `--strategy multi-worker` (the custom loop, each worker half of each batch);
  3. two processes again; worker 1 is killed once the chief has checkpointed epoch 1, then both
     are restarted with the same command, the supported recovery.
It prints per-epoch metrics of 1 and 2 and their differences, epoch times, held-out scores, and
how the killed run ended. The runs differ by dropout (each replica draws its own masks) and,
from epoch 2 on, by Keras' fit being one dataset iteration ahead (other crops and shuffle).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from speakergender import local_cluster, synthetic

# "Epoch 2/4 - 3s - ..." (the multi-worker loop), "2/2 - 3s - ..." (Keras' fit, verbose 2).
EPOCH_TIME = re.compile(r"^(?:Epoch \d+/\d+|\d+/\d+) - (\d+)(m?s)", re.MULTILINE)
COMPARED = ("loss", "val_loss", "accuracy")


def train_args(corpus: Path, output: Path, args: argparse.Namespace) -> list[str]:
    return ["--data-dir", str(corpus), "--output", str(output), "--logdir",
            str(output.parent / f"{output.name}-logs"), "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--folds", "0", "--patience", "100",
            "--seed", "3", "--no-augment", "--condition-tests", "none"]


def environment(scratch: Path) -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                TMPDIR=str(scratch))


def one_worker(corpus: Path, root: Path, args) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "speakergender.train",
                             *train_args(corpus, root / "one", args), "--strategy", "default"],
                            capture_output=True, text=True, env=environment(root), timeout=1800)
    if result.returncode:
        sys.exit(f"one-worker run failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return time.perf_counter() - started, result.stdout


def two_workers(corpus: Path, root: Path, name: str, args) -> tuple[float, str]:
    started = time.perf_counter()
    workers = local_cluster.start_workers(train_args(corpus, root / name, args),
                                          local_cluster.free_ports(2), root / f"{name}-logs",
                                          environment(root))
    codes = [worker.wait(timeout=1800) for worker in workers]
    log = (root / f"{name}-logs" / "worker0.log").read_text()
    if any(codes):
        sys.exit(f"two-worker run failed ({codes}):\n{log[-3000:]}")
    return time.perf_counter() - started, log


def killed_and_restarted(corpus: Path, root: Path, args) -> dict:
    """Kills worker 1 after the chief's first checkpoint, then restarts both workers."""
    output, logs = root / "killed", root / "killed-logs"
    command = train_args(corpus, output, args)
    state_path = output / "work" / "holdout" / "state.json"
    workers = local_cluster.start_workers(command, local_cluster.free_ports(2), logs,
                                          environment(root))
    local_cluster.wait_for_first_checkpoint(state_path, workers[0])
    workers[1].kill()
    killed = time.perf_counter()
    try:
        chief_code = workers[0].wait(timeout=300)
    except subprocess.TimeoutExpired:
        workers[0].kill()
        chief_code = "still running after 300 s: killed"
    chief_seconds = time.perf_counter() - killed
    for worker in workers:
        worker.wait()
    killed_at = json.loads(state_path.read_text())["epoch"]
    started = time.perf_counter()
    workers = local_cluster.start_workers(command, local_cluster.free_ports(2), logs,
                                          environment(root))
    codes = [worker.wait(timeout=1800) for worker in workers]
    history = pd.read_csv(output / "history.csv")
    return {"killed after epoch": killed_at + 1, "chief exit code": chief_code,
            "chief exited after (s)": round(chief_seconds, 1),
            "restart exit codes": codes, "restart wall (s)": round(time.perf_counter() - started),
            "history epochs": [int(epoch) + 1 for epoch in history["epoch"]],
            "duplicate epochs": int(history["epoch"].duplicated().sum()),
            "exported": (output / "1" / "saved_model.pb").is_file()}


def epoch_seconds(log: str) -> list[float]:
    return [int(value) / (1000 if unit == "ms" else 1)
            for value, unit in EPOCH_TIME.findall(log)]


def held_out(output: Path) -> dict:
    clip = json.loads((output / "metrics.json").read_text())["pooled"]["clip"]
    return {key: round(clip[key], 4) for key in ("balanced_accuracy", "roc_auc")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=8, help="half of them female")
    parser.add_argument("--clips-per-speaker", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="multiworker-benchmark-"))
    corpus = synthetic.write_corpus(root / "corpus", female_speakers=args.speakers // 2,
                                    male_speakers=args.speakers - args.speakers // 2,
                                    clips_per_speaker=args.clips_per_speaker, seconds=1.0)
    print(f"corpus: {args.speakers} speakers x {args.clips_per_speaker} clips of 1 s; "
          f"global batch {args.batch_size}, {args.epochs} epochs, hold-out split; {root}",
          flush=True)

    one_seconds, one_log = one_worker(corpus, root, args)
    two_seconds, two_log = two_workers(corpus, root, "two", args)
    one = pd.read_csv(root / "one" / "history.csv")
    two = pd.read_csv(root / "two" / "history.csv")
    table = pd.DataFrame({"epoch": one["epoch"] + 1})
    for column in COMPARED:
        table[f"{column} 1w"] = one[column]
        table[f"{column} 2w"] = two[column]
        table[f"{column} diff"] = two[column] - one[column]
    table["epoch s 1w"] = epoch_seconds(one_log)[:len(one)]
    table["epoch s 2w"] = epoch_seconds(two_log)[:len(two)]
    print("\nper epoch, 1w: one worker, 2w: two workers (epoch 1 includes tracing and, for two "
          "workers, waiting for each other):")
    print(table.to_string(index=False, float_format="{:.4f}".format))
    print(f"\nheld-out clips: 1 worker {held_out(root / 'one')}, 2 workers "
          f"{held_out(root / 'two')}")
    print(f"whole run wall time: 1 worker {one_seconds:.0f} s, 2 workers {two_seconds:.0f} s "
          f"(both workers on this machine's {os.cpu_count()} cores)")

    print("\nkill and restart:", json.dumps(killed_and_restarted(corpus, root, args)),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
