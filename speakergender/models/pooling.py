"""Statistics pooling: a feature map summarised by each channel's mean and standard deviation.

The x-vector recipe for speaker traits: how much a channel fires over a clip and how much that
varies both carry a voice's character, and the summary does not depend on where in the clip the
voice sits.
"""

from __future__ import annotations

import keras

# Keeps the gradient of the square root finite for channels that never fire (ReLU outputs).
VARIANCE_FLOOR = 1e-6


@keras.saving.register_keras_serializable(package="speakergender")
class StatisticsPooling(keras.layers.Layer):
    """float32 [batch, time, frequency, channels] -> [batch, 2 * channels]: means, then stds."""

    def call(self, feature_map):
        mean = keras.ops.mean(feature_map, axis=(1, 2))
        variance = keras.ops.var(feature_map, axis=(1, 2))
        return keras.ops.concatenate([mean, keras.ops.sqrt(variance + VARIANCE_FLOOR)], axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        return (input_shape[0], None if channels is None else 2 * channels)
