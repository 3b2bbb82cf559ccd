"""frontend.decoding: the one DC removal, and files to conditioned recordings."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend import decoding, features

RATE = 16000
YAMNET = FrontEndParams.yamnet()


def test_dc_offset_is_removed():
    t = np.arange(15600) / RATE
    sine = (0.25 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    offset = sine - np.float32(0.085)

    def prepared_features(waveform, params=YAMNET):
        prepared = decoding.remove_dc_offsets(tf.constant(waveform[np.newaxis]), None, params)
        return features.waveform_to_features(prepared, params).numpy()[0]

    clean = prepared_features(sine)
    np.testing.assert_allclose(prepared_features(offset), clean, atol=1e-3, rtol=0)
    # Without the removal the offset leaks into the low bands, by far more than the tolerance.
    no_removal = FrontEndParams(remove_dc_offset=False)
    assert np.max(np.abs(prepared_features(offset, no_removal) - clean)) > 0.5


def test_remove_dc_offsets_per_row():
    rows = tf.constant([[1.0, 2.0, 3.0], [-1.0, -1.0, 5.0]])
    np.testing.assert_allclose(decoding.remove_dc_offsets(rows, None, YAMNET).numpy(),
                               [[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]], atol=1e-6)


def test_padding_stays_silent_and_out_of_the_dc_offset():
    batch = tf.constant([[1.0, 2.0, 3.0, 0.0], [5.0, 5.0, 0.0, 0.0]])
    prepared = decoding.remove_dc_offsets(batch, tf.constant([3, 2]), YAMNET).numpy()
    np.testing.assert_allclose(prepared, [[-1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_decode_recordings_resamples_and_removes_the_offset(tmp_path):
    import wavfiles

    t = np.arange(24000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 300.0 * t) + 0.05
    path = wavfiles.write_wav(tmp_path / "tone.wav", tone, 48000, "PCM_16")
    waveforms, lengths, errors = decoding.decode_recordings(
        tf.constant([path.read_bytes(), b"not a wav"]), YAMNET)
    assert lengths.numpy().tolist() == [8000, 0]
    assert errors.numpy()[0] == b"" and errors.numpy()[1] != b""
    assert abs(float(np.mean(waveforms.numpy()[0, :8000]))) < 1e-4
    # A 300 Hz tone keeps its level through the 48 -> 16 kHz resampler.
    rms = float(np.sqrt(np.mean(waveforms.numpy()[0, 2000:6000] ** 2)))
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.003
