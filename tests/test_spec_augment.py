"""SpecAugment as a training-only layer inside the model."""

from __future__ import annotations

import keras
import numpy as np

from helpers import assert_keras_round_trip
from speakergender.models.spec_augment import SpecAugment


def _features(batch: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, 96, 64)).astype(np.float32)


def test_masks_only_while_training():
    layer = SpecAugment(time_masks=2, time_mask_frames=10, frequency_masks=2,
                        frequency_mask_bins=8, seed=3)
    features = _features()
    np.testing.assert_array_equal(layer(features, training=False), features)
    masked = np.asarray(layer(features, training=True))
    changed = masked != features
    assert changed.any()
    # Masked cells hold their clip's mean; the masks are whole frames or whole bands.
    means = features.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(masked[changed], np.broadcast_to(means, masked.shape)[changed],
                               atol=1e-6)
    for clip in changed:
        frames = clip.all(axis=1)
        bands = clip.all(axis=0)
        assert np.array_equal(clip, frames[:, None] | bands[None, :])
        assert frames.sum() <= 2 * 10 and bands.sum() <= 2 * 8
    # Each clip draws its own masks.
    assert len({changed[i].tobytes() for i in range(len(changed))}) > 1


def test_no_masks_is_the_identity_even_in_training():
    features = _features()
    np.testing.assert_array_equal(SpecAugment()(features, training=True), features)


def test_seeded_masks_repeat():
    features = _features()
    first = SpecAugment(time_masks=1, frequency_masks=1, seed=5)(features, training=True)
    again = SpecAugment(time_masks=1, frequency_masks=1, seed=5)(features, training=True)
    np.testing.assert_array_equal(first, again)


def test_config_round_trip(tmp_path):
    inputs = keras.Input(shape=(96, 64))
    layer = SpecAugment(time_masks=2, frequency_masks=1, frequency_mask_bins=4, seed=1)
    model = keras.Model(inputs, layer(inputs), name="spec_augment_model")
    reloaded = assert_keras_round_trip(model, _features(2), tmp_path)
    assert reloaded.layers[1].get_config()["frequency_mask_bins"] == 4
