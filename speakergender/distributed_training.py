"""Training epochs under MultiWorkerMirroredStrategy: a custom loop in place of `model.fit`.

Keras 3's `model.fit` fails under this strategy (keras-team/keras#20585: "Attempt to convert a
value (PerReplica ...) to a Tensor"), so its callbacks (history CSV, checkpoints, TensorBoard)
are driven from this loop instead, with the metrics `training.compile_model` gives `fit`.

Every worker builds the same input pipeline (same seed, deterministic order) and trains on its
replicas' share of each global batch, so a step sees the clips a one-worker run would see in
that step. Batch normalization reduces its statistics over the global batch during training,
which keeps every worker's moving averages identical.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import keras
import tensorflow as tf

_SUM = tf.distribute.ReduceOp.SUM
# Per-step sums (over the global batch) that the epoch's metrics are made from.
_SUM_NAMES = ("loss", "clips", "correct", "female", "female_hits", "male", "male_hits")


def replica_shares(batches: tf.data.Dataset,
                   context: tf.distribute.InputContext) -> tf.data.Dataset:
    """This worker's replicas' shares of every global batch, one element per local replica.

    Global batch rows are cut into `num_replicas_in_sync` contiguous, near-equal pieces;
    replica r gets piece r. Batches with fewer rows than replicas are dropped (every worker
    drops the same ones), so no replica gets an empty batch.

    Args:
      batches: global batches, the same on every worker; each element a tuple of tensors
        [rows, ...].
      context: the worker's input context from `distribute_datasets_from_function`.

    Returns:
      Elements of the same structure, [about rows / replicas, ...] each.
    """
    replicas = context.num_replicas_in_sync
    local_replicas = replicas // context.num_input_pipelines
    first = context.input_pipeline_id * local_replicas

    def share(replica, batch):
        rows = tf.shape(batch[0], out_type=tf.int64)[0]
        start, end = rows * replica // replicas, rows * (replica + 1) // replicas
        return tuple(part[start:end] for part in batch)

    batches = batches.filter(lambda *batch: tf.shape(batch[0])[0] >= replicas)
    return batches.flat_map(lambda *batch: tf.data.Dataset.range(
        first, first + local_replicas).map(lambda replica: share(replica, batch)))


def _clip_sums(labels: tf.Tensor, logits: tf.Tensor, weighted_losses: tf.Tensor) -> dict:
    """Sums over one replica's batch that the epoch's metrics are made from."""
    female = labels > 0.5
    # The thresholds of compile_model's metrics: BinaryAccuracy calls a logit above 0 female,
    # GenderRecall at or above 0.
    called_female = logits > 0.0
    recall_called_female = logits >= 0.0
    count = lambda mask: tf.reduce_sum(tf.cast(mask, tf.float32))
    return {
        "loss": tf.reduce_sum(weighted_losses),
        "clips": tf.cast(tf.size(labels), tf.float32),
        "correct": count(called_female == female),
        "female": count(female),
        "female_hits": count(female & recall_called_female),
        "male": count(~female),
        "male_hits": count(~female & ~recall_called_female),
    }


def _metrics(sums: dict[str, float]) -> dict[str, float]:
    """compile_model's metrics (unweighted but the loss) from an epoch's sums."""
    ratio = lambda part, whole: part / whole if whole else 0.0
    recall_female = ratio(sums["female_hits"], sums["female"])
    recall_male = ratio(sums["male_hits"], sums["male"])
    return {"accuracy": ratio(sums["correct"], sums["clips"]),
            "balanced_accuracy": (recall_female + recall_male) / 2.0,
            "loss": ratio(sums["loss"], sums["clips"]),
            "recall_female": recall_female, "recall_male": recall_male}


class _Steps:
    """The replicated train and evaluation steps for one model and strategy."""

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.model = model
        self.strategy = strategy

    def _replica_step(self, windows, labels, weights=None, *, training: bool):
        model = self.model
        # Keras reports a batch's loss as sum(weight * loss) / clips, and gets its gradient
        # from that; over a global batch split across replicas, each replica divides by the
        # global count so that the all-reduced gradients sum to the one-worker gradient.
        clips = tf.distribute.get_replica_context().all_reduce(
            _SUM, tf.cast(tf.size(labels), tf.float32))
        with tf.GradientTape() as tape:
            logits = model(windows, training=training)
            losses = keras.losses.binary_crossentropy(labels[:, None], logits, from_logits=True)
            weighted = losses * weights if weights is not None else losses
            loss = tf.reduce_sum(weighted) / clips
            if model.losses:  # weight regularization, counted once over the replicas
                loss += tf.add_n(model.losses) / self.strategy.num_replicas_in_sync
        if training:
            # Keras' optimizer sums the replicas' gradients (an all-reduce) before applying.
            model.optimizer.apply(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables)
        sums = _clip_sums(labels, logits[:, 0], weighted)
        if model.losses:
            sums["loss"] += tf.add_n(model.losses) * sums["clips"]
        return sums

    def function(self, distributed: tf.distribute.DistributedDataset, training: bool):
        """A tf.function running one step on a batch of `distributed`; returns global sums."""

        def step(batch):
            per_replica = self.strategy.run(
                lambda *parts: self._replica_step(*parts, training=training), args=batch)
            return {name: self.strategy.reduce(_SUM, per_replica[name], axis=None)
                    for name in _SUM_NAMES}

        # One trace for every batch size (the last batch of an epoch is smaller).
        return tf.function(step, input_signature=[distributed.element_spec])


def _epoch_sums(step, distributed: tf.distribute.DistributedDataset) -> dict[str, float]:
    totals = dict.fromkeys(_SUM_NAMES, 0.0)
    for batch in distributed:
        for name, value in step(batch).items():
            totals[name] += float(value)
    return totals


@contextlib.contextmanager
def _global_batch_statistics(model: keras.Model) -> Iterator[None]:
    """Batch normalization layers reduce their batch statistics over all replicas meanwhile.

    Otherwise each replica normalizes with, and averages into its moving statistics, its own
    share of the batch: workers' models drift apart and differ from a one-worker run. The
    layers' saved configuration is left as it was.
    """
    layers = [layer for layer in _all_layers(model)
              if isinstance(layer, keras.layers.BatchNormalization)]
    before = [layer.synchronized for layer in layers]
    for layer in layers:
        layer.synchronized = True
    try:
        yield
    finally:
        for layer, synchronized in zip(layers, before):
            layer.synchronized = synchronized


def _all_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    for child in getattr(layer, "layers", ()):
        yield child
        yield from _all_layers(child)


def fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """`model.fit` for MultiWorkerMirroredStrategy: epochs, validation, Keras callbacks.

    Args:
      model: compiled (its optimizer built) under `strategy`'s scope.
      strategy: the multi-worker strategy; every worker calls this with the same arguments.
      train_data, validation_data: global batches of (windows [batch, samples], label [batch]
        [, weight [batch]]), identical on every worker (deterministic order).
      epochs: train until this epoch (exclusive), or until a callback sets `stop_training`.
      initial_epoch: the first epoch to train (after a resume).
      callbacks: called as `fit` calls them, with the same log names (`val_` for validation).
      verbose: one line per epoch when > 0.
    """
    distributed_train = strategy.distribute_datasets_from_function(
        lambda context: replica_shares(train_data, context))
    distributed_validation = strategy.distribute_datasets_from_function(
        lambda context: replica_shares(validation_data, context))
    steps = _Steps(model, strategy)
    train_step = steps.function(distributed_train, training=True)
    validation_step = steps.function(distributed_validation, training=False)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    with _global_batch_statistics(model):
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            started = time.perf_counter()
            callback_list.on_epoch_begin(epoch)
            logs = _metrics(_epoch_sums(train_step, distributed_train))
            validation = _metrics(_epoch_sums(validation_step, distributed_validation))
            logs.update({f"val_{name}": value for name, value in validation.items()})
            callback_list.on_epoch_end(epoch, logs)
            if verbose:
                values = " - ".join(f"{name}: {value:.4f}" for name, value in sorted(logs.items()))
                print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - started:.0f}s - "
                      f"{values}", flush=True)
            if model.stop_training:
                break
        callback_list.on_train_end()
