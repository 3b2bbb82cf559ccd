"""The scratch CNN: a small convolutional network on log-mel or MFCC patches."""

from __future__ import annotations

import keras

from speakergender.config import AugmentParams, FrontEndParams
from speakergender.models.inputs import waveform_features

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


def build_scratch_cnn(front_end: FrontEndParams, augment: AugmentParams | None = None,
                      dropout: float = 0.3, name: str = "scratch_cnn",
                      frontend: keras.layers.Layer | None = None) -> keras.Model:
    """Builds the scratch CNN, front end included.

    Frequency position matters for gender (pitch and formants sit at absolute frequencies), so
    the head pools over time only and keeps the frequency axis.

    Args:
      front_end: fixes the input window and the features.
      augment: its SpecAugment masks become a training-only layer (None: no masks).
      dropout: before the output layer.
      name: model name.
      frontend: another waveform -> [frames, bins] layer in place of `features.FrontEnd`.

    Returns:
      keras.Model float32 [batch, clip_samples] -> logits float32 [batch, 1] (female > 0).
    """
    waveform, features = waveform_features(front_end, augment, frontend)
    x = ClipStandardization(name="clip_standardization")(features)
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
    return keras.Model(waveform, logits, name=name)
