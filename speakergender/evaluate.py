"""python -m speakergender.evaluate MODEL [MODEL ...] --data-dir DIR: compare SavedModels.

Scores every model on the same recordings through its own exported graph (raw WAV bytes in),
and prints one table: clip- and speaker-level metrics, milliseconds per clip, parameters; then
the same per corpus (several --data-dir) and per simulated recording condition (--conditions).
With --cross-validation it compares training runs instead, on the held-out folds each run
recorded, after checking that the runs used the same speaker folds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = (
    ("clips", "clip_count", "d"),
    ("clip acc", "clip_accuracy", ".3f"),
    ("clip bal.acc", "clip_balanced_accuracy", ".3f"),
    ("recall F", "clip_recall_female", ".3f"),
    ("recall M", "clip_recall_male", ".3f"),
    ("F1 F", "clip_f1_female", ".3f"),
    ("F1 M", "clip_f1_male", ".3f"),
    ("AUC", "clip_roc_auc", ".3f"),
    ("spk vote acc", "speaker_vote_accuracy", ".3f"),
    ("spk vote bal.acc", "speaker_vote_balanced_accuracy", ".3f"),
    ("spk mean bal.acc", "speaker_mean_balanced_accuracy", ".3f"),
    ("ms/clip", "ms_per_clip", ".2f"),
    ("params", "parameters", ",d"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.evaluate",
        description=(
            "Score one or several exported SavedModels on the same recordings and print one "
            "comparison table. Score only speakers the models never trained on (--speakers), "
            "or the figures mean nothing. With --cross-validation, compare training runs on "
            "the held-out folds they recorded instead."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("models", nargs="*", help=(
        "SavedModel folders, model folders with numbered versions, or run names under "
        "saved_models/ (default: every model there)"))
    parser.add_argument("--data-dir", action="append", metavar="[NAME=]PATH", help=(
        "recordings, in any layout `train` reads; repeat it for several corpora (speaker ids "
        "then read NAME:ID), each reported apart as well as pooled"))
    parser.add_argument("--speakers", help="comma-separated speaker ids to score (default: all)")
    parser.add_argument("--conditions", default="none", metavar="LIST", help=(
        "also score copies of the recordings passed through these simulated recording "
        "conditions (comma-separated, or 'all'): "
        "telephone, room, noise, resampled_44k, resampled_48k"))
    parser.add_argument("--cross-validation", action="store_true", help=(
        "compare the runs' own speaker-disjoint cross-validation figures (from each run "
        "folder's metrics.json) instead of scoring recordings"))
    parser.add_argument("--models-dir", type=Path, default=Path("saved_models"),
                        help="where run names and the default model list are looked up")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="files per model call")
    parser.add_argument("--json", type=Path, help="also write all metrics to this JSON file")
    parser.add_argument("--csv", type=Path, help="also write the table to this CSV file")
    parser.add_argument("--plots", type=Path,
                        help="write ROC and confusion-matrix PNGs into this folder")
    return parser


def score_model(model, table: pd.DataFrame, batch_size: int) -> tuple[pd.DataFrame, dict]:
    """Per-clip probabilities and the timing of one model on `table`'s recordings."""
    from speakergender import serving
    timings: list[float] = []
    files = [Path(p) for p in table["path"]]
    results = list(serving.classify_files(model, files[:batch_size], batch_size))  # warm-up
    results = list(serving.classify_files(model, files, batch_size, timings))
    scored = pd.DataFrame({"path": [r.path for r in results],
                           "probability": [r.female_probability for r in results],
                           "error": [r.error for r in results]})
    columns = [c for c in ("path", "speaker", "gender", "corpus") if c in table.columns]
    scored = table[columns].merge(scored, on="path")
    errors = scored[scored["error"] != ""]
    scored = scored[scored["error"] == ""].assign(label=lambda f: (f["gender"] == "female")
                                                  .astype(int))
    return scored, {"ms_per_clip": 1000 * sum(timings) / max(len(files), 1),
                    "parameters": model.parameter_count,
                    "failed_files": errors[["path", "error"]].to_dict("records")}


def flat_metrics(report: dict) -> dict:
    row = {}
    for level in ("clip", "speaker_vote", "speaker_mean"):
        for key, value in report[level].items():
            if not isinstance(value, list):
                row[f"{level}_{key}"] = value
    return row


def compare_saved_models(args) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    import tempfile

    from speakergender import conditions, corpora, metrics, serving
    corpus = corpora.load_corpora(args.data_dir)
    table = corpus.table
    if args.speakers:
        wanted = {s.strip() for s in args.speakers.split(",") if s.strip()}
        unknown = wanted - set(table["speaker"])
        if unknown:
            raise ValueError(f"speakers not in {args.data_dir}: {', '.join(sorted(unknown))}")
        table = table[table["speaker"].isin(wanted)]
    names = args.models or [str(p) for p in serving.list_models(args.models_dir)]
    if not names:
        raise FileNotFoundError(f"no models given and none in {args.models_dir}")
    wanted_conditions = conditions.parse_condition_list(args.conditions)
    rows, predictions = {}, {}
    with tempfile.TemporaryDirectory(prefix="speakergender-conditions-") as scratch:
        tables = {"": table}
        for condition in wanted_conditions:
            print(f"writing {len(table)} recordings under condition {condition}...",
                  file=sys.stderr)
            tables[condition] = conditions.write_condition_copies(
                table, condition, Path(scratch) / condition, seed=0)
        for name in names:
            model = serving.load_model(name, args.models_dir)
            for condition, condition_table in tables.items():
                print(f"scoring {model.name} ({model.path}) on {len(condition_table)} clips"
                      + (f" under {condition}" if condition else "") + "...", file=sys.stderr)
                scored, extra = score_model(model, condition_table, args.batch_size)
                report = metrics.evaluation_report(scored)
                row_name = f"{model.name} {condition}" if condition else model.name
                rows[row_name] = {**flat_metrics(report), **extra, "report": report,
                                  "path": str(model.path), "condition": condition or "clean"}
                predictions[row_name] = scored
    return rows, predictions


def compare_runs(args) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    from speakergender import serving
    folders = [Path(m) if Path(m).is_dir() else args.models_dir / m for m in args.models] \
        or serving.list_models(args.models_dir)
    rows, predictions, fold_speakers = {}, {}, {}
    for folder in folders:
        result_path = folder / "metrics.json"
        if not result_path.exists():
            raise FileNotFoundError(f"{folder}: no metrics.json (not a training run folder)")
        result = json.loads(result_path.read_text())
        fold_speakers[folder.name] = [tuple(f.get("test_speakers", ())) for f in result["folds"]]
        summary = result["summary"]
        rows[folder.name] = {
            **{f"{level}_{key}": value["mean"] for level in ("clip", "speaker_vote",
                                                             "speaker_mean")
               for key, value in summary[level].items()},
            "clip_count": result["pooled"]["clip"]["count"],
            "parameters": result.get("parameters"), "evaluation": result["evaluation"],
            "report": result["pooled"], "summary": summary}
        pooled = folder / "predictions.csv"
        if pooled.exists():
            predictions[folder.name] = pd.read_csv(pooled, dtype={"speaker": str})
    if len(set(map(tuple, fold_speakers.values()))) > 1:
        print("WARNING: these runs were not evaluated on the same speaker folds; the "
              "comparison is not like for like", file=sys.stderr)
    return rows, predictions


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.cross_validation and args.data_dir is None:
        print("error: --data-dir is required (or --cross-validation)", file=sys.stderr)
        return 2
    from speakergender import corpora, metrics, plots
    try:
        rows, predictions = (compare_runs(args) if args.cross_validation
                             else compare_saved_models(args))
    except (FileNotFoundError, ValueError, corpora.CorpusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(metrics.format_table(rows, COLUMNS))
    corpus_rows = {f"{name} / {corpus}": {**flat_metrics(report), "speakers": report["speakers"]}
                   for name, row in rows.items()
                   for corpus, report in (row["report"].get("by_corpus") or {}).items()}
    if any(len(row["report"].get("by_corpus") or {}) > 1 for row in rows.values()):
        print("\nby corpus:")
        print(metrics.format_table(corpus_rows, metrics.GROUP_COLUMNS))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if args.csv:
        pd.DataFrame({name: {k: v for k, v in row.items() if not isinstance(v, (dict, list))}
                      for name, row in rows.items()}).T.to_csv(args.csv, index_label="model")
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        plots.save(plots.roc_figure({name: (frame["label"].to_numpy(),
                                            frame["probability"].to_numpy())
                                     for name, frame in predictions.items()}),
                   args.plots / "roc.png")
        for name, row in rows.items():
            plots.save(plots.confusion_figure(row["report"]["clip"]["confusion"], name),
                       args.plots / f"confusion_{name}.png")
            if name in predictions:
                plots.save(plots.speaker_accuracy_figure(
                    metrics.speaker_scores(predictions[name]), f"{name}: clip accuracy per "
                    "speaker"), args.plots / f"speakers_{name}.png")
    failed = sum(len(row.get("failed_files", [])) for row in rows.values())
    if failed:
        print(f"{failed} file(s) could not be scored; see --json for which", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
