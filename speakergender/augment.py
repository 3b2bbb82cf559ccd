"""Augmentations that keep gender cues: gain, additive noise, time shift, SpecAugment masks.

Nothing here changes pitch or formants. Every draw is stateless and keyed by a per-example
seed, so a seeded run repeats exactly.
"""

from __future__ import annotations

import tensorflow as tf

from speakergender.config import AugmentParams


def _seeds(seed: tf.Tensor, count: int) -> tf.Tensor:
    """`count` independent [2] seeds derived from one."""
    return tf.random.experimental.stateless_split(seed, num=count)


def augment_waveform(
    window: tf.Tensor, params: AugmentParams, seed: tf.Tensor, sample_rate: int
) -> tf.Tensor:
    """Random gain, circular time shift and white noise at a given SNR.

    Args:
      window: float32 [samples].
      params: which augmentations, and how strong.
      seed: int [2] stateless seed.
      sample_rate: of the window, in Hz.

    Returns:
      float32 [samples].
    """
    gain_seed, shift_seed, noise_seed = tf.unstack(_seeds(seed, 3))
    if params.gain_db:
        gain_db = tf.random.stateless_uniform([], gain_seed, -params.gain_db, params.gain_db)
        window = window * tf.pow(10.0, gain_db / 20.0)
    if params.time_shift_seconds:
        max_shift = int(params.time_shift_seconds * sample_rate)
        shift = tf.random.stateless_uniform(
            [], shift_seed, -max_shift, max_shift + 1, dtype=tf.int32)
        window = tf.roll(window, shift, axis=0)
    if params.noise_snr_db is not None:
        signal_power = tf.reduce_mean(tf.square(window))
        noise_power = signal_power / tf.pow(10.0, params.noise_snr_db / 10.0)
        noise = tf.random.stateless_normal(tf.shape(window), noise_seed)
        window = window + tf.sqrt(noise_power) * noise
    return window


def _mask_along(features: tf.Tensor, axis: int, count: int, max_width: int,
                seed: tf.Tensor) -> tf.Tensor:
    size = tf.shape(features)[axis]
    positions = tf.range(size)
    keep = tf.ones([size], tf.bool)
    for mask_seed in tf.unstack(_seeds(seed, count)):
        width_seed, start_seed = tf.unstack(_seeds(mask_seed, 2))
        width = tf.random.stateless_uniform([], width_seed, 0, max_width + 1, dtype=tf.int32)
        start = tf.random.stateless_uniform(
            [], start_seed, 0, tf.maximum(size - width, 0) + 1, dtype=tf.int32)
        keep &= (positions < start) | (positions >= start + width)
    shape = [-1, 1] if axis == 0 else [1, -1]
    # Masked cells take the clip's mean: zero would be a loud value on a log scale.
    return tf.where(tf.reshape(keep, shape), features, tf.reduce_mean(features))


def spec_augment(features: tf.Tensor, params: AugmentParams, seed: tf.Tensor) -> tf.Tensor:
    """SpecAugment time and frequency masks (set to the clip's mean) on one clip's features.

    Args:
      features: float32 [frames, bins].
      params: number and maximum width of the masks.
      seed: int [2] stateless seed.

    Returns:
      float32 [frames, bins].
    """
    time_seed, frequency_seed = tf.unstack(_seeds(seed, 2))
    if params.time_masks:
        features = _mask_along(features, 0, params.time_masks, params.time_mask_frames, time_seed)
    if params.frequency_masks:
        features = _mask_along(
            features, 1, params.frequency_masks, params.frequency_mask_bins, frequency_seed)
    return features
