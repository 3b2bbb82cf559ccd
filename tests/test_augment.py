"""Recording-condition augmentations against signals whose answer is known, measured with scipy."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from speakergender import augment
from speakergender.config import AugmentParams

RATE = 16000
SAMPLES = 15600
NONE = AugmentParams.none()
EVERY_STAGE = dataclasses.replace(AugmentParams(), **{
    field.name: 1.0 for field in dataclasses.fields(AugmentParams)
    if field.name.endswith("probability")})


def _only(**fields) -> AugmentParams:
    """Every stage off but those named."""
    return dataclasses.replace(NONE, **fields)


def _seeds(rows: int, start: int = 0) -> tf.Tensor:
    return tf.constant([[start + row, 7 * row + 1] for row in range(rows)], tf.int64)


def _white(rows: int, seed: int = 0, rms: float = 0.1) -> np.ndarray:
    return (rms * np.random.default_rng(seed).standard_normal((rows, SAMPLES))).astype(np.float32)


def _harmonic(rows: int, f0_hz: float = 150.0, seed: int = 0) -> np.ndarray:
    """Harmonics of f0 up to 7 kHz, amplitude 1/k, random phases: a voiced-speech stand-in."""
    t = np.arange(SAMPLES) / RATE
    rng = np.random.default_rng(seed)
    rows_out = []
    for _ in range(rows):
        k = np.arange(1, int(7000 / f0_hz) + 1)[:, None]
        phases = rng.uniform(0, 2 * np.pi, (len(k), 1))
        rows_out.append((np.sin(2 * np.pi * f0_hz * k * t + phases) / k).sum(axis=0))
    signal = np.stack(rows_out)
    return (0.3 * signal / np.abs(signal).max(axis=1, keepdims=True)).astype(np.float32)


def _assert_equal_but_for_rounding(actual: np.ndarray, desired: np.ndarray):
    """Equal to float rounding, which FFTs over other batch shapes differ by; where a sample
    sits on a compander's step boundary, that rounding can move it by a step (~1e-3)."""
    differs = np.abs(actual - desired) > 1e-5
    assert differs.mean() < 0.01 and np.abs(actual - desired).max() < 5e-3


def _run(clips, params: AugmentParams, seeds=None) -> np.ndarray:
    clips = tf.constant(clips)
    seeds = _seeds(clips.shape[0]) if seeds is None else seeds
    return augment.augment_batch(clips, params, seeds, RATE).numpy()


def _psd_db(x: np.ndarray, nperseg: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD (Hann), averaged over rows, in dB."""
    # No detrending: taking out each segment's mean would put energy back at 0 Hz.
    f, p = scipy.signal.welch(x.astype(np.float64), fs=RATE, nperseg=nperseg, detrend=False,
                              axis=-1)
    return f, 10 * np.log10(p.mean(axis=0) + 1e-30)


def _slope_db_per_octave(f, psd_db, low_hz, high_hz) -> float:
    band = (f >= low_hz) & (f <= high_hz)
    return float(np.polyfit(np.log2(f[band]), psd_db[band], 1)[0])


# --- configuration ------------------------------------------------------------------------------


def test_params_round_trip_through_json_and_none_turns_everything_off():
    params = AugmentParams()
    assert params.enabled and not NONE.enabled
    restored = AugmentParams(**json.loads(json.dumps(dataclasses.asdict(params))))
    assert restored == params and isinstance(restored.room_rt60_seconds, tuple)
    assert AugmentParams(**json.loads(json.dumps(dataclasses.asdict(NONE)))) == NONE
    assert _only(dc_offset_probability=0.1).enabled
    assert _only(gain_db=3.0).enabled


@pytest.mark.parametrize("fields, message", [
    (dict(room_probability=1.5), "room_probability"),
    (dict(room_rt60_seconds=(1.0, 0.5)), "low <= high"),
    (dict(room_rt60_seconds=(0.0, 0.5)), "room_rt60_seconds must be > 0"),
    (dict(noise_colours=("white", "violet")), "noise_colours"),
    (dict(telephone_codecs=()), "telephone_codecs"),
    (dict(colour_high_pass_hz=(50.0, 4000.0)), "below"),
    (dict(hard_clip_level_db=(-6.0, 3.0)), "hard_clip_level_db"),
    (dict(gain_db=-1.0), "gain_db"),
])
def test_params_reject_bad_ranges(fields, message):
    with pytest.raises(ValueError, match=message):
        AugmentParams(**fields)


# --- seeds, probabilities, graph ----------------------------------------------------------------


def test_a_seed_repeats_exactly_and_a_window_depends_on_its_own_seed_only():
    clips = _harmonic(6)
    seeds = _seeds(6)
    first = _run(clips, EVERY_STAGE, seeds)
    np.testing.assert_array_equal(first, _run(clips, EVERY_STAGE, seeds))
    assert not np.allclose(first, clips, atol=1e-3)
    other = _run(clips, EVERY_STAGE, _seeds(6, start=100))
    assert all(not np.allclose(a, b, atol=1e-3) for a, b in zip(first, other))
    # The same windows and seeds in another order, and fewer of them: the same results.
    order = [4, 0, 5, 2]
    shuffled = _run(clips[order], EVERY_STAGE, tf.gather(seeds, order))
    _assert_equal_but_for_rounding(shuffled, first[order])


def test_no_augmentation_returns_the_input_bit_for_bit():
    clips = _white(4)
    np.testing.assert_array_equal(_run(clips, NONE), clips)


def test_silent_windows_stay_silent_but_for_the_dc_offset():
    silent = np.zeros((3, SAMPLES), np.float32)
    out = _run(silent, dataclasses.replace(EVERY_STAGE, dc_offset_full_scale=(0.01, 0.01)))
    np.testing.assert_array_equal(out, 0.01 * np.ones_like(out))


def test_each_stage_reaches_windows_with_its_probability_and_leaves_the_rest_exact():
    rows = 400
    clips = _white(rows, rms=0.01)[:, :2000]
    for fields in (dict(dc_offset_probability=0.3), dict(noise_probability=0.3),
                   dict(telephone_probability=0.3)):
        out = _run(clips, _only(**fields))
        untouched = np.all(out == clips, axis=1)
        assert 0.22 < 1 - untouched.mean() < 0.38, fields
        assert not np.any(np.all(np.isclose(out, clips, atol=1e-7), axis=1) & ~untouched)


def test_augment_batch_is_a_graph_function_with_unknown_batch_and_length():
    clips, seeds = _harmonic(5), _seeds(5)
    eager = _run(clips, EVERY_STAGE, seeds)
    # In tf.data's graph, the batch size is unknown.
    dataset = tf.data.Dataset.from_tensor_slices((clips, seeds)).batch(3).map(
        lambda x, s: augment.augment_batch(x, EVERY_STAGE, s, RATE))
    _assert_equal_but_for_rounding(np.concatenate(list(dataset.as_numpy_iterator())), eager)
    # With the length unknown too, FFT sizes and the colour grid differ, so the draws do too.
    anything = tf.function(
        lambda x, s: augment.augment_batch(x, EVERY_STAGE, s, RATE),
        input_signature=[tf.TensorSpec([None, None], tf.float32),
                         tf.TensorSpec([None, 2], tf.int64)])
    out = anything(clips[:2, :9001], seeds[:2]).numpy()
    assert out.shape == (2, 9001) and np.all(np.isfinite(out))


# --- telephone ----------------------------------------------------------------------------------


def test_telephone_keeps_300_to_3400_hz_only():
    clips = _white(8)
    f, before = _psd_db(clips, nperseg=2048)
    for codec in AugmentParams.TELEPHONE_CODECS:
        out = _run(clips, _only(telephone_probability=1.0, telephone_codecs=(codec,)))
        response = _psd_db(out, nperseg=2048)[1] - before
        # Edges a Hann window's main lobe outside the band.
        assert response[f < 280].max() < -40, codec
        assert response[f > 3420].max() < -40, codec
        assert abs(response[(f > 450) & (f < 3200)]).max() < 0.5, codec


def test_companding_keeps_a_quiet_sine_precise_where_8_bit_linear_would_not():
    t = np.arange(SAMPLES) / RATE
    sine = (0.01 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)[None]  # -40 dBFS

    def snr_db(out):
        return 10 * np.log10(np.mean(sine ** 2) / np.mean((out - sine) ** 2))

    linear = np.round(sine * 128) / 128
    assert snr_db(linear) < 12
    for codec in AugmentParams.TELEPHONE_CODECS:
        out = _run(sine, _only(telephone_probability=1.0, telephone_codecs=(codec,)))
        assert snr_db(out) > 25, codec


def test_compander_levels_are_the_8_bit_mu_law_and_a_law_levels():
    ramp = tf.linspace(-1.0, 1.0, 200001)
    steps = (np.arange(128) + 0.5) / 128
    mu = np.expm1(steps * np.log1p(255.0)) / 255.0
    scale = 1 + np.log(87.6)
    a = np.where(steps < 1 / scale, steps * scale / 87.6, np.exp(steps * scale - 1) / 87.6)
    for function, levels in ((augment.mu_law_8bit, mu), (augment.a_law_8bit, a)):
        out = np.unique(function(ramp).numpy())
        np.testing.assert_allclose(out[out > 0], levels, rtol=1e-5)
        np.testing.assert_allclose(out[out < 0], -levels[::-1], rtol=1e-5)
        assert len(out[out != 0]) == 256  # and 0 itself, which keeps no sign


# --- microphone colour --------------------------------------------------------------------------


def _measured_response_db(params: AugmentParams, frequencies_hz):
    clips = _white(16)
    f, before = _psd_db(clips)
    _, after = _psd_db(_run(clips, params))
    return np.interp(frequencies_hz, f, after - before)


def test_colour_high_and_low_pass_match_butterworth():
    flat = dict(colour_probability=1.0, colour_tilt_db_per_octave=(0.0, 0.0),
                colour_eq_gain_db=(0.0, 0.0), colour_shelf_gain_db=(0.0, 0.0),
                colour_high_pass_hz=(200.0, 200.0), colour_low_pass_hz=(4000.0, 4000.0))
    def butterworth_db(frequencies):
        return (-10 * np.log10(1 + (200 / frequencies) ** 4)
                - 10 * np.log10(1 + (frequencies / 4000) ** 8))

    frequencies = np.array([100.0, 200.0, 1000.0, 4000.0, 6000.0])
    np.testing.assert_allclose(_measured_response_db(_only(**flat), frequencies),
                               butterworth_db(frequencies), atol=0.6)
    # A tilt, a peaking band (the analogue prototype's |H|^2) and a shelf on top.
    shaped = _only(**{**flat, "colour_eq_bands": 1, "colour_eq_gain_db": (6.0, 6.0),
                      "colour_eq_hz": (1000.0, 1000.0), "colour_eq_q": (2.0, 2.0),
                      "colour_tilt_db_per_octave": (-2.0, -2.0),
                      "colour_shelf_gain_db": (4.0, 4.0), "colour_high_shelf_hz": (3000.0, 3000.0),
                      "colour_low_shelf_hz": (100.0, 100.0)})
    frequencies = np.array([300.0, 700.0, 1000.0, 1500.0, 2500.0, 3000.0])
    w2, a, q = (frequencies / 1000.0) ** 2, 10 ** (6.0 / 40), 2.0
    real = (1 - w2) ** 2
    peak_db = 10 * np.log10((real + w2 * (a / q) ** 2) / (real + w2 / (a * q) ** 2))
    expected = butterworth_db(frequencies) + (-2.0 * np.log2(frequencies / 1000.0) + peak_db
                 + 4.0 / (1 + (3000.0 / frequencies) ** 2)
                 + 4.0 / (1 + (frequencies / 100.0) ** 2))
    np.testing.assert_allclose(_measured_response_db(shaped, frequencies), expected, atol=0.5)


# --- room ---------------------------------------------------------------------------------------


def _schroeder_rt60_seconds(tail: np.ndarray) -> float:
    """T20: the decay from -5 to -25 dB of the backward-integrated energy, times 3."""
    energy = np.cumsum(tail[::-1].astype(np.float64) ** 2)[::-1]
    decay_db = 10 * np.log10(np.maximum(energy / energy[0], 1e-300))
    t = np.arange(len(tail)) / RATE
    fit = (decay_db <= -5) & (decay_db >= -25)
    slope_db_per_second = np.polyfit(t[fit], decay_db[fit], 1)[0]
    return -60.0 / slope_db_per_second


def test_synthetic_impulse_responses_have_the_requested_rt60_and_drr():
    rt60 = np.array([0.2, 0.5, 0.9], np.float32)
    drr = np.array([0.0, 6.0, -3.0], np.float32)
    responses = augment.synthetic_impulse_responses(
        _seeds(3), tf.constant(rt60), tf.constant(drr), 2 * RATE, RATE).numpy()
    for response, requested_rt60, requested_drr in zip(responses, rt60, drr):
        assert response[0] == 1.0
        assert _schroeder_rt60_seconds(response[1:]) == pytest.approx(requested_rt60, rel=0.2)
        measured_drr = 10 * np.log10(1.0 / np.sum(response[1:] ** 2))
        assert measured_drr == pytest.approx(requested_drr, abs=0.01)


def test_reverberating_an_impulse_gives_the_impulse_response_and_keeps_alignment():
    responses = augment.synthetic_impulse_responses(
        _seeds(2), tf.constant([0.3, 0.6]), tf.constant([3.0, 3.0]), 8000, RATE)
    impulse = np.zeros((2, SAMPLES), np.float32)
    impulse[:, 0] = 1.0
    out = augment.reverberate(tf.constant(impulse), responses).numpy()
    np.testing.assert_allclose(out[:, :8000], responses.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[:, 8000:], 0.0, atol=1e-5)
    # A room stage: the level kept, the strongest correlation with the dry signal at lag 0.
    clips = _harmonic(2)
    wet = _run(clips, _only(room_probability=1.0, room_drr_db=(6.0, 6.0)))
    np.testing.assert_allclose(np.mean(wet ** 2, axis=1), np.mean(clips ** 2, axis=1), rtol=1e-4)
    for dry, reverberant in zip(clips, wet):
        correlation = scipy.signal.correlate(reverberant, dry, mode="full", method="fft")
        assert np.argmax(correlation) - (SAMPLES - 1) == 0


# --- noise --------------------------------------------------------------------------------------


def test_noise_is_added_at_the_drawn_snr():
    clips = _harmonic(8)
    for colour in AugmentParams.NOISE_COLOURS:
        out = _run(clips, _only(noise_probability=1.0, noise_snr_range_db=(12.0, 12.0),
                                noise_colours=(colour,)))
        snr = 10 * np.log10(np.mean(clips ** 2, axis=1) / np.mean((out - clips) ** 2, axis=1))
        np.testing.assert_allclose(snr, 12.0, atol=0.05)
    out = _run(clips, _only(noise_probability=1.0, noise_snr_range_db=(5.0, 40.0)))
    snr = 10 * np.log10(np.mean(clips ** 2, axis=1) / np.mean((out - clips) ** 2, axis=1))
    assert np.all((snr > 4.95) & (snr < 40.05)) and np.ptp(snr) > 10


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -3.0), ("brown", -6.0)])
def test_noise_colours_have_their_spectral_slopes(colour, slope):
    index = AugmentParams.NOISE_COLOURS.index(colour)
    noise = augment.coloured_noise(_seeds(16), tf.fill([16], index), SAMPLES, RATE).numpy()
    np.testing.assert_allclose(np.mean(noise ** 2, axis=1), 1.0, rtol=1e-4)
    f, psd = _psd_db(noise, nperseg=2048)
    assert _slope_db_per_octave(f, psd, 100, 6000) == pytest.approx(slope, abs=0.3)


def test_speech_shaped_noise_follows_the_long_term_speech_spectrum():
    index = AugmentParams.NOISE_COLOURS.index("speech")
    noise = augment.coloured_noise(_seeds(16), tf.fill([16], index), SAMPLES, RATE).numpy()
    f, psd = _psd_db(noise, nperseg=2048)
    assert abs(_slope_db_per_octave(f, psd, 150, 400)) < 2.0
    assert _slope_db_per_octave(f, psd, 1500, 6000) == pytest.approx(-9.0, abs=1.0)
    assert _slope_db_per_octave(f, psd, 30, 70) > 8.0


def test_white_noise_rows_are_uncorrelated():
    noise = augment.coloured_noise(_seeds(8), tf.zeros([8], tf.int32), SAMPLES, RATE).numpy()
    correlation = np.corrcoef(noise)
    assert np.abs(correlation[~np.eye(8, dtype=bool)]).max() < 0.05
    # Gaussian-like samples: kurtosis near 3.
    assert np.mean(noise ** 4) / np.mean(noise ** 2) ** 2 == pytest.approx(3.0, abs=0.2)


# --- level --------------------------------------------------------------------------------------


def test_gain_and_hard_clip_and_soft_clip():
    clips = _harmonic(4)
    peak = np.abs(clips).max(axis=1)
    gained = _run(clips, _only(level_gain_probability=1.0, level_gain_db=(-6.0, -6.0)))
    np.testing.assert_allclose(gained, clips * 10 ** (-6 / 20), rtol=1e-5)
    clipped = _run(clips, _only(hard_clip_probability=1.0, hard_clip_level_db=(-6.0, -6.0)))
    np.testing.assert_allclose(np.abs(clipped).max(axis=1), peak * 10 ** (-6 / 20), rtol=1e-5)
    quiet = np.abs(clips) < 0.4 * peak[:, None]
    np.testing.assert_array_equal(clipped[quiet], clips[quiet])
    saturated = _run(clips, _only(soft_clip_probability=1.0, soft_clip_drive_db=(20.0, 20.0)))
    assert np.all(np.abs(saturated) <= np.abs(clips) + 1e-7)
    assert np.all(np.sign(saturated) == np.sign(clips))
    np.testing.assert_allclose(np.abs(saturated).max(axis=1), peak * np.tanh(10.0) / 10.0,
                               rtol=1e-4)


def test_dc_offset_moves_the_mean_by_the_drawn_amount():
    clips = _white(64)
    fixed = _run(clips, _only(dc_offset_probability=1.0, dc_offset_full_scale=(0.01, 0.01)))
    np.testing.assert_allclose(fixed - clips, 0.01, atol=1e-6)
    drawn = _run(clips, _only(dc_offset_probability=1.0)).mean(axis=1) - clips.mean(axis=1)
    low, high = AugmentParams().dc_offset_full_scale
    assert np.all((drawn >= low - 1e-6) & (drawn <= high + 1e-6)) and np.ptp(drawn) > 0.02


# --- the every-window options -------------------------------------------------------------------


def test_the_every_window_options_still_work():
    clips = _harmonic(6)
    gained = _run(clips, _only(gain_db=6.0))
    gain_db = 20 * np.log10(np.abs(gained).max(axis=1) / np.abs(clips).max(axis=1))
    assert np.all(np.abs(gain_db) <= 6.0 + 1e-4) and np.ptp(gain_db) > 0.5
    shifted = _run(clips, _only(time_shift_seconds=0.01))
    for row, out in zip(clips, shifted):
        assert any(np.array_equal(np.roll(row, s), out) for s in range(-160, 161))
    noisy = _run(clips, _only(noise_snr_db=20.0))
    snr = 10 * np.log10(np.mean(clips ** 2, axis=1) / np.mean((noisy - clips) ** 2, axis=1))
    np.testing.assert_allclose(snr, 20.0, atol=0.01)


# --- what must not change -----------------------------------------------------------------------


def _f0_hz(x: np.ndarray) -> float:
    """Autocorrelation peak between 80 and 400 Hz, above 100 Hz only (past a rumble of noise),
    refined by a parabola through the peak."""
    spectrum = np.fft.rfft(x, 2 * len(x))
    spectrum[: int(100 * 2 * len(x) / RATE)] = 0
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2)
    low, high = RATE // 400, RATE // 80
    lag = low + int(np.argmax(autocorrelation[low:high]))
    a, b, c = autocorrelation[lag - 1:lag + 2]
    return RATE / (lag + 0.5 * (a - c) / (a - 2 * b + c))


def test_the_default_recipe_keeps_the_pitch():
    clips = _harmonic(24)
    out = _run(clips, AugmentParams())
    assert sum(not np.allclose(a, b) for a, b in zip(out, clips)) >= 18
    f0 = np.array([_f0_hz(row) for row in out])
    np.testing.assert_allclose(f0, 150.0, atol=1.0)
    # The same through every stage at once.
    f0 = np.array([_f0_hz(row) for row in _run(clips[:8], EVERY_STAGE)])
    np.testing.assert_allclose(f0, 150.0, atol=1.0)
