"""tf.data: recording paths -> decoded, resampled, windowed feature batches, all on graph.

paths -> read -> decode -> resample -> DC removal -> crop/pad -> (augment) -> features -> batch.
A file that cannot be decoded is skipped: its path and the reason are written to the skip log
and counted, and the epoch goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from speakergender import augment, features, wav, windows
from speakergender.config import AugmentParams, FrontEndParams
from speakergender.resample import resample

FEMALE = "female"
MALE = "male"
LABEL_NAMES = (MALE, FEMALE)  # index = label: 1 means female


class SkipLog:
    """Counts the files a pipeline skipped and writes each one's path and reason to a log.

    One log may serve several datasets (folds, validation, scoring) that read the same bad
    file; `skipped` counts distinct files, `count` every time one was skipped.

    Args:
      log_path: a text file the reasons are appended to; stderr where None.
    """

    def __init__(self, log_path: str | Path | None = None):
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_files")
        self._paths = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0)
        self.log_path = Path(log_path) if log_path else None
        self._stream = f"file://{self.log_path}" if self.log_path else sys.stderr

    def record(self, path: tf.Tensor, error: tf.Tensor) -> tf.Tensor:
        """Graph side: logs and counts when `error` is not empty; returns whether it is."""
        failed = tf.strings.length(error) > 0

        def log():
            tf.print("skipped", path, ":", error, output_stream=self._stream)
            self.count.assign_add(1)
            self._paths.insert(path[tf.newaxis], tf.ones([1], tf.int64))
            return tf.constant(True)

        return tf.cond(failed, log, lambda: tf.constant(False))

    @property
    def skipped(self) -> int:
        """How many distinct files were skipped."""
        return int(self._paths.size().numpy())

    def reasons(self) -> list[str]:
        """Logged lines (only where a log file was given)."""
        if not self.log_path or not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text().splitlines() if line.strip()]


def labels_of(table: pd.DataFrame) -> np.ndarray:
    """1.0 for female, 0.0 for male, float32 [clips]."""
    return (table["gender"].to_numpy() == FEMALE).astype(np.float32)


def class_weights(table: pd.DataFrame) -> dict[int, float]:
    """Weights that give each gender the same total weight (balanced over clips)."""
    labels = labels_of(table)
    counts = np.array([(labels == 0).sum(), (labels == 1).sum()], dtype=np.float64)
    if counts.min() == 0:
        raise ValueError("both genders are needed to train; the training table has only one")
    return {label: float(len(labels) / (2 * count)) for label, count in enumerate(counts)}


def load_recording(path: tf.Tensor, params: FrontEndParams) -> tuple[tf.Tensor, tf.Tensor]:
    """Reads, decodes and resamples one file, then conditions the whole recording.

    Args:
      path: string scalar.
      params: front-end parameters (target rate, DC removal).

    Returns:
      float32 [samples] at params.sample_rate (empty on failure), and a string scalar error
      that is empty on success.
    """
    waveform, rate, error = wav.try_decode_wav(tf.io.read_file(path))
    waveform = tf.cond(
        tf.strings.length(error) > 0,
        lambda: tf.zeros([0], tf.float32),
        lambda: resample(waveform, rate, params.sample_rate))
    return features.prepare_recording(waveform, params), error


def make_dataset(
    table: pd.DataFrame,
    params: FrontEndParams,
    *,
    training: bool,
    batch_size: int,
    seed: int = 0,
    augment_params: AugmentParams = AugmentParams(),
    sample_weights: dict[int, float] | None = None,
    cache: bool | str = False,
    deterministic: bool = False,
    skip_log: SkipLog | None = None,
    with_paths: bool = False,
) -> tf.data.Dataset:
    """Feature batches for training or evaluation.

    Args:
      table: recordings with `path` and `gender` columns (see `corpora`).
      params: front-end parameters; features are [params.clip_frames, params.feature_bins].
      training: shuffle each epoch, crop at random among the windows that carry speech and
        augment; otherwise take each recording's loudest window, in the table's order.
      batch_size: clips per batch (the last batch may be smaller).
      seed: fixes the shuffle order and every random crop and augmentation.
      augment_params: augmentations for training (off by default).
      sample_weights: per-label weights (see `class_weights`), added as a third element.
      cache: cache decoded recordings in memory (True) or in files with this prefix.
      deterministic: keep element order fixed under parallel map.
      skip_log: where skipped files are logged and counted (a new stderr log by default).
      with_paths: add each clip's path as the last element (for per-clip reports).

    Returns:
      A dataset of (features float32 [batch, frames, bins], label float32 [batch]
      [, weight float32 [batch]] [, path string [batch]]).
    """
    skip_log = skip_log or SkipLog()
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    paths = table["path"].astype(str).to_numpy()
    labels = labels_of(table)

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))

    def load(path, label):
        waveform, error = load_recording(path, params)
        return path, label, waveform, skip_log.record(path, error)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    # Undecodable bytes are caught and counted above; this only catches files that vanish or
    # cannot be read between listing and reading, which tf.data logs as a warning.
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.filter(lambda path, label, waveform, failed: tf.logical_not(failed))
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))

    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        # One stateless seed per element, different every epoch but fixed by `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def to_window(element, example_seed):
            path, label, waveform, _ = element
            crop_seed, wave_seed, spec_seed = tf.unstack(
                tf.random.experimental.stateless_split(example_seed, num=3))
            window = windows.speech_window(waveform, params.clip_samples,
                                           params.stft_hop_samples, params.crop_gate_db,
                                           crop_seed)
            if augment_params.enabled:
                window = augment.augment_waveform(
                    window, augment_params, wave_seed, params.sample_rate)
            return path, label, window, spec_seed
    else:
        def to_window(path, label, waveform, failed):
            window = windows.speech_window(waveform, params.clip_samples,
                                           params.stft_hop_samples, params.crop_gate_db)
            return path, label, window, tf.zeros([2], tf.int64)

    dataset = dataset.map(to_window, num_parallel_calls=tf.data.AUTOTUNE)
    spec_augmenting = training and bool(augment_params.time_masks or augment_params.frequency_masks)

    # Features are computed a batch at a time: one STFT over the batch costs far less than one
    # per clip, whose per-op overhead dominates at this size.
    def to_features(path, label, window, spec_seed):
        batch_features = features.waveform_to_features(window, params)
        if spec_augmenting:
            batch_features = tf.map_fn(
                lambda pair: augment.spec_augment(pair[0], augment_params, pair[1]),
                (batch_features, spec_seed), fn_output_signature=tf.float32)
        element = (tf.ensure_shape(batch_features, [None, *params.feature_shape]), label)
        if sample_weights is not None:
            weights = tf.constant([sample_weights[0], sample_weights[1]], tf.float32)
            element += (tf.gather(weights, tf.cast(label, tf.int32)),)
        if with_paths:
            element += (path,)
        return element

    dataset = dataset.batch(batch_size)
    dataset = dataset.map(to_features, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(options)


def recordings_dataset(
    paths: list[str] | np.ndarray,
    params: FrontEndParams,
    skip_log: SkipLog | None = None,
) -> tf.data.Dataset:
    """Whole decoded recordings, for scoring window by window.

    Args:
      paths: files to read, in order.
      params: front-end parameters (target rate).
      skip_log: where skipped files are logged and counted.

    Returns:
      A dataset of (path string [], waveform float32 [samples] at params.sample_rate, DC
      removed); undecodable files are skipped and logged.
    """
    skip_log = skip_log or SkipLog()
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(paths, dtype=str))

    def load(path):
        waveform, error = load_recording(path, params)
        return path, waveform, skip_log.record(path, error)

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.filter(lambda path, waveform, failed: tf.logical_not(failed))
    return dataset.map(lambda path, waveform, failed: (path, waveform))
