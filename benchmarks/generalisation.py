"""Does a model trained on one corpus hold up on another, and under recording conditions it
never trained with? Trains each configuration cross-corpus in both directions (and, with
--folds, speaker-disjoint K-fold on both corpora together), then prints one table per question.

Every run is a plain `python -m speakergender.train` whose run folder (config, metrics, model
card, figures) stays under --output; a finished run is reused when the script is started again.
Long (tens of minutes a configuration on 2 cores): run it, don't test it.

  python benchmarks/generalisation.py --configs scratch-plain scratch-augmented \\
      --folds 5 --az-folds 5 --fold-configs scratch-augmented
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
YAMNET = SHARED / "models" / "yamnet" / "yamnet.tflite"
CORPORA = {"az": SHARED / "data" / "audiomnist-az-dev", "ravdess": SHARED / "data" / "ravdess-dev"}

SCRATCH = ["--model", "scratch"]
BACKBONE = ["--backbone-handle", str(YAMNET)]
PLAIN, CMN = ["--feature-normalization", "none"], ["--feature-normalization", "mean"]
# name -> train options; every option that a default could change is spelled out
CONFIGS = {
    "scratch-plain": SCRATCH + PLAIN + ["--no-augment"],
    "scratch-plain-cmn": SCRATCH + CMN + ["--no-augment"],
    "scratch-augmented": SCRATCH + PLAIN,
    "scratch-augmented-cmn": SCRATCH + CMN,
    "yamnet-plain": ["--model", "yamnet"] + BACKBONE + PLAIN + ["--no-augment"],
    "yamnet-augmented": ["--model", "yamnet"] + BACKBONE + PLAIN,
    "yamnet-augmented-cmn": ["--model", "yamnet"] + BACKBONE + CMN,
    "yamnet-frozen-augmented": ["--model", "yamnet-frozen"] + BACKBONE + PLAIN,
}


def train(output: Path, options: list[str], corpora: tuple[str, ...] = ("az", "ravdess")) -> dict:
    metrics_path = output / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    started = time.perf_counter()
    command = [sys.executable, "-m", "speakergender.train", "--seed", "0", "--quiet",
               "--output", str(output), "--logdir", str(output.parent / "runs" / output.name),
               *[arg for name in corpora for arg in ("--data-dir", f"{name}={CORPORA[name]}")],
               *options]
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)
    print(f"{output.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return json.loads(metrics_path.read_text())


def row(report: dict) -> list[str]:
    clip, vote = report["clip"], report["speaker_vote"]
    return [f"{clip['balanced_accuracy']:.3f}", f"{clip['recall_female']:.3f}",
            f"{clip['recall_male']:.3f}", f"{clip['roc_auc']:.3f}", f"{vote['accuracy']:.3f}"]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["scratch-plain", "scratch-augmented"],
                        choices=list(CONFIGS))
    parser.add_argument("--folds", type=int, default=0,
                        help="also K-fold on both corpora together (0: skip)")
    parser.add_argument("--fold-configs", nargs="*", default=None, choices=list(CONFIGS),
                        help="configurations to cross-validate (default: all of --configs)")
    parser.add_argument("--az-folds", type=int, default=0, help=(
        "also K-fold on the AZ corpus alone, the in-corpus figure earlier landings reported "
        "(0: skip)"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/generalisation"))
    args = parser.parse_args()
    if not all(path.is_dir() for path in CORPORA.values()):
        print(f"needs the shared corpora under {SHARED / 'data'}", file=sys.stderr)
        return 1

    cross, conditions, folds = [], {}, []
    for name in args.configs:
        for train_on, test_on in (("az", "ravdess"), ("ravdess", "az")):
            result = train(args.output / f"{name}-{train_on}-to-{test_on}",
                           CONFIGS[name] + ["--holdout-corpus", test_on])
            cross.append([name, f"{train_on} -> {test_on}"] + row(result["pooled"]))
            for condition, report in (result.get("conditions") or {}).items():
                conditions.setdefault((name, f"{train_on} -> {test_on}"), {})[condition] = (
                    report["clip"]["balanced_accuracy"])
    for name in (args.fold_configs if args.fold_configs is not None else args.configs):
        if args.folds < 2:
            break
        result = train(args.output / f"{name}-{args.folds}fold",
                       CONFIGS[name] + ["--folds", str(args.folds)])
        summary = result["summary"]
        per_corpus = {corpus: stats["clip"]["balanced_accuracy"]["mean"]
                      for corpus, stats in summary.get("by_corpus", {}).items()}
        folds.append([name, f"{summary['clip']['balanced_accuracy']['mean']:.3f}",
                      f"{summary['clip']['balanced_accuracy']['std']:.3f}",
                      f"{per_corpus.get('az', float('nan')):.3f}",
                      f"{per_corpus.get('ravdess', float('nan')):.3f}",
                      f"{summary['speaker_vote']['accuracy']['mean']:.3f}"])
        for condition, report in (result.get("conditions") or {}).items():
            conditions.setdefault((name, f"{args.folds}-fold"), {})[condition] = (
                report["clip"]["balanced_accuracy"])

    in_corpus = []
    for name in (args.fold_configs if args.fold_configs is not None else args.configs):
        if args.az_folds < 2:
            break
        result = train(args.output / f"{name}-az-{args.az_folds}fold",
                       CONFIGS[name] + ["--folds", str(args.az_folds)], corpora=("az",))
        summary = result["summary"]
        in_corpus.append([name, f"{summary['clip']['balanced_accuracy']['mean']:.3f}",
                          f"{summary['clip']['balanced_accuracy']['std']:.3f}",
                          f"{summary['speaker_vote']['accuracy']['mean']:.3f}"])
        for condition, report in (result.get("conditions") or {}).items():
            conditions.setdefault((name, f"az {args.az_folds}-fold"), {})[condition] = (
                report["clip"]["balanced_accuracy"])

    print_table("Cross-corpus (train on one corpus, test on every clip of the other):",
                ["config", "direction", "clip bal.acc", "recall F", "recall M", "AUC",
                 "spk vote acc"], cross)
    if conditions:
        names = list(dict.fromkeys(c for values in conditions.values() for c in values))
        print_table("Held-out speakers under conditions never trained on (clip bal.acc):",
                    ["config", "evaluation", *names],
                    [[config, evaluation] + [f"{values.get(c, float('nan')):.3f}" for c in names]
                     for (config, evaluation), values in conditions.items()])
    if folds:
        print_table(f"Speaker-disjoint {args.folds}-fold on both corpora together:",
                    ["config", "mean clip bal.acc", "std", "az", "ravdess", "spk vote acc"],
                    folds)
    if in_corpus:
        print_table(f"Speaker-disjoint {args.az_folds}-fold on the AZ corpus alone:",
                    ["config", "mean clip bal.acc", "std", "spk vote acc"], in_corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
