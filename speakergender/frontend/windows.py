"""Fixed-length windows cut from recordings of any length, and which of them carry sound.

Training sees one window per recording (drawn among the windows that carry speech; the loudest
for evaluation); serving cuts every window of a recording, drops the silent ones and averages
the rest.
"""

from __future__ import annotations

import math

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


def window_start_levels_db(waveforms: tf.Tensor, lengths: tf.Tensor, length: int,
                           hop: int, offsets: tf.Tensor | None = None) -> tf.Tensor:
    """RMS level (dBFS) of each candidate window of each recording, for `speech_windows`.

    A recording longer than `length` has a candidate starting every `hop` samples up to its
    end; a shorter one has a single candidate, the whole recording.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      length: window length in samples.
      hop: spacing of candidate starts.
      offsets: float32 [batch], a constant to take off each recording's samples first (its
        DC offset), or None.

    Returns:
      float32 [batch, candidates]: column k is the window starting at k * hop; -inf past a
      row's last candidate.
    """
    lengths = tf.cast(lengths, tf.int32)
    batch = tf.shape(waveforms)[0]
    # Window energies from a running sum over blocks that both window ends fall on.
    block = math.gcd(length, hop)
    num_starts = tf.maximum((lengths - length) // hop + 1, 1)
    candidates = tf.range(tf.reduce_max(num_starts))
    starts = candidates * hop
    total = tf.maximum(tf.shape(waveforms)[1], starts[-1] + length)
    total += -total % block
    blocks = tf.reshape(tf.pad(waveforms, [[0, 0], [0, total - tf.shape(waveforms)[1]]]),
                        [batch, -1, block])
    if offsets is not None:
        # Subtracted before squaring (expanding (x - m)^2 instead would cancel badly in quiet
        # windows); the samples past a recording's end now hold -m, see below.
        blocks -= tf.cast(offsets, tf.float32)[:, tf.newaxis, tf.newaxis]
    running = tf.pad(tf.cumsum(tf.cast(tf.reduce_sum(tf.square(blocks), axis=2), tf.float64),
                               axis=1), [[0, 0], [1, 0]])
    energy = (tf.gather(running, (starts + length) // block, axis=1)
              - tf.gather(running, starts // block, axis=1))
    if offsets is not None:
        # Only a short recording's window reaches past its end, by length - <# samples>.
        beyond = tf.cast(tf.maximum(length - lengths, 0), tf.float64)
        energy -= (beyond * tf.square(tf.cast(offsets, tf.float64)))[:, tf.newaxis]
    levels = 10.0 * tf.math.log(tf.maximum(energy, 0.0) / length + 1e-12) / math.log(10.0)
    is_start = candidates[tf.newaxis, :] < num_starts[:, tf.newaxis]
    return tf.where(is_start, tf.cast(levels, tf.float32), -math.inf)


def speech_windows(waveforms: tf.Tensor, lengths: tf.Tensor, length: int, hop: int,
                   relative_gate_db: float, seed: tf.Tensor | None = None,
                   offsets: tf.Tensor | None = None) -> tf.Tensor:
    """One window per recording that carries its speech rather than its pauses, for a batch.

    Candidate windows of a recording longer than `length` start every `hop` samples; those
    within `relative_gate_db` of its loudest are eligible. With a seed, one is drawn uniformly
    (training); without, the loudest is taken (evaluation). A shorter recording lands at a
    random hop-spaced offset in its window (training) or centred (evaluation). Cropping pauses
    would teach a model each speaker's room tone.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      length: window length in samples.
      hop: spacing of candidate starts in samples.
      relative_gate_db: how far below the loudest window a candidate may be.
      seed: int [2] stateless seed, or None for the deterministic choice.
      offsets: float32 [batch], each recording's DC offset (`features.dc_offsets`), taken off
        its samples for choosing and in the window returned; None: the waveforms are used as
        they are. Cheaper than removing it from whole recordings first, with the same result.

    Returns:
      float32 [batch, length], zero where the window reaches past its recording.
    """
    lengths = tf.cast(lengths, tf.int32)
    batch = tf.shape(waveforms)[0]
    levels = window_start_levels_db(waveforms, lengths, length, hop, offsets)
    short = lengths < length
    room = length - lengths  # free samples around a short recording
    if seed is None:
        start = tf.argmax(levels, axis=1, output_type=tf.int32) * hop
        start = tf.where(short, -(room // 2), start)
    else:
        loud_seed, short_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        eligible = levels >= tf.reduce_max(levels, axis=1, keepdims=True) - relative_gate_db
        draw = tf.random.stateless_categorical(
            tf.where(eligible, 0.0, -1e9), 1, loud_seed, dtype=tf.int32)[:, 0]
        fraction = tf.random.stateless_uniform([batch], short_seed, 0, 1) * tf.cast(
            room // hop + 1, tf.float32)
        shift = tf.minimum(tf.cast(fraction, tf.int32), room // hop) * hop
        start = tf.where(short, shift - room, draw * hop)
    # Start may be negative (a short recording, centred or offset). Out-of-range samples are
    # masked rather than padded in: padding would copy the whole batch for one window each.
    index = start[:, tf.newaxis] + tf.range(length)[tf.newaxis, :]
    inside = (index >= 0) & (index < lengths[:, tf.newaxis])
    width = tf.shape(waveforms)[1]

    def gather():
        taken = tf.gather(waveforms, tf.clip_by_value(index, 0, width - 1), batch_dims=1)
        if offsets is not None:
            taken -= tf.cast(offsets, tf.float32)[:, tf.newaxis]
        return tf.where(inside, taken, 0.0)

    return tf.cond(width > 0, gather, lambda: tf.zeros([batch, length], tf.float32))


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
