"""Clips per second, files to feature batches: the on-graph tf.data pipeline against a
per-file librosa reference computing the same log-mel features, in one process.

    python benchmarks/pipeline_throughput.py [--data-dir ../shared/data/audiomnist-az-dev]
                                             [--rates 16000,48000,44100] [--max-files N]

With rates other than the corpus's own, the files are first resampled (scipy's resample_poly,
16-bit PCM) into a temporary folder and both sides read those copies: the on-graph pipeline
resamples them back to 16 kHz on graph, librosa with `librosa.load(path, sr=16000)` (soxr).

Prints clips/s for decode-only, the full on-graph pipeline, the librosa reference (its feature
API per file, as the seed project did) and a tuned librosa loop, and the ratios between them.
Each tf.data dataset is built once, as training builds it once for every epoch. A pass over the
files through one long-lived iterator is the steady state an epoch runs at; each new iterator
(one per epoch in training) first instantiates and optimizes its map functions, a fixed cost of
a fraction of a second that is printed on its own line, with the pipeline's clips/s when every
pass pays it. Each measure is run once to warm up (file cache, tracing, lazy imports), then
timed as the best of three passes over the files. The one-time cost of a new dataset's first
pass is printed too, and the pipeline cut after each of its steps, to show where its time goes.
Run it on an idle machine: other work on the cores moves the ratios a lot.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from speakergender import corpora, pipeline
from speakergender.config import FrontEndParams
from speakergender.frontend import decoding, features, wav, windows

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "audiomnist-az-dev"


def decode_only(paths: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Read file by file, decode a batch at a time (as the pipeline does), no features."""
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    dataset = dataset.map(lambda contents: wav.try_decode_wav_batch(contents)[0],
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


# The pipeline's evaluation path, cut after each step: where its time goes.
STAGES = ("decode, resample, DC offset", "+ window levels", "+ window cut", "+ log-mel")


def pipeline_stage(paths: np.ndarray, params: FrontEndParams, batch_size: int,
                   stage: int) -> tf.data.Dataset:
    """Files to the end of STAGES[stage], a batch at a time, as `make_dataset` runs them."""
    def run(contents):
        waveforms, lengths, _ = decoding.decode_recordings(contents, params)
        if stage == 0:
            return waveforms
        if stage == 1:
            starts, _ = windows.window_starts(lengths, params.clip_samples,
                                              params.stft_hop_samples, with_tail=False)
            return windows.window_levels_db(waveforms, lengths, starts, params.clip_samples)
        clips = windows.speech_windows(waveforms, lengths, params.clip_samples,
                                       params.stft_hop_samples, params.crop_gate_db)
        return clips if stage == 2 else features.waveform_to_features(clips, params)

    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return dataset.map(run, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def on_graph_pipeline(table, params: FrontEndParams, batch_size: int) -> tf.data.Dataset:
    """The evaluation windows, then the model's front-end layer: files to feature batches."""
    front_end = features.FrontEnd(params)
    return pipeline.make_dataset(table, params, training=False, batch_size=batch_size).map(
        lambda clips, label: front_end(clips), num_parallel_calls=tf.data.AUTOTUNE)


def count_clips(dataset: tf.data.Dataset) -> int:
    """One pass over a dataset through a new iterator, from the files (nothing is cached
    between passes)."""
    return sum(int(batch.shape[0]) for batch in dataset)


class SteadyPasses:
    """Passes over a dataset through one iterator of `dataset.repeat()`: what an epoch runs at
    once its iterator is set up, and the setup a new iterator costs on top."""

    def __init__(self, dataset: tf.data.Dataset):
        self.batches = sum(1 for _ in dataset)
        self.iterator = iter(dataset.repeat())

    def __call__(self) -> int:
        return sum(int(next(self.iterator).shape[0]) for _ in range(self.batches))


def _librosa_loop(paths: np.ndarray, params: FrontEndParams, batch_size: int, featurize) -> int:
    import librosa
    batch, count = [], 0
    for path in paths:
        waveform, _ = librosa.load(path, sr=params.sample_rate)
        waveform = waveform - waveform.mean()
        missing = max(params.clip_samples - len(waveform), 0)
        waveform = np.pad(waveform, (missing // 2, missing - missing // 2))
        start = (len(waveform) - params.clip_samples) // 2
        batch.append(featurize(waveform[start:start + params.clip_samples]))
        if len(batch) == batch_size:
            np.stack(batch)
            count += len(batch)
            batch = []
    return count + len(batch)


def librosa_reference(paths: np.ndarray, params: FrontEndParams, batch_size: int) -> int:
    """The seed project's approach: load and featurize each file with librosa's feature API."""
    import librosa

    def featurize(window):
        mel = librosa.feature.melspectrogram(
            y=window, sr=params.sample_rate, n_fft=params.fft_length,
            hop_length=params.stft_hop_samples, win_length=params.stft_window_samples,
            center=False, power=params.magnitude_exponent, n_mels=params.mel_bands,
            fmin=params.mel_min_hz, fmax=params.mel_max_hz, htk=True, norm=None)
        return np.log(mel + params.log_offset).T
    return _librosa_loop(paths, params, batch_size, featurize)


def librosa_tuned(paths: np.ndarray, params: FrontEndParams, batch_size: int) -> int:
    """The same with the mel filterbank built once, as a careful hand-written loop would."""
    import librosa
    mel = librosa.filters.mel(sr=params.sample_rate, n_fft=params.fft_length,
                              n_mels=params.mel_bands, fmin=params.mel_min_hz,
                              fmax=params.mel_max_hz, htk=True, norm=None)

    def featurize(window):
        magnitude = np.abs(librosa.stft(window, n_fft=params.fft_length,
                                        hop_length=params.stft_hop_samples,
                                        win_length=params.stft_window_samples, center=False))
        return np.log(mel @ magnitude + params.log_offset).T
    return _librosa_loop(paths, params, batch_size, featurize)


def timed(function, *args, repeats: int = 3) -> tuple[float, int]:
    """Best of `repeats` timed runs after one warm-up (file cache, tracing, lazy imports)."""
    function(*args)
    best, clips = float("inf"), 0
    for _ in range(repeats):
        began = time.perf_counter()
        clips = function(*args)
        best = min(best, time.perf_counter() - began)
    return best, clips


def first_pass_seconds(build, *args) -> float:
    """Building a dataset and its first pass: graph tracing, paid once per dataset (epoch
    after epoch reuse it), on top of the steady-state passes that `timed` measures."""
    began = time.perf_counter()
    count_clips(build(*args))
    return time.perf_counter() - began


def resampled_copies(table, rate: int, folder: Path):
    """The table's files resampled to `rate` (16-bit PCM) in `folder`; the table of copies."""
    import soundfile
    from scipy import signal

    paths = []
    for index, path in enumerate(table["path"]):
        waveform, original = wav.read_wav(path)
        common = math.gcd(rate, original)
        copy = signal.resample_poly(waveform, rate // common, original // common)
        paths.append(str(folder / f"{index:05d}.wav"))
        soundfile.write(paths[-1], np.clip(copy, -1, 1), rate, subtype="PCM_16")
    return table.assign(path=paths)


def compare(table, params: FrontEndParams, batch_size: int, label: str) -> None:
    paths = table["path"].to_numpy()
    print(f"--- {label}: {len(paths)} files")
    first_pass = first_pass_seconds(on_graph_pipeline, table, params, batch_size)
    graph_dataset = on_graph_pipeline(table, params, batch_size)
    results = {
        "decode only (tf.data)": timed(SteadyPasses(decode_only(paths, batch_size))),
        "on-graph pipeline (tf.data)": timed(SteadyPasses(graph_dataset)),
        "on-graph, new iterator each pass": timed(count_clips, graph_dataset),
        "librosa per file (reference)": timed(librosa_reference, paths, params, batch_size),
        "librosa per file, filterbank once": timed(librosa_tuned, paths, params, batch_size),
    }
    rates = {name: clips / seconds for name, (seconds, clips) in results.items()}
    for name, (seconds, clips) in results.items():
        print(f"{name:34s} {clips:6d} clips in {seconds:6.2f} s = {rates[name]:8.1f} clips/s")
    graph, reference = rates["on-graph pipeline (tf.data)"], rates["librosa per file (reference)"]
    print(f"on-graph pipeline / librosa reference: {graph / reference:.2f}x")
    print(f"on-graph pipeline / librosa, filterbank once: "
          f"{graph / rates['librosa per file, filterbank once']:.2f}x")
    print(f"on-graph pipeline / decode only: {graph / rates['decode only (tf.data)']:.2f} "
          "(1.0 = features cost nothing beyond decoding)")
    fresh_seconds, fresh_clips = results["on-graph, new iterator each pass"]
    print(f"a new iterator's setup (once per epoch): "
          f"{fresh_seconds - results['on-graph pipeline (tf.data)'][0]:.2f} s; with it in every "
          f"pass: {fresh_clips / fresh_seconds / reference:.2f}x the librosa reference")
    print(f"on-graph pipeline, first pass of a new dataset (tracing included): {first_pass:.2f} s "
          f"= {len(paths) / first_pass:.1f} clips/s")
    print("where the pipeline's time goes (each line: files up to that step):")
    for stage, name in enumerate(STAGES):
        seconds, clips = timed(SteadyPasses(pipeline_stage(paths, params, batch_size, stage)))
        print(f"  {name:28s} {clips / seconds:8.1f} clips/s, {1e6 * seconds / clips:6.1f} us a clip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rates", default="native",
                        help="comma-separated: native (the files as they are) and/or sample "
                             "rates to resample copies to first, e.g. native,48000,44100")
    parser.add_argument("--max-files", type=int, default=0, help="0: every file")
    args = parser.parse_args()
    table = corpora.load_corpus(args.data_dir).table
    if args.max_files:
        table = table.sample(min(args.max_files, len(table)), random_state=0)
    params = FrontEndParams()
    print(f"{len(table)} files from {args.data_dir}; "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'auto'} inter-op threads")
    for rate in args.rates.split(","):
        if rate == "native":
            compare(table, params, args.batch_size, "files as they are")
            continue
        with tempfile.TemporaryDirectory() as folder:
            copies = resampled_copies(table, int(rate), Path(folder))
            compare(copies, params, args.batch_size, f"copies at {int(rate)} Hz")


if __name__ == "__main__":
    main()
