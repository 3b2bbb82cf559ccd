"""Speed and quality of the on-graph resampler against scipy's resample_poly and soxr HQ.

Takes real speech (WAV files under --data-dir, or synthetic speech-like signals when there is
none), makes 48 kHz and 44.1 kHz versions in memory (`scipy.signal.resample_poly` from the
originals), and times, in one run, resampling each file back to 16 kHz with:

- ours: `speakergender.frontend.resample.resample` in a `tf.function` with run-time rates
  (the input signature the front end uses), called eagerly per file (numpy in, numpy out) after
  a warm-up call; TF's default thread pools (all cores) unless --threads;
- ours rows: `resample_rows` in a `tf.function`, --batch files (zero-padded) per call;
- `scipy.signal.resample_poly` (float64, one thread);
- `soxr.resample(..., quality="HQ")` (float32; one thread: its CPU time equals its wall time).

The methods take turns on each file, and each file's time is the best of --repeats calls, so a
machine busy with other work slows them alike. Prints seconds of audio per second of wall time
and per second of CPU time (all of the process's threads), the ratios ours / soxr and
ours / resample_poly, the RMS difference from resample_poly, and a quick tone check of ours over
QUALITY_PAIRS: the worst passband deviation (0.1 dB allowed up to 0.45 x the lower rate) and the
worst level left by tones the filter must reject (above 0.5 x the lower rate, or their aliases:
80 dB of rejection required).

    python benchmarks/resampling.py                  # ../shared/data/ravdess-dev if present (~40 s)
    python benchmarks/resampling.py --threads 1      # TF limited to one thread, as soxr
    python benchmarks/resampling.py --data-dir DIR --files 40 --repeats 3
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess-dev"
TARGET_RATE = 16000
HIGH_RATES = (48000, 44100)
QUALITY_PAIRS = ((8000, 16000), (11025, 16000), (22050, 16000), (24000, 16000),
                 (32000, 16000), (44100, 16000), (48000, 16000), (88200, 16000),
                 (96000, 16000), (16000, 8000), (16000, 22050), (16000, 44100),
                 (16000, 48000))


def load_speech(data_dir: Path | None, max_files: int) -> tuple[list[np.ndarray], int, str]:
    """Mono float64 speech at one rate; synthetic speech-like signals if no WAVs are found."""
    import soundfile as sf

    files = sorted(data_dir.rglob("*.wav"))[:max_files] if data_dir and data_dir.is_dir() else []
    waveforms, rate = [], None
    for path in files:
        data, file_rate = sf.read(path, dtype="float64", always_2d=True)
        if rate is None:
            rate = file_rate
        if file_rate != rate:
            continue
        mono = data.mean(axis=1)
        waveforms.append(mono - mono.mean())
    if waveforms:
        return waveforms, rate, f"{len(waveforms)} files from {data_dir}"
    return synthetic_speech(max_files), TARGET_RATE, f"{max_files} synthetic speech-like signals"


def synthetic_speech(count: int, rate: int = TARGET_RATE, seconds: float = 3.5) -> list[np.ndarray]:
    """Glottal pulse trains with a wandering pitch through three formant resonators, plus noise."""
    rng = np.random.default_rng(0)
    waveforms = []
    n = int(rate * seconds)
    t = np.arange(n) / rate
    for _ in range(count):
        pitch = rng.uniform(90, 250) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = np.cumsum(pitch) / rate
        source = np.diff(np.floor(phase), prepend=0.0) + 0.01 * rng.standard_normal(n)
        y = np.zeros(n)
        for formant, bandwidth in ((rng.uniform(300, 900), 80), (rng.uniform(900, 2500), 120),
                                   (rng.uniform(2500, 3500), 200)):
            r = np.exp(-np.pi * bandwidth / rate)
            a = [1, -2 * r * np.cos(2 * np.pi * formant / rate), r * r]
            y += scipy.signal.lfilter([1 - r], a, source)
        envelope = 0.5 * (1 + np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6)))
        waveforms.append(y * envelope / np.abs(y).max())
    return waveforms


def to_rate(waveform: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    ratio = Fraction(new_rate, rate)
    return scipy.signal.resample_poly(waveform, ratio.numerator, ratio.denominator)


def seconds_per_second(fns: dict, inputs: list, audio_seconds: float,
                       repeats: int) -> tuple[dict, dict]:
    """Seconds of audio per second of wall time, and per second of CPU time (all threads), for
    each of `fns`, one call per input.

    The methods take turns on each input (so a busy machine slows them alike), each input's time
    being the best of `repeats` calls.
    """
    for fn in fns.values():
        fn(inputs[0])
    wall, cpu = dict.fromkeys(fns, 0.0), dict.fromkeys(fns, 0.0)
    for item in inputs:
        best_wall, best_cpu = dict.fromkeys(fns, float("inf")), dict.fromkeys(fns, float("inf"))
        for _ in range(repeats):
            for name, fn in fns.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn(item)
                best_wall[name] = min(best_wall[name], time.perf_counter() - start)
                best_cpu[name] = min(best_cpu[name], time.process_time() - start_cpu)
        for name in fns:
            wall[name] += best_wall[name]
            cpu[name] += best_cpu[name]
    return ({name: audio_seconds / total for name, total in wall.items()},
            {name: audio_seconds / max(total, 1e-9) for name, total in cpu.items()})


def batches(waveforms: list[np.ndarray], size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Zero-padded [size, samples] batches and their lengths."""
    result = []
    for start in range(0, len(waveforms), size):
        group = waveforms[start:start + size]
        batch = np.zeros([len(group), max(map(len, group))], np.float32)
        for i, waveform in enumerate(group):
            batch[i, :len(waveform)] = waveform
        result.append((batch, np.array([len(w) for w in group], np.int32)))
    return result


def tone_check(resample_fn, input_rate: int, output_rate: int) -> tuple[float, float]:
    """(worst passband deviation in dB, worst stopband / alias level in dB) of one pair."""
    lower = min(input_rate, output_rate)
    seconds = 0.5
    t_in = np.arange(int(input_rate * seconds)) / input_rate
    n_out = int(np.ceil(len(t_in) * output_rate / input_rate))
    middle = np.arange(n_out // 4, 3 * n_out // 4)
    rng = np.random.default_rng(1)

    def run(freq):
        x = np.sin(2 * np.pi * freq * t_in + rng.uniform(0, 2 * np.pi))
        return resample_fn(x.astype(np.float32), input_rate, output_rate)[middle]

    def amplitude(y, freq):
        angles = 2 * np.pi * freq * middle / output_rate
        basis = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        coefficients, *_ = np.linalg.lstsq(basis, y, rcond=None)
        return float(np.hypot(*coefficients))

    passband = max(abs(20 * np.log10(amplitude(run(freq), freq)))
                   for freq in np.linspace(50, 0.45 * lower, 12))
    stop_freqs = np.linspace(0.5 * lower, min(0.5 * input_rate, 0.5 * lower + 16000) - 1, 12)
    # Whatever comes out for a tone the filter must reject: its RMS against the tone's.
    stopband = max(20 * np.log10(np.sqrt(2 * np.mean(run(freq) ** 2)) + 1e-12)
                   for freq in stop_freqs) if input_rate > lower else float("-inf")
    return passband, stopband


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None,
                        help="folder searched for WAVs (default: %(default)s; synthetic speech "
                             "when absent)")
    parser.add_argument("--files", type=int, default=60, help="at most this many files")
    parser.add_argument("--repeats", type=int, default=3,
                        help="calls per file and method; the fastest counts")
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra- and inter-op threads (0: TF's default, all cores)")
    parser.add_argument("--batch", type=int, default=16,
                        help="files per resample_rows call in the batched figure")
    parser.add_argument("--no-quality", action="store_true", help="skip the tone check")
    args = parser.parse_args()

    import soxr
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from speakergender.frontend.resample import resample, resample_rows

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def resample_graph(waveform, input_rate, output_rate):
        return resample(waveform, input_rate, output_rate)

    def ours(waveform, input_rate, output_rate):
        return resample_graph(waveform, input_rate, output_rate).numpy()

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)])
    def resample_rows_graph(waveforms, lengths, rates):
        return resample_rows(waveforms, lengths, rates, TARGET_RATE)

    speech, rate, source = load_speech(args.data_dir, args.files)
    print(f"speech: {source}, {sum(map(len, speech)) / rate:.1f} s at {rate} Hz; "
          f"TF threads: {args.threads or 'default'}; soxr and resample_poly: one thread")
    print(f"{'pair':>16} {'':>5} {'ours':>8} {'poly':>8} {'soxr':>8} {'ours/soxr':>10}"
          f" {'ours/poly':>10} {'ours rows':>10} {'rows/soxr':>10}")
    for high_rate in HIGH_RATES:
        high = [to_rate(w, rate, high_rate) for w in speech]
        high32 = [w.astype(np.float32) for w in high]
        ratio = Fraction(TARGET_RATE, high_rate)
        rates = (tf.constant(high_rate), tf.constant(TARGET_RATE))
        audio_seconds = sum(map(len, high)) / high_rate
        # Each method gets the input type it works in: float32 for ours and soxr, float64 for
        # resample_poly (the float32 copy is made outside the timing).
        wall, cpu = seconds_per_second({
            "ours": lambda w: ours(w[0], *rates),
            "poly": lambda w: scipy.signal.resample_poly(w[1], ratio.numerator,
                                                         ratio.denominator),
            "soxr": lambda w: soxr.resample(w[0], high_rate, TARGET_RATE, quality="HQ"),
        }, list(zip(high32, high)), audio_seconds, args.repeats)
        # The batched path: --batch files per resample_rows call, all at high_rate.
        rows_wall, rows_cpu = seconds_per_second({"rows": lambda b: resample_rows_graph(
            b[0], b[1], tf.fill([len(b[1])], high_rate))[0].numpy()},
            batches(high32, args.batch), audio_seconds, args.repeats)
        for label, speeds, rows in (("wall", wall, rows_wall["rows"]),
                                    ("cpu", cpu, rows_cpu["rows"])):
            print(f"{f'{high_rate} -> {TARGET_RATE}':>16} {label:>5} {speeds['ours']:8.0f}"
                  f" {speeds['poly']:8.0f} {speeds['soxr']:8.0f}"
                  f" {speeds['ours'] / speeds['soxr']:10.2f}"
                  f" {speeds['ours'] / speeds['poly']:10.2f}"
                  f" {rows:10.0f} {rows / speeds['soxr']:10.2f}")
        errors = []
        for h, w in zip(high32[:10], high[:10]):
            expected = to_rate(w, high_rate, TARGET_RATE)
            errors.append(np.sqrt(np.mean((ours(h, *rates) - expected) ** 2)
                                  / np.mean(expected ** 2)))
        print(f"{'':>16} RMS difference from resample_poly over {len(errors)} files: "
              f"median {100 * np.median(errors):.2f} %, max {100 * max(errors):.2f} %")
    print("(seconds of audio per second of wall time, and per second of CPU time over all "
          "threads; 'ours rows': resample_rows, --batch files per call)")

    if not args.no_quality:
        worst_pass, worst_stop = 0.0, float("-inf")
        for input_rate, output_rate in QUALITY_PAIRS:
            passband, stopband = tone_check(
                lambda x, i, o: ours(x, tf.constant(i), tf.constant(o)), input_rate, output_rate)
            worst_pass, worst_stop = max(worst_pass, passband), max(worst_stop, stopband)
        print(f"tone check over {len(QUALITY_PAIRS)} pairs: passband deviation max "
              f"{worst_pass:.4f} dB (limit 0.1), stopband / alias level max {worst_stop:.1f} dB "
              "(limit -80)")


if __name__ == "__main__":
    main()
