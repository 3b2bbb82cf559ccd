"""Training one model on speaker-disjoint data: stages, checkpoints, calibration, scoring.

A model trains in one or more stages (the scratch CNN in one; a pretrained backbone first with
its head alone, then with its top blocks unfrozen). After every epoch the model and optimizer
state are checkpointed, so a run killed at any moment resumes from its last completed epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from speakergender import pipeline
from speakergender.config import FrontEndParams, TrainParams
from speakergender.export import GenderClassifierModule


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of training: which layers learn, at what rate, for how many epochs."""

    name: str
    epochs: int
    learning_rate: float
    set_trainable: Callable[[keras.Model], None] = lambda model: None


class GenderRecall(keras.metrics.Metric):
    """Share of one gender's clips called that gender (from logits; sample weights ignored)."""

    def __init__(self, label: int, name: str | None = None, **kwargs):
        super().__init__(name=name or f"recall_{pipeline.LABEL_NAMES[label]}", **kwargs)
        self.label = label
        self.hits = self.add_variable(shape=(), initializer="zeros", name="hits")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = tf.reshape(tf.cast(y_true, tf.float32), [-1]) == float(self.label)
        called = tf.reshape(y_pred, [-1]) >= 0.0 if self.label == 1 else tf.reshape(y_pred, [-1]) < 0.0
        self.hits.assign_add(tf.reduce_sum(tf.cast(truth & called, tf.float32)))
        self.total.assign_add(tf.reduce_sum(tf.cast(truth, tf.float32)))

    def result(self):
        return tf.math.divide_no_nan(self.hits, self.total)

    def get_config(self):
        return {**super().get_config(), "label": self.label}


class BalancedAccuracy(keras.metrics.Metric):
    """Mean of the two per-gender recalls (from logits; sample weights ignored)."""

    def __init__(self, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.recalls = [GenderRecall(0), GenderRecall(1)]

    def update_state(self, y_true, y_pred, sample_weight=None):
        for recall in self.recalls:
            recall.update_state(y_true, y_pred)

    def result(self):
        return (self.recalls[0].result() + self.recalls[1].result()) / 2.0

    def reset_state(self):
        for recall in self.recalls:
            recall.reset_state()


def compile_model(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        weighted_metrics=[],
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                 BalancedAccuracy(), GenderRecall(1), GenderRecall(0)])


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
        if previous and previous not in (prefix, state.get("best_checkpoint")):
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


def _truncate_history(path: Path, rows: int | None) -> None:
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


def train_model(
    build: Callable[[], keras.Model],
    stages: Callable[[keras.Model], list[Stage]],
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    front_end: FrontEndParams,
    params: TrainParams,
    work_dir: Path,
    *,
    log_dir: Path | None = None,
    strategy: tf.distribute.Strategy | None = None,
    skip_log: pipeline.SkipLog | None = None,
    verbose: int = 2,
) -> tuple[keras.Model, pd.DataFrame]:
    """Trains a model stage by stage, resuming from `work_dir` where a run stopped.

    Args:
      build: makes the untrained model [batch, frames, bins] -> logits [batch, 1].
      stages: the training stages for that model.
      train_table, validation_table: recordings of disjoint speakers.
      front_end: feature parameters.
      params: training parameters.
      work_dir: checkpoints, state and the epoch history CSV live here.
      log_dir: TensorBoard logs (none when None).
      strategy: distribution strategy the model and optimizer are built under.
      skip_log: where unreadable files are logged and counted.
      verbose: Keras progress output (2: one line per epoch).

    Returns:
      The model with the weights of its best validation epoch, and the epoch history.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or tf.distribute.get_strategy()
    # Before the datasets too: their shuffle and crop draws combine `seed` with TensorFlow's
    # global seed, which an earlier run in the same process would otherwise have left set.
    keras.utils.set_random_seed(params.seed)
    weights = (pipeline.balancing_weights(train_table) if params.class_balance == "weights"
               else None)
    train_data = pipeline.make_dataset(
        train_table, front_end, training=True, batch_size=params.batch_size, seed=params.seed,
        augment_params=params.augment, sample_weights=weights, cache=True,
        deterministic=params.deterministic, skip_log=skip_log)
    validation_data = pipeline.make_dataset(
        validation_table, front_end, training=False, batch_size=params.batch_size,
        sample_weights=_validation_weights(validation_table) if weights is not None else None,
        cache=True, skip_log=skip_log)

    keras.utils.set_random_seed(params.seed)  # the model's initial weights
    with strategy.scope():
        model = build()
    plan = stages(model)
    state = read_state(work_dir)
    history_path = work_dir / HISTORY_FILE
    # A run killed between logging an epoch and checkpointing it redoes that epoch.
    _truncate_history(history_path, state.get("history_rows"))
    for index, stage in enumerate(plan):
        if state.get("completed_stages", 0) > index:
            continue
        stage.set_trainable(model)
        with strategy.scope():
            compile_model(model, stage.learning_rate)
            model.optimizer.build(model.trainable_variables)
        initial_epoch = 0
        if state.get("stage") == index and "last_checkpoint" in state:
            restore(model, state["last_checkpoint"], with_optimizer=True)
            initial_epoch = state["epoch"] + 1
            print(f"resuming {stage.name} from epoch {initial_epoch + 1} "
                  f"({work_dir})", flush=True)
        elif index > 0 and "best_checkpoint" in state:
            restore(model, state["best_checkpoint"])
        if initial_epoch < stage.epochs and state.get("epochs_since_best", 0) < params.early_stopping_patience:
            callbacks = [
                # The history row first: the checkpoint state counts it.
                keras.callbacks.CSVLogger(str(history_path), append=True),
                EpochCheckpoint(work_dir, index, params.early_stopping_patience),
            ]
            if log_dir is not None:
                callbacks.append(keras.callbacks.TensorBoard(str(log_dir), update_freq="epoch"))
            with warnings.catch_warnings():
                # The datasets skip unreadable files, so their length is only known once
                # read; Keras warns about that and about its unused `shuffle` argument.
                warnings.filterwarnings("ignore", message=".*ran out of data")
                warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed")
                model.fit(train_data, validation_data=validation_data, epochs=stage.epochs,
                          initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
        state = read_state(work_dir)
        if "best_checkpoint" in state:
            restore(model, state["best_checkpoint"])
        state.update(completed_stages=index + 1, epochs_since_best=0,
                     best_val_loss=math.inf)
        state.pop("stage", None)
        write_state(work_dir, state)
    history = pd.read_csv(history_path) if history_path.exists() else pd.DataFrame()
    return model, history


def _validation_weights(validation_table: pd.DataFrame) -> np.ndarray | None:
    """Balancing weights for the validation loss; none where a small split left one gender."""
    if validation_table["gender"].nunique() < 2:
        return None
    return pipeline.balancing_weights(validation_table)


def score_recordings(
    module: GenderClassifierModule,
    table: pd.DataFrame,
    batch_size: int = 32,
    skip_log: pipeline.SkipLog | None = None,
) -> pd.DataFrame:
    """Scores whole recordings as the exported model does (every window, silent ones dropped).

    Args:
      module: the servable model.
      table: recordings with `path`, `speaker` and `gender`.
      batch_size: recordings per call.
      skip_log: where unreadable files are logged and counted.

    Returns:
      One row per decodable recording: path, speaker, gender (corpus and condition where the
      table has them), label (1 female), logit, probability.
    """
    recordings = pipeline.recordings_dataset(table["path"].to_numpy(), module.front_end, skip_log)
    batches = recordings.map(lambda path, waveform: (path, waveform, tf.shape(waveform)[0]))
    batches = batches.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
    score = _scoring_function(module)
    rows = []
    for paths, waveforms, lengths in batches:
        outputs = score(waveforms, lengths)
        rows.extend(zip([p.decode() for p in paths.numpy()], outputs["logits"].numpy(),
                        outputs["female_probability"].numpy()))
    scored = pd.DataFrame(rows, columns=["path", "logit", "probability"])
    columns = [c for c in ("path", "speaker", "gender", "corpus", "condition") if c in table]
    scored = table[columns].merge(scored, on="path", how="inner")
    return scored.assign(label=(scored["gender"] == pipeline.FEMALE).astype(int))


# module -> its traced scoring function; entries go with their modules.
_SCORING_FUNCTIONS = weakref.WeakKeyDictionary()


def _scoring_function(module: GenderClassifierModule):
    """One traced scoring function per module, however often it scores."""
    if module not in _SCORING_FUNCTIONS:
        _SCORING_FUNCTIONS[module] = tf.function(module.score_recordings, input_signature=[
            tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int32)])
    return _SCORING_FUNCTIONS[module]


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: T and b minimising the class-balanced log loss of sigmoid(z / T + b).

    Fitted on validation speakers, whom the model never trained on: unheard voices of the
    minority gender tend to score on the majority's side of 0 while still ranking right (high
    AUC, low recall), and the bias moves the decision to where unheard speakers fall. As in
    Platt's method the targets are (n + 1) / (n + 2) and 1 / (n + 2), not 1 and 0, so a
    validation set that the model separates does not drive T to its bound and make every
    probability 0 or 1. The decision point -b T is kept within the logits seen.

    Args:
      logits: [n] uncalibrated logits (female > 0).
      labels: [n] 1 for female.

    Returns:
      (T, b) with T in [0.05, 20]; (1.0, 0.0) when there is nothing to fit (no clips, one
      gender only, or logits that are not finite).
    """
    from scipy import optimize

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if len(logits) == 0 or labels.min() == labels.max() or not np.all(np.isfinite(logits)):
        return 1.0, 0.0
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    females, males = labels.sum(), len(labels) - labels.sum()
    targets = np.where(labels == 1, (females + 1) / (females + 2), 1 / (males + 2))

    def loss(theta: np.ndarray) -> float:
        # theta: log T and the decision point c, in the logits' own units: z' = (z - c) / T.
        z = (logits - theta[1]) / math.exp(theta[0])
        # Cross-entropy against the targets, with log(1 + exp(-z)) and log(1 + exp(z)) stable.
        return float(np.mean(weights * (targets * np.logaddexp(0.0, -z)
                                        + (1 - targets) * np.logaddexp(0.0, z))))

    low, high = float(logits.min()), float(logits.max())
    fitted = optimize.minimize(loss, x0=np.array([0.0, np.clip(0.0, low, high)]),
                               method="L-BFGS-B",
                               bounds=[(math.log(0.05), math.log(20.0)), (low, high)])
    temperature = math.exp(fitted.x[0])
    return float(temperature), float(-fitted.x[1] / temperature)

