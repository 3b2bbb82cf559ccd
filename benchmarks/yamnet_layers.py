"""Which YAMNet layer carries a speaker's gender to unheard speakers? Logistic regression on each
block's pooled activations, speaker-disjoint 5-fold (the product's folds), in one run.

    python benchmarks/yamnet_layers.py [--data-dir DIR] [--weights yamnet.tflite]

For each of YAMNet's 14 blocks, each clip's loudest window goes through the pretrained network
(the product's front end), the block's feature map is pooled to per-channel means (and means
and standard deviations), and a class-balanced, standardised logistic regression is fitted on
the training speakers of each fold and scored on its held-out speakers. This is why the
backbone models read `layer7` (BackboneSpec.feature_layer) rather than the top embedding.
Needs scikit-learn (installed with librosa by the test extras).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

from speakergender import corpora, metrics, pipeline, splits
from speakergender.models.backbones import BACKBONES

SHARED = Path(__file__).resolve().parents[2] / "shared"


def block_statistics(table, weights: str) -> list[np.ndarray]:
    """Per block, float [clips, 2 * channels]: channel means, then standard deviations."""
    spec = BACKBONES["yamnet"]
    backbone = spec.build()
    spec.load_weights(backbone, weights)
    blocks = keras.Model(backbone.inputs,
                         [backbone.get_layer(f"layer{n}").output for n in range(1, 15)])
    dataset = pipeline.make_dataset(table, spec.front_end, training=False, batch_size=64)
    pooled = [[] for _ in range(14)]
    for features, _ in dataset:
        for n, feature_map in enumerate(blocks(features, training=False)):
            feature_map = np.asarray(feature_map)
            pooled[n].append(np.concatenate(
                [feature_map.mean(axis=(1, 2)), feature_map.std(axis=(1, 2))], axis=1))
    return [np.concatenate(p) for p in pooled]


def cross_validated_balanced_accuracy(x, table, folds) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    labels = pipeline.labels_of(table)
    speakers = table["speaker"].astype(str).to_numpy()
    scores = []
    for fold in folds:
        train = np.isin(speakers, fold.train_speakers)
        test = np.isin(speakers, fold.test_speakers)
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=0.01, class_weight="balanced", max_iter=3000))
        model.fit(x[train], labels[train])
        probabilities = model.predict_proba(x[test])[:, 1]
        scores.append(metrics.binary_metrics(labels[test], probabilities)["balanced_accuracy"])
    return float(np.mean(scores)), float(np.std(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED / "data" / "audiomnist-az-dev")
    parser.add_argument("--weights", default=str(SHARED / "models" / "yamnet" / "yamnet.tflite"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = corpora.load_corpus(args.data_dir).table
    folds = splits.speaker_folds(table, 5, args.seed)
    pooled = block_statistics(table, args.weights)
    print(f"{len(table)} clips, {table['speaker'].nunique()} speakers; balanced accuracy, "
          f"mean (std) over 5 speaker-disjoint folds")
    print(f"{'block':>8}  {'channels':>8}  {'means':>13}  {'means + stds':>13}")
    for n, x in enumerate(pooled, start=1):
        channels = x.shape[1] // 2
        mean_only = cross_validated_balanced_accuracy(x[:, :channels], table, folds)
        with_std = cross_validated_balanced_accuracy(x, table, folds)
        print(f"{'layer' + str(n):>8}  {channels:8d}  {mean_only[0]:6.3f} ({mean_only[1]:.3f})"
              f"  {with_std[0]:6.3f} ({with_std[1]:.3f})")
    print("(layer14's channel means are YAMNet's 1024-d embedding)")


if __name__ == "__main__":
    main()
