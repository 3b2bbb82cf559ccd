"""Clip and speaker metrics on hand-checkable cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from speakergender import metrics


def test_binary_metrics_on_a_hand_checked_confusion():
    # 3 female clips: two called female; 5 male clips: one called female.
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    probabilities = [0.9, 0.5, 0.2, 0.7, 0.49, 0.1, 0.3, 0.0]
    result = metrics.binary_metrics(labels, probabilities)
    assert result["confusion"] == [[4, 1], [1, 2]]  # rows truth (male, female)
    assert result["count"] == 8
    assert result["accuracy"] == pytest.approx(6 / 8)
    assert result["recall_female"] == pytest.approx(2 / 3)
    assert result["recall_male"] == pytest.approx(4 / 5)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # precision female 2/3, male 4/5: F1 is their harmonic mean with the recalls.
    assert result["f1_female"] == pytest.approx(2 / 3)
    assert result["f1_male"] == pytest.approx(4 / 5)
    # The threshold moves the decisions: at 0.8 only one female clip is called female.
    assert metrics.binary_metrics(labels, probabilities, 0.8)["confusion"] == [[5, 0], [2, 1]]


def test_balanced_accuracy_on_unbalanced_data():
    labels = np.array([0] * 90 + [1] * 10)
    always_male = np.zeros(100)
    result = metrics.binary_metrics(labels, always_male)
    assert result["accuracy"] == pytest.approx(0.9)
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["recall_female"] == 0.0 and result["recall_male"] == 1.0
    assert math.isnan(result["f1_female"])  # never called female: precision undefined
    # Half of the females right and all males: accuracy 0.95, balanced 0.75.
    half = always_male.copy()
    half[90:95] = 1.0
    result = metrics.binary_metrics(labels, half)
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["balanced_accuracy"] == pytest.approx(0.75)
    # Only one class present: that class's recall alone.
    result = metrics.binary_metrics(np.ones(4), [0.9, 0.8, 0.1, 0.7])
    assert result["balanced_accuracy"] == pytest.approx(0.75)
    assert math.isnan(result["recall_male"]) and math.isnan(result["roc_auc"])


def _pairwise_auc(labels, scores) -> float:
    positives = [s for s, y in zip(scores, labels) if y]
    negatives = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0
               for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    # Rounded scores, so there are ties (each counts one half).
    scores = np.round(rng.uniform(0, 1, 60) + 0.3 * labels, 1)
    assert metrics.roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))


def test_roc_auc_extremes_and_curve():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 50), rng.uniform(0, 1, 50)  # no ties
    fpr, tpr = metrics.roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(labels, scores))


def _clips(per_speaker: dict[str, tuple[int, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame([{"speaker": speaker, "label": label, "probability": p}
                         for speaker, (label, probabilities) in per_speaker.items()
                         for p in probabilities])


def test_speaker_vote_with_ties_goes_to_the_mean_probability():
    clips = _clips({
        "a": (1, [0.9, 0.8, 0.1, 0.2]),    # tie, mean 0.5 -> female (right)
        "b": (0, [0.6, 0.55, 0.1, 0.05]),  # tie, mean 0.325 -> male (right)
        "c": (0, [0.9, 0.9, 0.1, 0.4]),    # tie, mean 0.575 -> female (wrong)
        "d": (1, [0.7, 0.2, 0.6]),         # 2 of 3 female -> female (right)
        "e": (1, [0.4, 0.3, 0.99]),        # 1 of 3, though the mean is 0.563 -> male (wrong)
    })
    speakers = metrics.speaker_scores(clips)
    assert list(speakers.index) == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(speakers["female_votes"], [0.5, 0.5, 0.5, 2 / 3, 1 / 3])
    np.testing.assert_allclose(speakers["clip_accuracy"], [0.5, 0.5, 0.5, 2 / 3, 1 / 3])
    assert list(speakers["clips"]) == [4, 4, 4, 3, 3]
    report = metrics.evaluation_report(clips)
    assert report["speakers"] == 5
    vote = report["speaker_vote"]
    assert vote["confusion"] == [[1, 1], [1, 2]]
    assert vote["accuracy"] == pytest.approx(3 / 5)
    # Mean probability per speaker: a 0.5, b 0.325, c 0.575, d 0.5, e 0.563.
    assert report["speaker_mean"]["confusion"] == [[1, 1], [0, 3]]
    assert report["clip"]["count"] == 18


def test_summarize_folds():
    def report(accuracy, auc):
        level = {"count": 10, "accuracy": accuracy, "roc_auc": auc, "confusion": [[1, 0], [0, 1]]}
        return {"clip": level, "speaker_vote": level, "speaker_mean": level}

    summary = metrics.summarize_folds([report(0.6, 0.7), report(0.8, float("nan")),
                                       report(1.0, 0.9)])
    clip = summary["clip"]
    assert set(clip) == {"accuracy", "roc_auc"}  # counts and confusions are not averaged
    assert clip["accuracy"]["mean"] == pytest.approx(0.8)
    assert clip["accuracy"]["std"] == pytest.approx(np.std([0.6, 0.8, 1.0]))
    # A fold where a metric is undefined is left out of that metric only.
    assert clip["roc_auc"]["mean"] == pytest.approx(0.8)
    assert clip["roc_auc"]["std"] == pytest.approx(0.1)
    assert set(summary) == {"clip", "speaker_vote", "speaker_mean"}


def test_format_table():
    table = metrics.format_table(
        {"fold1": {"acc": 0.5, "n": 3}, "mean": {"acc": float("nan")}},
        [("accuracy", "acc", ".3f"), ("clips", "n", "d")])
    lines = table.splitlines()
    assert lines[0].split() == ["accuracy", "clips"]
    assert lines[2].split() == ["fold1", "0.500", "3"]
    assert lines[3].split() == ["mean", "nan", "-"]
    assert len({len(line) for line in lines}) == 1  # aligned
