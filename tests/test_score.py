"""Beam batch scoring against predict on the same folder: good, silent, corrupt and long files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

import wavfiles
from speakergender import predict, serving, streaming, synthetic

beam = pytest.importorskip("apache_beam", reason="needs the beam extra")
from speakergender import beam_model_handler, beam_scoring, score  # noqa: E402

RATE = 16000
LONG_SECONDS = 40.0
# Short blocks, so that the long recording here is cut into many (by predict and Beam alike).
BLOCK_SECONDS = 4.0


@pytest.fixture(scope="module", autouse=True)
def short_blocks():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(streaming, "BLOCK_SECONDS", BLOCK_SECONDS)
        yield


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory) -> Path:
    """Voices in several encodings, silence, broken files, a long recording and a text file."""
    folder = tmp_path_factory.mktemp("score")
    rng = np.random.default_rng(14)
    female = synthetic.utterance(synthetic.speaker_voice("female", rng), 1.5, RATE, rng)
    male = synthetic.utterance(synthetic.speaker_voice("male", rng), 2.5, RATE, rng)
    wavfiles.write_wav(folder / "female.wav", female, RATE)
    wavfiles.write_wav(folder / "male_float.wav", male, RATE, "FLOAT")
    wavfiles.write_wav(folder / "stereo.wav", np.stack([male, 0.5 * male], axis=1), 44100)
    sf.write(folder / "female.flac", female, RATE, format="FLAC", subtype="PCM_16")
    wavfiles.write_wav(folder / "silent.wav", np.zeros(RATE), RATE)
    voices = [synthetic.utterance(synthetic.speaker_voice(gender, rng), 4.0, RATE, rng)
              for gender in ("female", "male") * int(LONG_SECONDS / 8)]
    wavfiles.write_wav(folder / "long.wav", np.concatenate(voices), RATE)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00"
                                         + b"\xff" * 40)
    (folder / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not audio: skipped, as predict skips it in a folder\n")
    return folder


GOOD = ("female", "male_float", "stereo", "female.flac", "long", "silent")
BAD = ("empty", "corrupt", "broken.flac")


def _run(main, argv: list[str]) -> tuple[int, str, str]:
    """Runs a CLI's main, returning (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _output_lines(prefix: Path, suffix: str) -> list[str]:
    return [line for shard in sorted(prefix.parent.glob(f"{prefix.name}-*{suffix}"))
            for line in shard.read_text().splitlines()]


@pytest.fixture(scope="module")
def predict_rows(exported_model, audio_folder) -> dict[str, dict]:
    """predict --json over the folder, by path."""
    status, out, _ = _run(predict.main, [str(exported_model), str(audio_folder), "--json"])
    assert status == 1
    return {row["path"]: row for row in map(json.loads, out.splitlines())}


@pytest.fixture(scope="module")
def score_run(exported_model, audio_folder, tmp_path_factory) -> tuple[int, str, list[str]]:
    """score over the folder on the DirectRunner: (status, stderr, output lines)."""
    prefix = tmp_path_factory.mktemp("rows") / "rows"
    status, _, err = _run(score.main, [str(exported_model), "--input", f"{audio_folder}/*",
                                       "--output", str(prefix), "--batch-size", "4"])
    return status, err, _output_lines(prefix, ".jsonl")


def _name(path: str) -> str:
    name = Path(path).name
    return name if name.endswith(".flac") else Path(name).stem


def test_every_audio_file_gets_one_row(score_run):
    status, err, lines = score_run
    names = sorted(_name(json.loads(line)["path"]) for line in lines)
    assert names == sorted(GOOD + BAD)
    assert status == 1
    assert "9 file(s): 6 scored, 3 could not be classified" in err


def test_the_long_recording_is_scored_in_blocks(exported_model, audio_folder):
    grid = beam_scoring.BlockGrid.of(serving.load_model(exported_model))
    assert grid.scores_blocks
    pieces = beam_scoring.split_recording(
        beam.io.filesystem.FileMetadata(str(audio_folder / "long.wav"), 0), grid)
    assert len(pieces) >= 5 and all(isinstance(p, streaming.Block) for _, p in pieces)
    short = beam_scoring.split_recording(
        beam.io.filesystem.FileMetadata(str(audio_folder / "female.wav"), 123), grid)
    assert short == [(str(audio_folder / "female.wav"),
                      beam_scoring.WholeRecording(str(audio_folder / "female.wav"), 123))]


def test_rows_equal_predicts(score_run, predict_rows):
    # Both name files by absolute path: MatchFiles returns them so, and predict was given an
    # absolute folder.
    rows = {row["path"]: row for row in map(json.loads, score_run[2])}
    assert rows == predict_rows
    assert rows[next(p for p in rows if _name(p) == "long")]["duration_seconds"] == \
        pytest.approx(LONG_SECONDS, abs=0.01)
    for name in BAD:
        assert rows[next(p for p in rows if _name(p) == name)]["error"], name


def test_csv_rows_equal_predicts(exported_model, audio_folder, tmp_path):
    _, out, _ = _run(predict.main, [str(exported_model), str(audio_folder), "--csv",
                                    "--threshold", "0.7"])
    expected = list(csv.DictReader(io.StringIO(out)))
    status, _, _ = _run(score.main, [str(exported_model), "--input", f"{audio_folder}/*.*",
                                     "--output", str(tmp_path / "rows"), "--format", "csv",
                                     "--threshold", "0.7"])
    assert status == 1
    lines = _output_lines(tmp_path / "rows", ".csv")
    header = lines[0]
    rows = list(csv.DictReader(io.StringIO("\n".join(
        [header] + [line for line in lines if line != header]))))
    assert ({row["path"]: row for row in rows} == {row["path"]: row for row in expected})


def test_a_missing_model_is_reported_before_beam_starts(tmp_path):
    status, _, err = _run(score.main, [str(tmp_path / "nothing"), "--input", "x/*",
                                       "--output", str(tmp_path / "rows")])
    assert status == 2 and "no model at" in err


def test_only_audio_files_are_scored():
    assert beam_scoring.is_audio_file("/data/a.WAV")
    assert beam_scoring.is_audio_file("/data/b.flac")
    assert not beam_scoring.is_audio_file("/data/notes.txt")
    assert not beam_scoring.is_audio_file("/data/.hidden.wav")


class _Bytes:
    def __init__(self, data: bytes):
        self.data = data

    def read(self) -> bytes:
        return self.data


class _Unreadable:
    def read(self) -> bytes:
        raise PermissionError(13, "Permission denied")


def test_handler_turns_read_errors_into_rows(exported_model, audio_folder):
    handler = beam_model_handler.ClassifyWavModelHandler(str(exported_model), batch_size=4)
    model = handler.load_model()
    good = _Bytes((audio_folder / "female.wav").read_bytes())
    results = list(handler.run_inference([good, _Unreadable(), good], model))
    assert [r.inference["error"] for r in results] == [b"", b"Permission denied", b""]
    assert results[0].inference["label"] == results[2].inference["label"] == b"female"


class _RejectsBatchesWith:
    """Stands in for a model whose call fails on a whole batch because of one input."""

    def __init__(self, model: serving.LoadedModel, poison: bytes):
        self.model, self.poison = model, poison

    def classify_wav(self, wav_bytes: tf.Tensor) -> dict:
        if self.poison in wav_bytes.numpy().tolist():
            raise tf.errors.InvalidArgumentError(None, None, "cannot take this one")
        return self.model.classify_wav(wav_bytes=wav_bytes)


def test_a_batch_the_model_rejects_is_scored_file_by_file(exported_model, audio_folder):
    handler = beam_model_handler.ClassifyWavModelHandler(str(exported_model))
    model = _RejectsBatchesWith(handler.load_model(), b"poison")
    model.path = exported_model
    good = _Bytes((audio_folder / "female.wav").read_bytes())
    results = list(handler.run_inference([good, _Bytes(b"poison"), good], model))
    errors = [r.inference["error"] for r in results]
    assert errors[0] == errors[2] == b""
    assert b"cannot take this one" in errors[1]
