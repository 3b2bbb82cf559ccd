"""The scratch CNN: a small convolutional network on log-mel or MFCC patches."""

from __future__ import annotations

import keras

from speakergender.config import FrontEndParams

# (filters, convolutions) per block; each block ends in 2x2 max pooling but the last.
BLOCKS = ((16, 1), (32, 2), (64, 2), (128, 1))


@keras.saving.register_keras_serializable(package="speakergender")
class ClipStandardization(keras.layers.Layer):
    """Standardizes each clip's features to zero mean and unit variance.

    Recording level and microphone gain shift a log spectrum by a constant; taking them out per
    clip keeps the network on spectral shape (pitch, formants), which is what carries over to
    unheard speakers and other recorders.
    """

    def call(self, features):
        mean = keras.ops.mean(features, axis=(1, 2), keepdims=True)
        std = keras.ops.std(features, axis=(1, 2), keepdims=True)
        return (features - mean) / (std + 1e-5)


def build_scratch_cnn(front_end: FrontEndParams, dropout: float = 0.3,
                      name: str = "scratch_cnn") -> keras.Model:
    """Builds the scratch CNN.

    Frequency position matters for gender (pitch and formants sit at absolute frequencies), so
    the head pools over time only and keeps the frequency axis.

    Args:
      front_end: fixes the input shape [frames, bins].
      dropout: before the output layer.
      name: model name.

    Returns:
      keras.Model float32 [batch, frames, bins] -> logits float32 [batch, 1] (female > 0).
    """
    inputs = keras.Input(shape=front_end.feature_shape, name="features")
    x = ClipStandardization(name="clip_standardization")(inputs)
    x = keras.layers.Reshape((*front_end.feature_shape, 1), name="add_channel")(x)
    for block, (filters, convolutions) in enumerate(BLOCKS, start=1):
        for conv in range(1, convolutions + 1):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                    name=f"block{block}_conv{conv}")(x)
            # A faster-moving average than Keras' 0.99: runs are a few hundred steps long.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < len(BLOCKS):
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.AveragePooling2D(pool_size=(x.shape[1], 1), name="time_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logits = keras.layers.Dense(1, name="logits")(x)
    return keras.Model(inputs, logits, name=name)
