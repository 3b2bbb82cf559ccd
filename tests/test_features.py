"""The front end against direct numpy/scipy computations from the definitions, and librosa."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest
import scipy.fft
import tensorflow as tf

from helpers import assert_keras_round_trip
from speakergender.frontend import features
from speakergender.config import FrontEndParams

YAMNET = FrontEndParams()
SEED_MFCC = FrontEndParams.seed_mfcc()
RATE = 16000


def _test_signal(samples: int = 15600, seed: int = 0) -> np.ndarray:
    """White noise plus a chirp: energy in every mel band, so log-domain errors stay small."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 2000 * t ** 2))
    return (0.05 * rng.standard_normal(samples) + chirp).astype(np.float32)


# --- numpy reference front end ---------------------------------------------------------------


def _periodic_hann(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


def _magnitude(waveform: np.ndarray, params: FrontEndParams) -> np.ndarray:
    """|rfft| of periodic-Hann frames zero-padded to fft_length, float64 [frames, bins]."""
    length, hop = params.stft_window_samples, params.stft_hop_samples
    frames = 1 + (len(waveform) - length) // hop
    framed = np.stack([waveform[i * hop:i * hop + length] for i in range(frames)])
    return np.abs(np.fft.rfft(framed.astype(np.float64) * _periodic_hann(length),
                              n=params.fft_length))


def _hz_to_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def _htk_mel_matrix(params: FrontEndParams) -> np.ndarray:
    """HTK mel filters as tf defines them: triangles that are linear in mel, [bins, bands].

    Band edges are equally spaced in mel between mel_min_hz and mel_max_hz; each FFT bin's
    weight is the triangle evaluated at the bin's mel value. tf zeroes the DC row, which a
    triangle starting at or above 0 Hz gives anyway.
    """
    bins_mel = _hz_to_mel(np.linspace(0.0, params.sample_rate / 2, params.fft_length // 2 + 1))
    edges = np.linspace(_hz_to_mel(params.mel_min_hz), _hz_to_mel(params.mel_max_hz),
                        params.mel_bands + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    matrix = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0] = 0.0
    return matrix


def _numpy_log_mel(waveform: np.ndarray, params: FrontEndParams) -> np.ndarray:
    spectrum = _magnitude(waveform, params) ** params.magnitude_exponent
    return np.log(spectrum @ _htk_mel_matrix(params) + params.log_offset)


def _numpy_seed_mfcc(waveform: np.ndarray, params: FrontEndParams) -> np.ndarray:
    """Pre-emphasis 0.97, power spectrum, log-mel, orthonormal DCT-II, first 12, lifter 22."""
    x = waveform.astype(np.float64)
    emphasized = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    log_mel = np.log(_magnitude(emphasized, params) ** 2 @ _htk_mel_matrix(params) + 1e-10)
    cepstra = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=-1)[:, :12]
    lifter = 1 + (22 / 2) * np.sin(np.pi * np.arange(12) / 22)
    return cepstra * lifter


# --- tests -----------------------------------------------------------------------------------


def test_mel_matrix_matches_htk_definition():
    # float32 in tf against float64 here.
    np.testing.assert_allclose(features.mel_matrix(YAMNET).numpy(), _htk_mel_matrix(YAMNET),
                               atol=1e-5, rtol=0)


def test_log_mel_matches_numpy():
    waveform = _test_signal()
    actual = features.waveform_to_features(tf.constant(waveform), YAMNET).numpy()
    expected = _numpy_log_mel(waveform, YAMNET)
    assert actual.shape == expected.shape == (96, 64)
    # float32 STFT against float64; every band holds energy, so the log error stays tiny.
    assert np.max(np.abs(actual - expected)) < 1e-3


def test_seed_mfcc_matches_scipy():
    waveform = _test_signal(seed=1)
    actual = features.waveform_to_features(tf.constant(waveform), SEED_MFCC).numpy()
    expected = _numpy_seed_mfcc(waveform, SEED_MFCC)
    assert actual.shape == expected.shape == (96, 12)
    # Coefficients reach ~50 after liftering; float32 keeps them to ~1e-5 of that.
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) < 3e-5 * scale
    # c0 in particular: an unnormalised DCT would be sqrt(2) off here.
    np.testing.assert_allclose(actual[:, 0], expected[:, 0], rtol=1e-4)


def test_log_mel_bands_close_to_librosa_htk():
    """librosa's HTK filters are triangles linear in Hz between mel-spaced edges; tf's are
    linear in mel. Within one narrow band the two differ little (mel is nearly linear in Hz
    over a band), so band energies of a broadband signal agree to about a percent, not to
    float precision (measured: median 0.1%, worst band 1.1%).
    """
    waveform = _test_signal(seed=2)
    magnitude = _magnitude(waveform, YAMNET)
    librosa_filters = librosa.filters.mel(
        sr=RATE, n_fft=YAMNET.fft_length, n_mels=YAMNET.mel_bands, fmin=YAMNET.mel_min_hz,
        fmax=YAMNET.mel_max_hz, htk=True, norm=None)
    librosa_bands = magnitude @ librosa_filters.T
    ours = np.exp(features.waveform_to_features(tf.constant(waveform), YAMNET).numpy()) \
        - YAMNET.log_offset
    relative = np.abs(ours - librosa_bands) / librosa_bands
    assert np.median(relative) < 0.005
    assert np.max(relative) < 0.03
    # ...but they are not the same filters: the difference is well above float error.
    assert np.max(relative) > 1e-3
    # The filters' shapes (not their placement) differ: the same edges, so each band's
    # peak sits on the same bin.
    assert np.array_equal(np.argmax(librosa_filters.T, axis=0),
                          np.argmax(features.mel_matrix(YAMNET).numpy(), axis=0))


def test_pre_emphasis_definition():
    x = tf.constant([1.0, 2.0, 4.0, 0.0])
    np.testing.assert_allclose(features.pre_emphasize(x, 0.5).numpy(), [1.0, 1.5, 3.0, -2.0])
    assert features.pre_emphasize(x, 0.0) is x


def test_lifter_weights():
    np.testing.assert_allclose(features.lifter_weights(12, 22).numpy(),
                               1 + 11 * np.sin(np.pi * np.arange(12) / 22), rtol=1e-6)
    np.testing.assert_array_equal(features.lifter_weights(5, 0).numpy(), np.ones(5))


def test_clip_shapes():
    assert YAMNET.clip_samples == 15600
    assert YAMNET.clip_frames == 96 and YAMNET.feature_shape == (96, 64)
    assert SEED_MFCC.feature_shape == (96, 12)
    batch = tf.zeros([3, YAMNET.clip_samples])
    assert features.waveform_to_features(batch, YAMNET).shape == (3, 96, 64)
    assert features.waveform_to_features(batch, SEED_MFCC).shape == (3, 96, 12)
    assert features.FrontEnd(YAMNET).compute_output_shape((None, 15600)) == (None, 96, 64)
    assert features.FrontEnd(YAMNET).compute_output_shape((2, None)) == (2, None, 64)


def test_silence_is_the_log_floor():
    log_mel = features.waveform_to_features(tf.zeros([15600]), YAMNET).numpy()
    np.testing.assert_allclose(log_mel, np.log(YAMNET.log_offset), rtol=1e-6)


@pytest.mark.parametrize("params", [YAMNET, SEED_MFCC], ids=["log_mel", "mfcc"])
def test_front_end_layer_config_round_trip(params, tmp_path):
    layer = features.FrontEnd(params, name="front_end")
    config = layer.get_config()
    rebuilt = features.FrontEnd.from_config(dict(config))
    assert rebuilt.params == params and rebuilt.get_config() == config
    assert not rebuilt.trainable
    waveforms = np.stack([_test_signal(seed=3), _test_signal(seed=4)])
    np.testing.assert_array_equal(rebuilt(waveforms).numpy(), layer(waveforms).numpy())
    # Through a saved .keras model too (the layer is registered, no custom_objects needed).
    inputs = tf.keras.Input(shape=(15600,))
    model = tf.keras.Model(inputs, features.FrontEnd(params)(inputs), name="front_end_model")
    assert_keras_round_trip(model, waveforms, tmp_path)


def test_mean_normalization_cancels_a_fixed_channel_colour():
    rng = np.random.default_rng(4)
    waveform = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    # A fixed recording chain: a short FIR filter (a stationary colour) and 6 dB of gain.
    coloured = np.convolve(waveform, [0.5, 0.8, -0.3], mode="same").astype(np.float32) * 2.0
    plain = FrontEndParams()
    normalized = dataclasses.replace(plain, feature_normalization="mean")

    def distance(params):
        a = features.waveform_to_features(tf.constant(waveform), params).numpy()
        b = features.waveform_to_features(tf.constant(coloured), params).numpy()
        return float(np.mean(np.abs(a - b)))

    # Without normalisation the colour moves every band; with it only the frame-to-frame
    # fluctuation differs.
    assert distance(normalized) < 0.2 * distance(plain)
    values = features.waveform_to_features(tf.constant(waveform), normalized).numpy()
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="feature_normalization"):
        FrontEndParams(feature_normalization="pcen")
