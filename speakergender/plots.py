"""Figures people would rather look at than read: confusion matrix, ROC, per-speaker accuracy."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from speakergender.metrics import CLASS_NAMES, roc_auc, roc_curve


def confusion_figure(confusion, title: str = "Confusion matrix") -> plt.Figure:
    """Counts with row-normalised shading; rows are the truth, columns the prediction."""
    confusion = np.asarray(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(3.8, 3.4))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        axes.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    axes.set_xticks([0, 1], CLASS_NAMES)
    axes.set_yticks([0, 1], CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
               title: str = "ROC, female as positive") -> plt.Figure:
    """One ROC curve per model: name -> (labels, female probabilities)."""
    figure, axes = plt.subplots(figsize=(4.2, 4.0))
    for name, (labels, scores) in curves.items():
        false_positive, true_positive = roc_curve(labels, scores)
        axes.plot(false_positive, true_positive, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("male clips called female")
    axes.set_ylabel("female clips called female")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def speaker_accuracy_figure(speakers: pd.DataFrame,
                            title: str = "Clip accuracy per held-out speaker") -> plt.Figure:
    """Bars per speaker (from `metrics.speaker_scores`), coloured by gender, worst first."""
    ordered = speakers.sort_values("clip_accuracy")
    colours = np.where(ordered["label"].to_numpy() == 1, "tab:red", "tab:blue")
    figure, axes = plt.subplots(figsize=(max(4.0, 0.22 * len(ordered) + 1.5), 3.4))
    axes.bar(range(len(ordered)), ordered["clip_accuracy"], color=colours)
    axes.set_xticks(range(len(ordered)), ordered.index, rotation=90, fontsize="x-small")
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("clip accuracy")
    axes.set_title(title)
    axes.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="tab:red"),
                         plt.Rectangle((0, 0), 1, 1, color="tab:blue")],
                labels=["female", "male"], fontsize="small", loc="lower right")
    figure.tight_layout()
    return figure


def save(figure: plt.Figure, path: str | Path) -> Path:
    """Writes a PNG and closes the figure."""
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def to_png_bytes(figure: plt.Figure) -> bytes:
    """The figure as PNG bytes (for TensorBoard images); closes it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def group_metrics_figure(reports: Mapping[str, dict], title: str) -> plt.Figure:
    """Clip balanced accuracy and recall per gender for each group (corpus or condition).

    Args:
      reports: group name -> an `evaluation_report` of that group's clips.
      title: the figure's title.
    """
    names = list(reports)
    measures = (("balanced accuracy", "balanced_accuracy"), ("recall female", "recall_female"),
                ("recall male", "recall_male"))
    positions = np.arange(len(names))
    width = 0.8 / len(measures)
    figure, axes = plt.subplots(figsize=(max(4.5, 1.3 * len(names) + 2), 3.6))
    for index, (label, key) in enumerate(measures):
        values = [reports[name]["clip"].get(key) for name in names]
        values = [np.nan if value is None else value for value in values]
        bars = axes.bar(positions + (index - 1) * width, values, width, label=label)
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xticks(positions, names, rotation=20, ha="right")
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("share of clips")
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure
