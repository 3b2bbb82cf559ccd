"""What a model trains on is what it is served with: the same window of the same file gives the
same features and logits through the tf.data pipeline (evaluation mode) and through the
reloaded SavedModel.

Tolerance: 1e-4 on log-mel features and on logits. The two paths run the same ops, but the
pipeline's are traced by tf.data and the SavedModel's by its signature, and graph-level
rewrites may reorder float sums in the FFT and mel products (measured differences ~1e-5).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import wavfiles
from speakergender import pipeline
from speakergender.config import FrontEndParams
from speakergender.model_dirs import latest_version_dir
from speakergender.models.inputs import front_end_layer

PARAMS = FrontEndParams()
ATOL = 1e-4


def _voice(rate: int, seconds: float, pitch_hz: float, seed: int) -> np.ndarray:
    """A harmonic voice-like tone with noise, at `rate`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    voice = sum(np.sin(2 * np.pi * pitch_hz * k * t) / k for k in range(1, 12))
    return (0.2 * voice / 3 + 0.01 * rng.standard_normal(len(t)) + 0.02).astype(np.float32)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> pd.DataFrame:
    """Files in several formats and rates, each one either no longer than a window (both paths
    centre it) or loudest in its first window (evaluation's choice and serving's first frame)."""
    folder = tmp_path_factory.mktemp("agreement")
    files = [
        wavfiles.write_wav(folder / "pcm16-16k.wav", _voice(16000, 0.9, 210.0, 0), 16000),
        wavfiles.write_wav(folder / "pcm24-48k-stereo.wav",
                           np.stack([_voice(48000, 0.8, 120.0, 1)] * 2, axis=1), 48000,
                           "PCM_24"),
        wavfiles.write_wav(folder / "float-44k.wav", _voice(44100, 0.95, 180.0, 2), 44100,
                           "FLOAT"),
    ]
    # 2.5 s: a loud first window, then the same voice 12 dB quieter.
    long = _voice(16000, 2.5, 110.0, 3)
    long[PARAMS.clip_samples:] *= 0.25
    files.append(wavfiles.write_wav(folder / "long-16k.wav", long, 16000))
    return pd.DataFrame({"path": [str(f) for f in files], "speaker": ["1", "2", "3", "4"],
                         "gender": ["female", "male", "female", "male"]})


@pytest.fixture(scope="module")
def served(exported_model):
    """The tiny trained model's SavedModel, reloaded (calibration T = 1, b = 0)."""
    return tf.saved_model.load(str(latest_version_dir(exported_model)))


def _pipeline_windows(table: pd.DataFrame) -> np.ndarray:
    dataset = pipeline.make_dataset(table, PARAMS, training=False, batch_size=len(table),
                                    skip_log=pipeline.SkipLog(os.devnull))
    (windows, _), = list(dataset)
    return windows.numpy()


def test_features_agree(recordings, served, trained_classifier):
    model = trained_classifier
    trained_on = front_end_layer(model)(_pipeline_windows(recordings)).numpy()
    contents = tf.constant([Path(path).read_bytes() for path in recordings["path"]])
    outputs = served.signatures["window_features"](wav_bytes=contents)
    served_first = outputs["features"].numpy()[:, 0]
    assert served_first.shape == trained_on.shape == (4, *PARAMS.feature_shape)
    np.testing.assert_allclose(served_first, trained_on, atol=ATOL, rtol=0)
    assert outputs["window_count"].numpy().tolist() == [1, 1, 1, 4]


def test_logits_agree(recordings, served, trained_classifier):
    model = trained_classifier
    trained_on = model(_pipeline_windows(recordings), training=False).numpy()[:, 0]
    contents = tf.constant([Path(path).read_bytes() for path in recordings["path"]])
    outputs = served.signatures["classify_wav"](wav_bytes=contents)
    assert [e.decode() for e in outputs["error"].numpy()] == [""] * 4
    np.testing.assert_allclose(outputs["window_logits"].numpy()[:, 0], trained_on, atol=ATOL,
                               rtol=0)
    # Not trivially equal: the files score differently.
    assert np.ptp(trained_on) > 1e-3
