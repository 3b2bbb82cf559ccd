"""Clip- and speaker-level metrics for an unbalanced two-class problem (1 = female).

Accuracy alone flatters a model on a corpus of mostly male speakers, so every report carries
balanced accuracy and the recall of each gender beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

CLASS_NAMES = ("male", "female")


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (probability a female clip outscores a male one; ties 1/2).

    Returns NaN when only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    true_positives = np.concatenate([[0], np.cumsum(labels[order])])
    false_positives = np.concatenate([[0], np.cumsum(~labels[order])])
    return (false_positives / max(false_positives[-1], 1),
            true_positives / max(true_positives[-1], 1))


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   threshold: float = 0.5) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-gender recall, per-class F1, ROC AUC, confusion matrix.

    Args:
      labels: [n] with 1 for female, 0 for male.
      probabilities: [n] female probabilities.
      threshold: female when probability >= threshold.

    Returns:
      A JSON-ready dict; `confusion` is [[male->male, male->female], [female->male,
      female->female]] (rows: truth, columns: prediction).
    """
    labels = np.asarray(labels).astype(int)
    predictions = (np.asarray(probabilities) >= threshold).astype(int)
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    result: dict[str, object] = {"count": int(len(labels)),
                                 "accuracy": _ratio(np.trace(confusion), confusion.sum())}
    recalls = []
    for index, name in enumerate(CLASS_NAMES):
        recall = _ratio(confusion[index, index], confusion[index].sum())
        precision = _ratio(confusion[index, index], confusion[:, index].sum())
        if math.isnan(precision) or math.isnan(recall):
            f1 = math.nan
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result[f"recall_{name}"] = recall
        result[f"f1_{name}"] = f1
        recalls.append(recall)
    result["balanced_accuracy"] = float(np.nanmean(recalls)) if not all(
        math.isnan(r) for r in recalls) else math.nan
    result["roc_auc"] = roc_auc(labels, probabilities)
    result["confusion"] = confusion.tolist()
    return result


def speaker_scores(clips: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """One row per speaker: label, clip count, clip accuracy, vote share and mean probability.

    Args:
      clips: columns `speaker`, `label` (1 female), `probability` (female).
      threshold: clip decision threshold.

    Returns:
      DataFrame indexed by speaker with `label`, `clips`, `clip_accuracy`, `female_votes`
      (share of clips called female) and `mean_probability`.
    """
    frame = clips.assign(female_vote=(clips["probability"] >= threshold).astype(float))
    frame = frame.assign(correct=(frame["female_vote"] == frame["label"]).astype(float))
    grouped = frame.groupby("speaker", sort=True)
    return pd.DataFrame({
        "label": grouped["label"].first().astype(int),
        "clips": grouped.size(),
        "clip_accuracy": grouped["correct"].mean(),
        "female_votes": grouped["female_vote"].mean(),
        "mean_probability": grouped["probability"].mean(),
    })


def evaluation_report(clips: pd.DataFrame, threshold: float = 0.5) -> dict[str, object]:
    """Clip-level and speaker-level metrics of one model on one set of recordings.

    Args:
      clips: columns `speaker`, `label` (1 female) and `probability` (female), one row a clip.
      threshold: decision threshold for clips and for speaker votes.

    Returns:
      {"clip": metrics, "speaker_vote": metrics, "speaker_mean": metrics, "speakers": count},
      and where `clips` has a `corpus` column, "by_corpus": {corpus: the same for its clips};
      a speaker's vote is female when at least half of its clips are called female (ties go
      to the mean probability).
    """
    report = _single_report(clips, threshold)
    if "corpus" in clips.columns:
        report["by_corpus"] = {str(name): _single_report(rows, threshold)
                               for name, rows in clips.groupby("corpus", sort=False)}
    return report


def _single_report(clips: pd.DataFrame, threshold: float) -> dict[str, object]:
    speakers = speaker_scores(clips, threshold)
    votes = speakers["female_votes"].to_numpy()
    tie_break = (speakers["mean_probability"].to_numpy() >= threshold).astype(float)
    vote_share = np.where(votes == 0.5, tie_break, votes)
    return {
        "clip": binary_metrics(clips["label"].to_numpy(), clips["probability"].to_numpy(),
                               threshold),
        # Exact halves were resolved above, so a share of at least one half is a majority.
        "speaker_vote": binary_metrics(speakers["label"].to_numpy(), vote_share, 0.5),
        "speaker_mean": binary_metrics(speakers["label"].to_numpy(),
                                       speakers["mean_probability"].to_numpy(), threshold),
        "speakers": int(len(speakers)),
    }


def summarize_folds(reports: Sequence[dict[str, object]]) -> dict[str, object]:
    """Mean and standard deviation across folds of every scalar metric.

    Returns:
      {"clip": {"balanced_accuracy": {"mean": .., "std": ..}, ...}, "speaker_vote": ..., ...},
      and "by_corpus": {corpus: the same over the folds that tested that corpus}.
    """
    summary: dict[str, object] = {}
    with warnings.catch_warnings():
        # A metric undefined in every fold (no female speaker held out, say) stays NaN.
        warnings.simplefilter("ignore", RuntimeWarning)
        for level in ("clip", "speaker_vote", "speaker_mean"):
            summary[level] = _fold_statistics(reports, level)
        corpora = dict.fromkeys(name for report in reports
                                for name in report.get("by_corpus") or {})
        if corpora:
            summary["by_corpus"] = {
                name: {level: _fold_statistics(
                    [r["by_corpus"][name] for r in reports if name in r.get("by_corpus", {})],
                    level) for level in ("clip", "speaker_vote", "speaker_mean")}
                for name in corpora}
    return summary


def _fold_statistics(reports: Sequence[dict[str, object]], level: str) -> dict[str, object]:
    # Reports read back from JSON carry undefined metrics as None.
    keys = [key for key, value in reports[0][level].items()
            if (value is None or isinstance(value, (int, float))) and key != "count"]
    values = {key: np.array([np.nan if r[level][key] is None else r[level][key]
                             for r in reports], dtype=float) for key in keys}
    return {key: {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v))}
            for key, v in values.items()}


# Columns of a table with one row per corpus or per recording condition.
GROUP_COLUMNS = (
    ("clips", "clip_count", "d"),
    ("speakers", "speakers", "d"),
    ("clip bal.acc", "clip_balanced_accuracy", ".3f"),
    ("recall F", "clip_recall_female", ".3f"),
    ("recall M", "clip_recall_male", ".3f"),
    ("AUC", "clip_roc_auc", ".3f"),
    ("spk vote acc", "speaker_vote_accuracy", ".3f"),
)


def format_table(rows: dict[str, dict[str, object]],
                 columns: Sequence[tuple[str, str, str]]) -> str:
    """A plain aligned text table.

    Args:
      rows: row name -> flat dict of values.
      columns: (header, key, format spec) triples, e.g. ("bal.acc", "balanced_accuracy", ".3f").

    Returns:
      The table as text, one line per row under a header line.
    """
    headers = [""] + [header for header, _, _ in columns]
    lines = [[name] + [format_value(values.get(key), spec) for _, key, spec in columns]
             for name, values in rows.items()]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *lines)]
    def render(cells):
        return "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                         for i, cell in enumerate(cells))
    return "\n".join([render(headers), render(["-" * w for w in widths])] +
                     [render(line) for line in lines])


def format_value(value: object, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else math.nan
