"""Windows cut from ramps, whose values say where each sample came from."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from speakergender.frontend import windows


def _ramp(samples: int, start: float = 1.0) -> tf.Tensor:
    """start, start + 1, ...: non-zero, so padding (0) is told apart from signal."""
    return tf.range(start, start + samples, dtype=tf.float32)


def _frames(signal: tf.Tensor, length: int, hop: int) -> np.ndarray:
    """frame_windows' windows of one recording, [windows, length]."""
    framed, _, counts = windows.frame_windows(signal[tf.newaxis], tf.shape(signal)[:1], length,
                                              hop)
    return framed.numpy()[0, :counts[0]]


def test_window_starts_on_the_grid_and_centred_for_short_recordings():
    starts, counts = windows.window_starts(tf.constant([10, 11, 2, 4, 0]), 4, 3, with_tail=False)
    np.testing.assert_array_equal(counts, [3, 3, 1, 1, 1])
    np.testing.assert_array_equal(starts, [[0, 3, 6], [0, 3, 6], [-1, -1, -1], [0, 0, 0],
                                           [-2, -2, -2]])
    # With the tail: 12 samples leave a 2-sample tail past the last full window (>= hop / 2),
    # 11 a 1-sample one (< hop / 2).
    starts, counts = windows.window_starts(tf.constant([11, 12]), 4, 3, with_tail=True)
    np.testing.assert_array_equal(counts, [3, 4])
    np.testing.assert_array_equal(starts, [[0, 3, 6, 6], [0, 3, 6, 9]])


def test_cut_windows_masks_what_lies_outside_the_recording():
    batch = tf.constant([[1.0, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]])
    cut = windows.cut_windows(batch, tf.constant([6, 3]), tf.constant([[-1, 4], [1, -2]]), 3)
    np.testing.assert_array_equal(cut, [[[0, 1, 2], [5, 6, 0]], [[8, 9, 0], [0, 0, 7]]])
    assert windows.cut_windows(tf.zeros([2, 0]), tf.constant([0, 0]),
                               tf.constant([[0], [0]]), 3).shape == (2, 1, 3)


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
    np.testing.assert_array_equal(_frames(_ramp(12), 4, 3),
                                  [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10], [10, 11, 12, 0]])
    # Exactly three windows: no extra padded one.
    np.testing.assert_array_equal(_frames(_ramp(10), 4, 3),
                                  [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])


def test_frame_windows_gives_a_tail_under_half_a_hop_no_window():
    np.testing.assert_array_equal(_frames(_ramp(11), 4, 3),
                                  [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])
    # The product's case: a 1.0 s clip at 16 kHz is one 0.975 s window.
    assert windows.window_count(tf.constant([16000]), 15600, 7680).numpy().tolist() == [1]


def test_frame_windows_centres_a_short_recording_as_evaluation_crops_do():
    np.testing.assert_array_equal(_frames(_ramp(2), 4, 3), [[0, 1, 2, 0]])
    crop = windows.speech_windows(_ramp(2)[tf.newaxis], tf.constant([2]), 4, 3, 10.0)
    np.testing.assert_array_equal(crop, [[0, 1, 2, 0]])


def test_a_row_is_framed_as_it_would_be_alone_whatever_the_batch_padding():
    rows = [_ramp(13), _ramp(2, 20), _ramp(7, 40)]
    batch = tf.stack([tf.pad(row, [[0, 13 - row.shape[0]]]) for row in rows])
    framed, levels, counts = windows.frame_windows(batch, tf.constant([13, 2, 7]), 4, 3)
    for i, row in enumerate(rows):
        alone, alone_levels, _ = windows.frame_windows(row[tf.newaxis], row.shape[:1], 4, 3)
        np.testing.assert_array_equal(framed[i, :counts[i]], alone[0])
        np.testing.assert_allclose(levels[i, :counts[i]], alone_levels[0], rtol=1e-6)


@pytest.mark.parametrize("length,hop", [(4, 3), (5, 5), (6, 2)])
def test_window_count_covers_the_recording(length, hop):
    lengths = list(range(1, 25))
    counts = windows.window_count(tf.constant(lengths), length, hop).numpy()
    for samples, count in zip(lengths, counts):
        # Only a tail shorter than half a hop is left out, and the last window starts inside
        # the recording.
        assert samples - ((count - 1) * hop + length) < hop / 2
        assert count == 1 or (count - 1) * hop < samples


def test_window_levels_db():
    t = np.arange(16000) / 16000
    sine = np.sin(2 * np.pi * 100 * t).astype(np.float32)
    batch = tf.constant([sine, 0.1 * sine, 0 * sine])
    starts = tf.constant([[0, 8000]] * 3)
    levels = windows.window_levels_db(batch, tf.constant([16000] * 3), starts, 8000).numpy()
    # A full-scale sine is at -3.01 dBFS (RMS 1/sqrt 2); a tenth of it 20 dB lower.
    np.testing.assert_allclose(levels[:2], [[-3.0103] * 2, [-23.0103] * 2], atol=1e-3)
    np.testing.assert_allclose(levels[2], [-120.0, -120.0])
    # Half the window past the recording's end counts as silence: 3 dB down.
    half = windows.window_levels_db(batch[:1], tf.constant([16000]), tf.constant([[12000]]), 8000)
    np.testing.assert_allclose(half, [[-6.0206]], atol=1e-3)


@pytest.mark.parametrize("remove_dc", [False, True])
def test_window_levels_db_equal_the_rms_of_the_cut_windows(remove_dc):
    rng = np.random.default_rng(3)
    batch = (rng.normal(0.05, 0.1, [2, 50]) * np.arange(50) / 50).astype(np.float32)
    lengths = tf.constant([50, 31])
    batch[1, 31:] = 0
    starts = tf.constant([[-5, 0, 17, 40], [-20, 3, 25, 30]])
    cut = windows.cut_windows(tf.constant(batch), lengths, starts, 12, remove_dc).numpy()
    expected = 10 * np.log10(np.mean(cut.astype(np.float64) ** 2, axis=-1) + 1e-12)
    np.testing.assert_allclose(
        windows.window_levels_db(batch, lengths, starts, 12, remove_dc), expected, atol=1e-4)


@pytest.mark.parametrize("remove_dc", [False, True])
def test_window_levels_db_across_many_summing_blocks(remove_dc):
    # Windows that start and end anywhere relative to the level's blocks of samples.
    rng = np.random.default_rng(4)
    batch = rng.normal(0.02, 0.1, [2, 1000]).astype(np.float32)
    batch[1, 613:] = 0
    lengths = tf.constant([1000, 613])
    starts = tf.constant([[-150, 0, 63, 64, 65, 700, 999], [-199, 1, 127, 128, 300, 450, 613]])
    cut = windows.cut_windows(tf.constant(batch), lengths, starts, 200, remove_dc).numpy()
    expected = 10 * np.log10(np.mean(cut.astype(np.float64) ** 2, axis=-1) + 1e-12)
    np.testing.assert_allclose(
        windows.window_levels_db(batch, lengths, starts, 200, remove_dc), expected, atol=1e-4)


def test_a_quiet_window_keeps_its_level_after_ten_minutes_of_loud_sound():
    """Running sums in float32 over every sample would bury the quiet window's energy (about
    1e-4) under the loud stretch's (about 2.4e6, float32 step 0.25); ten minutes is as telling
    as an hour and ten times cheaper."""
    rate, loud_seconds = 16000, 600
    loud = np.random.default_rng(5).normal(0, 0.5, loud_seconds * rate).astype(np.float32)
    quiet = np.full(rate, 1e-4, np.float32) * np.sign(np.sin(np.arange(rate)))
    recording = np.concatenate([loud, quiet])[np.newaxis]
    level = windows.window_levels_db(recording, tf.constant([recording.shape[1]]),
                                     tf.constant([[loud_seconds * rate]]), rate)
    np.testing.assert_allclose(level, [[-80.0]], atol=0.01)


def test_each_window_loses_the_mean_of_its_own_samples_and_its_padding_stays_zero():
    batch = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [7.0, 9.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    cut = windows.cut_windows(tf.constant(batch), tf.constant([6, 2]),
                              tf.constant([[0, 3], [-1, 1]]), 3, remove_dc=True).numpy()
    np.testing.assert_allclose(cut, [[[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]],
                                     [[0.0, -1.0, 1.0], [0.0, 0.0, 0.0]]], atol=1e-6)


def test_a_window_depends_on_its_own_samples_alone():
    """What block-by-block scoring of long recordings rests on: the same window cut from a
    recording and from any stretch of it that holds the window is the same window."""
    rng = np.random.default_rng(5)
    recording = (rng.normal(0.0, 0.1, 400) + np.linspace(-0.3, 0.2, 400)).astype(np.float32)
    length, hop = 40, 20
    framed, levels, _ = windows.frame_windows(recording[np.newaxis], tf.constant([400]), length,
                                              hop, remove_dc=True)
    stretch = recording[100:260]
    part, part_levels, count = windows.frame_windows(stretch[np.newaxis], tf.constant([160]),
                                                     length, hop, remove_dc=True)
    np.testing.assert_allclose(part[0, :7], framed[0, 5:12], atol=1e-6)
    np.testing.assert_allclose(part_levels[0, :7], levels[0, 5:12], atol=1e-4)


def test_sounding_window_mask():
    levels = tf.constant([[-10.0, -20.0, -40.0, -41.0, -70.0],
                          [-80.0, -90.0, -100.0, -120.0, -120.0],
                          [-55.0, -59.0, -61.0, -85.0, -90.0]])
    mask = windows.sounding_window_mask(levels, tf.constant([5, 5, 5]), relative_gate_db=30.0,
                                        silence_floor_dbfs=-60.0).numpy()
    np.testing.assert_array_equal(mask, [
        [True, True, True, False, False],      # within 30 dB of the loudest (-10)
        [False, False, False, False, False],   # all below the floor: silent recording
        [True, True, False, False, False],     # the floor cuts before the relative gate
    ])


def test_sounding_window_mask_ignores_windows_past_a_recordings_count():
    levels = tf.constant([[-50.0, -45.0, -10.0]])  # the third window belongs to no recording
    mask = windows.sounding_window_mask(levels, tf.constant([2]), 30.0, -60.0).numpy()
    np.testing.assert_array_equal(mask, [[True, True, False]])
