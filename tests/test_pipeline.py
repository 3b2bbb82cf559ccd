"""tf.data pipeline on synthetic corpora with unreadable files mixed in."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.signal
import soundfile
import tensorflow as tf

import helpers
import wavfiles
from speakergender import corpora, pipeline
from speakergender.frontend import decoding, features
from speakergender.config import AugmentParams, FrontEndParams

PARAMS = FrontEndParams()
BATCH = 5


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    """12 clips of exactly one window (15600 samples: random crops are deterministic)."""
    root = helpers.synthetic_corpus(tmp_path_factory, "exact", female_speakers=2,
                                    male_speakers=2, clips_per_speaker=3, seconds=0.975)
    return corpora.load_corpus(root).table


@pytest.fixture(scope="module")
def long_table(tmp_path_factory) -> pd.DataFrame:
    """Clips longer than a window, so training crops vary."""
    return corpora.load_corpus(helpers.synthetic_corpus(tmp_path_factory)).table


@pytest.fixture(scope="module")
def bad_files(table, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    good = Path(table["path"].iloc[0]).read_bytes()
    files = {"corrupt": folder / "corrupt.wav", "empty": folder / "empty.wav",
             "truncated": folder / "truncated.wav", "text": folder / "text.wav"}
    # A RIFF/WAVE header followed by garbage instead of chunks.
    files["corrupt"].write_bytes(b"RIFF\x13\x00\x00\x00WAVEfmt " + bytes(range(200)))
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good[:len(good) // 2])
    files["text"].write_text("this is a text file, not audio\n")
    return files


@pytest.fixture(scope="module")
def mixed_table(table, bad_files) -> pd.DataFrame:
    """The good clips with the four bad files interleaved."""
    bad = pd.DataFrame({"path": [str(p) for p in bad_files.values()], "speaker": "99",
                        "gender": ["male", "female", "male", "female"]})
    good = table[["path", "speaker", "gender"]]
    return pd.concat([good.iloc[:3], bad.iloc[:2], good.iloc[3:8], bad.iloc[2:], good.iloc[8:]],
                     ignore_index=True)


def _epoch(dataset: tf.data.Dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(part.numpy() for part in batch) for batch in dataset]


def _by_path(batches) -> dict[str, np.ndarray]:
    """{path: features} from batches of (features, label, path)."""
    return {path.decode(): clip for clip_features, _, paths in batches
            for clip, path in zip(clip_features, paths)}


def test_bad_files_are_skipped_counted_and_logged(mixed_table, bad_files, table, tmp_path):
    log = pipeline.SkipLog(tmp_path / "skipped.log")
    dataset = pipeline.make_dataset(mixed_table, PARAMS, training=True, batch_size=BATCH,
                                    cache=True, skip_log=log)
    batches = _epoch(dataset)
    assert len(batches) == math.ceil(len(table) / BATCH)
    assert sum(len(b[1]) for b in batches) == len(table)
    assert all(b[0].shape[1:] == (PARAMS.clip_samples,) for b in batches)
    assert log.skipped == 4
    reasons = log.reasons()
    assert len(reasons) == 4
    for name, path in bad_files.items():
        (line,) = [line for line in reasons if str(path) in line]
        reason = line.split(":", 1)[1].strip().strip('"')
        assert reason, f"no reason logged for the {name} file: {line!r}"
    assert any("truncated data chunk" in line for line in reasons)
    # Decoded recordings are cached after the filter: a second epoch skips (and logs) nothing new.
    assert len(_epoch(dataset)) == len(batches)
    assert log.skipped == 4


def test_skip_log_counts_distinct_files(mixed_table, tmp_path):
    log = pipeline.SkipLog(tmp_path / "skipped.log")
    # Two datasets sharing one log (as folds, validation and scoring do), read twice each.
    for _ in range(2):
        dataset = pipeline.make_dataset(mixed_table, PARAMS, training=False, batch_size=BATCH,
                                        skip_log=log)
        _epoch(dataset)
        _epoch(dataset)
    assert log.skipped == 4
    assert int(log.count.numpy()) == 16 == len(log.reasons())


def test_missing_file_does_not_end_the_epoch(table, tmp_path):
    missing = pd.DataFrame({"path": [str(tmp_path / "gone.wav")], "speaker": "98",
                            "gender": ["female"]})
    mixed = pd.concat([missing, table], ignore_index=True)
    batches = _epoch(pipeline.make_dataset(mixed, PARAMS, training=False, batch_size=BATCH,
                                           skip_log=pipeline.SkipLog(tmp_path / "log")))
    assert sum(len(b[1]) for b in batches) == len(table)


def test_evaluation_is_deterministic_and_in_table_order(mixed_table, table, tmp_path):
    def run():
        return _epoch(pipeline.make_dataset(mixed_table, PARAMS, training=False,
                                            batch_size=BATCH, with_paths=True,
                                            skip_log=pipeline.SkipLog(tmp_path / "log")))

    first, second = run(), run()
    paths = [p.decode() for b in first for p in b[2]]
    assert paths == list(table["path"])  # the good files, in the table's order
    labels = np.concatenate([b[1] for b in first])
    np.testing.assert_array_equal(labels, pipeline.labels_of(table))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
    # The evaluation window of a recording no longer than a window is the whole recording,
    # centred. Bad files leave their batches short, so clips are counted over all batches.
    waveform, error = decoding.load_recording(tf.constant(paths[4]), PARAMS)
    assert error.numpy() == b""
    room = PARAMS.clip_samples - len(waveform)
    # Its own DC offset removed (the window's samples are the recording's).
    centred = waveform.numpy() - waveform.numpy().mean()
    expected = np.pad(centred, [room // 2, room - room // 2])
    clips = np.concatenate([b[0] for b in first])
    np.testing.assert_allclose(clips[4], expected, atol=1e-6)


def test_training_batches_repeat_with_the_seed(long_table, tmp_path):
    def epochs(seed, count=2):
        dataset = pipeline.make_dataset(long_table, PARAMS, training=True, batch_size=BATCH,
                                        seed=seed, deterministic=True, with_paths=True,
                                        skip_log=pipeline.SkipLog(tmp_path / "log"))
        return [_epoch(dataset) for _ in range(count)]

    def same(a, b):
        return all(np.array_equal(x, y) for batch_a, batch_b in zip(a, b)
                   for x, y in zip(batch_a, batch_b))

    run, rerun, other = epochs(1), epochs(1), epochs(2)
    assert same(run[0], rerun[0]) and same(run[1], rerun[1])
    assert not same(run[0], other[0])
    # A new epoch reshuffles and recrops.
    assert not same(run[0], run[1])
    # The same clips, some cropped differently (16000-sample recordings leave room to move).
    first, second = _by_path(run[0]), _by_path(run[1])
    assert first.keys() == second.keys() == set(long_table["path"])
    assert any(not np.allclose(first[p], second[p]) for p in first)


def test_sample_weights_balance_the_genders(long_table, tmp_path):
    weights = pipeline.balancing_weights(long_table)
    # 3 female and 3 male speakers with 4 clips each: balanced, every weight 1.
    np.testing.assert_allclose(weights, 1.0, rtol=1e-6)
    unbalanced = long_table.iloc[:-4]  # drop one speaker's clips
    weights = pipeline.balancing_weights(unbalanced)
    labels = pipeline.labels_of(unbalanced)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())
    assert weights.mean() == pytest.approx(1.0)
    weight_of = dict(zip(unbalanced["path"], weights))
    batches = _epoch(pipeline.make_dataset(unbalanced, PARAMS, training=True, batch_size=BATCH,
                                           sample_weights=weights, with_paths=True,
                                           skip_log=pipeline.SkipLog(tmp_path / "log")))
    assert all(len(batch) == 4 for batch in batches)
    for _, _, weight, paths in batches:
        np.testing.assert_allclose(weight, [weight_of[p.decode()] for p in paths],
                                   rtol=1e-6)


def test_sample_weights_even_out_corpora_and_genders():
    # Corpus a: 30 male clips, 10 female; corpus b: 4 male, 6 female.
    table = pd.DataFrame({
        "path": [f"p{i}" for i in range(50)],
        "gender": ["male"] * 30 + ["female"] * 10 + ["male"] * 4 + ["female"] * 6,
        "corpus": ["a"] * 40 + ["b"] * 10})
    weights = pipeline.balancing_weights(table)
    totals = pd.Series(weights).groupby([table["corpus"], table["gender"]]).sum()
    np.testing.assert_allclose(totals.to_numpy(), totals.mean(), rtol=1e-5)
    assert weights.mean() == pytest.approx(1.0)
    # A corpus with female speakers only shares the female half with the other corpus.
    table = pd.DataFrame({"path": [f"p{i}" for i in range(30)],
                          "gender": ["male"] * 10 + ["female"] * 5 + ["female"] * 15,
                          "corpus": ["a"] * 15 + ["b"] * 15})
    weights = pipeline.balancing_weights(table)
    totals = pd.Series(weights).groupby([table["corpus"], table["gender"]]).sum()
    assert totals[("a", "male")] == pytest.approx(len(table) / 2)
    assert totals[("a", "female")] == pytest.approx(len(table) / 4)
    assert totals[("b", "female")] == pytest.approx(len(table) / 4)


def test_balancing_weights_need_both_genders(long_table):
    with pytest.raises(ValueError, match="both genders"):
        pipeline.balancing_weights(long_table[long_table["gender"] == "female"])


def test_augmentation_is_off_by_default_and_on_when_asked(table, tmp_path):
    def by_path(training, augment_params=None):
        return _by_path(_epoch(pipeline.make_dataset(
            table, PARAMS, training=training, batch_size=BATCH, seed=3, with_paths=True,
            augment_params=augment_params, skip_log=pipeline.SkipLog(tmp_path / "log"))))

    evaluation = by_path(False)
    plain = by_path(True)
    assert plain.keys() == evaluation.keys()
    for path in plain:
        np.testing.assert_allclose(plain[path], evaluation[path], atol=1e-4)
    augmented = by_path(True, AugmentParams(gain_db=6.0, noise_snr_db=20.0, time_masks=1,
                                            frequency_masks=1))
    changed = [not np.allclose(augmented[p], evaluation[p], atol=1e-3) for p in augmented]
    assert all(changed)
    # The recording-conditions recipe (training's default) changes some windows, not all.
    recipe = by_path(True, AugmentParams())
    changed = [not np.allclose(recipe[p], evaluation[p], atol=1e-3) for p in recipe]
    assert any(changed)


def _multitone(rate: int, seconds: float) -> np.ndarray:
    """Tones every 113 Hz from 150 Hz to 7 kHz (inside the resampler's passband at 16 kHz),
    with fixed random phases: the same analytic signal sampled at any rate."""
    t = np.arange(int(rate * seconds)) / rate
    frequencies = np.arange(150.0, 7000.0, 113.0)
    phases = np.random.default_rng(0).uniform(0, 2 * np.pi, len(frequencies))
    tones = np.sin(2 * np.pi * frequencies[:, None] * t + phases[:, None]).sum(axis=0)
    return 0.6 * tones / np.max(np.abs(tones))


def test_48khz_24bit_stereo_matches_16khz_mono(tmp_path):
    mono = wavfiles.write_wav(tmp_path / "mono16k.wav", _multitone(16000, 1.5), 16000, "PCM_24")
    x = _multitone(48000, 1.5)
    side = 0.2 * np.sin(2 * np.pi * 500.0 * np.arange(len(x)) / 48000)
    # Downmixing averages the channels, which cancels `side`.
    stereo = wavfiles.write_wav(tmp_path / "stereo48k.wav",
                                np.stack([0.75 * x + side, 0.75 * x - side], axis=1), 48000,
                                "PCM_24")
    table = pd.DataFrame({"path": [str(mono), str(stereo)], "speaker": ["1", "2"],
                          "gender": ["female", "male"]})
    (batch,) = _epoch(pipeline.make_dataset(table, PARAMS, training=False, batch_size=2,
                                            skip_log=pipeline.SkipLog(tmp_path / "log")))
    mono_features, stereo_features = features.FrontEnd(PARAMS)(batch[0]).numpy()
    # 0.75 x the amplitude: log-mel shifts by log(0.75^1) where the tones dominate.
    difference = stereo_features - (mono_features + np.log(0.75))
    # Every band holds a tone, so the log offset barely matters; what is left is the
    # resampler's passband ripple and leakage, well under 1% (measured: 0.12%).
    assert np.max(np.abs(difference)) < 0.01


def test_recordings_dataset_gives_whole_recordings(mixed_table, table, tmp_path):
    log = pipeline.SkipLog(tmp_path / "log")
    recordings = list(pipeline.recordings_dataset(mixed_table["path"].to_numpy(), PARAMS, log))
    assert [p.numpy().decode() for p, _ in recordings] == list(table["path"])
    assert all(w.shape == (15600,) for _, w in recordings)
    # As decoded and resampled: the windows cut from them remove each its own DC offset.
    for path, waveform in recordings:
        expected, error = decoding.load_recording(path, PARAMS)
        assert error.numpy() == b""
        np.testing.assert_array_equal(waveform, expected)
    assert log.skipped == 4


def test_no_python_functions_in_the_graph(mixed_table, tmp_path):
    dataset = pipeline.make_dataset(mixed_table, PARAMS, training=True, batch_size=BATCH,
                                    augment_params=AugmentParams(gain_db=3.0, time_masks=1),
                                    sample_weights=np.linspace(1, 2, len(mixed_table)),
                                    skip_log=pipeline.SkipLog(tmp_path / "log"))
    # external_state_policy=1: serialise although the skip counter is a variable.
    serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=dataset._variant_tensor,
                                             external_state_policy=1)
    graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    assert {"ReadFile", "Cumsum", "ShuffleDatasetV3"} <= ops  # the map functions are in
    assert not {op for op in ops if "PyFunc" in op or "Py" == op[:2]}


def test_decode_batch_size_shrinks_for_long_files(tmp_path):
    short = tmp_path / "short.wav"
    short.write_bytes(b"x" * 1000)
    long = tmp_path / "long.wav"
    long.write_bytes(b"")
    with long.open("r+b") as handle:  # sparse: 20 MB without writing them
        handle.truncate(20 << 20)
    assert pipeline.decode_batch_size(np.array([str(short)]), 64) == 64
    assert pipeline.decode_batch_size(np.array([str(short), str(long)]), 64) == 3
    assert pipeline.decode_batch_size(np.array([str(tmp_path / "gone.wav")]), 64) == 64


def _pcm16_header(frames: int, rate: int) -> bytes:
    data = frames * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


def test_training_reads_a_nine_hour_recording_in_segments(table, tmp_path):
    # 1 GB of samples (a sparse file: no disk used), past the decoder's 4-hour limit: read
    # whole, it would be skipped as too long, after reading and holding a gigabyte.
    frames = 9 * 3600 * 16000
    long_path = tmp_path / "nine-hours.wav"
    with open(long_path, "wb") as stream:
        stream.write(_pcm16_header(frames, 16000))
        stream.truncate(44 + 2 * frames)
    assert list(pipeline.long_recordings(np.array([str(long_path)]))) == [str(long_path)]
    with_long = pd.concat([table, table.iloc[:1].assign(path=str(long_path))], ignore_index=True)
    skip_log = pipeline.SkipLog(tmp_path / "skipped.log")
    dataset = pipeline.make_dataset(with_long, PARAMS, training=True, batch_size=BATCH, seed=2,
                                    skip_log=skip_log, with_paths=True)
    for _ in range(2):
        paths = [path.decode() for batch in dataset for path in batch[-1].numpy()]
        assert sorted(paths) == sorted(with_long["path"])
    assert skip_log.skipped == 0


def test_long_recording_crops_are_slices_of_the_file_from_varying_places(table, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(pipeline, "LONG_RECORDING_BYTES", 0)
    monkeypatch.setattr(pipeline, "CROP_SEGMENT_SECONDS", 1.5)
    samples = np.random.default_rng(4).uniform(-0.5, 0.5, 16000 * 6)
    long_path = wavfiles.write_wav(tmp_path / "six-seconds.wav", samples, 16000, "PCM_16")
    expected = soundfile.read(long_path, dtype="float32")[0]
    one = table.iloc[:1].assign(path=str(long_path))
    dataset = pipeline.make_dataset(one, PARAMS, training=True, batch_size=1, seed=5)
    starts = []
    for _ in range(4):
        (batch,) = list(dataset)
        window = batch[0].numpy()[0]
        # Where the window sits in the file: the peak of their cross-correlation.
        start = int(np.argmax(scipy.signal.correlate(expected, window, mode="valid")))
        piece = expected[start:start + len(window)]
        np.testing.assert_allclose(window, piece - piece.mean(), atol=1e-5)
        starts.append(start)
    assert len(set(starts)) > 1


def test_a_long_recording_that_shrank_since_listing_costs_only_itself(table, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setattr(pipeline, "LONG_RECORDING_BYTES", 0)
    monkeypatch.setattr(pipeline, "CROP_SEGMENT_SECONDS", 1.0)
    long_path = wavfiles.write_wav(tmp_path / "five-seconds.wav",
                                   np.random.default_rng(6).uniform(-0.5, 0.5, 16000 * 5), 16000)
    with_long = pd.concat([table, table.iloc[:1].assign(path=str(long_path))], ignore_index=True)
    dataset = pipeline.make_dataset(with_long, PARAMS, training=True, batch_size=BATCH, seed=3,
                                    with_paths=True)
    with open(long_path, "r+b") as stream:  # the segments were planned on the whole file
        stream.truncate(1000)
    paths = [path.decode() for batch in dataset for path in batch[-1].numpy()]
    assert sorted(paths) == sorted(table["path"])


def test_a_long_recording_listed_twice_gives_two_crops(table, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "LONG_RECORDING_BYTES", 0)
    monkeypatch.setattr(pipeline, "CROP_SEGMENT_SECONDS", 1.0)
    long_path = wavfiles.write_wav(tmp_path / "five-seconds.wav",
                                   np.random.default_rng(7).uniform(-0.5, 0.5, 16000 * 5), 16000)
    twice = table.iloc[:2].assign(path=str(long_path), gender=["female", "male"])
    dataset = pipeline.make_dataset(twice, PARAMS, training=True, batch_size=2, seed=1,
                                    with_paths=True)
    (batch,) = list(dataset)
    assert sorted(batch[1].numpy().tolist()) == [0.0, 1.0]
    assert [path.decode() for path in batch[-1].numpy()] == [str(long_path)] * 2
