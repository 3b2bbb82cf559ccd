"""What a run adds to TensorBoard beyond Keras' per-epoch scalars: hparams, held-out metrics
(pooled, per corpus and per recording condition), the confusion matrix, ROC curve, per-speaker
accuracy, per-corpus and per-condition figures, and example spectrograms per gender."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from speakergender import metrics, pipeline, plots
from speakergender.models.inputs import front_end_layer

EXAMPLES_PER_GENDER = 3


def write_run_summary(log_dir: Path, config: dict, result: dict, pooled: pd.DataFrame,
                      table: pd.DataFrame, classifier: keras.Model) -> None:
    """Writes hparams, held-out metrics and images into `log_dir`/summary."""
    training = config["training"]
    front_end = front_end_layer(classifier).params
    hparams = {
        "model": training["model"],
        "features": front_end.feature_type,
        "learning_rate": float(training["learning_rate"]),
        "batch_size": int(training["batch_size"]),
        "epochs": int(training["epochs"]),
        "folds": int(training["folds"]),
        "seed": int(training["seed"]),
    }
    clip, vote = result["pooled"]["clip"], result["pooled"]["speaker_vote"]
    writer = tf.summary.create_file_writer(str(log_dir / "summary"))
    with writer.as_default():
        hparams_api.hparams(hparams)
        for name, value in (("test/clip_accuracy", clip["accuracy"]),
                            ("test/clip_balanced_accuracy", clip["balanced_accuracy"]),
                            ("test/clip_recall_female", clip["recall_female"]),
                            ("test/clip_recall_male", clip["recall_male"]),
                            ("test/clip_roc_auc", clip["roc_auc"]),
                            ("test/speaker_vote_accuracy", vote["accuracy"]),
                            ("test/speaker_vote_balanced_accuracy", vote["balanced_accuracy"])):
            tf.summary.scalar(name, value, step=0)
        groups = {"corpus": result["pooled"].get("by_corpus") or {},
                  "condition": result.get("conditions") or {}}
        labels, scores = pooled["label"].to_numpy(), pooled["probability"].to_numpy()
        for name, figure in (
                ("test/confusion_matrix",
                 plots.confusion_figure(clip["confusion"], "Clips of held-out speakers")),
                ("test/roc", plots.roc_figure({training["model"]: (labels, scores)})),
                ("test/speaker_accuracy",
                 plots.speaker_accuracy_figure(metrics.speaker_scores(pooled)))):
            png = plots.to_png_bytes(figure)
            tf.summary.image(name, tf.image.decode_png(png)[tf.newaxis], step=0)
        for kind, reports in groups.items():
            for name, report in reports.items():
                for key in ("balanced_accuracy", "recall_female", "recall_male", "roc_auc"):
                    tf.summary.scalar(f"test_by_{kind}/{name}/clip_{key}",
                                      report["clip"][key], step=0)
            if reports:
                png = plots.to_png_bytes(plots.group_metrics_figure(
                    reports, f"Held-out speakers by {kind}"))
                tf.summary.image(f"test/by_{kind}", tf.image.decode_png(png)[tf.newaxis],
                                 step=0)
        for gender, images in example_spectrograms(table, classifier).items():
            tf.summary.image(f"examples/{gender}", images, step=0,
                             max_outputs=EXAMPLES_PER_GENDER)
    writer.close()


def example_spectrograms(table: pd.DataFrame, classifier: keras.Model) -> dict[str, tf.Tensor]:
    """Features of a few clips per gender as images (low frequencies at the bottom).

    The evaluation pipeline's windows through the model's own front-end layer: what the model
    is shown.

    Returns:
      {gender: uint8 [clips, bins, frames, 1]} for the genders with a decodable clip.
    """
    front_end = front_end_layer(classifier)
    chosen = (table.drop_duplicates("speaker").groupby("gender", sort=False)
              .head(EXAMPLES_PER_GENDER))
    dataset = pipeline.make_dataset(chosen, front_end.params, training=False,
                                    batch_size=2 * EXAMPLES_PER_GENDER)
    images = {}
    for clips, labels in dataset:
        for clip, label in zip(front_end(clips).numpy(), labels.numpy()):
            scaled = (clip - clip.min()) / max(float(np.ptp(clip)), 1e-6)
            gender = pipeline.LABEL_NAMES[int(label)]
            images.setdefault(gender, []).append(np.flipud(scaled.T)[..., np.newaxis])
    return {gender: tf.constant((np.stack(shown) * 255).astype(np.uint8))
            for gender, shown in images.items()}
