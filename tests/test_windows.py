"""Windows cut from ramps, whose values say where each sample came from."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from speakergender.frontend import windows


def _ramp(samples: int, start: float = 1.0) -> tf.Tensor:
    """start, start + 1, ...: non-zero, so padding (0) is told apart from signal."""
    return tf.range(start, start + samples, dtype=tf.float32)


def test_pad_to_length_centres_short_recordings():
    np.testing.assert_array_equal(windows.pad_to_length(_ramp(3), 8).numpy(),
                                  [0, 0, 1, 2, 3, 0, 0, 0])
    # Batched: the last axis is padded, the others are left alone.
    padded = windows.pad_to_length(tf.stack([_ramp(2), _ramp(2, 10)]), 5).numpy()
    np.testing.assert_array_equal(padded, [[0, 1, 2, 0, 0], [0, 10, 11, 0, 0]])
    # Long enough already: unchanged.
    np.testing.assert_array_equal(windows.pad_to_length(_ramp(6), 4).numpy(), _ramp(6).numpy())


def test_center_window():
    np.testing.assert_array_equal(windows.center_window(_ramp(10), 4).numpy(), [4, 5, 6, 7])
    np.testing.assert_array_equal(windows.center_window(_ramp(11), 4).numpy(), [4, 5, 6, 7])
    np.testing.assert_array_equal(windows.center_window(_ramp(2), 5).numpy(), [0, 1, 2, 0, 0])
    np.testing.assert_array_equal(windows.center_window(_ramp(4), 4).numpy(), [1, 2, 3, 4])
    assert windows.center_window(tf.zeros([0]), 3).numpy().tolist() == [0, 0, 0]


def _drawn_window(signal, length, seed):
    """speech_windows' training draw with every window eligible: a plain random crop."""
    return windows.speech_windows(signal[tf.newaxis], tf.shape(signal)[:1], length, 1,
                                  1000.0, seed)[0]


def _loud_in_the_middle(samples: int, loud: slice) -> np.ndarray:
    signal = np.full(samples, 0.01, np.float32)
    signal[loud] = 0.5
    return signal


def test_evaluation_takes_the_loudest_window_and_centres_short_recordings():
    long = _loud_in_the_middle(40, slice(21, 29))
    short = np.arange(1, 4, dtype=np.float32)
    batch = np.zeros([2, 40], np.float32)
    batch[0], batch[1, :3] = long, short
    cut = windows.speech_windows(tf.constant(batch), tf.constant([40, 3]), 8, 2, 10.0).numpy()
    np.testing.assert_array_equal(cut[0], long[20:28])  # starts on the hop grid: 20 or 22
    np.testing.assert_array_equal(cut[1], [0, 0, 1, 2, 3, 0, 0, 0])


def test_training_draws_only_windows_within_the_gate_of_the_loudest():
    signal = _loud_in_the_middle(60, slice(30, 40))
    batch = tf.constant(np.stack([signal, signal]))
    starts = set()
    for seed in range(40):
        cut = windows.speech_windows(batch, tf.constant([60, 60]), 10, 5, 6.0,
                                     tf.constant([seed, 1])).numpy()
        for row in cut:
            (start,) = [s for s in range(0, 51, 5) if np.array_equal(signal[s:s + 10], row)]
            starts.add(start)
    # Windows holding at least half the loud part are within 6 dB; the quiet ends never are.
    assert starts == {25, 30, 35}


def test_a_row_is_cut_as_it_would_be_alone_whatever_the_batch_padding():
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=n).astype(np.float32) for n in (50, 23, 7)]
    batch = np.zeros([3, 50], np.float32)
    for i, row in enumerate(rows):
        batch[i, :len(row)] = row
    together = windows.speech_windows(tf.constant(batch), tf.constant([50, 23, 7]), 12, 4, 3.0)
    for i, row in enumerate(rows):
        alone = windows.speech_windows(tf.constant(row[np.newaxis]), tf.constant([len(row)]), 12,
                                       4, 3.0)
        np.testing.assert_array_equal(together[i], alone[0])


def test_offsets_cut_what_removing_them_first_would():
    # A recorder's DC offset shifts every sample; quiet and loud stretches, short and long rows.
    rng = np.random.default_rng(3)
    lengths = [90, 61, 9]
    clean = np.zeros([3, 90], np.float32)
    for i, n in enumerate(lengths):
        clean[i, :n] = rng.normal(0, 0.01, n) * np.where(np.arange(n) % 40 < 12, 30.0, 1.0)
    offsets = np.array([-0.085, 0.4, -0.3], np.float32)  # larger than real recorders' too
    shifted = np.where(np.arange(90) < np.array(lengths)[:, None], clean + offsets[:, None], 0)
    shifted = tf.constant(shifted.astype(np.float32))
    levels = windows.window_start_levels_db(shifted, lengths, 16, 4, offsets).numpy()
    np.testing.assert_allclose(levels, windows.window_start_levels_db(clean, lengths, 16, 4),
                               atol=0.01)  # dB, quiet windows included
    for seed in (None, tf.constant([4, 2])):
        cut = windows.speech_windows(shifted, lengths, 16, 4, 10.0, seed, offsets).numpy()
        expected = windows.speech_windows(clean, lengths, 16, 4, 10.0, seed).numpy()
        np.testing.assert_allclose(cut, expected, atol=1e-6)
        # The short row's 9 samples stand somewhere in its window; the rest stays zero.
        assert np.count_nonzero(cut[2]) == 9


def _random_windows(signal: tf.Tensor, length: int, seeds: int) -> np.ndarray:
    window = tf.function(lambda seed: _drawn_window(signal, length, seed))  # noqa: B023
    return np.stack([window(tf.constant([seed, 7])).numpy() for seed in range(seeds)])


def test_drawn_window_of_a_long_recording_is_a_contiguous_crop():
    length, samples = 5, 9  # 5 possible starts
    crops = _random_windows(_ramp(samples), length, 120)
    assert crops.shape == (120, length)
    np.testing.assert_array_equal(np.diff(crops, axis=1), 1.0)  # contiguous, never padded
    starts = crops[:, 0] - 1
    # Uniform over every start, the first and the last included.
    assert set(starts.astype(int)) == set(range(samples - length + 1))


def test_drawn_window_keeps_a_short_recording_whole_at_a_random_offset():
    length, samples = 8, 3
    crops = _random_windows(_ramp(samples), length, 120)
    offsets = []
    for crop in crops:
        (nonzero,) = np.nonzero(crop)
        np.testing.assert_array_equal(crop[nonzero], [1, 2, 3])  # the whole recording
        assert np.count_nonzero(crop) == samples
        offsets.append(nonzero[0])
    assert set(offsets) == set(range(length - samples + 1))


def test_drawn_window_repeats_with_its_seed():
    signal = _ramp(100)
    first = _drawn_window(signal, 10, tf.constant([3, 4])).numpy()
    again = _drawn_window(signal, 10, tf.constant([3, 4])).numpy()
    np.testing.assert_array_equal(first, again)
    others = {_drawn_window(signal, 10, tf.constant([s, 4])).numpy()[0]
              for s in range(20)}
    assert len(others) > 1


def test_frame_windows_pads_the_last_window_at_the_end():
    framed = windows.frame_windows(_ramp(12)[tf.newaxis], 4, 3).numpy()
    np.testing.assert_array_equal(framed[0], [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10],
                                              [10, 11, 12, 0]])
    # Exactly three windows: no extra padded one.
    framed = windows.frame_windows(_ramp(10)[tf.newaxis], 4, 3).numpy()
    np.testing.assert_array_equal(framed[0], [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])


def test_frame_windows_gives_a_tail_under_half_a_hop_no_window():
    framed = windows.frame_windows(_ramp(11)[tf.newaxis], 4, 3).numpy()
    np.testing.assert_array_equal(framed[0], [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])
    # The product's case: a 1.0 s clip at 16 kHz is one 0.975 s window.
    assert windows.frame_windows(tf.zeros([1, 16000]), 15600, 7680).shape[1] == 1


def test_frame_windows_centres_a_short_recording():
    framed = windows.frame_windows(tf.stack([_ramp(2), _ramp(2, 5)]), 4, 3).numpy()
    np.testing.assert_array_equal(framed, [[[0, 1, 2, 0]], [[0, 5, 6, 0]]])
    # As center_window does.
    np.testing.assert_array_equal(framed[0, 0], windows.center_window(_ramp(2), 4).numpy())


@pytest.mark.parametrize("length,hop", [(4, 3), (5, 5), (6, 2)])
def test_window_count_agrees_with_frame_windows(length, hop):
    lengths = list(range(1, 25))
    counts = windows.window_count(tf.constant(lengths), length, hop).numpy()
    for samples, count in zip(lengths, counts):
        assert count == windows.frame_windows(_ramp(samples)[tf.newaxis], length, hop).shape[1]
        # Only a tail shorter than half a hop is left out, and the last window starts inside
        # the recording.
        assert samples - ((count - 1) * hop + length) < hop / 2
        assert count == 1 or (count - 1) * hop < samples


def test_window_levels_db():
    t = np.arange(16000) / 16000
    sine = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    levels = windows.window_levels_db(tf.constant([[sine, 0.1 * sine, 0 * sine]])).numpy()[0]
    # A full-scale sine is at -3.01 dBFS (RMS 1/sqrt 2); a tenth of it 20 dB lower.
    np.testing.assert_allclose(levels[:2], [-3.0103, -23.0103], atol=1e-3)
    assert levels[2] == pytest.approx(-120.0)


def test_sounding_window_mask():
    levels = tf.constant([[-10.0, -20.0, -40.0, -41.0, -70.0],
                          [-80.0, -90.0, -100.0, -120.0, -120.0],
                          [-55.0, -59.0, -61.0, -85.0, -90.0]])
    mask = windows.sounding_window_mask(levels, relative_gate_db=30.0,
                                        silence_floor_dbfs=-60.0).numpy()
    np.testing.assert_array_equal(mask, [
        [True, True, True, False, False],      # within 30 dB of the loudest (-10)
        [False, False, False, False, False],   # all below the floor: silent recording
        [True, True, False, False, False],     # the floor cuts before the relative gate
    ])
