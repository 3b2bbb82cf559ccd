"""Which windows of a held-out recording should count? The serving gate, measured by fold.

    python benchmarks/serving_gate.py [--data-dir DIR] [--model scratch] [--gates 10,20,30]

Trains one model per speaker-disjoint fold (the product's folds and training recipe), then
scores each fold's held-out speakers with the same classifier under several serving gates:
windows more than GATE dB below a recording's loudest are not averaged. Training crops come
from within `crop_gate_db` of the loudest, so a wide serving gate also scores windows unlike
any the model was trained on. Prints clip balanced accuracy and speaker vote accuracy per gate,
mean over folds, side by side. Long (a 5-fold training run): run it, don't test it.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from speakergender import corpora, experiment, metrics, pipeline, scoring, splits
from speakergender.config import FrontEndParams, TrainParams
from speakergender.export import GenderClassifierModule
from speakergender.models import registry

SHARED = Path(__file__).resolve().parents[2] / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data" / "audiomnist-az-dev")
    parser.add_argument("--model", default="scratch", choices=registry.MODEL_KINDS)
    parser.add_argument("--backbone-handle", help="backbone weights (see train --help)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gates", default="10,20,30", help="serving gates in dB, comma-separated")
    args = parser.parse_args()
    gates = [float(gate) for gate in args.gates.split(",")]

    table = corpora.load_corpus(args.data_dir).table
    params = TrainParams(model=args.model, folds=args.folds, seed=args.seed,
                         backbone_handle=args.backbone_handle)
    front_end = registry.required_front_end(args.model, FrontEndParams())
    skip_log = pipeline.SkipLog()
    scores = {gate: [] for gate in gates}
    with tempfile.TemporaryDirectory() as work:
        for index, split in enumerate(splits.speaker_folds(table, args.folds, args.seed), 1):
            train_table, test_table = splits.split_rows(table, split)
            module, _ = experiment.train_and_calibrate(
                args.model, train_table, front_end, params, Path(work) / f"fold{index}", None,
                None, skip_log, {}, verbose=0)
            for gate in gates:
                gated = GenderClassifierModule(
                    module.classifier, dataclasses.replace(front_end, serving_gate_db=gate),
                    temperature=float(module.temperature.numpy()),
                    bias=float(module.bias.numpy()))
                report = metrics.evaluation_report(
                    scoring.score_recordings(gated, test_table, skip_log=skip_log))
                scores[gate].append((report["clip"]["balanced_accuracy"],
                                     report["speaker_vote"]["accuracy"]))
                print(f"fold{index} gate {gate:4.0f} dB: clip balanced accuracy "
                      f"{scores[gate][-1][0]:.3f}, speaker vote accuracy {scores[gate][-1][1]:.3f}",
                      flush=True)
    print(f"\n{args.model}, {args.folds} speaker-disjoint folds, mean (std) over folds; "
          f"training crops within {front_end.crop_gate_db:.0f} dB of the loudest")
    print(f"{'gate dB':>8}  {'clip bal.acc':>14}  {'spk vote acc':>14}")
    for gate in gates:
        clip, vote = np.array(scores[gate]).T
        print(f"{gate:8.0f}  {clip.mean():7.3f} ({clip.std():.3f})  {vote.mean():7.3f} "
              f"({vote.std():.3f})")


if __name__ == "__main__":
    main()
