"""A one-hour recording through `predict --timeline`: peak memory, and time against 1-minute files.

    python benchmarks/long_recordings.py [MODEL] [--data-dir FOLDER] [--minutes 60] [--rate 48000]

Writes one WAV of --minutes minutes (16-bit, --rate Hz) made of speech recordings laid end to end
(from --data-dir, else synthetic voices), and the same audio as 1-minute files. Each is scored
by `python -m speakergender.predict MODEL ... --timeline --json` in its own process; the
benchmark prints each process's wall time and peak resident memory (VmHWM, read by that process
as it exits: a fork's rusage would count the pages of this process, which imported TensorFlow),
and the time per hour of audio of the long file against the 1-minute files.
MODEL defaults to an untrained scratch CNN exported here (the time does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal


def speech(data_dir: Path | None, rate: int, seconds: float) -> np.ndarray:
    """`seconds` of speech at `rate`: recordings laid end to end, repeated as needed."""
    pieces, total, rng = [], 0, np.random.default_rng(0)
    if data_dir is not None:
        files = sorted(data_dir.rglob("*.wav"))[:400]
        for path in files:
            x, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if file_rate != rate:
                divisor = np.gcd(file_rate, rate)
                x = signal.resample_poly(x, rate // divisor, file_rate // divisor)
            pieces.append(x.astype(np.float32))
    else:
        from speakergender import synthetic
        for index in range(40):
            voice = synthetic.speaker_voice(("female", "male")[index % 2], rng)
            pieces.append(synthetic.utterance(voice, 3.0, rate, rng).astype(np.float32))
    needed = int(seconds * rate)
    joined = []
    while total < needed:
        for piece in pieces:
            joined.append(piece)
            total += len(piece)
    x = np.concatenate(joined)[:needed]
    return 0.5 * x / max(float(np.max(np.abs(x))), 1e-6)


def untrained_model(folder: Path) -> Path:
    import keras

    from speakergender.config import FrontEndParams
    from speakergender.export import GenderClassifierModule, export_model
    from speakergender.models.scratch import build_scratch_cnn
    keras.utils.set_random_seed(0)
    module = GenderClassifierModule(build_scratch_cnn(FrontEndParams()), FrontEndParams())
    export_model(module, folder / "untrained")
    return folder / "untrained"


# Runs predict's main, then reports the process's own peak resident memory on stderr.
_PREDICT_AND_PEAK = """
import re, sys
from speakergender import predict
try:
    status = predict.main(sys.argv[1:])
finally:
    peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]
    print(f"peak-kb {peak}", file=sys.stderr)
sys.exit(status)
"""


def predict_run(model: Path, paths: list[Path]) -> tuple[float, float, list[dict]]:
    """(wall seconds, peak resident MB, JSON rows) of one predict process."""
    command = [sys.executable, "-c", _PREDICT_AND_PEAK, str(model), *map(str, paths),
               "--timeline", "--json"]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"predict failed (status {done.returncode}): {done.stderr[-2000:]}")
    peak_kb = int(done.stderr.rsplit("peak-kb ", 1)[1].split()[0])
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return elapsed, peak_kb / 1024, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--data-dir", type=Path, help="speech WAVs to build the recording from")
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=int, default=48000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or untrained_model(tmp)
        x = speech(args.data_dir, args.rate, args.minutes * 60)
        long_path = tmp / "long.wav"
        sf.write(str(long_path), x, args.rate, subtype="PCM_16")
        minute = args.rate * 60
        short_paths = []
        for index in range(args.minutes):
            path = tmp / f"minute{index:03d}.wav"
            sf.write(str(path), x[index * minute:(index + 1) * minute], args.rate,
                     subtype="PCM_16")
            short_paths.append(path)
        del x
        print(f"{args.minutes} min at {args.rate} Hz, 16-bit: {long_path.stat().st_size / 1e6:.0f} MB "
              f"in one file, and as {len(short_paths)} 1-minute files; model {model}")

        baseline_path = tmp / "one-second.wav"
        sf.write(str(baseline_path), np.zeros(args.rate, np.float32), args.rate, subtype="PCM_16")
        _, baseline_mb, _ = predict_run(model, [baseline_path])
        print(f"one 1-s file (TensorFlow, the model, one call): peak RSS {baseline_mb:6.0f} MB")
        long_seconds, long_mb, long_rows = predict_run(model, [long_path])
        short_seconds, short_mb, short_rows = predict_run(model, short_paths)
        windows_long = long_rows[0]["windows"]
        windows_short = sum(row["windows"] for row in short_rows)
        hours = args.minutes / 60
        print(f"one {args.minutes}-min file : {long_seconds:7.1f} s wall, peak RSS {long_mb:6.0f} MB, "
              f"{windows_long} windows, label {long_rows[0]['label']}, "
              f"{len(long_rows[0]['timeline'])} timeline entries")
        print(f"{len(short_paths)} 1-min files  : {short_seconds:7.1f} s wall, peak RSS "
              f"{short_mb:6.0f} MB, {windows_short} windows")
        print(f"time per hour of audio: long {long_seconds / hours:.1f} s, 1-minute files "
              f"{short_seconds / hours:.1f} s: ratio {long_seconds / short_seconds:.2f}x "
              f"(goal <= 1.3x); peak memory {long_mb:.0f} MB (goal < 1024 MB)")


if __name__ == "__main__":
    main()
