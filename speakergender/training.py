"""Training one model on speaker-disjoint data, stage by stage, resumable.

A model trains in one or more stages (the scratch CNN in one; a pretrained backbone first with
its head alone, then with its top blocks unfrozen). After every epoch the model and optimizer
state are checkpointed (`checkpoints`), so a run killed at any moment resumes from its last
completed epoch.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from speakergender import cluster, distributed_training, pipeline
from speakergender.checkpoints import (HISTORY_FILE, EpochCheckpoint, read_state, restore,
                                        truncate_history, write_state)
from speakergender.config import FrontEndParams, TrainParams
from speakergender.models.stages import Stage


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
    progress_dir: Path | None = None,
) -> tuple[keras.Model, pd.DataFrame]:
    """Trains a model stage by stage, resuming from `work_dir` where a run stopped.

    Args:
      build: makes the untrained model [batch, clip_samples] -> logits [batch, 1].
      stages: the training stages for that model.
      train_table, validation_table: recordings of disjoint speakers.
      front_end: the front end the pipeline prepares windows for.
      params: training parameters.
      work_dir: checkpoints, state and the epoch history CSV live here.
      log_dir: TensorBoard logs (none when None).
      strategy: distribution strategy the model and optimizer are built under.
      skip_log: where unreadable files are logged and counted.
      verbose: Keras progress output (2: one line per epoch).
      progress_dir: where the run's progress is read from when it is not `work_dir`: on a
        worker other than the chief of a multi-worker run, the chief's work folder (this
        worker writes its own checkpoints into `work_dir`, a scratch folder, but resumes where
        the chief's last checkpoint says).

    Returns:
      The model with the weights of its best validation epoch, and the epoch history.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    strategy = strategy or tf.distribute.get_strategy()
    multi_worker = cluster.is_multi_worker(strategy)
    if progress_dir is not None and progress_dir != work_dir:
        # The chief's state names the chief's checkpoints; this worker restores from them.
        write_state(work_dir, read_state(progress_dir))
    # Before the datasets too: their shuffle and crop draws combine `seed` with TensorFlow's
    # global seed, which an earlier run in the same process would otherwise have left set.
    keras.utils.set_random_seed(params.seed)
    weights = (pipeline.balancing_weights(train_table) if params.class_balance == "weights"
               else None)
    train_data = pipeline.make_dataset(
        train_table, front_end, training=True, batch_size=params.batch_size, seed=params.seed,
        augment_params=params.augment, sample_weights=weights, cache=True,
        # Workers cut their shares from the same global batches: their order must agree.
        deterministic=params.deterministic or multi_worker, skip_log=skip_log)
    validation_data = pipeline.make_dataset(
        validation_table, front_end, training=False, batch_size=params.batch_size,
        sample_weights=_validation_weights(validation_table) if weights is not None else None,
        cache=True, skip_log=skip_log)

    keras.utils.set_random_seed(params.seed)  # the model's initial weights
    with strategy.scope():
        model = build()
    plan = stages(model)
    state = read_state(work_dir)
    if multi_worker:
        # Every worker has read the chief's state before the chief goes on to change it.
        cluster.barrier(strategy)
    history_path = work_dir / HISTORY_FILE
    # A run killed between logging an epoch and checkpointing it redoes that epoch.
    truncate_history(history_path, state.get("history_rows"))
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
                  f"({progress_dir or work_dir})", flush=True)
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
                fit = (functools.partial(distributed_training.fit, model, strategy)
                       if multi_worker else model.fit)
                fit(train_data, validation_data=validation_data, epochs=stage.epochs,
                    initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose)
        state = read_state(work_dir)
        if "best_checkpoint" in state:
            restore(model, state["best_checkpoint"])
        state.update(completed_stages=index + 1, epochs_since_best=0,
                     best_val_loss=math.inf)
        state.pop("stage", None)
        write_state(work_dir, state)
    if multi_worker:
        # Every worker has restored the checkpoints it needed before the chief may remove them.
        cluster.barrier(strategy)
    history = pd.read_csv(history_path) if history_path.exists() else pd.DataFrame()
    return model, history


def _validation_weights(validation_table: pd.DataFrame) -> np.ndarray | None:
    """Balancing weights for the validation loss; none where a small split left one gender."""
    if validation_table["gender"].nunique() < 2:
        return None
    return pipeline.balancing_weights(validation_table)
