"""speakergender.conditions: known-answer signals, an outside G.711 reference, written files."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

from speakergender import conditions
from speakergender.conditions import (
    CONDITIONS, HELD_OUT_CONDITIONS, condition_function, draw_room, machine_noise, mulaw_decode,
    mulaw_encode, room_impulse_response, write_condition_copies)
from speakergender.corpora import load_corpus
from speakergender.synthetic import speaker_voice, utterance, write_corpus

RATE = 16000


def _write(path: Path, waveform: np.ndarray, rate: int = RATE) -> Path:
    sf.write(str(path), waveform, rate, subtype="PCM_16")
    return path


def _table(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame({"path": [str(p) for p in paths],
                         "speaker": [f"{i:02d}" for i in range(len(paths))],
                         "gender": ["female", "male"] * (len(paths) // 2) + ["female"] * (
                             len(paths) % 2)})


def _tones(freqs_hz: tuple[float, ...], seconds: float, rate: int = RATE) -> np.ndarray:
    """Sum of sines with fixed phases, peak below 0.5; float32 [<# samples>]."""
    times = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * times + phase)
                for f, phase in zip(freqs_hz, np.linspace(0.1, 2.0, len(freqs_hz))))
    return (0.45 * tones / np.max(np.abs(tones))).astype(np.float32)


def _band_db(psd: np.ndarray, freqs_hz: np.ndarray, low_hz: float, high_hz: float) -> float:
    return float(10 * np.log10(np.mean(psd[(freqs_hz >= low_hz) & (freqs_hz <= high_hz)])))


def _schroeder_decay_db(ir: np.ndarray) -> np.ndarray:
    energy = np.cumsum(ir[::-1].astype(np.float64) ** 2)[::-1]
    return 10 * np.log10(energy / energy[0])


def _rt60_seconds(ir: np.ndarray, rate: int, low_db: float, high_db: float) -> float:
    """RT60 extrapolated from a least-squares line through the decay between two levels."""
    decay_db = _schroeder_decay_db(ir)
    fitted = (decay_db <= low_db) & (decay_db >= high_db)
    slope = np.polyfit(np.flatnonzero(fitted) / rate, decay_db[fitted], 1)[0]
    return -60.0 / slope


# --- registry -------------------------------------------------------------------------------------


def test_registry_names():
    assert CONDITIONS == ("clean", "telephone", "room", "noise", "resampled_44k",
                          "resampled_48k")
    assert HELD_OUT_CONDITIONS == CONDITIONS[1:]
    with pytest.raises(ValueError, match="unknown condition"):
        condition_function("underwater")


# --- telephone ------------------------------------------------------------------------------------


def test_mulaw_known_g711_values():
    # G.711 table values (16-bit linear, as Sun's g711.c and CPython's audioop give them).
    assert mulaw_encode(np.array([0.0]))[0] == 0xFF
    assert mulaw_encode(np.array([1.0]))[0] == 0x80
    assert mulaw_encode(np.array([-1.0]))[0] == 0x00
    decoded = np.round(mulaw_decode(np.array([0xFF, 0x7F, 0xFE, 0x80, 0x00], np.uint8)) * 32768)
    np.testing.assert_array_equal(decoded, [0, 0, 8, 32124, -32124])


def test_mulaw_matches_audioop_on_every_16bit_value():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # Gone from Python 3.13.
    linear = np.arange(-32768, 32768, dtype=np.int16)
    expected_codes = np.frombuffer(audioop.lin2ulaw(linear.tobytes(), 2), np.uint8)
    np.testing.assert_array_equal(mulaw_encode(linear / 32768.0), expected_codes)
    codes = np.arange(256, dtype=np.uint8)
    expected_linear = np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), np.int16)
    np.testing.assert_array_equal(np.round(mulaw_decode(codes) * 32768), expected_linear)


def test_mulaw_is_idempotent_on_coded_values():
    codes = np.arange(256, dtype=np.uint8)
    levels = mulaw_decode(codes)
    recoded = mulaw_encode(levels)
    # Only negative zero (0x7F) comes back as the other zero (0xFF).
    np.testing.assert_array_equal(recoded, np.where(codes == 0x7F, 0xFF, codes))
    np.testing.assert_array_equal(mulaw_decode(recoded), levels)


def test_telephone_writes_8khz_and_keeps_only_the_telephone_band(tmp_path):
    white = 0.1 * np.random.default_rng(0).standard_normal(2 * RATE)
    source = _write(tmp_path / "white.wav", white)
    copies = write_condition_copies(_table([source]), "telephone", tmp_path / "out", seed=0)
    info = sf.info(copies["path"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    narrow, _ = sf.read(copies["path"].iloc[0])
    freqs_hz, psd = signal.welch(narrow, 8000, nperseg=512)
    passband_db = _band_db(psd, freqs_hz, 500, 3000)
    assert _band_db(psd, freqs_hz, 3500, 4000) < passband_db - 25
    assert _band_db(psd, freqs_hz, 0, 250) < passband_db - 25
    # The codec's gain is undone: the in-band level is the input's (white PSD is flat).
    _, white_psd = signal.welch(white, RATE, nperseg=1024)
    assert abs(passband_db - 10 * np.log10(np.mean(white_psd))) < 1.5


# --- room -----------------------------------------------------------------------------------------


def test_room_impulse_response_has_the_target_rt60():
    for seed in (0, 1):
        ir = room_impulse_response(draw_room(np.random.default_rng(seed)), RATE)
        assert np.argmax(np.abs(ir)) == 0  # Direct path first, at sample 0.
        assert _rt60_seconds(ir, RATE, -5, -25) == pytest.approx(0.6, rel=0.2)
        assert _rt60_seconds(ir, RATE, -5, -35) == pytest.approx(0.6, rel=0.2)


def test_room_output_is_level_normalised_and_reverberant():
    rng = np.random.default_rng(3)
    speech = utterance(speaker_voice("male", rng), 1.5, RATE, rng)
    output = condition_function("room")(speech, RATE, np.random.default_rng(0))
    assert (output.sample_rate, output.subtype) == (RATE, "PCM_16")
    assert output.waveform.shape == speech.shape
    rms = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64)))  # noqa: E731
    assert rms(output.waveform) == pytest.approx(rms(speech), rel=0.01)
    assert np.max(np.abs(output.waveform)) <= 1.0
    # Just after the utterance ends the dry clip is silent and the room still rings.
    end = np.flatnonzero(np.abs(speech) > 0.01)[-1]
    after = slice(end + 160, end + 160 + 1600)
    assert rms(output.waveform[after]) > 10 * rms(speech[after])


# --- noise ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("silence_seconds", [0.5, 3.0])
def test_noise_snr_is_measured_against_active_speech(silence_seconds):
    # A 1 s tone between silences: its active power is exactly amplitude^2 / 2 whatever the
    # padding, where a whole-clip mean would move by 10 log10(clip / tone) dB.
    amplitude = 0.3
    tone = amplitude * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    silence = np.zeros(int(silence_seconds * RATE))
    speech = np.concatenate([silence, tone, silence]).astype(np.float32)
    output = condition_function("noise")(speech, RATE, np.random.default_rng(5))
    noise = output.waveform.astype(np.float64) - speech
    snr_db = 10 * np.log10(amplitude ** 2 / 2 / np.mean(noise ** 2))
    assert snr_db == pytest.approx(10.0, abs=0.5)


def test_machine_noise_has_mains_hum_peaks():
    seconds = 4.0
    families = set()
    for seed in range(6):
        noise = machine_noise(int(seconds * RATE), RATE, np.random.default_rng(seed))
        assert np.mean(noise ** 2) == pytest.approx(1.0, rel=1e-6)
        freqs_hz, power = signal.periodogram(noise, RATE, window="hann")
        peaky = []
        for mains_hz in (50.0, 60.0):
            rises_db = []
            for k in (1, 2, 3):
                line = np.abs(freqs_hz - k * mains_hz) <= 0.5
                around = (np.abs(freqs_hz - k * mains_hz) > 3) & (
                    np.abs(freqs_hz - k * mains_hz) <= 20)
                rises_db.append(10 * np.log10(power[line].max() / np.median(power[around])))
            peaky.append(min(rises_db) > 12)
        assert sum(peaky) == 1, f"seed {seed}: hum at 50 Hz {peaky[0]}, at 60 Hz {peaky[1]}"
        families.add(peaky.index(True))
    assert families == {0, 1}


# --- resampled ------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition, rate, channels, subtype", [
    ("resampled_44k", 44100, 2, "PCM_24"),
    ("resampled_48k", 48000, 1, "FLOAT"),
    ("clean", RATE, 1, "PCM_16"),
])
def test_resampled_format_and_round_trip(tmp_path, condition, rate, channels, subtype):
    original = _tones((120.0, 700.0, 2300.0, 5100.0, 6500.0), 2.0)
    source = _write(tmp_path / "tones.wav", original)
    original, _ = sf.read(source)  # As quantised to 16 bits.
    copies = write_condition_copies(_table([source]), condition, tmp_path / "out", seed=0)
    info = sf.info(copies["path"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (rate, channels, subtype)
    written, _ = sf.read(copies["path"].iloc[0], always_2d=True)
    if channels == 2:
        balance_db = 20 * np.log10(np.std(written[:, 0]) / np.std(written[:, 1]))
        assert abs(balance_db) == pytest.approx(0.5, abs=0.01)
    back = signal.resample_poly(written.mean(axis=1), RATE, rate)[:len(original)]
    error = np.sqrt(np.mean((back - original) ** 2) / np.mean(original ** 2))
    assert error < 0.01


# --- write_condition_copies -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> pd.DataFrame:
    """Six 1 s synthetic clips (3 speakers) plus one corrupt file, as a clip table."""
    root = write_corpus(tmp_path_factory.mktemp("corpus"), female_speakers=1, male_speakers=2,
                        clips_per_speaker=2, seconds=1.0)
    table = load_corpus(root).table
    corrupt = root / "data" / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    bad_row = table.iloc[[0]].assign(path=str(corrupt))
    return pd.concat([table.iloc[:3], bad_row, table.iloc[3:]], ignore_index=True)


def _bytes(table: pd.DataFrame) -> list[bytes]:
    return [Path(p).read_bytes() for p in table["path"]]


@pytest.mark.parametrize("condition", ["telephone", "room", "noise"])
def test_write_condition_copies(small_corpus, tmp_path, caplog, condition):
    good = small_corpus[~small_corpus["path"].str.endswith("corrupt.wav")]
    with caplog.at_level(logging.WARNING, logger=conditions.__name__):
        first = write_condition_copies(small_corpus, condition, tmp_path / "a", seed=7)
    assert any("corrupt.wav" in record.getMessage() for record in caplog.records)

    assert list(first.index) == list(good.index)
    other_columns = [c for c in small_corpus.columns if c != "path"]
    pd.testing.assert_frame_equal(first[other_columns], good[other_columns])
    assert (first["condition"] == condition).all()
    assert first["path"].map(lambda p: Path(p).is_file()).all()
    assert first["path"].nunique() == len(first)
    assert not set(first["path"]) & set(small_corpus["path"])
    assert all(Path(p).parent == tmp_path / "a" for p in first["path"])

    again = write_condition_copies(small_corpus, condition, tmp_path / "b", seed=7)
    assert _bytes(again) == _bytes(first)
    reseeded = _bytes(write_condition_copies(small_corpus, condition, tmp_path / "c", seed=8))
    differs = [a != b for a, b in zip(reseeded, _bytes(first))]
    # The room condition picks one of a few rooms, so a clip may draw the same room again.
    assert all(differs) if condition != "room" else any(differs)
