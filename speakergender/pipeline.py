"""tf.data: recording paths -> conditioned waveform windows, all on graph.

paths -> read -> batch -> decode -> resample -> crop/pad (each window loses its own DC offset) ->
(augment) -> windows. Training reads a long recording as one random segment an epoch, never
whole (`long_recordings`).
The pipeline stops at waveform windows [batch, clip_samples]: features are made by the model's
own front-end layer, so training and serving share them and an accelerator computes them.
Only reading happens file by file; everything after it runs on a whole batch at once, since
per-op overhead, not arithmetic, dominates the cost of one spoken word. A file that cannot be
decoded is dropped from its batch: its path and the reason are written to the skip log and
counted, and the epoch goes on.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from speakergender import augment, wav_layout
from speakergender.config import AugmentParams, FrontEndParams
from speakergender.frontend import branching, decoding, windows

FEMALE = "female"
MALE = "male"
LABEL_NAMES = (MALE, FEMALE)  # index = label: 1 means female
# Raw file bytes decoded in one batch: caps the padded batch a few long recordings would make.
MAX_DECODE_BATCH_BYTES = 64 << 20
# Training needs one window of a recording, so a file over LONG_RECORDING_BYTES that lasts more
# than two segments is read a random CROP_SEGMENT_SECONDS at a time (a byte range of the file,
# behind a header made for it), never whole; evaluation still reads whole files.
LONG_RECORDING_BYTES = 16 << 20
CROP_SEGMENT_SECONDS = 30.0
_SEGMENT_SEED_OFFSET = 7919
# The pipeline's functions use explicit tf.cond / tf.while_loop only; autograph's source
# conversion would add seconds to every trace (most of a short run's start-up).
_plain = tf.autograph.experimental.do_not_convert


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

    def record(self, paths: tf.Tensor, errors: tf.Tensor) -> tf.Tensor:
        """Graph side: logs and counts the rows whose error is not empty; returns which they are.

        Args:
          paths: string [batch] (or a scalar).
          errors: string, the same shape; empty where the file decoded.

        Returns:
          bool, the shape of `errors`: True where the file is skipped.
        """
        failed = tf.strings.length(errors) > 0

        def log():
            failed_paths = tf.boolean_mask(tf.reshape(paths, [-1]), tf.reshape(failed, [-1]))
            reasons = tf.boolean_mask(tf.reshape(errors, [-1]), tf.reshape(failed, [-1]))
            lines = tf.strings.reduce_join("skipped " + failed_paths + " : " + reasons,
                                           separator="\n")
            tf.print(lines, output_stream=self._stream)
            self.count.assign_add(tf.size(failed_paths, out_type=tf.int64))
            self._paths.insert(failed_paths, tf.ones_like(failed_paths, tf.int64))
            return failed

        return tf.cond(tf.reduce_any(failed), log, lambda: failed)

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


def balancing_weights(table: pd.DataFrame) -> np.ndarray:
    """Per-clip weights under which both genders, and within each gender every corpus, carry
    the same total weight.

    With every corpus holding both genders this gives each (corpus, gender) group the same
    total, so 16 speakers of one corpus weigh as much as 40 of another, and a corpus's few
    female clips as much as its many male ones. A corpus with one gender only shares that
    gender's half with the others that have it. The weights average 1.

    Args:
      table: clips with a `gender` column (and `corpus`; without it, one corpus).

    Returns:
      float32 [clips], in table order.

    Raises:
      ValueError: one gender is missing.
    """
    labels = labels_of(table).astype(int)
    if labels.min() == labels.max():
        raise ValueError("both genders are needed to train; the training table has only one")
    corpora = (pd.factorize(table["corpus"])[0] if "corpus" in table.columns
               else np.zeros(len(table), int))
    groups = corpora * 2 + labels
    group_sizes = np.bincount(groups)[groups]
    corpora_with_gender = np.array([len(np.unique(corpora[labels == label])) for label in (0, 1)])
    weights = 1.0 / (2.0 * corpora_with_gender[labels] * group_sizes)
    return (weights * len(table)).astype(np.float32)


def decode_batch_size(paths: np.ndarray, batch_size: int) -> int:
    """Files decoded together: `batch_size`, fewer where the largest file is long.

    A batch is as wide as its longest recording, so a corpus of hour-long files decodes a few
    at a time (within MAX_DECODE_BATCH_BYTES) while one of short clips decodes whole batches.
    """
    largest = max((_file_size(path) for path in paths), default=0)
    return int(np.clip(MAX_DECODE_BATCH_BYTES // max(largest, 1), 1, batch_size))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # reported with its reason when the pipeline reads it
        return 0


def _decoded_batches(paths: np.ndarray, labels: np.ndarray, params: FrontEndParams,
                     batch_size: int, skip_log: SkipLog) -> tf.data.Dataset:
    """(path [B], label [B], waveform [B, samples], length [B]) without the undecodable
    files; waveforms conditioned by `decoding.decode_recordings`."""
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(_plain(lambda path, label: (path, label, tf.io.read_file(path))),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return _decode_files(dataset, params, batch_size, skip_log)


def _decode_files(dataset: tf.data.Dataset, params: FrontEndParams, batch_size: int,
                  skip_log: SkipLog) -> tf.data.Dataset:
    """(path, label, file bytes) elements -> decoded batches, as `_decoded_batches`."""
    # Undecodable bytes are caught and counted below; this only catches files that vanish or
    # cannot be read between listing and reading, which tf.data logs as a warning.
    dataset = dataset.ignore_errors(log_warning=True)

    decode = decoding.recording_decoder(params)

    def decode_batch(path, label, contents):
        waveforms, lengths, errors = decode(contents)
        kept = tf.logical_not(skip_log.record(path, errors))
        batch = (path, label, waveforms, lengths)
        # Nearly every batch decodes whole: it passes as it is, without a masked copy.
        return branching.cond(tf.reduce_all(kept), lambda: batch,
                              lambda: tuple(tf.boolean_mask(value, kept) for value in batch))

    dataset = dataset.batch(batch_size).map(_plain(decode_batch),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.filter(_plain(lambda path, *_: tf.size(path) > 0))


def long_recordings(paths: np.ndarray) -> dict[str, wav_layout.WavLayout]:
    """The files training reads in segments: over LONG_RECORDING_BYTES, in a layout the
    decoder reads, and longer than two segments; by path."""
    found = {}
    for path in paths:
        size = _file_size(path)
        if size <= LONG_RECORDING_BYTES:
            continue
        try:
            with open(path, "rb") as stream:
                layout = wav_layout.read_wav_layout(stream, size)
        except OSError:  # reported with its reason when the pipeline reads it
            continue
        if layout and layout.seconds > 2 * CROP_SEGMENT_SECONDS:
            found[path] = layout
    return found


def _segment_recordings(paths: np.ndarray, labels: np.ndarray,
                        layouts: dict[str, wav_layout.WavLayout], params: FrontEndParams,
                        batch_size: int, seed: int, skip_log: SkipLog) -> tf.data.Dataset:
    """(path, label, waveform [samples], length) per long recording (table row) and epoch: a
    segment of CROP_SEGMENT_SECONDS from a random frame, read as a byte range and decoded
    alone."""
    shapes = [layouts[path] for path in paths]
    frame_bytes = np.array([shape.frame_bytes for shape in shapes], np.int64)
    segment_frames = np.array([int(CROP_SEGMENT_SECONDS * shape.sample_rate)
                               for shape in shapes], np.int64)
    segment_bytes = segment_frames * frame_bytes
    # Where a segment may start: any frame that leaves it whole.
    first_frames = np.array([shape.frames for shape in shapes], np.int64) - segment_frames + 1
    headers = np.array([shape.header(int(size)) for shape, size in zip(shapes, segment_bytes)],
                       dtype=object)
    entries = tf.data.Dataset.from_tensor_slices((
        np.asarray(paths, dtype=str), labels,
        np.array([shape.data_offset for shape in shapes], np.int64), frame_bytes, first_frames,
        segment_bytes, np.array([_file_size(path) for path in paths], np.int64), headers))
    # A stream of its own: the batch seeds below draw from Dataset.random(seed) too.
    draws = tf.data.Dataset.random(seed=seed + _SEGMENT_SEED_OFFSET,
                                   rerandomize_each_iteration=True)

    def read_segment(entry, draw):
        path, label, data_offset, frame_bytes, first_frames, size, file_size, header = entry
        start = data_offset + tf.math.floormod(draw, first_frames) * frame_bytes
        # One record: the segment, between a "header" and a "footer" of everything else. The
        # bytes before it are read and dropped a buffer at a time: memory stays at the
        # segment's size, whatever the file's.
        record = tf.data.FixedLengthRecordDataset(
            path, record_bytes=size, header_bytes=start, footer_bytes=file_size - start - size)
        # Taken inside a map, so that a file that vanished or shrank since it was listed fails
        # its own element, which is dropped with a warning like an unreadable short file. (As
        # an interleave, the error would come back on every retry: ignore_errors would spin.)
        return path, label, header + record.get_single_element()

    dataset = tf.data.Dataset.zip((entries, draws)).map(
        _plain(read_segment), num_parallel_calls=tf.data.AUTOTUNE)
    batch = int(np.clip(MAX_DECODE_BATCH_BYTES // max(int(segment_bytes.max()), 1), 1,
                        batch_size))
    return _trimmed_recordings(_decode_files(dataset, params, batch, skip_log))


def _trimmed_recordings(batches: tf.data.Dataset) -> tf.data.Dataset:
    """Decoded batches -> (path, label, waveform [length], length), one recording each."""
    return batches.unbatch().map(_plain(
        lambda path, label, waveform, length: (path, label, waveform[:length], length)))


def _row_seeds(seed: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """int64 [rows, 2]: one stateless seed per row, derived from a batch's seed."""
    return tf.random.stateless_uniform(tf.stack([rows, 2]), seed, minval=None, maxval=None,
                                       dtype=tf.int64)


def make_dataset(
    table: pd.DataFrame,
    params: FrontEndParams,
    *,
    training: bool,
    batch_size: int,
    seed: int = 0,
    augment_params: AugmentParams | None = None,
    sample_weights: np.ndarray | None = None,
    cache: bool | str = False,
    deterministic: bool = False,
    skip_log: SkipLog | None = None,
    with_paths: bool = False,
) -> tf.data.Dataset:
    """Waveform-window batches for training or evaluation, what a model's front end reads.

    Args:
      table: recordings with `path` and `gender` columns (see `corpora`).
      params: front-end parameters; windows are params.clip_samples long.
      training: shuffle each epoch, crop at random among the windows that carry speech and
        augment; otherwise take each recording's loudest window, in the table's order.
      batch_size: clips per batch (fewer where a file was skipped, and in the last batch).
      seed: fixes the shuffle order and every random crop and augmentation.
      augment_params: waveform augmentations for training (None: none); SpecAugment is the
        model's own training-only layer.
      sample_weights: one weight per table row (see `balancing_weights`), added as a third
        element.
      cache: cache decoded recordings in memory (True) or in files with this prefix; a long
        recording's segments are drawn afresh each epoch, never cached.
      deterministic: keep element order fixed under parallel map.
      skip_log: where skipped files are logged and counted (a new stderr log by default).
      with_paths: add each clip's path as the last element (for per-clip reports).

    Returns:
      A dataset of (windows float32 [batch, clip_samples], label float32 [batch]
      [, weight float32 [batch]] [, path string [batch]]).
    """
    skip_log = skip_log or SkipLog()
    augment_params = augment_params or AugmentParams.none()
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    paths = table["path"].astype(str).to_numpy()
    labels = labels_of(table)
    long = long_recordings(paths) if training else {}
    whole = np.array([path not in long for path in paths], bool)
    decode_size = decode_batch_size(paths[whole], batch_size)
    dataset = _decoded_batches(paths[whole], labels[whole], params, decode_size, skip_log)
    cut = functools.partial(windows.speech_windows, length=params.clip_samples,
                            hop=params.stft_hop_samples, relative_gate_db=params.crop_gate_db,
                            remove_dc=params.remove_dc_offset)

    if training:
        # Recordings are shuffled one by one, so unbatch (trimming each batch's padding).
        dataset = _trimmed_recordings(dataset)
        if cache:
            dataset = dataset.cache("" if cache is True else str(cache))
        if long:
            segments = _segment_recordings(paths[~whole], labels[~whole], long, params,
                                           batch_size, seed, skip_log)
            dataset = tf.data.Dataset.sample_from_datasets(
                [dataset, segments], weights=[float(whole.sum()), float((~whole).sum())],
                seed=seed, rerandomize_each_iteration=True)
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.padded_batch(decode_size)
        # One stateless seed per batch, different every epoch but fixed by `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def to_windows(batch, batch_seed):
            path, label, waveforms, lengths = batch
            crop_seed, wave_seed = tf.unstack(
                tf.random.experimental.stateless_split(batch_seed, num=2))
            clips = cut(waveforms, lengths, seed=crop_seed)
            if augment_params.enabled:
                clips = augment.augment_batch(
                    clips, augment_params, _row_seeds(wave_seed, tf.shape(clips)[0]),
                    params.sample_rate)
            return path, label, clips
    else:
        if cache:
            dataset = dataset.cache("" if cache is True else str(cache))

        def to_windows(path, label, waveforms, lengths):
            return path, label, cut(waveforms, lengths)

    dataset = dataset.map(_plain(to_windows), num_parallel_calls=tf.data.AUTOTUNE)
    if decode_size != batch_size:
        dataset = dataset.unbatch().batch(batch_size)
    weight_of = None
    if sample_weights is not None:
        weight_of = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            paths, np.asarray(sample_weights, np.float32)), default_value=1.0)

    def to_element(path, label, clips):
        element = (tf.ensure_shape(clips, [None, params.clip_samples]), label)
        if weight_of is not None:
            element += (weight_of.lookup(path),)
        if with_paths:
            element += (path,)
        return element

    dataset = dataset.map(_plain(to_element))
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
      A dataset of (path string [], waveform float32 [samples] at params.sample_rate);
      undecodable files are skipped and logged.
    """
    skip_log = skip_log or SkipLog()
    paths = np.asarray(paths, dtype=str)
    dataset = _decoded_batches(paths, np.zeros(len(paths), np.float32), params,
                               decode_batch_size(paths, 32), skip_log)
    dataset = dataset.unbatch().map(_plain(
        lambda path, label, waveform, length: (path, waveform[:length])))
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)
