"""Per-epoch checkpoints of model and optimizer, and the state a resumed run starts from.

After every epoch the model and optimizer state are written, so a run killed at any moment
resumes from its last completed epoch.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import keras
import tensorflow as tf


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch: saves model and optimizer state, tracks the best validation loss.

    The state file is replaced atomically after the checkpoint it names is complete, so a
    kill at any moment leaves the previous epoch's state intact. It also records how many rows
    the epoch history CSV had then (the CSVLogger must run before this callback), so a resumed
    run drops the row of an epoch that was logged but not checkpointed.
    """

    def __init__(self, directory: Path, stage_index: int, patience: int):
        super().__init__()
        self.directory = directory
        self.stage_index = stage_index
        self.patience = patience
        self.state = read_state(directory)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.state
        prefix = str(self.directory / f"stage{self.stage_index}-epoch{epoch}")
        save_checkpoint(self.model, prefix)
        val_loss = float(logs.get("val_loss", logs.get("loss", math.inf)))
        if val_loss < state.get("best_val_loss", math.inf):
            state["best_val_loss"] = val_loss
            state["best_checkpoint"] = prefix
            state["epochs_since_best"] = 0
        else:
            state["epochs_since_best"] = state.get("epochs_since_best", 0) + 1
        previous = state.get("last_checkpoint")
        state.update(stage=self.stage_index, epoch=epoch, last_checkpoint=prefix,
                     history_rows=len(_history_lines(self.directory / HISTORY_FILE)) - 1)
        write_state(self.directory, state)
        # A worker other than a multi-worker run's chief starts from the chief's state, whose
        # checkpoints are the chief's to remove.
        if (previous and previous not in (prefix, state.get("best_checkpoint"))
                and Path(previous).parent == self.directory):
            remove_checkpoint(previous)
        if state["epochs_since_best"] >= self.patience:
            self.model.stop_training = True


HISTORY_FILE = "history.csv"


def _history_lines(path: Path) -> list[str]:
    """Complete lines of the epoch history CSV (header first), [] if there is none."""
    if not path.exists():
        return []
    text = path.read_text()
    return text.splitlines(keepends=True) if text.endswith("\n") else \
        text.splitlines(keepends=True)[:-1]


def truncate_history(path: Path, rows: int | None) -> None:
    """Keeps the header and the first `rows` epochs: those a checkpoint covers."""
    if rows is None or not path.exists():
        return
    lines = _history_lines(path)
    if len(lines) != rows + 1:
        path.write_text("".join(lines[:rows + 1]))


def read_state(directory: Path) -> dict:
    path = directory / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(directory: Path, state: dict) -> None:
    temporary = directory / "state.json.tmp"
    temporary.write_text(json.dumps(state, indent=2))
    os.replace(temporary, directory / "state.json")


def save_checkpoint(model: keras.Model, prefix: str) -> None:
    """Writes the model's weights and its optimizer's state under `prefix`.

    Weights go to a Keras weights file (by layer, whatever the optimizer), renamed into place
    once complete; the optimizer's state to a TF checkpoint, which TF writes atomically.
    """
    staging = prefix + ".staging.weights.h5"
    model.save_weights(staging)
    os.replace(staging, prefix + ".weights.h5")
    tf.train.Checkpoint(optimizer=model.optimizer).write(prefix + "-optimizer")


def remove_checkpoint(prefix: str) -> None:
    Path(prefix + ".weights.h5").unlink(missing_ok=True)
    for path in Path(prefix).parent.glob(Path(prefix).name + "-optimizer.*"):
        path.unlink(missing_ok=True)


def restore(model: keras.Model, prefix: str, with_optimizer: bool = False) -> None:
    """Loads the model's weights (and its optimizer's state) saved by `save_checkpoint`.

    The optimizer's state only fits the stage it was saved in: another stage trains other
    variables, so its optimizer tracks a different list.
    """
    with warnings.catch_warnings():
        # Keras stores the optimizer in the weights file too and warns when a later stage's
        # optimizer differs; its state comes from the separate checkpoint below.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(prefix + ".weights.h5")
    if with_optimizer:
        tf.train.Checkpoint(optimizer=model.optimizer).read(
            prefix + "-optimizer").expect_partial()
