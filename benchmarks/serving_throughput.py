"""Exported-model speed on this machine, measured on the SavedModel itself.

    python benchmarks/serving_throughput.py saved_models/scratch-log-mel [MODEL ...]

For each model: one-second clips per second through `serving_default` in batches of 64, the
latency of a single clip, and `predict`'s path on a folder of 1,000 one-second WAV files,
batched (32 files per call) against one file per call, side by side; then the same path on
--rate-files recordings (speech from --data-dir, else synthetic) written at 16 kHz and at 48 kHz
(`resample_poly`): seconds of audio per second, and how much the 48 kHz copies cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import tensorflow as tf
from scipy import signal

from speakergender import serving, synthetic


def clips_per_second(model, batch: int, repeats: int) -> float:
    waveforms = tf.constant(np.random.default_rng(0).uniform(
        -0.3, 0.3, (batch, model.sample_rate)).astype(np.float32))
    serve = model.module.signatures["serving_default"]
    serve(waveform=waveforms)
    began = time.perf_counter()
    for _ in range(repeats):
        serve(waveform=waveforms)["female_probability"].numpy()
    return batch * repeats / (time.perf_counter() - began)


def single_clip_ms(model, repeats: int) -> float:
    waveform = tf.constant(np.random.default_rng(1).uniform(
        -0.3, 0.3, (1, model.sample_rate)).astype(np.float32))
    serve = model.module.signatures["serving_default"]
    serve(waveform=waveform)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        serve(waveform=waveform)["female_probability"].numpy()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def folder_files_per_second(model, files: list[Path], batch_size: int) -> float:
    list(serving.classify_files(model, files[:batch_size], batch_size))
    began = time.perf_counter()
    results = list(serving.classify_files(model, files, batch_size))
    assert not any(r.error for r in results)
    return len(files) / (time.perf_counter() - began)


def audio_seconds_per_second(model, files: list[Path], seconds: float) -> float:
    list(serving.classify_files(model, files[:32], 32))
    began = time.perf_counter()
    results = list(serving.classify_files(model, files, 32))
    assert not any(r.error for r in results)
    return seconds / (time.perf_counter() - began)


def same_speech_at(folder: Path, rate: int, recordings: list[np.ndarray]) -> list[Path]:
    """The 16 kHz recordings written at `rate`."""
    paths = []
    for index, x in enumerate(recordings):
        path = folder / f"speech{rate}-{index:04d}.wav"
        if rate != 16000:
            x = signal.resample_poly(x, rate // 16000, 1)
        sf.write(str(path), x, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def speech_recordings(data_dir: Path | None, count: int, rng) -> list[np.ndarray]:
    """Up to `count` recordings at 16 kHz, peak 0.5."""
    if data_dir is None:
        voices = [synthetic.speaker_voice(g, rng) for g in ("female", "male")]
        recordings = [synthetic.utterance(voices[i % 2], 3.8, 16000, rng) for i in range(count)]
    else:
        recordings = []
        for path in sorted(data_dir.rglob("*.wav"))[:count]:
            x, rate = sf.read(str(path), dtype="float64", always_2d=True)
            divisor = np.gcd(rate, 16000)
            recordings.append(signal.resample_poly(x.mean(axis=1), 16000 // divisor, rate // divisor))
    return [0.5 * x / max(np.max(np.abs(x)), 1e-6) for x in recordings]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--files", type=int, default=1000, help="0 skips the 1-s clip part")
    parser.add_argument("--rate-files", type=int, default=96)
    parser.add_argument("--data-dir", type=Path, help="speech WAVs for the 16 vs 48 kHz part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        voices = [synthetic.speaker_voice(g, rng) for g in ("female", "male")]
        files = []
        for index in range(args.files):
            path = Path(folder) / f"clip{index:04d}.wav"
            synthetic.write_wav(path, synthetic.utterance(voices[index % 2], 1.0, 16000, rng), 16000)
            files.append(path)
        if args.files:  # 0: only the 16 vs 48 kHz part
            for name in args.models:
                model = serving.load_model(name)
                batched = folder_files_per_second(model, files, 32)
                single = folder_files_per_second(model, files[:200], 1)
                print(f"{model.name} ({model.parameter_count:,} parameters, {model.path})")
                print(f"  serving_default, 1-s clips in batches of 64: {clips_per_second(model, 64, 20):8.1f} clips/s (goal >= 500)")
                print(f"  serving_default, one 1-s clip:               {single_clip_ms(model, 50):8.2f} ms (goal < 10)")
                print(f"  predict path, {len(files)} WAV files, 32 per call: {batched:8.1f} files/s")
                print(f"  predict path, one file per call:             {single:8.1f} files/s")
                print(f"  batched / one at a time:                     {batched / single:8.1f}x")
        speech = speech_recordings(args.data_dir, args.rate_files, rng)
        seconds = sum(len(x) for x in speech) / 16000
        at_16k = same_speech_at(Path(folder), 16000, speech)
        at_48k = same_speech_at(Path(folder), 48000, speech)
        for name in args.models:
            model = serving.load_model(name)
            # Alternating, best of three each: other work on the machine slows both alike.
            rate16 = rate48 = 0.0
            for _ in range(3):
                rate16 = max(rate16, audio_seconds_per_second(model, at_16k, seconds))
                rate48 = max(rate48, audio_seconds_per_second(model, at_48k, seconds))
            print(f"{model.name}: {len(speech)} recordings, {seconds:.0f} s of speech, predict path:")
            print(f"  16 kHz files: {rate16:8.1f} s of audio/s; 48 kHz: {rate48:8.1f} s/s; "
                  f"16 kHz / 48 kHz: {rate16 / rate48:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
