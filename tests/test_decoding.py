"""frontend.decoding: files to recordings at the model's rate; DC removal in the windows."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend import decoding, features, windows

RATE = 16000
YAMNET = FrontEndParams.yamnet()


def test_dc_offset_is_removed():
    t = np.arange(15600) / RATE
    sine = (0.25 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    offset = sine - np.float32(0.085)

    def prepared_features(waveform, params=YAMNET):
        batch = tf.constant(waveform[np.newaxis])
        prepared = windows.cut_windows(batch, tf.constant([len(waveform)]), tf.constant([[0]]),
                                       len(waveform), params.remove_dc_offset)[:, 0]
        return features.waveform_to_features(prepared, params).numpy()[0]

    clean = prepared_features(sine)
    np.testing.assert_allclose(prepared_features(offset), clean, atol=1e-3, rtol=0)
    # Without the removal the offset leaks into the low bands, by far more than the tolerance.
    no_removal = FrontEndParams(remove_dc_offset=False)
    assert np.max(np.abs(prepared_features(offset, no_removal) - clean)) > 0.5


def test_decode_recordings_resamples_and_keeps_the_offset_for_the_windows(tmp_path):
    import wavfiles

    t = np.arange(24000) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 300.0 * t) + 0.05
    path = wavfiles.write_wav(tmp_path / "tone.wav", tone, 48000, "PCM_16")
    waveforms, lengths, errors = decoding.decode_recordings(
        tf.constant([path.read_bytes(), b"not a wav"]), YAMNET)
    assert lengths.numpy().tolist() == [8000, 0]
    assert errors.numpy()[0] == b"" and errors.numpy()[1] != b""
    # The offset survives decoding (resampling keeps DC); each window removes its own.
    assert abs(float(np.mean(waveforms.numpy()[0, 500:7500])) - 0.05) < 1e-3
    # A 300 Hz tone keeps its level through the 48 -> 16 kHz resampler.
    middle = waveforms.numpy()[0, 2000:6000]
    rms = float(np.sqrt(np.mean((middle - middle.mean()) ** 2)))
    assert abs(rms - 0.3 / np.sqrt(2)) < 0.003
