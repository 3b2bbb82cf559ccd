"""Synthetic voices whose pitch and formants differ by gender, written as an AudioMNIST corpus.

For tests, notebooks and demos where no real recordings are at hand. A voice is a glottal
pulse train (pitch with slow vibrato) through formant resonators, under a syllable envelope,
with a little breath noise. Female voices have higher pitch and formants, as real ones do on
average; every speaker draws their own values, so speakers differ within a gender too.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
from scipy import signal

# (low, high) ranges speakers draw from.
PITCH_HZ = {"male": (95.0, 140.0), "female": (175.0, 245.0)}
FORMANT_SCALE = {"male": (0.95, 1.05), "female": (1.12, 1.25)}
# Neutral-vowel formants (Hz) and bandwidths of an average male voice.
BASE_FORMANTS_HZ = (500.0, 1500.0, 2500.0, 3500.0)
FORMANT_BANDWIDTHS_HZ = (80.0, 100.0, 140.0, 180.0)


def speaker_voice(gender: str, rng: np.random.Generator) -> dict:
    """Draws one speaker's voice: pitch, formant scale and brightness."""
    return {"pitch_hz": rng.uniform(*PITCH_HZ[gender]),
            "formant_scale": rng.uniform(*FORMANT_SCALE[gender]),
            "tilt": rng.uniform(0.92, 0.98)}


def utterance(voice: dict, seconds: float, sample_rate: int,
              rng: np.random.Generator) -> np.ndarray:
    """One short utterance of a voice, float32 [samples] peaking near 0.5."""
    samples = int(seconds * sample_rate)
    t = np.arange(samples) / sample_rate
    pitch = voice["pitch_hz"] * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
                                 + rng.uniform(-0.05, 0.05))
    phase = np.cumsum(pitch / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = signal.lfilter([1.0], [1.0, -voice["tilt"]], pulses)
    source += 0.02 * rng.standard_normal(samples)
    vowel = rng.uniform(0.85, 1.15, size=len(BASE_FORMANTS_HZ))
    speech = np.zeros(samples)
    for formant, bandwidth, shift in zip(BASE_FORMANTS_HZ, FORMANT_BANDWIDTHS_HZ, vowel):
        centre = min(formant * shift * voice["formant_scale"], 0.45 * sample_rate)
        radius = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2 * np.pi * centre / sample_rate
        speech += signal.lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius ** 2],
                                 source)
    onset, length = rng.uniform(0.05, 0.2) * seconds, rng.uniform(0.5, 0.7) * seconds
    envelope = np.clip(np.minimum(t - onset, onset + length - t) / 0.03, 0, 1)
    speech *= envelope
    speech += 1e-3 * rng.standard_normal(samples)
    return (0.5 * speech / np.max(np.abs(speech))).astype(np.float32)


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV with the standard library."""
    pcm = np.clip(np.round(waveform * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def colour_channel(waveform: np.ndarray, sample_rate: int,
                   band_hz: tuple[float, float] | None) -> np.ndarray:
    """A recording chain's colour: a 4th-order Butterworth band-pass (None: flat)."""
    if band_hz is None:
        return waveform
    sections = signal.butter(4, band_hz, btype="bandpass", fs=sample_rate, output="sos")
    coloured = signal.sosfilt(sections, waveform)
    return (0.5 * coloured / max(np.max(np.abs(coloured)), 1e-9)).astype(np.float32)


def write_corpus(root: str | Path, female_speakers: int = 4, male_speakers: int = 8,
                 clips_per_speaker: int = 6, seconds: float = 1.0, sample_rate: int = 16000,
                 seed: int = 0, band_hz: tuple[float, float] | None = None) -> Path:
    """Writes `root/data/NN/D_NN_R.wav` and `root/data/audioMNIST_meta.txt` (JSON).

    Args:
      root: corpus folder (created).
      female_speakers, male_speakers: how many of each.
      clips_per_speaker: utterances per speaker (digits 0-9, then repetitions).
      seconds: length of each clip.
      sample_rate: in Hz.
      seed: fixes every voice and utterance.
      band_hz: every clip goes through this band-pass (a recording chain's colour, e.g.
        (300, 3400) for a telephone line); None: flat.

    Returns:
      `root`, which `corpora.load_corpus` reads.
    """
    rng = np.random.default_rng(seed)
    data = Path(root) / "data"
    data.mkdir(parents=True, exist_ok=True)
    genders = ["female"] * female_speakers + ["male"] * male_speakers
    rng.shuffle(genders)
    metadata = {}
    for number, gender in enumerate(genders, start=1):
        speaker = f"{number:02d}"
        metadata[speaker] = {"gender": gender, "age": int(rng.integers(20, 60)),
                             "accent": "synthetic"}
        voice = speaker_voice(gender, rng)
        folder = data / speaker
        folder.mkdir(exist_ok=True)
        for clip in range(clips_per_speaker):
            digit, repetition = clip % 10, clip // 10
            write_wav(folder / f"{digit}_{speaker}_{repetition}.wav",
                      colour_channel(utterance(voice, seconds, sample_rate, rng),
                                     sample_rate, band_hz), sample_rate)
    (data / "audioMNIST_meta.txt").write_text(json.dumps(metadata, indent=1))
    return Path(root)
