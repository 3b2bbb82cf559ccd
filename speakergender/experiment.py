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
from speakergender import (calibration, cluster, conditions, metrics, model_card, pipeline,
                           reports, scoring, splits, training)
from speakergender.config import FrontEndParams, TrainParams
from speakergender.export import GenderClassifierModule, export_model
from speakergender.models import registry


class RunConflictError(ValueError):
    """The output folder holds a run with another configuration."""


@dataclasses.dataclass(frozen=True)
class RunPaths:
    output: Path
    logs: Path | None
    # A multi-worker run's worker other than the chief writes everything into `output`, a
    # scratch folder, but follows the chief's progress: folds done, checkpoints, read here.
    chief_output: Path | None = None

    @property
    def config(self) -> Path:
        return self.output / "config.json"

    @property
    def metrics(self) -> Path:
        return self.output / "metrics.json"

    def fold(self, name: str) -> Path:
        return self.output / "work" / name

    def progress(self, name: str) -> Path:
        """Where a fold's progress is read from: the chief's fold folder."""
        return (self.chief_output or self.output) / "work" / name


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
    progress_dir: Path | None = None,
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
        verbose=verbose, progress_dir=progress_dir)
    module = GenderClassifierModule(model, front_end, config=run_config_json)
    scored = scoring.score_recordings(module, validation_table, skip_log=skip_log)
    temperature, bias = calibration.fit_calibration(scored["logit"], scored["label"])
    module.temperature.assign(temperature)
    module.bias.assign(bias)
    return module, history


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every fold of one run shares."""

    front_end: FrontEndParams
    params: TrainParams
    paths: RunPaths
    config: dict
    skip_log: pipeline.SkipLog
    strategy: tf.distribute.Strategy | None
    verbose: int
    condition_tests: tuple[str, ...]


@dataclasses.dataclass
class FoldResult:
    """One fold's held-out report and per-clip scores (and its model, when trained now)."""

    report: dict
    predictions: pd.DataFrame
    condition_predictions: pd.DataFrame | None
    module: GenderClassifierModule | None = None


def run_fold(name: str, train_table: pd.DataFrame, test_table: pd.DataFrame,
             context: RunContext) -> FoldResult:
    """Trains on one fold's speakers, scores its held-out ones (and under held-out recording
    conditions); a fold finished before (its report on disk) is read back, not trained again."""
    fold_dir = context.paths.fold(name)
    finished = _finished_fold(context.paths.progress(name))
    if finished is not None:
        print(f"{name}: already done, reusing {context.paths.progress(name) / 'report.json'}",
              flush=True)
        return finished
    print(f"{name}: training on {train_table['speaker'].nunique()} speakers, testing on "
          f"{test_table['speaker'].nunique()}", flush=True)
    started = time.perf_counter()
    module, _ = train_and_calibrate(
        context.params.model, train_table, context.front_end, context.params, fold_dir,
        context.paths.logs / name if context.paths.logs else None, context.strategy,
        context.skip_log, context.config, context.verbose, context.paths.progress(name))
    train_seconds = time.perf_counter() - started
    scored = scoring.score_recordings(module, test_table, skip_log=context.skip_log)
    report = metrics.evaluation_report(scored)
    condition_scores = None
    if context.condition_tests:
        condition_scores = score_conditions(
            module, test_table, context.condition_tests, fold_dir / "conditions",
            context.params.seed, context.skip_log).assign(fold=name)
        report["conditions"] = reports.condition_reports(condition_scores)
        condition_scores.to_csv(fold_dir / "condition_predictions.csv", index=False)
    report.update(fold=name, test_speakers=sorted(test_table["speaker"].unique()),
                  temperature=float(module.temperature.numpy()),
                  calibration_bias=float(module.bias.numpy()),
                  train_seconds=round(train_seconds, 1))
    scored = scored.assign(fold=name)
    scored.to_csv(fold_dir / "predictions.csv", index=False)
    (fold_dir / "report.json").write_text(reports.json_text(report))
    reports.print_fold(report)
    return FoldResult(report, scored, condition_scores, module)


def _finished_fold(fold_dir: Path) -> FoldResult | None:
    if not (fold_dir / "report.json").exists():
        return None
    conditions_path = fold_dir / "condition_predictions.csv"
    return FoldResult(
        json.loads((fold_dir / "report.json").read_text()),
        pd.read_csv(fold_dir / "predictions.csv", dtype={"speaker": str}),
        pd.read_csv(conditions_path, dtype={"speaker": str}) if conditions_path.exists()
        else None)


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
    if cluster.is_multi_worker(strategy):
        # No worker reads the chief's progress before the chief has cleared it (--no-resume).
        cluster.barrier(strategy)
    context = RunContext(front_end, params, paths, config,
                         pipeline.SkipLog(paths.output / "skipped_files.log"), strategy,
                         verbose, tuple(condition_tests))

    folds = _evaluation_splits(table, params, leaky_split)
    results = {name: run_fold(name, train_table, test_table, context)
               for name, (train_table, test_table) in folds.items()}
    module = _final_model(table, folds, results, context)

    pooled = pd.concat([fold.predictions for fold in results.values()], ignore_index=True)
    pooled.to_csv(paths.output / "predictions.csv", index=False)
    fold_reports = [fold.report for fold in results.values()]
    result = {
        "model": params.model,
        "features": front_end.feature_type,
        "evaluation": _evaluation_name(params, leaky_split),
        "folds": fold_reports,
        "pooled": metrics.evaluation_report(pooled),
        "summary": metrics.summarize_folds(fold_reports),
        "temperature": float(module.temperature.numpy()),
        "calibration_bias": float(module.bias.numpy()),
        "parameters": int(module.classifier.count_params()),
        "skipped_files": context.skip_log.skipped,
    }
    condition_predictions = [fold.condition_predictions for fold in results.values()
                             if fold.condition_predictions is not None]
    if condition_predictions:
        pooled_conditions = pd.concat(condition_predictions, ignore_index=True)
        pooled_conditions.to_csv(paths.output / "condition_predictions.csv", index=False)
        result["conditions"] = reports.condition_reports(pooled_conditions)
    result["saved_model"] = str(_export(module, config, result, table, paths.output))
    reports.write_run_reports(paths.output, paths.logs, config, result, pooled, table,
                              module.classifier)
    shutil.rmtree(paths.output / "work", ignore_errors=True)
    return result


def _final_model(table: pd.DataFrame, folds: dict, results: dict[str, FoldResult],
                 context: RunContext) -> GenderClassifierModule:
    """With K folds, a model trained on every speaker; otherwise the hold-out fold's own model
    (after a restart it comes back from its checkpoint without training again)."""
    paths, params = context.paths, context.params
    if params.folds >= 2:
        print(f"final model: training on all {table['speaker'].nunique()} speakers", flush=True)
        module, _ = train_and_calibrate(
            params.model, table, context.front_end, params, paths.fold("final"),
            paths.logs / "final" if paths.logs else None, context.strategy, context.skip_log,
            context.config, context.verbose, paths.progress("final"))
        history_source = paths.fold("final") / "history.csv"
    else:
        name = next(iter(folds))
        module = results[name].module or train_and_calibrate(
            params.model, folds[name][0], context.front_end, params, paths.fold(name), None,
            context.strategy, context.skip_log, context.config, 0, paths.progress(name))[0]
        history_source = paths.fold(name) / "history.csv"
    if history_source.exists():
        shutil.copyfile(history_source, paths.output / "history.csv")
    return module


def _export(module: GenderClassifierModule, config: dict, result: dict, table: pd.DataFrame,
            output: Path) -> Path:
    """The SavedModel (with its model card), the card beside it and the Keras model."""
    card = model_card.render(config, result, table)
    module.model_card = card
    version_dir = export_model(module, output)
    (output / model_card.FILE_NAME).write_text(card)
    # The Keras model too, for tools that need its layers (Grad-CAM in `interpret`).
    staging = output / ".model-staging.keras"
    module.classifier.save(staging)
    os.replace(staging, output / "model.keras")
    return version_dir


def score_conditions(module: GenderClassifierModule, table: pd.DataFrame,
                     condition_names: tuple[str, ...], work_dir: Path, seed: int,
                     skip_log: pipeline.SkipLog) -> pd.DataFrame:
    """Scores `table`'s recordings under held-out recording conditions.

    Copies are written under `work_dir` (one folder per condition), scored as the exported
    model scores files, and removed.

    Returns:
      `scoring.score_recordings` rows for every condition, with a `condition` column.
    """
    scored = []
    for condition in condition_names:
        folder = work_dir / condition
        shutil.rmtree(folder, ignore_errors=True)
        copies = conditions.write_condition_copies(table, condition, folder, seed)
        scored.append(scoring.score_recordings(module, copies, skip_log=skip_log))
        shutil.rmtree(folder, ignore_errors=True)
    return pd.concat(scored, ignore_index=True)


def _evaluation_name(params: TrainParams, leaky_split: bool) -> str:
    if leaky_split:
        return "leaky random clip split (speakers on both sides: inflated)"
    if params.holdout_corpus:
        return f"cross-corpus: trained without {params.holdout_corpus}, tested on all of it"
    if params.folds >= 2:
        return "speaker-disjoint %d-fold" % params.folds
    return "speaker-disjoint hold-out"


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


