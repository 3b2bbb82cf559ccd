"""Statistics pooling against numpy, and its gradient where a channel never fires."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from speakergender.models.pooling import StatisticsPooling


def test_means_then_standard_deviations_per_channel():
    feature_map = np.random.default_rng(0).normal(2.0, 3.0, (3, 6, 4, 5)).astype(np.float32)
    feature_map[1, :, :, 2] = 0.0  # a channel a ReLU kept silent
    pooled = StatisticsPooling()(feature_map).numpy()
    expected = np.concatenate([feature_map.mean(axis=(1, 2)), feature_map.std(axis=(1, 2))], -1)
    assert pooled.shape == (3, 10)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-3)


def test_gradient_is_finite_for_a_constant_channel():
    feature_map = tf.Variable(tf.zeros([1, 3, 2, 4]))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(StatisticsPooling()(feature_map))
    assert np.isfinite(tape.gradient(total, feature_map).numpy()).all()


def test_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((6, 4, 5))
    model = keras.Model(inputs, keras.layers.Dense(1)(StatisticsPooling()(inputs)))
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    feature_map = np.random.default_rng(1).normal(size=(2, 6, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(reloaded(feature_map), model(feature_map), atol=1e-6)
