"""Fixed-length windows cut from recordings of any length, and how loud each one is.

One module for both sides of the model:

- training cuts one window per recording (`speech_windows`): drawn among the windows that carry
  speech, or the loudest one for evaluation;
- serving cuts every window of a recording (`frame_windows`), then drops the silent ones
  (`sounding_window_mask`) and averages the rest.

Both place windows by their start sample (`window_starts`), measure them with one level function
(`window_levels_db`) and cut them with one gather (`cut_windows`). A recording shorter than a
window is centred in it, on both sides.

The DC offset is removed window by window (`remove_dc`): each window loses the mean of its own
samples, so a window depends on nothing outside it, and a long recording scored block by block
(`speakergender.streaming`) gives the windows it gives whole. A recorder's offset is constant over
a window of a second, so this removes what a whole-recording mean would, and nothing of the
voice (its lowest component is a period of one window, far below any voice).
"""

from __future__ import annotations

import math

import tensorflow as tf

from speakergender.frontend import branching

_LOG10 = math.log(10.0)


def window_starts(lengths: tf.Tensor, length: int, hop: int,
                  with_tail: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Start samples of every window of each recording, on a grid `hop` samples apart.

    A recording of at least `length` samples has windows starting at 0, hop, 2 hop, ...:
    only those that fit inside it, or (`with_tail`) one more for a tail of at least half a hop,
    zero-padded at the end (a 1.0 s clip is one 0.975 s window, not two). A shorter recording
    has one window, centred on it: its start is negative.

    Args:
      lengths: int32 [batch], samples in each recording.
      length: window length in samples.
      hop: samples between window starts.
      with_tail: give a long enough tail its own window (serving) or not (training crops).

    Returns:
      int32 [batch, windows] starts and int32 [batch] how many of them each recording has (the
      rest of its row repeats its last start).
    """
    lengths = tf.cast(lengths, tf.int32)
    tail = hop // 2 if with_tail else 0
    counts = 1 + tf.maximum(lengths - length + tail, 0) // hop
    grid = tf.range(tf.reduce_max(tf.concat([counts, [1]], 0)))[tf.newaxis, :] * hop
    grid = tf.minimum(grid, ((counts - 1) * hop)[:, tf.newaxis])
    centred = -((length - lengths) // 2)
    starts = tf.where((lengths < length)[:, tf.newaxis], centred[:, tf.newaxis], grid)
    return starts, counts


def window_count(lengths: tf.Tensor, length: int, hop: int) -> tf.Tensor:
    """How many windows `frame_windows` cuts from recordings of these lengths, int32 [batch]."""
    return window_starts(lengths, length, hop, with_tail=True)[1]


def window_levels_db(waveforms: tf.Tensor, lengths: tf.Tensor, starts: tf.Tensor,
                     length: int, remove_dc: bool = False) -> tf.Tensor:
    """RMS level (dBFS) of windows given by their starts; samples outside a recording are zero.

    Computed from prefix sums over blocks (`_window_sums`), so measuring every candidate start
    of a long recording costs one pass over it, not one per window.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      starts: int32 [batch, windows], may be negative or reach past a recording's end.
      length: window length in samples.
      remove_dc: measure each window with its own mean removed, as `cut_windows` cuts it.

    Returns:
      float32 [batch, windows]; a silent window is -120 dBFS.
    """
    lengths = tf.cast(lengths, tf.int32)[:, tf.newaxis]
    first = tf.clip_by_value(starts, 0, lengths)
    last = tf.clip_by_value(starts + length, 0, lengths)
    # float64: a long recording's sums must keep a quiet window's energy, and with the DC
    # removed, energy and squared sum nearly cancel for a quiet window with an offset.
    samples = tf.cast(waveforms, tf.float64)
    energy = _window_sums(tf.square(samples), first, last)
    if remove_dc:
        inside = tf.cast(last - first, tf.float64)
        energy -= tf.math.divide_no_nan(tf.square(_window_sums(samples, first, last)), inside)
    power = tf.maximum(energy, 0.0) / length
    return tf.cast(10.0 * tf.math.log(power + 1e-12) / _LOG10, tf.float32)


# Samples per block of `_window_sums`.
_SUM_BLOCK = 64


def _window_sums(values: tf.Tensor, first: tf.Tensor, last: tf.Tensor) -> tf.Tensor:
    """Sums of values[row, first:last] for each window, [batch, windows], from prefix sums: the
    running total of whole blocks before an index's block plus the sum of its block up to it.
    One vectorised pass over the samples; a `cumsum` over every sample cost more than the rest
    of the window levels and cuts together.
    """
    batch, width = tf.shape(values)[0], tf.shape(values)[1]
    num_blocks = width // _SUM_BLOCK + 1   # one more, for prefixes at index `width`
    blocks = tf.reshape(tf.pad(values, [[0, 0], [0, num_blocks * _SUM_BLOCK - width]]),
                        [batch, num_blocks, _SUM_BLOCK])
    before_block = tf.cumsum(tf.reduce_sum(blocks, axis=2), axis=1, exclusive=True)

    def prefix(index):
        block = index // _SUM_BLOCK
        within = tf.range(_SUM_BLOCK) < (index % _SUM_BLOCK)[..., tf.newaxis]
        head = tf.reduce_sum(tf.where(within, tf.gather(blocks, block, batch_dims=1),
                                      tf.zeros([], values.dtype)), axis=-1)
        return tf.gather(before_block, block, batch_dims=1) + head

    return prefix(last) - prefix(first)


def cut_windows(waveforms: tf.Tensor, lengths: tf.Tensor, starts: tf.Tensor,
                length: int, remove_dc: bool = False) -> tf.Tensor:
    """The windows at `starts`, zero where one reaches outside its recording.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      starts: int32 [batch, windows].
      length: window length in samples.
      remove_dc: subtract from each window the mean of its samples inside the recording (the
        rest stays zero).

    Returns:
      float32 [batch, windows, length].
    """
    lengths = tf.cast(lengths, tf.int32)
    index = starts[:, :, tf.newaxis] + tf.range(length)[tf.newaxis, tf.newaxis, :]
    inside = (index >= 0) & (index < lengths[:, tf.newaxis, tf.newaxis])
    width = tf.shape(waveforms)[1]

    def gather():
        # Masked rather than padded: padding would copy every whole recording for one window.
        taken = tf.where(inside, tf.gather(waveforms, tf.clip_by_value(index, 0, width - 1),
                                           batch_dims=1), 0.0)
        if remove_dc:
            count = tf.reduce_sum(tf.cast(inside, tf.float32), axis=-1, keepdims=True)
            mean = tf.math.divide_no_nan(tf.reduce_sum(taken, axis=-1, keepdims=True), count)
            taken = tf.where(inside, taken - mean, 0.0)
        return taken

    return branching.cond(width > 0, gather, lambda: tf.zeros(tf.shape(index), tf.float32))


def speech_windows(waveforms: tf.Tensor, lengths: tf.Tensor, length: int, hop: int,
                   relative_gate_db: float, seed: tf.Tensor | None = None,
                   remove_dc: bool = False) -> tf.Tensor:
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
      remove_dc: see `cut_windows`.

    Returns:
      float32 [batch, length], zero where the window reaches past its recording.
    """
    lengths = tf.cast(lengths, tf.int32)
    batch = tf.shape(waveforms)[0]
    starts, counts = window_starts(lengths, length, hop, with_tail=False)
    is_candidate = tf.range(tf.shape(starts)[1])[tf.newaxis, :] < counts[:, tf.newaxis]
    levels = tf.where(is_candidate,
                      window_levels_db(waveforms, lengths, starts, length, remove_dc), -math.inf)
    if seed is None:
        choice = tf.argmax(levels, axis=1, output_type=tf.int32)
        start = tf.gather(starts, choice, batch_dims=1)
    else:
        loud_seed, short_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        eligible = levels >= tf.reduce_max(levels, axis=1, keepdims=True) - relative_gate_db
        draw = tf.random.stateless_categorical(
            tf.where(eligible, 0.0, -1e9), 1, loud_seed, dtype=tf.int32)[:, 0]
        room = length - lengths  # free samples around a short recording
        fraction = tf.random.stateless_uniform([batch], short_seed, 0, 1) * tf.cast(
            room // hop + 1, tf.float32)
        shift = tf.minimum(tf.cast(fraction, tf.int32), room // hop) * hop
        start = tf.where(lengths < length, shift - room, tf.gather(starts, draw, batch_dims=1))
    return cut_windows(waveforms, lengths, start[:, tf.newaxis], length, remove_dc)[:, 0]


def frame_windows(waveforms: tf.Tensor, lengths: tf.Tensor, length: int, hop: int,
                  remove_dc: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Every window of each recording (see `window_starts`, with its tail), and their levels.

    Args:
      waveforms: float32 [batch, samples], each row zero past its length.
      lengths: int32 [batch], samples in each row.
      length: window length in samples.
      hop: samples between window starts.
      remove_dc: see `cut_windows`.

    Returns:
      float32 [batch, windows, length] windows, with windows >= 1 (a row's windows past its
      count repeat its last one); float32 [batch, windows] their levels (dBFS); int32 [batch]
      each recording's window count.
    """
    starts, counts = window_starts(lengths, length, hop, with_tail=True)
    return (cut_windows(waveforms, lengths, starts, length, remove_dc),
            window_levels_db(waveforms, lengths, starts, length, remove_dc), counts)


def sounding_window_mask(levels_db: tf.Tensor, counts: tf.Tensor, relative_gate_db: float,
                         silence_floor_dbfs: float) -> tf.Tensor:
    """Which of each recording's own windows count: louder than the floor and within
    `relative_gate_db` of its loudest.

    Args:
      levels_db: float32 [batch, windows] from `frame_windows`.
      counts: int32 [batch], each recording's window count.
      relative_gate_db: windows this far below the recording's loudest are dropped.
      silence_floor_dbfs: windows below this absolute level are silence.

    Returns:
      bool [batch, windows]; a row is all False only when the whole recording is silent.
    """
    own = tf.sequence_mask(counts, tf.shape(levels_db)[1])
    levels_db = tf.where(own, levels_db, -math.inf)
    loudest = tf.reduce_max(levels_db, axis=-1, keepdims=True)
    return own & (levels_db >= loudest - relative_gate_db) & (levels_db >= silence_floor_dbfs)
