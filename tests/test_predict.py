"""predict CLI on WAV variants, broken files and a recording whose speaker changes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import helpers
import wavfiles
from speakergender import predict, serving, synthetic

RATE = 16000


@pytest.fixture(scope="module")
def model_dir(exported_model) -> Path:
    return exported_model


@pytest.fixture(scope="module", autouse=True)
def load_each_model_once():
    """predict.main loads the SavedModel on every call; here once per model is enough."""
    loaded = {}
    load_model = serving.load_model

    def load_once(model, *args):
        key = (str(model), *map(str, args))
        if key not in loaded:
            loaded[key] = load_model(model, *args)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serving, "load_model", load_once)
        yield


@pytest.fixture(scope="module")
def voice_clip() -> np.ndarray:
    """1.5 s of a synthetic female voice at 16 kHz."""
    rng = np.random.default_rng(21)
    return synthetic.utterance(synthetic.speaker_voice("female", rng), 1.5, RATE, rng)


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory, voice_clip) -> dict[str, Path]:
    """The same clip in many encodings, and files that cannot be read."""
    folder = tmp_path_factory.mktemp("predict")
    x = voice_clip
    files = {
        "pcm8": wavfiles.write_wav(folder / "pcm8.wav", x, RATE, "PCM_U8"),
        "pcm16": wavfiles.write_wav(folder / "pcm16.wav", x, RATE, "PCM_16"),
        "pcm24": wavfiles.write_wav(folder / "pcm24.wav", x, RATE, "PCM_24"),
        "pcm32": wavfiles.write_wav(folder / "pcm32.wav", x, RATE, "PCM_32"),
        "float": wavfiles.write_wav(folder / "float.wav", x, RATE, "FLOAT"),
        "extensible": wavfiles.write_wav(folder / "extensible.wav", x, RATE, "PCM_24",
                                         format="WAVEX"),
        "stereo": wavfiles.write_wav(folder / "stereo.wav", np.stack([x, x], axis=1), RATE),
        "8khz": wavfiles.write_wav(folder / "8khz.wav", signal.resample_poly(x, 1, 2), 8000),
        "96khz": wavfiles.write_wav(folder / "96khz.wav", signal.resample_poly(x, 6, 1), 96000,
                                    "PCM_24"),
        "flac": folder / "flac.flac",
        "silent": wavfiles.write_wav(folder / "silent.wav", np.zeros(RATE), RATE),
        "empty": folder / "empty.wav",
        "corrupt": folder / "corrupt.wav",
    }
    sf.write(files["flac"], x, RATE, format="FLAC", subtype="PCM_16")
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 40)
    (folder / "notes.txt").write_text("not audio, and not picked up from a folder\n")
    return files


GOOD = ("pcm8", "pcm16", "pcm24", "pcm32", "float", "extensible", "stereo", "8khz", "96khz",
        "flac")
BAD = ("empty", "corrupt")


@pytest.fixture(scope="module")
def json_rows(model_dir, audio_folder, tmp_path_factory) -> dict[str, dict]:
    """--json over the folder and a missing path, by file stem (missing: 'missing')."""
    missing = tmp_path_factory.mktemp("nothing") / "missing.wav"
    status, out, _ = _predict([str(model_dir), str(audio_folder["pcm16"].parent), str(missing),
                               "--json"])
    assert status == 1
    rows = [json.loads(line) for line in out.splitlines()]
    return {Path(row["path"]).stem: row for row in rows}


def _predict(argv: list[str]) -> tuple[int, str, str]:
    """Runs predict.main, returning (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = predict.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_every_good_file_is_classified(json_rows):
    assert set(json_rows) == set(GOOD) | set(BAD) | {"silent", "missing"}
    for name in GOOD:
        row = json_rows[name]
        assert row["error"] == "" and row["label"] in ("female", "male"), row
        assert row["duration_seconds"] == pytest.approx(1.5, abs=0.01)
        assert row["windows"] == 2  # 1.5 s: windows at 0 and 0.48 s; the 45 ms tail gets none


def test_encodings_give_the_same_answer(json_rows):
    reference = json_rows["pcm16"]["female_probability"]
    assert json_rows["pcm16"]["label"] == "female"
    # Lossless or finer than 16 bits: the same up to rounding and resampling.
    for name in ("pcm24", "pcm32", "float", "extensible", "stereo", "flac", "96khz"):
        assert json_rows[name]["female_probability"] == pytest.approx(reference, abs=0.02), name
    # 8-bit quantisation noise (-48 dB) changes the features, though not the answer.
    assert json_rows["pcm8"]["label"] == "female"
    # An 8 kHz file has nothing above 4 kHz, where the synthetic formants differ most; it is
    # classified (see test_every_good_file_is_classified) but this tiny model may be wrong.


def test_silence_and_bad_files(json_rows):
    assert json_rows["silent"]["label"] == "no speech"
    assert json_rows["missing"]["error"] == "no such file or folder"
    assert json_rows["empty"]["error"] and json_rows["corrupt"]["error"]
    for name in BAD + ("missing",):
        assert "label" not in json_rows[name]


def test_table_output_names_each_bad_file(model_dir, audio_folder, tmp_path):
    missing = tmp_path / "missing.wav"
    status, out, err = _predict([str(model_dir), str(audio_folder["pcm16"].parent),
                                 str(missing)])
    assert status == 1
    lines = err.strip().splitlines()
    for path in (audio_folder["empty"], audio_folder["corrupt"], missing):
        (line,) = [line for line in lines if line.startswith(f"{path}: ")]
        assert len(line) > len(f"{path}: ")
    assert lines[-1] == "3 of 14 file(s) could not be classified"
    table = out.splitlines()
    assert table[0].split() == ["file", "label", "P(female)", "seconds", "note"]
    assert len(table) == 1 + 14
    assert any(line.startswith(str(audio_folder["silent"])) and "no speech" in line
               for line in table)


def test_all_good_exits_zero(model_dir, audio_folder):
    status, out, err = _predict([str(model_dir), str(audio_folder["pcm16"]), "--csv"])
    assert status == 0 and err == ""
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert list(row) == ["path", "label", "female_probability", "duration_seconds", "windows",
                         "windows_disagree", "error"]
    assert row["path"] == str(audio_folder["pcm16"]) and row["label"] == "female"


def test_threshold_changes_labels(model_dir, audio_folder, json_rows):
    folder = str(audio_folder["pcm16"].parent)
    status, out, _ = _predict([str(model_dir), folder, "--csv", "--threshold", "0"])
    assert status == 1
    rows = {Path(r["path"]).stem: r for r in csv.DictReader(io.StringIO(out))}
    assert all(rows[name]["label"] == "female" for name in GOOD)
    assert rows["silent"]["label"] == "no speech"  # silence stays silence
    assert rows["corrupt"]["label"] == "" and rows["corrupt"]["error"]
    _, out, _ = _predict([str(model_dir), folder, "--json", "--threshold", "1"])
    rows = {Path(r["path"]).stem: r for r in map(json.loads, out.splitlines())}
    for name in GOOD:
        # Printed probabilities are rounded: one shown as 1.0 may fall either side of 1.
        if rows[name]["female_probability"] < 1.0:
            assert rows[name]["label"] == "male"
    assert any(json_rows[name]["label"] == "female" and rows[name]["label"] == "male"
               for name in GOOD)


@pytest.fixture(scope="module")
def changing_speaker(tmp_path_factory) -> Path:
    """Three clips of a female voice, then three of a male voice: 6 s, 11 windows (the last
    0.225 s, under half a hop, gets none of its own)."""
    rng = np.random.default_rng(31)
    female, male = (synthetic.speaker_voice(g, rng) for g in ("female", "male"))
    clips = [synthetic.utterance(female, 1.0, RATE, rng) for _ in range(3)]
    clips += [synthetic.utterance(male, 1.0, RATE, rng) for _ in range(3)]
    return wavfiles.write_wav(tmp_path_factory.mktemp("long") / "two_speakers.wav",
                              np.concatenate(clips), RATE)


def test_timeline_shows_windows_that_disagree(model_dir, changing_speaker):
    status, out, _ = _predict([str(model_dir), str(changing_speaker), "--json", "--timeline"])
    assert status == 0
    (row,) = [json.loads(line) for line in out.splitlines()]
    timeline = row["timeline"]
    assert row["windows"] == len(timeline) == 11
    assert [w["start_seconds"] for w in timeline] == pytest.approx(
        [0.48 * i for i in range(11)])
    probabilities = [w["female_probability"] for w in timeline]
    # The female half first, the male half last.
    assert min(probabilities[:4]) > 0.5 > max(probabilities[-4:])
    assert row["windows_disagree"] is True

    status, out, _ = _predict([str(model_dir), str(changing_speaker), "--timeline"])
    lines = out.splitlines()
    assert "windows disagree" in lines[1]
    window_lines = [line for line in lines if line.strip().startswith("@")]
    assert len(window_lines) == 11
    assert window_lines[5].split()[0:2] == ["@", "2.40s"]


# --- models exported by earlier versions ----------------------------------------------------------


@pytest.fixture(scope="module")
def legacy_model(tmp_path_factory) -> Path:
    """A SavedModel exported at commit 5c81d80, before models took waveforms and before the
    model said whether its windows disagree (a tiny feature-input classifier, calibrated with
    T = 1.5, b = 0.2; made by exporting a Keras model [96, 64] -> pooled -> Dense(1))."""
    import tarfile

    folder = tmp_path_factory.mktemp("legacy") / "legacy"
    with tarfile.open(Path(__file__).parent / "data" / "model_exported_at_5c81d80.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    return folder


def test_a_model_exported_before_waveform_models_still_predicts(legacy_model, audio_folder):
    status, out, _ = _predict([str(legacy_model), str(audio_folder["pcm16"]),
                               str(audio_folder["96khz"]), str(audio_folder["silent"]),
                               "--json", "--timeline"])
    assert status == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["label"] for row in rows[:2]] == [rows[0]["label"]] * 2
    assert rows[0]["label"] in ("female", "male") and rows[2]["label"] == "no speech"
    assert rows[0]["female_probability"] == pytest.approx(rows[1]["female_probability"],
                                                          abs=0.02)
    # Its SavedModel has no windows_disagree output: unknown, not a guess.
    assert all(row["windows_disagree"] is None for row in rows)
    assert len(rows[0]["timeline"]) == rows[0]["windows"] == 2


def test_a_model_exported_before_waveform_models_still_evaluates(legacy_model, tmp_path_factory):
    from speakergender import evaluate

    corpus = helpers.synthetic_corpus(tmp_path_factory, "legacy", female_speakers=1,
                                      male_speakers=1, clips_per_speaker=2, seed=4)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = evaluate.main([str(legacy_model), "--data-dir", str(corpus)])
    assert status == 0
    assert out.getvalue().splitlines()[2].split()[:2] == ["legacy", "4"]
