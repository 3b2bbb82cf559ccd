"""Speaker-disjoint splits of a clip table, stratified by corpus and gender.

A model that has heard a speaker in training recognises the voice, not the gender, so every
split here keeps all clips of a speaker on one side. `leaky_clip_split` is the one exception: it
exists to show how much that inflates scores, warns when used, and returns a different type.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Hashable, Mapping

import numpy as np
import pandas as pd

from speakergender.corpora import GENDERS, speaker_table

logger = logging.getLogger(__name__)


class LeakySplitWarning(UserWarning):
    """A split that puts clips of the same speakers in train and test was made."""


class SpeakerLeakError(AssertionError):
    """Train and test share speakers."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Which speakers train and which test; the two never share a speaker.

    For `validation_split`, `test_speakers` are the validation speakers.
    """

    train_speakers: tuple[str, ...]
    test_speakers: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "train_speakers", tuple(sorted(map(str, self.train_speakers))))
        object.__setattr__(self, "test_speakers", tuple(sorted(map(str, self.test_speakers))))
        shared = set(self.train_speakers) & set(self.test_speakers)
        if shared:
            raise SpeakerLeakError(f"speakers on both sides of a split: {sorted(shared)}")

    @property
    def leaky(self) -> bool:
        """Always False: a `Split` is speaker-disjoint by construction."""
        return False


@dataclasses.dataclass(frozen=True)
class ClipSplit:
    """A random split of clips (table index labels) that lets speakers leak; demo only."""

    train_index: tuple[Hashable, ...]
    test_index: tuple[Hashable, ...]

    @property
    def leaky(self) -> bool:
        """Always True: the same speakers are on both sides."""
        return True


def speaker_folds(table: pd.DataFrame, k: int, seed: int) -> list[Split]:
    """K speaker-disjoint folds, each with a near-equal share of every corpus's speakers of
    each gender.

    Each (corpus, gender) group's speakers are shuffled with `seed` and dealt round-robin into
    the folds; each deal starts where the previous one stopped, so fold sizes differ by at most
    one speaker.

    Args:
      table: clip table (or speaker table) with `speaker` and `gender` columns (and `corpus`).
      k: number of folds, 2 <= k <= speakers of the smaller gender.
      seed: shuffling seed; the same seed gives the same folds.

    Returns:
      k `Split`s; each speaker is in exactly one fold's `test_speakers`.

    Raises:
      ValueError: k < 2, a gender is missing, or k exceeds the smaller gender's speakers.
    """
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    strata = _speaker_strata(table)
    by_gender = {g: [s for (_, gender), group in strata.items() if gender == g for s in group]
                 for g in GENDERS}
    smallest = min(GENDERS, key=lambda g: len(by_gender[g]))
    if k > len(by_gender[smallest]):
        raise ValueError(f"k={k} folds need at least {k} speakers of each gender, but there are "
                         f"only {len(by_gender[smallest])} {smallest} speakers")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    position = 0
    for group in strata.values():
        for speaker in rng.permutation(group):
            folds[position % k].append(str(speaker))
            position += 1
    everyone = [s for group in strata.values() for s in group]
    return [Split(train_speakers=tuple(s for s in everyone if s not in fold),
                  test_speakers=tuple(fold)) for fold in folds]


def corpus_holdout_split(table: pd.DataFrame, corpus: str) -> Split:
    """Trains on every corpus but one and tests on all of that one.

    Args:
      table: clip table with `speaker`, `gender` and `corpus` columns.
      corpus: the corpus to test on.

    Returns:
      A `Split` whose test speakers are all of `corpus`'s.

    Raises:
      ValueError: the table has no such corpus, or nothing else to train on.
    """
    names = list(dict.fromkeys(table["corpus"])) if "corpus" in table.columns else []
    if corpus not in names:
        raise ValueError(f"no corpus named {corpus!r} to hold out; the corpora are {names}")
    if len(names) < 2:
        raise ValueError(f"holding out {corpus!r} leaves no corpus to train on; give at least "
                         f"two --data-dir")
    speakers = speaker_table(table)
    held_out = speakers["corpus"] == corpus
    return Split(train_speakers=tuple(speakers.loc[~held_out, "speaker"]),
                 test_speakers=tuple(speakers.loc[held_out, "speaker"]))


def holdout_split(table: pd.DataFrame, test_fraction: float, seed: int) -> Split:
    """One speaker-disjoint train/test split, stratified by corpus and gender.

    Args:
      table: clip table (or speaker table) with `speaker` and `gender` columns.
      test_fraction: share of each gender's speakers to test on, in (0, 1); rounded, and kept
        to at least one speaker per side for a gender with two or more speakers.
      seed: shuffling seed; the same seed gives the same split.

    Returns:
      A `Split`.

    Raises:
      ValueError: test_fraction outside (0, 1), or a gender is missing.
    """
    return _stratified_split(_speaker_strata(table), test_fraction, seed)


def validation_split(table_or_speakers: pd.DataFrame | Mapping[str, str], fraction: float,
                     seed: int) -> Split:
    """Carves validation speakers out of training speakers, stratified by corpus and gender.

    Pass only the training side (e.g. the train rows from `split_rows`), so validation never
    uses test speakers.

    Args:
      table_or_speakers: training clip table with `speaker` and `gender` columns, or a mapping
        speaker -> gender.
      fraction: share of each gender's speakers to hold out for validation, in (0, 1).
      seed: shuffling seed.

    Returns:
      A `Split` whose `test_speakers` are the validation speakers.

    Raises:
      ValueError: fraction outside (0, 1), or a gender is missing.
    """
    if isinstance(table_or_speakers, Mapping):
        table_or_speakers = pd.DataFrame({"speaker": list(table_or_speakers.keys()),
                                          "gender": list(table_or_speakers.values())})
    return _stratified_split(_speaker_strata(table_or_speakers), fraction, seed)


def leaky_clip_split(table: pd.DataFrame, test_fraction: float, seed: int) -> ClipSplit:
    """A random clip split that ignores speakers; only for showing how scores inflate.

    Args:
      table: clip table with a `speaker` column.
      test_fraction: share of clips to test on, in (0, 1).
      seed: shuffling seed.

    Returns:
      A `ClipSplit` (`leaky` is True) holding index labels of `table`.

    Warns:
      LeakySplitWarning: always.
    """
    _check_fraction(test_fraction)
    if len(table) < 2:
        raise ValueError(f"need at least 2 clips to split, got {len(table)}")
    n_test = min(max(round(test_fraction * len(table)), 1), len(table) - 1)
    order = np.random.default_rng(seed).permutation(len(table))
    test_positions = np.sort(order[:n_test])
    train_positions = np.sort(order[n_test:])
    leaked = (set(table["speaker"].iloc[train_positions])
              & set(table["speaker"].iloc[test_positions]))
    warnings.warn(
        f"leaky_clip_split puts clips of the same speakers in train and test ({len(leaked)} of "
        f"{table['speaker'].nunique()} speakers are on both sides): scores on it are inflated by "
        f"recognising voices and say nothing about unseen speakers. Use holdout_split or "
        f"speaker_folds to evaluate.", LeakySplitWarning, stacklevel=2)
    return ClipSplit(train_index=tuple(table.index[train_positions]),
                     test_index=tuple(table.index[test_positions]))


def split_rows(table: pd.DataFrame, split: Split | ClipSplit) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Selects a split's train and test rows.

    Speakers of `table` on neither side of a `Split` are in neither frame, so a validation split
    applied to a whole corpus leaves the test speakers out.

    Args:
      table: clip table with a `speaker` column.
      split: a `Split`, or a `ClipSplit` of this table's index.

    Returns:
      (train_df, test_df), rows in table order.
    """
    if isinstance(split, ClipSplit):
        return table.loc[list(split.train_index)], table.loc[list(split.test_index)]
    speakers = table["speaker"].astype(str)
    train = table[speakers.isin(split.train_speakers)]
    test = table[speakers.isin(split.test_speakers)]
    assert_speaker_disjoint(train, test)
    return train, test


def assert_speaker_disjoint(train_df: pd.DataFrame, test_df: pd.DataFrame) -> None:
    """Raises if any speaker has clips in both frames.

    Args:
      train_df: clip table with a `speaker` column.
      test_df: clip table with a `speaker` column.

    Raises:
      SpeakerLeakError: naming the shared speakers.
    """
    shared = set(train_df["speaker"].astype(str)) & set(test_df["speaker"].astype(str))
    if shared:
        raise SpeakerLeakError(f"{len(shared)} speaker(s) on both sides: {sorted(shared)}")


def _speaker_strata(table: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """{(corpus, gender): sorted speakers}, corpora in table order, female before male.

    Raises if a gender is missing overall or unknown. A table without a `corpus` column is one
    corpus, "".
    """
    speakers = speaker_table(table)
    unknown = sorted(set(speakers["gender"]) - set(GENDERS))
    if unknown:
        raise ValueError(f"gender must be one of {GENDERS}, found {unknown}")
    for gender in GENDERS:
        if not (speakers["gender"] == gender).any():
            raise ValueError(f"no {gender} speakers; a gender-stratified split needs both genders")
    corpora = (list(dict.fromkeys(table["corpus"])) if "corpus" in table.columns else [""])
    corpus_of = speakers["corpus"] if "corpus" in speakers.columns else pd.Series(
        "", index=speakers.index)
    strata = {}
    for corpus in corpora:
        for gender in GENDERS:
            chosen = (corpus_of == corpus) & (speakers["gender"] == gender)
            if chosen.any():
                strata[(corpus, gender)] = sorted(speakers.loc[chosen, "speaker"])
    return strata


def _stratified_split(strata: dict[tuple[str, str], list[str]], fraction: float,
                      seed: int) -> Split:
    """Shuffles each stratum's speakers and sends `fraction` of them to the test side."""
    _check_fraction(fraction)
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    for (corpus, gender), group in strata.items():
        shuffled = [str(s) for s in rng.permutation(group)]
        n_test = _side_count(len(shuffled), fraction)
        if len(shuffled) < 2:
            where = f" of {corpus}" if corpus else ""
            logger.warning("only one %s speaker%s (%s); it stays on the training side",
                           gender, where, shuffled[0])
        test.extend(shuffled[:n_test])
        train.extend(shuffled[n_test:])
    return Split(train_speakers=tuple(train), test_speakers=tuple(test))


def _side_count(n: int, fraction: float) -> int:
    """round(fraction * n), kept in 1..n-1 so both sides see the gender when n >= 2."""
    if n < 2:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def _check_fraction(fraction: float) -> None:
    """Raises unless 0 < fraction < 1."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")

