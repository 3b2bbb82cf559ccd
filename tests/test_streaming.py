"""Long recordings scored block by block give what scoring them whole gives."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

import helpers
import wavfiles
from speakergender import pipeline, scoring, serving, streaming, synthetic
from speakergender.wav_layout import layout_of_bytes

BLOCK_SECONDS = 2.0  # tests cut short recordings into many blocks


@pytest.fixture(scope="module")
def model(exported_model) -> serving.LoadedModel:
    return serving.load_model(exported_model)


@pytest.fixture(scope="module")
def conversation() -> np.ndarray:
    """13 s at 16 kHz: two speakers taking turns, a pause, a DC offset that drifts."""
    rng = np.random.default_rng(4)
    her = synthetic.speaker_voice("female", rng)
    him = synthetic.speaker_voice("male", rng)
    parts = [synthetic.utterance(her, 3.1, 16000, rng), np.zeros(8000),
             synthetic.utterance(him, 4.2, 16000, rng), synthetic.utterance(her, 5.2, 16000, rng)]
    x = np.concatenate(parts)
    return (x + np.linspace(-0.02, 0.03, len(x))).astype(np.float32)


def _scored(model, path, block_seconds, monkeypatch) -> serving.FileResult:
    monkeypatch.setattr(streaming, "BLOCK_SECONDS", block_seconds)
    return next(serving.classify_files(model, [path]))


RATE_FORMATS = [(48000, "PCM_16", 2), (44100, "FLOAT", 1), (22050, "PCM_24", 1),
                (16000, "PCM_16", 1), (8000, "PCM_U8", 1), (11025, "PCM_16", 1)]


@pytest.mark.parametrize("rate,subtype,channels", RATE_FORMATS)
def test_blocks_give_the_whole_recording_result(model, conversation, tmp_path, monkeypatch,
                                                rate, subtype, channels):
    x = signal.resample_poly(conversation, rate // np.gcd(rate, 16000), 16000 // np.gcd(rate, 16000))
    x = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = wavfiles.write_wav(tmp_path / "long.wav", 0.8 * x / np.max(np.abs(x)), rate, subtype)
    blocks = streaming.plan_blocks(path, model.sample_rate, model.clip_samples,
                                   model.window_hop_samples, BLOCK_SECONDS)
    assert len(blocks) >= 4
    # Blocks own every window once, in order.
    assert [b.first_window for b in blocks] == list(np.cumsum([0] + [b.windows for b in blocks[:-1]]))

    in_blocks = _scored(model, path, BLOCK_SECONDS, monkeypatch)
    whole = _scored(model, path, 1e9, monkeypatch)
    assert whole.error == in_blocks.error == ""
    assert len(in_blocks.window_probabilities) == len(whole.window_probabilities) >= 25
    # Equal up to float32 rounding: the resampler's FFT frames fall elsewhere in a block than
    # in the whole recording (samples differ by ~1e-5 of full scale; a margin too short to
    # hold the filter would differ by 1e-2).
    np.testing.assert_allclose(in_blocks.window_probabilities, whole.window_probabilities,
                               atol=1e-4)
    np.testing.assert_allclose(in_blocks.window_level_db, whole.window_level_db, atol=1e-3)
    assert in_blocks.window_sounding == whole.window_sounding
    assert not all(whole.window_sounding)  # the pause is gated out in both
    assert in_blocks.label == whole.label
    assert in_blocks.female_probability == pytest.approx(whole.female_probability, abs=1e-4)
    assert in_blocks.duration_seconds == pytest.approx(whole.duration_seconds, abs=1e-6)
    assert in_blocks.windows_disagree == whole.windows_disagree


def test_a_bad_sample_in_one_block_is_the_file_error_it_would_be_whole(
        model, conversation, tmp_path, monkeypatch):
    x = conversation.copy()
    x[9 * 16000] = np.nan
    path = wavfiles.write_wav(tmp_path / "nan.wav", x, 16000, "FLOAT")
    in_blocks = _scored(model, path, BLOCK_SECONDS, monkeypatch)
    whole = _scored(model, path, 1e9, monkeypatch)
    assert whole.error and in_blocks.error == whole.error


def test_training_evaluation_scores_long_recordings_in_blocks_as_whole(
        tmp_path_factory, conversation, tmp_path, monkeypatch):
    """Fold test and calibration scoring (`scoring.score_recordings`) reads a long recording a
    block at a time, with the logit scoring it whole gives; a bad sample in one block skips
    the file with the error decoding it whole reports."""
    module = helpers.trained_module(tmp_path_factory)
    at_44k = signal.resample_poly(conversation, 441, 160)
    long_path = wavfiles.write_wav(tmp_path / "long.wav", 0.8 * at_44k / np.max(np.abs(at_44k)),
                                   44100, "FLOAT")
    short_path = wavfiles.write_wav(tmp_path / "short.wav", conversation[:16000 * 2], 16000)
    broken = conversation.copy()
    broken[9 * 16000] = np.nan
    broken_path = wavfiles.write_wav(tmp_path / "nan.wav", broken, 16000, "FLOAT")
    table = pd.DataFrame({"path": [str(p) for p in (long_path, short_path, broken_path)],
                          "speaker": ["01", "02", "03"],
                          "gender": ["female", "male", "female"]})
    in_blocks_calls = []
    score_in_blocks = scoring._score_in_blocks
    monkeypatch.setattr(scoring, "_score_in_blocks", lambda module, blocks, log: (
        in_blocks_calls.append(len(blocks)) or score_in_blocks(module, blocks, log)))

    def score(block_seconds: float, name: str):
        monkeypatch.setattr(streaming, "BLOCK_SECONDS", block_seconds)
        skip_log = pipeline.SkipLog(tmp_path / f"{name}.log")
        return scoring.score_recordings(module, table, skip_log=skip_log), skip_log

    in_blocks, blocks_log = score(BLOCK_SECONDS, "blocks")
    # The long file and the broken one, each in several blocks.
    assert len(in_blocks_calls) == 2 and min(in_blocks_calls) >= 4
    whole, whole_log = score(1e9, "whole")
    assert len(in_blocks_calls) == 2
    assert list(in_blocks["path"]) == list(whole["path"]) == table["path"][:2].tolist()
    np.testing.assert_allclose(in_blocks["logit"], whole["logit"], atol=1e-4)
    np.testing.assert_allclose(in_blocks["probability"], whole["probability"], atol=1e-5)
    assert blocks_log.skipped == whole_log.skipped == 1
    assert blocks_log.reasons() == whole_log.reasons()
    assert "nan.wav" in blocks_log.reasons()[0] and "frame 144000" in blocks_log.reasons()[0]


def test_short_and_unsplittable_files_are_scored_whole(model, conversation, tmp_path):
    short = wavfiles.write_wav(tmp_path / "short.wav", conversation[:16000 * 5], 16000)
    flac = tmp_path / "long.flac"
    sf.write(flac, conversation, 16000, format="FLAC")
    lying = tmp_path / "lying.wav"
    lying.write_bytes(wavfiles.riff(wavfiles.chunk(b"fmt ", wavfiles.fmt_payload()),
                                    b"data" + (2**31).to_bytes(4, "little") + bytes(1000)))
    for path in (short, flac, lying):
        assert streaming.plan_blocks(path, 16000, 15600, 7680, BLOCK_SECONDS) == []


def test_a_block_is_a_wav_file_of_its_frames(conversation, tmp_path):
    x = np.stack([conversation, -conversation], axis=1)
    path = wavfiles.write_wav(tmp_path / "stereo.wav", x, 16000, "PCM_24", format="WAVEX")
    blocks = streaming.plan_blocks(path, 16000, 15600, 7680, BLOCK_SECONDS)
    for block in blocks[:2] + blocks[-1:]:
        data = block.read()
        layout = layout_of_bytes(data)
        assert layout.frames == block.frames and layout.channels == 2
        decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
        reference, _ = sf.read(str(path), dtype="float32", start=block.first_frame,
                               frames=block.frames)
        assert rate == 16000 and np.array_equal(decoded, reference)
    assert blocks[-1].first_frame + blocks[-1].frames == len(conversation)
