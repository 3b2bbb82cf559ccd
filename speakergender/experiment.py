"""A whole run: speaker-disjoint folds or a hold-out split, a final model, its export, reports.

Everything a run produces lands in its output folder: `config.json`, `metrics.json`,
`history.csv`, per-clip `predictions.csv`, PNG figures, `skipped_files.log`, and the SavedModel
in numbered version folders (`1/`). A fold that finished is not trained again when an
interrupted run is restarted with the same command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pandas as pd
import tensorflow as tf

from speakergender import config as config_lib
from speakergender import (conditions, metrics, model_card, pipeline, plots, splits,
                           tensorboard_logs, training)
from speakergender.config import FrontEndParams, TrainParams
from speakergender.export import GenderClassifierModule, export_model
from speakergender.models import registry


class RunConflictError(ValueError):
    """The output folder holds a run with another configuration."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    output: Path
    logs: Path | None

    @property
    def config(self) -> Path:
        return self.output / "config.json"

    @property
    def metrics(self) -> Path:
        return self.output / "metrics.json"

    def fold(self, name: str) -> Path:
        return self.output / "work" / name


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


def run_config(front_end: FrontEndParams, params: TrainParams, data: dict) -> dict:
    return {"front_end": config_lib.to_dict(front_end), "training": config_lib.to_dict(params),
            "data": data}


def prepare_output(paths: RunPaths, config: dict, resume: bool) -> None:
    """Creates the output folder, or checks that the run in it is this one.

    Raises:
      RunConflictError: the folder holds a different run and `resume` is on.
    """
    if paths.output.exists() and not resume:
        for stale in ("work", "config.json", "metrics.json", "history.csv"):
            target = paths.output / stale
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    paths.output.mkdir(parents=True, exist_ok=True)
    if paths.config.exists():
        previous = json.loads(paths.config.read_text())
        if previous != json.loads(json.dumps(config)):
            raise RunConflictError(
                f"{paths.output} holds a run with another configuration; choose another "
                "--output (or --name), or pass --no-resume to start it over")
    else:
        config_lib.save_json(paths.config, **config)


def train_and_calibrate(
    kind: str,
    table: pd.DataFrame,
    front_end: FrontEndParams,
    params: TrainParams,
    work_dir: Path,
    log_dir: Path | None,
    strategy: tf.distribute.Strategy | None,
    skip_log: pipeline.SkipLog,
    run_config_json: dict,
    verbose: int,
) -> tuple[GenderClassifierModule, pd.DataFrame]:
    """Trains on `table` (validation speakers carved out of it) and calibrates on them.

    Returns:
      The servable module (classifier, front end, calibration) and the epoch history.
    """
    validation = splits.validation_split(table, params.validation_fraction, params.seed)
    train_table, validation_table = splits.split_rows(table, validation)
    model_recipe = registry.recipe(kind, front_end, params)
    model, history = training.train_model(
        model_recipe.build, model_recipe.stages, train_table, validation_table, front_end,
        params, work_dir, log_dir=log_dir, strategy=strategy, skip_log=skip_log,
        verbose=verbose)
    module = GenderClassifierModule(model, front_end, config=run_config_json)
    scored = training.score_recordings(module, validation_table, skip_log=skip_log)
    temperature, bias = training.fit_calibration(scored["logit"], scored["label"])
    module.temperature.assign(temperature)
    module.bias.assign(bias)
    return module, history


def run_experiment(
    table: pd.DataFrame,
    front_end: FrontEndParams,
    params: TrainParams,
    paths: RunPaths,
    data_description: dict,
    *,
    resume: bool = True,
    leaky_split: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 2,
    condition_tests: tuple[str, ...] = (),
) -> dict:
    """Cross-validates (or holds out) by speaker, trains the final model and exports it.

    Args:
      table: the corpus (`corpora.load_corpus(...).table`).
      front_end, params: the run's configuration.
      paths: output folder and TensorBoard log folder.
      data_description: where the data came from, stored in config.json.
      resume: continue an interrupted run in the same folder (else start it over).
      leaky_split: split clips at random, putting speakers on both sides. Only to show how much
        that inflates scores; never for a reported figure.
      strategy: distribution strategy for building and training models.
      verbose: Keras progress output.
      condition_tests: held-out recording conditions (`conditions.HELD_OUT_CONDITIONS`) each
        fold's test speakers are also scored under, from copies written for the purpose.

    Returns:
      The metrics written to metrics.json.
    """
    front_end = registry.required_front_end(params.model, front_end)
    config = run_config(front_end, params, {**data_description, "leaky_split": leaky_split})
    prepare_output(paths, config, resume)
    skip_log = pipeline.SkipLog(paths.output / "skipped_files.log")

    folds = _evaluation_splits(table, params, leaky_split)
    reports, predictions, condition_predictions, modules = [], [], [], {}
    for name, (train_table, test_table) in folds.items():
        fold_dir = paths.fold(name)
        report_path = fold_dir / "report.json"
        if report_path.exists():
            print(f"{name}: already done, reusing {report_path}", flush=True)
            reports.append(json.loads(report_path.read_text()))
            predictions.append(pd.read_csv(fold_dir / "predictions.csv", dtype={"speaker": str}))
            if (fold_dir / "condition_predictions.csv").exists():
                condition_predictions.append(pd.read_csv(
                    fold_dir / "condition_predictions.csv", dtype={"speaker": str}))
            continue
        print(f"{name}: training on {train_table['speaker'].nunique()} speakers, testing on "
              f"{test_table['speaker'].nunique()}", flush=True)
        started = time.perf_counter()
        module, _ = train_and_calibrate(
            params.model, train_table, front_end, params, fold_dir,
            paths.logs / name if paths.logs else None, strategy, skip_log, config, verbose)
        train_seconds = time.perf_counter() - started
        scored = training.score_recordings(module, test_table, skip_log=skip_log)
        report = metrics.evaluation_report(scored)
        if condition_tests:
            condition_scores = score_conditions(module, test_table, condition_tests,
                                                fold_dir / "conditions", params.seed, skip_log)
            report["conditions"] = _condition_reports(condition_scores)
            condition_scores.assign(fold=name).to_csv(fold_dir / "condition_predictions.csv",
                                                      index=False)
        report.update(fold=name, test_speakers=sorted(test_table["speaker"].unique()),
                      temperature=float(module.temperature.numpy()),
                      calibration_bias=float(module.bias.numpy()),
                      train_seconds=round(train_seconds, 1))
        scored.assign(fold=name).to_csv(fold_dir / "predictions.csv", index=False)
        report_path.write_text(json_text(report))
        reports.append(report)
        predictions.append(scored.assign(fold=name))
        if condition_tests:
            condition_predictions.append(condition_scores.assign(fold=name))
        modules[name] = module
        _print_fold(report)

    if params.folds >= 2:
        print(f"final model: training on all {table['speaker'].nunique()} speakers", flush=True)
        module, _ = train_and_calibrate(
            params.model, table, front_end, params, paths.fold("final"),
            paths.logs / "final" if paths.logs else None, strategy, skip_log, config, verbose)
        history_source = paths.fold("final") / "history.csv"
    else:
        # The hold-out model is the final model; after a restart it comes back from its
        # checkpoint without training again.
        name = next(iter(folds))
        module = modules.get(name) or train_and_calibrate(
            params.model, folds[name][0], front_end, params, paths.fold(name), None, strategy,
            skip_log, config, 0)[0]
        history_source = paths.fold(name) / "history.csv"
    if history_source.exists():
        shutil.copyfile(history_source, paths.output / "history.csv")

    pooled = pd.concat(predictions, ignore_index=True)
    pooled.to_csv(paths.output / "predictions.csv", index=False)
    result = {
        "model": params.model,
        "features": front_end.feature_type,
        "evaluation": _evaluation_name(params, leaky_split),
        "folds": reports,
        "pooled": metrics.evaluation_report(pooled),
        "summary": metrics.summarize_folds(reports),
        "temperature": float(module.temperature.numpy()),
        "calibration_bias": float(module.bias.numpy()),
        "parameters": int(module.classifier.count_params()),
        "skipped_files": skip_log.skipped,
    }
    if condition_predictions:
        pooled_conditions = pd.concat(condition_predictions, ignore_index=True)
        pooled_conditions.to_csv(paths.output / "condition_predictions.csv", index=False)
        result["conditions"] = _condition_reports(pooled_conditions)
    card = model_card.render(config, result, table)
    module.model_card = card
    version_dir = export_model(module, paths.output)
    result["saved_model"] = str(version_dir)
    (paths.output / model_card.FILE_NAME).write_text(card)
    # The Keras model too, for tools that need its layers (Grad-CAM in `interpret`).
    staging = paths.output / ".model-staging.keras"
    module.classifier.save(staging)
    os.replace(staging, paths.output / "model.keras")
    paths.metrics.write_text(json_text(result))
    _write_figures(paths.output, pooled, result)
    if paths.logs:
        tensorboard_logs.write_run_summary(paths.logs, config, result, pooled,
                                           table, front_end)
    shutil.rmtree(paths.output / "work", ignore_errors=True)
    return result


def score_conditions(module: GenderClassifierModule, table: pd.DataFrame,
                     condition_names: tuple[str, ...], work_dir: Path, seed: int,
                     skip_log: pipeline.SkipLog) -> pd.DataFrame:
    """Scores `table`'s recordings under held-out recording conditions.

    Copies are written under `work_dir` (one folder per condition), scored as the exported
    model scores files, and removed.

    Returns:
      `training.score_recordings` rows for every condition, with a `condition` column.
    """
    scored = []
    for condition in condition_names:
        folder = work_dir / condition
        shutil.rmtree(folder, ignore_errors=True)
        copies = conditions.write_condition_copies(table, condition, folder, seed)
        scored.append(training.score_recordings(module, copies, skip_log=skip_log))
        shutil.rmtree(folder, ignore_errors=True)
    return pd.concat(scored, ignore_index=True)


def _condition_reports(scores: pd.DataFrame) -> dict[str, dict]:
    """One `metrics.evaluation_report` per condition, pooled over corpora (the per-corpus
    breakdown is the clean figures' job)."""
    return {condition: metrics.evaluation_report(rows.drop(columns="corpus", errors="ignore"))
            for condition, rows in scores.groupby("condition", sort=False)}


def _evaluation_name(params: TrainParams, leaky_split: bool) -> str:
    if leaky_split:
        return "leaky random clip split (speakers on both sides: inflated)"
    if params.holdout_corpus:
        return f"cross-corpus: trained without {params.holdout_corpus}, tested on all of it"
    if params.folds >= 2:
        return "speaker-disjoint %d-fold" % params.folds
    return "speaker-disjoint hold-out"


def _print_fold(report: dict) -> None:
    """One line per fold as it finishes: clip balanced accuracy, overall and per corpus."""
    parts = [f"clip bal.acc {report['clip']['balanced_accuracy']:.3f}"]
    by_corpus = report.get("by_corpus") or {}
    if len(by_corpus) > 1:
        parts += [f"{name} {rows['clip']['balanced_accuracy']:.3f}"
                  for name, rows in by_corpus.items()]
    parts += [f"{name} {rows['clip']['balanced_accuracy']:.3f}"
              for name, rows in (report.get("conditions") or {}).items()]
    print(f"{report['fold']}: " + ", ".join(parts), flush=True)


def _evaluation_splits(table: pd.DataFrame, params: TrainParams,
                       leaky_split: bool) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    if leaky_split:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            clip_split = splits.leaky_clip_split(table, params.test_fraction, params.seed)
        print("WARNING: leaky random clip split: the same speakers are on both sides, so "
              "these scores are inflated and say nothing about unheard speakers.", flush=True)
        return {"leaky": (table.loc[list(clip_split.train_index)],
                          table.loc[list(clip_split.test_index)])}
    if params.holdout_corpus:
        split = splits.corpus_holdout_split(table, params.holdout_corpus)
        return {f"without-{params.holdout_corpus}": splits.split_rows(table, split)}
    if params.folds >= 2:
        return {f"fold{index}": splits.split_rows(table, split)
                for index, split in enumerate(
                    splits.speaker_folds(table, params.folds, params.seed), start=1)}
    split = splits.holdout_split(table, params.test_fraction, params.seed)
    return {"holdout": splits.split_rows(table, split)}


def _write_figures(output: Path, pooled: pd.DataFrame, result: dict) -> None:
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
