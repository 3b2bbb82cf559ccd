"""The model card written beside every export: what the model was trained on, how it did on
speakers, corpora and recording conditions it never heard, its calibration and its limits."""

from __future__ import annotations

import datetime

import pandas as pd

from speakergender import metrics
from speakergender.config import AugmentParams
from speakergender.corpora import speaker_table

FILE_NAME = "model_card.md"

LIMITS = (
    "**Two labels only.** The model answers female or male. The labels it learned are the "
    "genders the corpora recorded for their speakers (self-reported or assigned by the corpus "
    "authors), not an identity it can see; it says nothing true about people who are neither, "
    "and voices that do not match the typical pitch and resonance of a label will be called "
    "the other one.",
    "**Adults speaking.** No corpus it was trained on has children's voices; children of any "
    "gender will mostly be called female.",
    "**Only what was measured is known.** The figures above cover the corpora, languages and "
    "simulated recording conditions listed; other languages, microphones, codecs, rooms and "
    "speaking styles (singing, shouting, whispering) are untested. Check it on a sample of your "
    "own recordings before relying on it.",
    "**A wrong answer misgenders a person.** Do not use it to make decisions about "
    "individuals, to gate access, or to label people without their consent. It is meant for "
    "aggregate statistics (who speaks how much in an archive), where per-clip errors average "
    "out and should be reported with the figures below as error bars.",
    "**Mixed recordings.** A recording is scored window by window and the windows averaged; "
    "with several speakers the answer is the average voice, flagged by a spread of window "
    "scores. \"no speech\" is returned for silence, not a gender.",
)


def render(config: dict, result: dict, table: pd.DataFrame) -> str:
    """The card, as Markdown.

    Args:
      config: the run's configuration (`experiment.run_config`): front end, training, data.
      result: the run's metrics (`experiment.run_experiment`'s, before export).
      table: every recording of the run (the final model's training clips are derived from it).

    Returns:
      Markdown text.
    """
    training, front_end = config["training"], config["front_end"]
    lines = [f"# Model card: {training['model']} on {front_end['feature_type']}", "",
             f"Written {datetime.date.today().isoformat()} by speakergender. Tells whether the "
             "speaker of a recording is female or male, with a calibrated probability.", ""]
    lines += _training_data(_final_training_table(table, training, result))
    lines += _evaluation(result)
    lines += _calibration(result)
    lines += _front_end(front_end, training)
    lines += ["## Limits", ""] + [f"- {limit}" for limit in LIMITS] + [""]
    return "\n".join(lines)


def _final_training_table(table: pd.DataFrame, training: dict, result: dict) -> pd.DataFrame:
    """The clips of the exported model's speakers (validation speakers included)."""
    if training.get("holdout_corpus") and "corpus" in table.columns:
        return table[table["corpus"] != training["holdout_corpus"]]
    if training.get("folds", 0) >= 2:
        return table
    tested = {speaker for report in result["folds"] for speaker in report["test_speakers"]}
    return table[~table["speaker"].astype(str).isin(tested)]


def _training_data(table: pd.DataFrame) -> list[str]:
    lines = ["## Training data", "",
             "| corpus | female speakers | male speakers | clips |", "|---|---:|---:|---:|"]
    if "corpus" not in table.columns:
        table = table.assign(corpus="(unnamed)")
    for name, rows in table.groupby("corpus", sort=False):
        counts = speaker_table(rows)["gender"].value_counts()
        lines.append(f"| {name} | {counts.get('female', 0)} | {counts.get('male', 0)} | "
                     f"{len(rows):,} |")
    lines += ["", "Some of these speakers were kept apart for early stopping and calibration.",
              ""]
    return lines


def _group_table(groups: dict[str, dict]) -> list[str]:
    lines = ["| | clips | speakers | clip balanced accuracy | recall female | recall male | "
             "ROC AUC | speaker vote accuracy |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, report in groups.items():
        clip, vote = report["clip"], report["speaker_vote"]
        cells = [clip["count"], report["speakers"], clip["balanced_accuracy"],
                 clip["recall_female"], clip["recall_male"], clip["roc_auc"], vote["accuracy"]]
        lines.append(f"| {name} | " + " | ".join(
            metrics.format_value(cell, "d" if index < 2 else ".3f")
            for index, cell in enumerate(cells)) + " |")
    return lines + [""]


def _evaluation(result: dict) -> list[str]:
    pooled = result["pooled"]
    retrained = ("the exported model is then trained on all of them, so these figures stand "
                 "in for speakers it never heard" if len(result["folds"]) > 1
                 else "the exported model is the one scored here")
    lines = ["## Evaluation", "",
             f"{result['evaluation']}: every figure is on speakers the scoring model never "
             f"heard ({retrained}).", ""]
    groups = dict(pooled.get("by_corpus") or {})
    if len(groups) != 1:
        groups["all"] = pooled
    lines += ["### By corpus", ""] + _group_table(groups)
    if result.get("conditions"):
        lines += ["### Under recording conditions never trained on", "",
                  "The same held-out speakers, their recordings passed through simulated "
                  "conditions implemented apart from the training augmentations "
                  "(`speakergender.conditions`).", ""] + _group_table(result["conditions"])
    return lines


def _calibration(result: dict) -> list[str]:
    return ["## Calibration", "",
            f"Logits are divided by a temperature of {result['temperature']:.3f} and shifted by "
            f"{result['calibration_bias']:+.3f} (Platt scaling on validation speakers, both "
            "genders weighted equally); the label is female when the probability reaches 0.5. "
            "Probabilities are calibrated on the training corpora: on other recordings they are "
            "a ranking more than a frequency.", ""]


def _front_end(front_end: dict, training: dict) -> list[str]:
    augment = training.get("augment") or {}
    return ["## Front end and training", "",
            f"- Input: any WAV (resampled to {front_end['sample_rate']} Hz, mixed to mono); "
            f"each window loses its own DC offset; {front_end['clip_seconds']} s windows, "
            f"{front_end['feature_type']} features, normalisation: "
            f"{front_end.get('feature_normalization', 'none')}.",
            f"- Model: {training['model']}; seed {training['seed']}; clips weighted so that "
            "every corpus and both genders carry the same weight.",
            "- Recording-condition augmentation: "
            + ("on (`augment` in the exported config lists every probability and range)."
               if _augment_enabled(augment) else "off."), ""]


def _augment_enabled(augment: dict) -> bool:
    return AugmentParams(**augment).enabled if augment else False
