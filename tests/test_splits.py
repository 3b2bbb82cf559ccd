"""Splits: speakers never straddle train and test, folds cover everyone once, genders balance."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from speakergender.corpora import load_corpus
from speakergender.splits import (
    ClipSplit, LeakySplitWarning, Split, SpeakerLeakError, assert_speaker_disjoint,
    holdout_split, leaky_clip_split, speaker_folds, split_rows, validation_split)


def _table(n_female: int, n_male: int, clips: int = 3) -> pd.DataFrame:
    """A clip table: speakers f00.. and m00.., `clips` rows each."""
    rows = [{"path": f"/x/{g}{i:02d}_{c}.wav", "speaker": f"{g}{i:02d}",
             "gender": "female" if g == "f" else "male"}
            for g, n in (("f", n_female), ("m", n_male)) for i in range(n) for c in range(clips)]
    return pd.DataFrame(rows)


def _gender_of(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["speaker"], table["gender"]))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_cover_each_speaker_once_and_never_leak(k: int):
    table = _table(7, 12)
    folds = speaker_folds(table, k, seed=0)
    assert len(folds) == k
    tested = [s for fold in folds for s in fold.test_speakers]
    assert sorted(tested) == sorted(table["speaker"].unique())  # each exactly once
    for fold in folds:
        assert not set(fold.train_speakers) & set(fold.test_speakers)
        assert set(fold.train_speakers) | set(fold.test_speakers) == set(table["speaker"])
        train, test = split_rows(table, fold)
        assert len(train) + len(test) == len(table)
        assert_speaker_disjoint(train, test)


def test_folds_are_gender_stratified():
    table = _table(7, 12)
    genders = _gender_of(table)
    folds = speaker_folds(table, 3, seed=1)
    for gender, total in (("female", 7), ("male", 12)):
        counts = [sum(genders[s] == gender for s in fold.test_speakers) for fold in folds]
        assert max(counts) - min(counts) <= 1 and sum(counts) == total
    sizes = [len(fold.test_speakers) for fold in folds]
    assert max(sizes) - min(sizes) <= 1


def test_folds_deterministic_per_seed():
    table = _table(6, 9)
    assert speaker_folds(table, 3, seed=7) == speaker_folds(table, 3, seed=7)
    assigned = {tuple(f.test_speakers for f in speaker_folds(table, 3, seed)) for seed in range(5)}
    assert len(assigned) > 1


def test_fold_arguments_are_checked():
    with pytest.raises(ValueError, match="at least 2"):
        speaker_folds(_table(4, 4), 1, seed=0)
    with pytest.raises(ValueError, match="only 3 female speakers"):
        speaker_folds(_table(3, 10), 4, seed=0)
    with pytest.raises(ValueError, match="no female speakers"):
        speaker_folds(_table(0, 10), 2, seed=0)
    with pytest.raises(ValueError, match="more than one gender"):
        speaker_folds(pd.DataFrame({"speaker": ["a", "a", "b"],
                                    "gender": ["male", "female", "male"]}), 2, seed=0)
    with pytest.raises(ValueError, match="gender must be one of"):
        speaker_folds(pd.DataFrame({"speaker": ["a", "b", "c"],
                                    "gender": ["male", "female", "M"]}), 2, seed=0)


def test_holdout_is_stratified_and_deterministic():
    table = _table(5, 10)
    split = holdout_split(table, 0.2, seed=3)
    genders = _gender_of(table)
    test_genders = sorted(genders[s] for s in split.test_speakers)
    assert test_genders == ["female"] + ["male"] * 2  # round(0.2 * 5), round(0.2 * 10)
    assert split == holdout_split(table, 0.2, seed=3)
    assert len({holdout_split(table, 0.2, seed).test_speakers for seed in range(5)}) > 1
    assert split.train_speakers == tuple(sorted(split.train_speakers))
    assert not split.leaky


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_holdout_keeps_each_gender_on_both_sides(fraction: float):
    table = _table(2, 3)
    split = holdout_split(table, fraction, seed=0)
    genders = _gender_of(table)
    for side in (split.train_speakers, split.test_speakers):
        assert {genders[s] for s in side} == {"female", "male"}


def test_holdout_single_speaker_gender_stays_in_training(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="speakergender.splits"):
        split = holdout_split(_table(1, 4), 0.5, seed=0)
    assert "f00" in split.train_speakers and "only one female speaker" in caplog.text


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_fractions_are_checked(fraction: float):
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(_table(4, 4), fraction, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(_table(4, 4), fraction, seed=0)


def test_validation_comes_from_training_speakers_only():
    table = _table(8, 12)
    outer = holdout_split(table, 0.25, seed=0)
    train_df, test_df = split_rows(table, outer)
    inner = validation_split(train_df, 0.25, seed=0)
    assert set(inner.train_speakers) | set(inner.test_speakers) == set(outer.train_speakers)
    assert not set(inner.test_speakers) & set(outer.test_speakers)
    genders = _gender_of(table)
    assert {genders[s] for s in inner.test_speakers} == {"female", "male"}
    # Applied to the whole table, the validation split leaves the test speakers out.
    fit_df, val_df = split_rows(table, inner)
    assert not set(fit_df["speaker"]) & set(test_df["speaker"])
    assert not set(val_df["speaker"]) & set(test_df["speaker"])
    assert validation_split(_gender_of(train_df), 0.25, seed=0) == inner


def test_split_refuses_shared_speakers_and_sorts():
    split = Split(train_speakers=("b", "a"), test_speakers=["d", "c"])
    assert split.train_speakers == ("a", "b") and split.test_speakers == ("c", "d")
    with pytest.raises(SpeakerLeakError, match=r"\['a'\]"):
        Split(train_speakers=("a", "b"), test_speakers=("a", "c"))


def test_assert_speaker_disjoint_names_the_overlap():
    train = pd.DataFrame({"speaker": ["01", "02", "03"]})
    assert_speaker_disjoint(train, pd.DataFrame({"speaker": ["04"]}))
    with pytest.raises(SpeakerLeakError, match=r"2 speaker\(s\) on both sides: \['02', '03'\]"):
        assert_speaker_disjoint(train, pd.DataFrame({"speaker": ["03", "02", "04"]}))


def test_leaky_clip_split_warns_and_leaks():
    table = _table(3, 3, clips=10)
    with pytest.warns(LeakySplitWarning, match="same speakers.*inflated"):
        split = leaky_clip_split(table, 0.25, seed=0)
    assert issubclass(LeakySplitWarning, UserWarning)
    assert isinstance(split, ClipSplit) and not isinstance(split, Split) and split.leaky
    assert not hasattr(split, "test_speakers")
    train, test = split_rows(table, split)
    assert len(test) == 15 and len(train) == 45
    assert set(train["speaker"]) & set(test["speaker"])
    with pytest.raises(SpeakerLeakError):
        assert_speaker_disjoint(train, test)
    with pytest.warns(LeakySplitWarning):
        assert leaky_clip_split(table, 0.25, seed=0) == split


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def shared_table(shared_corpus_dir: Path) -> pd.DataFrame:
    return load_corpus(shared_corpus_dir).table


@pytest.mark.shared
@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("seed", SEEDS)
def test_shared_folds_never_leak(shared_table: pd.DataFrame, k: int, seed: int):
    folds = speaker_folds(shared_table, k, seed)
    tested = sorted(s for fold in folds for s in fold.test_speakers)
    assert tested == sorted(shared_table["speaker"].unique()) and len(tested) == 40
    for fold in folds:
        train, test = split_rows(shared_table, fold)
        assert_speaker_disjoint(train, test)
        assert len(train) + len(test) == len(shared_table)
        assert set(test["gender"]) == {"female", "male"}


@pytest.mark.shared
@pytest.mark.parametrize("seed", SEEDS)
def test_shared_holdout_and_validation_never_leak(shared_table: pd.DataFrame, seed: int):
    outer = holdout_split(shared_table, 0.2, seed)
    train, test = split_rows(shared_table, outer)
    assert_speaker_disjoint(train, test)
    assert test["speaker"].nunique() == 8  # round(0.2 * 13) + round(0.2 * 27) = 3 + 5
    inner = validation_split(train, 0.15, seed)
    fit, val = split_rows(train, inner)
    for a, b in ((fit, val), (fit, test), (val, test)):
        assert_speaker_disjoint(a, b)
    assert len(fit) + len(val) + len(test) == len(shared_table)
