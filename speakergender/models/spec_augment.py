"""SpecAugment as a layer: time and frequency masks on features, during training only."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="speakergender")
class SpecAugment(keras.layers.Layer):
    """Masks random stretches of frames and bands of each clip's features while training.

    Masked cells take the clip's mean: zero would be a loud value on a log scale. At inference
    (and with no masks configured) the layer passes its input through unchanged.

    Args:
      time_masks: masks along the frame axis per clip.
      time_mask_frames: widest time mask, in frames (each width is drawn in 0..this).
      frequency_masks: masks along the band axis per clip.
      frequency_mask_bins: widest frequency mask, in bands.
      seed: fixes the masks drawn (with Keras' global seed when None).
    """

    def __init__(self, time_masks: int = 0, time_mask_frames: int = 10,
                 frequency_masks: int = 0, frequency_mask_bins: int = 8,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.time_masks = time_masks
        self.time_mask_frames = time_mask_frames
        self.frequency_masks = frequency_masks
        self.frequency_mask_bins = frequency_mask_bins
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _keep(self, batch: tf.Tensor, size: tf.Tensor, count: int, max_width: int) -> tf.Tensor:
        """bool [batch, size]: False inside any of `count` random masks per row."""
        draws = keras.random.uniform([2, batch, count], seed=self.seed_generator)
        width = tf.cast(draws[0] * (max_width + 1), tf.int32)
        start = tf.cast(draws[1] * tf.cast(tf.maximum(size - width, 0) + 1, tf.float32),
                        tf.int32)
        positions = tf.range(size)[tf.newaxis, tf.newaxis, :]
        inside = ((positions >= start[..., tf.newaxis])
                  & (positions < (start + width)[..., tf.newaxis]))
        return ~tf.reduce_any(inside, axis=1)

    def call(self, features, training=None):
        # features has shape [batch, frames, bins]
        if not training or not (self.time_masks or self.frequency_masks):
            return features
        batch, frames, bins = tf.unstack(tf.shape(features))
        keep = tf.ones_like(features, tf.bool)
        if self.time_masks:
            keep &= self._keep(batch, frames, self.time_masks,
                               self.time_mask_frames)[:, :, tf.newaxis]
        if self.frequency_masks:
            keep &= self._keep(batch, bins, self.frequency_masks,
                               self.frequency_mask_bins)[:, tf.newaxis, :]
        mean = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        return tf.where(keep, features, mean)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "time_masks": self.time_masks,
                "time_mask_frames": self.time_mask_frames,
                "frequency_masks": self.frequency_masks,
                "frequency_mask_bins": self.frequency_mask_bins, "seed": self.seed}
