"""Everything a run reports, in one place: metrics.json, the terminal tables, the figures and
TensorBoard's summary."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import pandas as pd

from speakergender import metrics, plots, tensorboard_logs


def json_text(value) -> str:
    """Strict JSON (undefined metrics such as an F1 with no positives become null)."""
    def clean(item):
        if isinstance(item, float) and item != item:
            return None
        if isinstance(item, dict):
            return {key: clean(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(inner) for inner in item]
        return item
    return json.dumps(clean(value), indent=2, allow_nan=False) + "\n"


def condition_reports(scores: pd.DataFrame) -> dict[str, dict]:
    """One `metrics.evaluation_report` per condition, pooled over corpora (the per-corpus
    breakdown is the clean figures' job)."""
    return {condition: metrics.evaluation_report(rows.drop(columns="corpus", errors="ignore"))
            for condition, rows in scores.groupby("condition", sort=False)}


def print_fold(report: dict) -> None:
    """One line per fold as it finishes: clip balanced accuracy, overall and per corpus."""
    parts = [f"clip bal.acc {report['clip']['balanced_accuracy']:.3f}"]
    by_corpus = report.get("by_corpus") or {}
    if len(by_corpus) > 1:
        parts += [f"{name} {rows['clip']['balanced_accuracy']:.3f}"
                  for name, rows in by_corpus.items()]
    parts += [f"{name} {rows['clip']['balanced_accuracy']:.3f}"
              for name, rows in (report.get("conditions") or {}).items()]
    print(f"{report['fold']}: " + ", ".join(parts), flush=True)


def write_figures(output: Path, pooled: pd.DataFrame, result: dict) -> None:
    plots.save(plots.confusion_figure(result["pooled"]["clip"]["confusion"],
                                      "Clips of held-out speakers"),
               output / "confusion_matrix.png")
    plots.save(plots.roc_figure({result["model"]: (pooled["label"].to_numpy(),
                                                  pooled["probability"].to_numpy())}),
               output / "roc.png")
    plots.save(plots.speaker_accuracy_figure(metrics.speaker_scores(pooled)),
               output / "speaker_accuracy.png")
    for groups, file_name, title in (
            (result["pooled"].get("by_corpus"), "corpus_metrics.png",
             "Held-out speakers by corpus"),
            (result.get("conditions"), "condition_metrics.png",
             "Held-out speakers under unseen recording conditions")):
        if groups:
            plots.save(plots.group_metrics_figure(groups, title), output / file_name)


def write_run_reports(output: Path, logs: Path | None, config: dict, result: dict,
                      pooled: pd.DataFrame, table: pd.DataFrame,
                      classifier: keras.Model) -> None:
    """metrics.json, the figures and (with `logs`) TensorBoard's run summary."""
    (output / "metrics.json").write_text(json_text(result))
    write_figures(output, pooled, result)
    if logs:
        tensorboard_logs.write_run_summary(logs, config, result, pooled, table, classifier)


def summary_rows(result: dict) -> dict[str, dict]:
    """Rows for the terminal table: each fold, then mean and std across folds."""
    rows = {}
    for report in result["folds"]:
        rows[report["fold"]] = _flat(report)
    if len(result["folds"]) > 1:
        summary = result["summary"]
        for statistic in ("mean", "std"):
            rows[statistic] = {f"{level}_{key}": value[statistic]
                               for level in ("clip", "speaker_vote", "speaker_mean")
                               for key, value in summary[level].items()}
    return rows


def _flat(report: dict) -> dict:
    return {f"{level}_{key}": value for level in ("clip", "speaker_vote", "speaker_mean")
            for key, value in report[level].items() if not isinstance(value, list)}


SUMMARY_COLUMNS = (
    ("clip acc", "clip_accuracy", ".3f"),
    ("clip bal.acc", "clip_balanced_accuracy", ".3f"),
    ("recall F", "clip_recall_female", ".3f"),
    ("recall M", "clip_recall_male", ".3f"),
    ("AUC", "clip_roc_auc", ".3f"),
    ("spk vote acc", "speaker_vote_accuracy", ".3f"),
    ("spk vote bal.acc", "speaker_vote_balanced_accuracy", ".3f"),
    ("spk mean bal.acc", "speaker_mean_balanced_accuracy", ".3f"),
)


def group_rows(result: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """Rows per corpus (held-out clips pooled over folds) and per held-out condition."""
    corpora = {name: {**_flat(report), "speakers": report["speakers"]}
               for name, report in (result["pooled"].get("by_corpus") or {}).items()}
    if len(corpora) > 1:
        corpora["all"] = {**_flat(result["pooled"]), "speakers": result["pooled"]["speakers"]}
    condition_rows = {name: {**_flat(report), "speakers": report["speakers"]}
                      for name, report in (result.get("conditions") or {}).items()}
    return corpora, condition_rows


def format_summary(result: dict) -> str:
    text = metrics.format_table(summary_rows(result), SUMMARY_COLUMNS)
    corpora, condition_rows = group_rows(result)
    if corpora:
        text += ("\n\nby corpus (held-out clips of every fold):\n"
                 + metrics.format_table(corpora, metrics.GROUP_COLUMNS))
    if condition_rows:
        text += ("\n\nunder recording conditions never trained on (held-out speakers):\n"
                 + metrics.format_table(condition_rows, metrics.GROUP_COLUMNS))
    return text
