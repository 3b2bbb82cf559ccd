"""Fixed-length windows cut from recordings of any length, and which of them carry sound.

Training sees one window per recording (drawn among the windows that carry speech; the loudest
for evaluation); serving cuts every window of a recording, drops the silent ones and averages
the rest.
"""

from __future__ import annotations

import tensorflow as tf


def pad_to_length(waveform: tf.Tensor, length: int) -> tf.Tensor:
    """Zero-pads a short recording on both sides (centred) to at least `length` samples.

    Args:
      waveform: float32 [..., samples].
      length: minimum number of samples.

    Returns:
      float32 [..., max(samples, length)].
    """
    missing = tf.maximum(length - tf.shape(waveform)[-1], 0)
    before = missing // 2
    paddings = tf.concat(
        [tf.zeros([tf.rank(waveform) - 1, 2], tf.int32), [[before, missing - before]]], axis=0)
    return tf.pad(waveform, paddings)


def center_window(waveform: tf.Tensor, length: int) -> tf.Tensor:
    """The centred `length`-sample window of a recording, zero-padded if it is shorter.

    Args:
      waveform: float32 [samples].
      length: window length in samples.

    Returns:
      float32 [length].
    """
    waveform = pad_to_length(waveform, length)
    start = (tf.shape(waveform)[0] - length) // 2
    return tf.reshape(waveform[start:start + length], [length])


def window_start_levels_db(waveform: tf.Tensor, length: int, hop: int) -> tf.Tensor:
    """RMS level (dBFS) of the window starting at every `hop`-th sample, float32 [starts].

    Args:
      waveform: float32 [samples] with samples >= length.
      length: window length in samples.
      hop: spacing of candidate starts.
    """
    energy = tf.concat([[0.0], tf.cumsum(tf.square(tf.cast(waveform, tf.float64)))], axis=0)
    starts = tf.range(0, tf.shape(waveform)[0] - length + 1, hop)
    window_energy = tf.gather(energy, starts + length) - tf.gather(energy, starts)
    power = tf.cast(tf.maximum(window_energy, 0.0), tf.float32) / length
    return 10.0 * tf.math.log(power + 1e-12) / tf.math.log(10.0)


def speech_window(waveform: tf.Tensor, length: int, hop: int, relative_gate_db: float,
                  seed: tf.Tensor | None = None) -> tf.Tensor:
    """A window that carries the recording's speech rather than its pauses.

    Candidate windows start every `hop` samples; those within `relative_gate_db` of the
    loudest are eligible. With a seed, one is drawn uniformly (training); without, the loudest
    is taken (evaluation). Short recordings land at a random offset (training) or
    centred (evaluation), as `center_window` does. Cropping pauses would teach a model each speaker's room tone.

    Args:
      waveform: float32 [samples].
      length: window length in samples.
      hop: spacing of candidate starts in samples.
      relative_gate_db: how far below the loudest window a candidate may be.
      seed: int [2] stateless seed, or None for the deterministic choice.

    Returns:
      float32 [length].
    """
    samples = tf.shape(waveform)[0]
    if seed is None:
        waveform = pad_to_length(waveform, length)
    else:
        waveform = pad_to_length(waveform, tf.maximum(length, 2 * length - samples))
    levels = window_start_levels_db(waveform, length, hop)
    if seed is None:
        index = tf.argmax(levels, output_type=tf.int32)
    else:
        eligible = levels >= tf.reduce_max(levels) - relative_gate_db
        logits = tf.where(eligible, 0.0, -1e9)[tf.newaxis]
        index = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[0, 0]
    start = index * hop
    return tf.reshape(waveform[start:start + length], [length])


def window_count(lengths: tf.Tensor, length: int, hop: int) -> tf.Tensor:
    """How many windows `frame_windows` cuts from recordings of these lengths, int32 [batch]."""
    return 1 + (tf.maximum(lengths, length) - length + hop // 2) // hop


def frame_windows(waveforms: tf.Tensor, length: int, hop: int) -> tf.Tensor:
    """Every window of each recording, the first starting at its first sample.

    A tail shorter than half a hop gets no window of its own (a 1.0 s clip is one 0.975 s
    window, not two); a longer tail gets one, zero-padded at the end.

    Args:
      waveforms: float32 [batch, samples], any number of samples.
      length: window length in samples.
      hop: samples between window starts.

    Returns:
      float32 [batch, windows, length] with windows >= 1; recordings shorter than one window
      are centred in it, as `center_window` does.
    """
    waveforms = pad_to_length(waveforms, length)
    samples = tf.shape(waveforms)[-1]
    count = window_count(samples, length, hop)
    span = (count - 1) * hop + length
    padded = tf.pad(waveforms, [[0, 0], [0, tf.maximum(span - samples, 0)]])[:, :span]
    return tf.signal.frame(padded, length, hop)


def window_levels_db(windows: tf.Tensor) -> tf.Tensor:
    """RMS level of each window in dB relative to full scale, float32 [..., windows]."""
    power = tf.reduce_mean(tf.square(windows), axis=-1)
    return 10.0 * tf.math.log(power + 1e-12) / tf.math.log(10.0)


def sounding_window_mask(
    levels_db: tf.Tensor, relative_gate_db: float, silence_floor_dbfs: float
) -> tf.Tensor:
    """Which windows count: louder than the floor and within `relative_gate_db` of the loudest.

    Args:
      levels_db: float32 [batch, windows] from `window_levels_db`.
      relative_gate_db: windows this far below the recording's loudest are dropped.
      silence_floor_dbfs: windows below this absolute level are silence (or padding).

    Returns:
      bool [batch, windows]; a row is all False only when the whole recording is silent.
    """
    loudest = tf.reduce_max(levels_db, axis=-1, keepdims=True)
    return (levels_db >= loudest - relative_gate_db) & (levels_db >= silence_floor_dbfs)
