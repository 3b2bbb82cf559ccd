"""Waveform -> STFT / log-mel / MFCC, as pure TensorFlow functions of (waveform, params).

Every function takes a waveform of shape [..., samples] so the same code serves a single clip in
the tf.data map and a batch inside an exported SavedModel signature.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from speakergender.config import FrontEndParams, to_dict


def pre_emphasize(waveform: tf.Tensor, coefficient: float) -> tf.Tensor:
    """y[n] = x[n] - coefficient * x[n - 1], with y[0] = x[0]."""
    if coefficient == 0.0:
        return waveform
    return tf.concat(
        [waveform[..., :1], waveform[..., 1:] - coefficient * waveform[..., :-1]], axis=-1)


def spectrogram(waveform: tf.Tensor, params: FrontEndParams) -> tf.Tensor:
    """Magnitude (or power) STFT.

    Args:
      waveform: float32 [..., samples] at params.sample_rate.
      params: front-end parameters.

    Returns:
      float32 [..., frames, fft_length // 2 + 1], |STFT| ** params.magnitude_exponent.
    """
    # tf.signal.stft() uses a periodic Hann window by default, as YAMNet does.
    stft = tf.signal.stft(
        waveform,
        frame_length=params.stft_window_samples,
        frame_step=params.stft_hop_samples,
        fft_length=params.fft_length)
    # |z|^2 from its parts: tf.abs on complex numbers (an overflow-safe hypot) costs more than
    # the FFT, and an STFT of audio in [-1, 1] cannot overflow.
    power = tf.square(tf.math.real(stft)) + tf.square(tf.math.imag(stft))
    if params.magnitude_exponent == 2.0:
        return power
    if params.magnitude_exponent == 1.0:
        return tf.sqrt(power)
    return tf.pow(power, params.magnitude_exponent / 2.0)


def mel_matrix(params: FrontEndParams) -> tf.Tensor:
    """HTK-mel triangular filters, float32 [fft_length // 2 + 1, mel_bands]."""
    return tf.constant(_mel_matrix_values(params.mel_bands, params.fft_length // 2 + 1,
                                          params.sample_rate, params.mel_min_hz,
                                          params.mel_max_hz))


@functools.lru_cache(maxsize=32)
def _mel_matrix_values(bands: int, bins: int, sample_rate: int, low_hz: float,
                       high_hz: float) -> np.ndarray:
    # Computed once, eagerly, and embedded as a constant: built from ops inside every traced
    # caller, the matrix cost a quarter of a second per trace and was recomputed per call.
    with tf.init_scope():
        return tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=bands, num_spectrogram_bins=bins, sample_rate=sample_rate,
            lower_edge_hertz=low_hz, upper_edge_hertz=high_hz).numpy()


def log_mel_spectrogram(waveform: tf.Tensor, params: FrontEndParams) -> tf.Tensor:
    """log(mel(|STFT| ** exponent) + log_offset).

    Args:
      waveform: float32 [..., samples] at params.sample_rate.
      params: front-end parameters.

    Returns:
      float32 [..., frames, mel_bands].
    """
    mel = tf.tensordot(spectrogram(waveform, params), mel_matrix(params), axes=1)
    return tf.math.log(mel + params.log_offset)


def lifter_weights(coefficients: int, lifter: int) -> tf.Tensor:
    """Sinusoidal cepstral lifter 1 + (L / 2) sin(pi n / L), float32 [coefficients]."""
    if lifter <= 0:
        return tf.ones([coefficients])
    n = tf.range(coefficients, dtype=tf.float32)
    return 1.0 + (lifter / 2.0) * tf.sin(math.pi * n / lifter)


def mfcc(waveform: tf.Tensor, params: FrontEndParams) -> tf.Tensor:
    """Liftered MFCCs: the first mfcc_coefficients of an orthonormal DCT-II of the log-mel.

    Args:
      waveform: float32 [..., samples] at params.sample_rate.
      params: front-end parameters.

    Returns:
      float32 [..., frames, mfcc_coefficients].
    """
    log_mel = log_mel_spectrogram(waveform, params)
    # Not tf.signal.mfccs_from_log_mel_spectrograms: it scales every coefficient by
    # sqrt(2 / bands), so its c0 is sqrt(2) times the orthonormal DCT's (the seed project's).
    cepstra = tf.signal.dct(log_mel, type=2, norm="ortho")[..., :params.mfcc_coefficients]
    return cepstra * lifter_weights(params.mfcc_coefficients, params.mfcc_lifter)


def waveform_to_features(waveform: tf.Tensor, params: FrontEndParams) -> tf.Tensor:
    """Pre-emphasis, then log-mel or MFCC, then per-window normalisation: everything after
    decoding, resampling, DC removal and windowing.

    Args:
      waveform: float32 [..., samples] at params.sample_rate: windows cut from recordings
        that went through `decoding.decode_recordings`.
      params: front-end parameters.

    Returns:
      float32 [..., frames, params.feature_bins].
    """
    waveform = pre_emphasize(waveform, params.pre_emphasis)
    if params.feature_type == "mfcc":
        window_features = mfcc(waveform, params)
    else:
        window_features = log_mel_spectrogram(waveform, params)
    return normalize_features(window_features, params)


def normalize_features(window_features: tf.Tensor, params: FrontEndParams) -> tf.Tensor:
    """Per-window normalisation of log-domain features (see `FEATURE_NORMALIZATIONS`).

    Args:
      window_features: float32 [..., frames, bins], one window's frames on axis -2.
      params: front-end parameters.

    Returns:
      float32 [..., frames, bins].
    """
    if params.feature_normalization == "mean":
        return window_features - tf.reduce_mean(window_features, axis=-2, keepdims=True)
    return window_features


@keras.saving.register_keras_serializable(package="speakergender")
class FrontEnd(keras.layers.Layer):
    """Keras layer (batch, samples) -> (batch, frames, bins) running `waveform_to_features`.

    The first layer of every model the product builds, so a model takes waveform windows and
    carries its own features: training, export and Grad-CAM all read them from here. Its
    `FrontEndParams` travel in its config. Swap it by building a model with another
    `front_end=` layer (see `models.registry`).
    """

    def __init__(self, params: FrontEndParams | None = None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.params = params or FrontEndParams()

    def call(self, waveform):
        return waveform_to_features(waveform, self.params)

    def compute_output_shape(self, input_shape):
        frames = None
        if input_shape[-1] is not None:
            frames = 1 + (input_shape[-1] - self.params.stft_window_samples) // self.params.stft_hop_samples
        return (*input_shape[:-1], frames, self.params.feature_bins)

    def get_config(self):
        return {**super().get_config(), "params": to_dict(self.params)}

    @classmethod
    def from_config(cls, config):
        params = FrontEndParams(**config.pop("params"))
        config.pop("trainable", None)
        return cls(params, **config)
