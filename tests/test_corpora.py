"""Corpus loading: synthetic AudioMNIST (JSON, CSV metadata), manifests, the shared corpus."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from speakergender.corpora import (
    Corpus, CorpusError, CorpusProblem, load_corpus, parse_gender, speaker_table, summary)


def _touch(path: Path, data: bytes = b"RIFF") -> Path:
    """Writes a tiny stand-in file; corpora never decodes audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _clips(folder: Path, speaker: str, digits: range = range(2), reps: range = range(1, 3)) -> None:
    """Writes D_SS_R.wav files into one speaker folder."""
    for digit in digits:
        for rep in reps:
            _touch(folder / f"{digit}_{speaker}_{rep}.wav")


@pytest.fixture
def json_corpus(tmp_path: Path) -> Path:
    """AudioMNIST as published: data/NN/ with data/audioMNIST_meta.txt, plus junk and odd files."""
    data = tmp_path / "data"
    meta = {
        "01": {"accent": "german", "age": "1234", "gender": "male", "native speaker": "no",
               "origin": "Europe, Germany, Berlin", "recordingdate": "17-06-22-11-04-28",
               "recordingroom": "Kino"},
        "02": {"accent": "Spanish", "age": 30, "gender": " Female ", "native speaker": "yes",
               "origin": "South America, Chile", "recordingdate": "17-06-22", "recordingroom": 7},
        "03": {"accent": "german", "age": "25", "gender": "MALE\n", "native speaker": "no"},
    }
    for speaker in meta:
        _clips(data / speaker, speaker)
    _clips(data / "07", "07", digits=range(1))  # no metadata entry: 2 files
    (data / "audioMNIST_meta.txt").write_text(json.dumps(meta, indent=1))
    _touch(data / "01" / ".DS_Store")
    _touch(data / "01" / "._0_01_1.wav")  # macOS resource fork, not audio
    _touch(data / "02" / "notes.txt")
    _touch(tmp_path / "config.yaml", b"a: 1\n")
    _touch(data / "02" / "recording copy.wav")  # folder still names the speaker
    _touch(data / "03" / "0_09_1.wav")  # name and folder disagree
    _touch(data / "stray.wav")  # no speaker folder
    return tmp_path


def test_json_layout_table(json_corpus: Path):
    corpus = load_corpus(json_corpus)
    table = corpus.table
    assert corpus.format == "audiomnist-json"
    assert list(table.columns[:5]) == ["path", "speaker", "gender", "digit", "repetition"]
    assert {"age", "accent", "native_speaker", "origin", "recordingroom"} <= set(table.columns)
    assert str(table["digit"].dtype) == "Int64" and str(table["repetition"].dtype) == "Int64"
    assert str(table["age"].dtype) == "Int64"
    assert table["path"].tolist() == sorted(table["path"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    # 3 labeled speakers x 4 clips, plus the badly named file of speaker 02.
    assert len(table) == 13
    assert speaker_table(table).drop(columns="corpus").to_dict("list") == {
        "speaker": ["01", "02", "03"], "gender": ["male", "female", "male"], "clips": [4, 5, 4]}
    ages = table.groupby("speaker")["age"].first()
    assert pd.isna(ages["01"]) and ages["02"] == 30 and ages["03"] == 25  # "1234" is no age
    assert table.loc[table["speaker"] == "02", "recordingroom"].iloc[0] == "7"
    odd = table[table["path"].str.endswith("recording copy.wav")]
    assert len(odd) == 1 and odd["digit"].isna().all() and odd["repetition"].isna().all()
    row = table[table["path"].str.endswith("1_03_2.wav")].iloc[0]
    assert (row["speaker"], row["digit"], row["repetition"]) == ("03", 1, 2)
    assert not table["path"].str.contains(r"\.DS_Store|/\._|\.txt|\.yaml").any()


def test_json_layout_problems_are_named(json_corpus: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="speakergender.corpora"):
        corpus = load_corpus(json_corpus)
    reasons = {Path(p.path).name: p.reason for p in corpus.problems}
    assert set(reasons) == {"0_07_1.wav", "0_07_2.wav", "0_09_1.wav", "stray.wav"}
    assert "speaker 07 has no entry in audioMNIST_meta.txt" == reasons["0_07_1.wav"]
    assert "speaker 09" in reasons["0_09_1.wav"] and "folder 03" in reasons["0_09_1.wav"]
    assert "speaker folder" in reasons["stray.wav"]
    assert all(isinstance(p, CorpusProblem) and Path(p.path).is_absolute() for p in corpus.problems)
    logged = caplog.text
    assert "skipped 2 file(s): speaker 07 has no entry" in logged
    assert "0_09_1.wav" in logged and "stray.wav" in logged
    assert "recording copy.wav" in logged  # kept, but not silently
    assert "age '1234'" in logged


def test_json_metadata_at_root_without_data_folder(tmp_path: Path):
    _clips(tmp_path / "01", "01")
    _clips(tmp_path / "02", "02")
    (tmp_path / "audioMNIST_meta.txt").write_text(
        json.dumps({"01": {"gender": "female", "age": 22}, "02": {"gender": "male"}}))
    corpus = load_corpus(str(tmp_path))
    assert corpus.format == "audiomnist-json"
    assert speaker_table(corpus.table)["gender"].tolist() == ["female", "male"]
    assert corpus.problems == ()


def _write_csv_metadata(path: Path, rows: list[str]) -> None:
    """metadata.txt as shipped: CRLF line endings, no newline after the last row."""
    header = "SPK ID,0,1,2,3,4,5,6,7,8,9,Gender"
    path.write_bytes("\r\n".join([header, *rows]).encode())


def test_csv_metadata_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    for speaker in ("01", "04", "12", "13"):
        _clips(tmp_path / "data" / speaker, speaker)
    # Counts say 5 per digit, files say 2: the files win. Speaker 13 has no row.
    _write_csv_metadata(tmp_path / "metadata.txt",
                        ["1,5,5,5,5,5,5,5,5,5,5,M", "4,5,5,5,5,5,5,5,5,5,5, f ",
                         "12,2,2,0,0,0,0,0,0,0,0,F"])
    with caplog.at_level(logging.INFO, logger="speakergender.corpora"):
        corpus = load_corpus(tmp_path)
    assert corpus.format == "audiomnist-csv"
    assert speaker_table(corpus.table).drop(columns="corpus").to_dict("list") == {
        "speaker": ["01", "04", "12"], "gender": ["male", "female", "female"], "clips": [4, 4, 4]}
    assert [Path(p.path).name for p in corpus.problems] == [
        "0_13_1.wav", "0_13_2.wav", "1_13_1.wav", "1_13_2.wav"]
    assert {p.reason for p in corpus.problems} == {"speaker 13 has no entry in metadata.txt"}
    assert "using the files" in caplog.text
    assert summary(corpus) == "3 speakers (2 female, 1 male), 12 clips; 4 files skipped"


def test_csv_metadata_unrecognised_gender_is_a_problem(tmp_path: Path):
    _clips(tmp_path / "01", "01")
    _clips(tmp_path / "02", "02")
    _write_csv_metadata(tmp_path / "metadata.txt",
                        ["1,2,2,0,0,0,0,0,0,0,0,M", "2,2,2,0,0,0,0,0,0,0,0,X"])
    corpus = load_corpus(tmp_path / "metadata.txt")  # the metadata file itself also works
    assert corpus.table["speaker"].unique().tolist() == ["01"]
    assert len(corpus.problems) == 4
    assert all("unrecognised gender 'X'" in p.reason for p in corpus.problems)
    assert summary(corpus).endswith("4 files skipped")


def test_csv_metadata_conflicting_rows_are_a_problem(tmp_path: Path):
    _clips(tmp_path / "01", "01")
    _clips(tmp_path / "02", "02")
    _write_csv_metadata(tmp_path / "metadata.txt", [
        "1,2,2,0,0,0,0,0,0,0,0,M", "2,2,2,0,0,0,0,0,0,0,0,F", "01,2,2,0,0,0,0,0,0,0,0,F"])
    corpus = load_corpus(tmp_path)
    assert corpus.table["speaker"].unique().tolist() == ["02"]
    assert {p.reason for p in corpus.problems} == {"speaker 01 has conflicting rows in metadata.txt"}


def _manifest_corpus(tmp_path: Path) -> Path:
    """A user's folder: clips in subfolders, manifest.csv with relative and absolute paths."""
    for name in ("a/1.wav", "a/2.flac", "b/1.ogg", "b/2.WAV", "c/1.wav", "notes.txt"):
        _touch(tmp_path / "clips" / name)
    outside = _touch(tmp_path.parent / f"{tmp_path.name}-outside.wav")
    rows = [
        "path,speaker,gender,session",
        "clips/a/1.wav,alice,F,1",
        "clips/a/2.flac,alice, female ,2",
        f"{outside},bob,M,1",
        "./clips/b/1.ogg,bob,MALE,1",
        "clips/b/2.WAV,bob,male,2",
        "clips/c/1.wav,carol,other,1",
        "clips/missing.wav,carol,F,1",
        "clips/notes.txt,carol,F,1",
        "clips/a/1.wav,alice,F,1",
    ]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_manifest_from_folder_and_file(tmp_path: Path):
    root = _manifest_corpus(tmp_path)
    for source in (root, root / "manifest.csv"):
        corpus = load_corpus(source)
        assert corpus.format == "manifest"
        table = corpus.table
        assert list(table.columns) == ["path", "speaker", "gender", "digit", "repetition",
                                       "corpus", "session"]
        assert table["path"].tolist() == sorted(table["path"])
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
        assert speaker_table(table).drop(columns="corpus").to_dict("list") == {
            "speaker": ["alice", "bob"], "gender": ["female", "male"], "clips": [2, 3]}
        assert table["digit"].isna().all()
        reasons = {Path(p.path).name: p.reason for p in corpus.problems}
        assert set(reasons) == {"1.wav", "missing.wav", "notes.txt"} and len(corpus.problems) == 4
        assert "missing on disk" in reasons["missing.wav"]
        assert "not an audio file" in reasons["notes.txt"]
        assert {p.reason for p in corpus.problems if p.path.endswith("1.wav")} == {
            "unrecognised gender 'other' (expected M/F/male/female)",
            "listed more than once in the manifest"}


def test_manifest_detected_by_header_and_digit_columns(tmp_path: Path):
    _touch(tmp_path / "x.wav")
    _touch(tmp_path / "y.wav")
    (tmp_path / "clips.csv").write_text(
        "Path,Speaker,Gender,digit,repetition\nx.wav,7,m,3,1\ny.wav,8,F,,\n")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    corpus = load_corpus(tmp_path)
    assert corpus.format == "manifest"
    assert corpus.table["speaker"].tolist() == ["7", "8"]
    assert corpus.table["digit"].tolist()[0] == 3 and pd.isna(corpus.table["digit"].iloc[1])


def test_manifest_speaker_with_two_genders_is_skipped(tmp_path: Path):
    for name in ("1.wav", "2.wav", "3.wav"):
        _touch(tmp_path / name)
    (tmp_path / "manifest.csv").write_text(
        "path,speaker,gender\n1.wav,s1,M\n2.wav,s1,F\n3.wav,s2,F\n")
    corpus = load_corpus(tmp_path)
    assert corpus.table["speaker"].tolist() == ["s2"]
    assert [p.reason for p in corpus.problems] == ["speaker s1 is labeled both female and male"] * 2


def _bad_source(root: Path, case: str) -> Path:
    """Builds one kind of unusable source under `root`."""
    _touch(root / ".DS_Store")
    if case == "missing":
        return root / "nope"
    if case == "undetectable":
        return root
    if case == "not-csv":
        return _touch(root / "config.yaml")
    if case == "no-gender-column":
        return _touch(root / "m.csv", b"path,speaker\nx.wav,1\n")
    for name in ("a.csv", "b.csv"):
        _touch(root / name, b"path,speaker,gender\n")
    return root


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("undetectable", "cannot tell the corpus format"),
    ("not-csv", "not a manifest CSV"),
    ("no-gender-column", "lacks column(s) ['gender']"),
    ("two-manifests", "several manifest CSVs"),
])
def test_bad_sources_raise_corpus_error(tmp_path: Path, case: str, message: str):
    source = _bad_source(tmp_path, case)
    with pytest.raises(CorpusError, match=re.escape(message)) as raised:
        load_corpus(source)
    assert str(source) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_no_usable_recordings_raises(tmp_path: Path):
    _clips(tmp_path / "05", "05")
    (tmp_path / "audioMNIST_meta.txt").write_text(json.dumps({"01": {"gender": "male"}}))
    with pytest.raises(CorpusError, match="no usable recordings.*4 files skipped"):
        load_corpus(tmp_path)


def test_bad_json_metadata_raises(tmp_path: Path):
    _clips(tmp_path / "01", "01")
    (tmp_path / "audioMNIST_meta.txt").write_text("{not json")
    with pytest.raises(CorpusError, match="audioMNIST_meta.txt"):
        load_corpus(tmp_path)


def test_corpus_is_frozen_and_summary_wording(json_corpus: Path):
    corpus = load_corpus(json_corpus)
    assert isinstance(corpus, Corpus)
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus.format = "other"  # type: ignore[misc]
    assert summary(corpus) == "3 speakers (1 female, 2 male), 13 clips; 4 files skipped"
    one = dataclasses.replace(corpus, problems=corpus.problems[:1])
    assert summary(one).endswith("; 1 file skipped")
    assert summary(dataclasses.replace(corpus, problems=())).endswith("; no files skipped")


def test_speaker_table_rejects_mixed_gender():
    table = pd.DataFrame({"speaker": ["1", "1"], "gender": ["male", "female"]})
    with pytest.raises(ValueError, match=r"\['1'\]"):
        speaker_table(table)


@pytest.mark.parametrize("value, expected", [
    ("M", "male"), (" f ", "female"), ("Female", "female"), ("MALE\n", "male"),
    ("x", None), ("", None), (None, None), (float("nan"), None)])
def test_parse_gender(value, expected):
    assert parse_gender(value) == expected


def test_import_does_not_load_tensorflow():
    code = ("import sys, speakergender.corpora, speakergender.splits; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.shared
def test_shared_corpus_counts(shared_corpus_dir: Path):
    corpus = load_corpus(shared_corpus_dir)
    assert corpus.format == "audiomnist-csv"
    # metadata.txt has a row for every one of the 40 speaker folders, so nothing is skipped,
    # although its per-digit counts list 1982 clips where 1971 files exist.
    assert corpus.problems == ()
    assert summary(corpus) == "40 speakers (13 female, 27 male), 1,971 clips; no files skipped"
    speakers = speaker_table(corpus.table)
    assert speakers["speaker"].str.fullmatch(r"\d\d").all()
    assert corpus.table["digit"].notna().all() and corpus.table["digit"].between(0, 9).all()
    assert corpus.table["path"].is_unique
