"""The first layers of every model: waveform window in, features out (SpecAugment in training)."""

from __future__ import annotations

import keras

from speakergender.config import AugmentParams, FrontEndParams
from speakergender.frontend.features import FrontEnd
from speakergender.models.spec_augment import SpecAugment

FRONT_END_LAYER = "front_end"


def waveform_features(front_end: FrontEndParams, augment: AugmentParams | None = None,
                      frontend: keras.layers.Layer | None = None):
    """A model's waveform input and its features, ready for an encoder.

    Args:
      front_end: the window length (`clip_samples`) and the features.
      augment: its SpecAugment settings become a `SpecAugment` layer (None or no masks: none).
      frontend: a layer [batch, clip_samples] -> [batch, frames, bins] to use instead of
        `FrontEnd(front_end)` (name it `front_end`: Grad-CAM reads its output by that name).

    Returns:
      (keras.Input float32 [batch, clip_samples], features float32 [batch, frames, bins]).
    """
    waveform = keras.Input(shape=(front_end.clip_samples,), name="waveform")
    frontend = frontend or FrontEnd(front_end, name=FRONT_END_LAYER)
    features = frontend(waveform)
    if augment is not None and (augment.time_masks or augment.frequency_masks):
        features = SpecAugment(augment.time_masks, augment.time_mask_frames,
                               augment.frequency_masks, augment.frequency_mask_bins,
                               name="spec_augment")(features)
    return waveform, features


def front_end_layer(model: keras.Model) -> keras.layers.Layer:
    """The model's front-end layer: its output is the features the rest of the model reads.

    Raises:
      ValueError: the model has no layer named `front_end` (one saved before models took
        waveforms).
    """
    try:
        return model.get_layer(FRONT_END_LAYER)
    except ValueError:
        raise ValueError(f"{model.name} has no {FRONT_END_LAYER!r} layer: it takes features, "
                         "not waveforms (a model saved before the front end moved into the "
                         "model); train it again") from None
