"""Batch scoring on Beam's DirectRunner against `predict`'s path, on the same files, same run.

    python benchmarks/beam_scoring.py MODEL [--files 1000] [--workers 2]

Writes `--files` short recordings (1-4 s of synthetic voices; 16-bit 16 kHz, float 22.05 kHz,
24-bit 44.1 kHz, stereo 48 kHz and FLAC), scores them with `predict`'s path
(`serving.classify_files`, 32 files a call) and with `speakergender.score` on the DirectRunner
in multi-process mode, and prints files per second and seconds of audio per second for each,
from start to rows (model loading and, for Beam, starting its worker processes included), and
whether Beam's row for every file equals predict's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speakergender import result_rows, score, serving, synthetic

# (subtype, rate, channels, container): the formats the files cycle through.
FORMATS = [("PCM_16", 16000, 1, "WAV"), ("FLOAT", 22050, 1, "WAV"), ("PCM_24", 44100, 1, "WAV"),
           ("PCM_16", 48000, 2, "WAV"), ("PCM_16", 16000, 1, "FLAC")]


def write_recordings(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` recordings of 1-4 s, voices of both genders, in the FORMATS in turn."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        subtype, rate, channels, container = FORMATS[index % len(FORMATS)]
        voice = synthetic.speaker_voice(("female", "male")[index % 2], rng)
        samples = synthetic.utterance(voice, rng.uniform(1.0, 4.0), rate, rng)
        if channels == 2:
            samples = np.stack([samples, 0.8 * samples], axis=1)
        path = folder / f"{index:05d}.{container.lower()}"
        sf.write(path, samples, rate, subtype=subtype, format=container)
        paths.append(path)
    return paths


def predict_rows(model_path: str, files: list[Path]) -> tuple[dict[str, dict], float]:
    """predict's rows by path, and the seconds taken from loading the model on."""
    began = time.perf_counter()
    model = serving.load_model(model_path)
    rows = [result_rows.result_row(result) for result in serving.classify_files(model, files)]
    return {row["path"]: row for row in rows}, time.perf_counter() - began


def beam_rows(model_path: str, folder: Path, output: Path,
              workers: int) -> tuple[dict[str, dict], float]:
    """score's rows by path (DirectRunner, multi-process), and the seconds the run took."""
    began = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        score.main([model_path, "--input", f"{folder}/*", "--output", str(output / "rows"),
                    f"--direct_num_workers={workers}",
                    "--direct_running_mode=multi_processing"])
    seconds = time.perf_counter() - began
    rows = [json.loads(line) for shard in output.glob("rows-*.jsonl")
            for line in shard.read_text().splitlines()]
    return {row["path"]: row for row in rows}, seconds


def without_addresses(rows: dict[str, dict]) -> dict[str, dict]:
    """Rows with object addresses taken out of errors (soundfile names the buffer it read)."""
    return {path: {**row, "error": re.sub(r" at 0x[0-9a-f]+", "", row["error"])}
            for path, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="SavedModel folder (or model folder with versions)")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="DirectRunner processes")
    args = parser.parse_args()
    model_path = str(serving.resolve_model_path(args.model).resolve())

    with tempfile.TemporaryDirectory() as temporary:
        folder, output = Path(temporary) / "audio", Path(temporary) / "rows"
        folder.mkdir()
        files = write_recordings(folder, args.files)
        expected, predict_seconds = predict_rows(model_path, files)
        rows, beam_seconds = beam_rows(model_path, folder, output, args.workers)

    audio_seconds = sum(row.get("duration_seconds", 0.0) for row in expected.values())
    print(f"{len(files)} files, {audio_seconds:.0f} s of audio, model {model_path}")
    for name, seconds in (("predict (classify_files, 32 a call)", predict_seconds),
                          (f"Beam DirectRunner, {args.workers} processes", beam_seconds)):
        print(f"  {name:40s} {seconds:7.1f} s  {len(files) / seconds:7.1f} files/s  "
              f"{audio_seconds / seconds:7.1f} audio s/s")
    different = [path for path in expected
                 if without_addresses({path: expected[path]}) != without_addresses(
                     {path: rows.get(path, {"error": "no row"})})]
    print(f"  rows equal to predict's: {len(expected) - len(different)} of {len(expected)}"
          + (f"; first that differs: {different[0]}" if different else ""))
    if set(rows) - set(expected):
        print(f"  rows for files predict did not score: {len(set(rows) - set(expected))}")


if __name__ == "__main__":
    main()
