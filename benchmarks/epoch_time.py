"""One training epoch with the features in the model against features made in tf.data.

    python benchmarks/epoch_time.py [--data-dir ../shared/data/audiomnist-az-dev] [--epochs 3]

"in the model" is how the product trains: tf.data stops at waveform windows and the model's
`front_end` layer makes the features inside the train step (on an accelerator, there). "in
tf.data" is how it trained before: the same windows, the same `FrontEnd` layer run in a
parallel tf.data map, and the same encoder fed features. Both use the default augmentation
recipe, the scratch CNN, batch 64 and the same seed, alternating in one process. Each model
trains `--epochs` epochs; the first (tracing, cache fill) is reported apart, the rest
averaged.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from speakergender import corpora, pipeline, synthetic, training
from speakergender.config import AugmentParams, FrontEndParams
from speakergender.frontend.features import FrontEnd
from speakergender.models.inputs import FRONT_END_LAYER
from speakergender.models.scratch import build_scratch_cnn

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "audiomnist-az-dev"


class EpochTimes(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.began)


def features_model(waveform_model: keras.Model, front_end: FrontEndParams) -> keras.Model:
    """The waveform model's layers after its front end, fed features instead."""
    inputs = keras.Input(shape=front_end.feature_shape, name="features")
    x = inputs
    after_front_end = False
    for layer in waveform_model.layers:
        if after_front_end:
            x = layer(x)
        after_front_end |= layer.name == FRONT_END_LAYER
    return keras.Model(inputs, x, name="features_in")


def train_epochs(model: keras.Model, dataset: tf.data.Dataset, epochs: int) -> list[float]:
    training.compile_model(model, 1e-3)
    timer = EpochTimes()
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-files", type=int, default=1500, help="0: every file")
    args = parser.parse_args()
    if not args.data_dir.exists():
        args.data_dir = synthetic.write_corpus(Path(tempfile.mkdtemp(prefix="epoch-time-")),
                                               female_speakers=10, male_speakers=10,
                                               clips_per_speaker=20)
    table = corpora.load_corpus(args.data_dir).table
    if args.max_files and len(table) > args.max_files:
        table = table.sample(args.max_files, random_state=0)
    front_end = FrontEndParams(feature_normalization="mean")
    augment = AugmentParams()
    weights = pipeline.balancing_weights(table)

    def windows():
        return pipeline.make_dataset(table, front_end, training=True,
                                     batch_size=args.batch_size, seed=0, cache=True,
                                     augment_params=augment, sample_weights=weights)

    layer = FrontEnd(front_end)
    results = {}
    keras.utils.set_random_seed(0)
    in_model = build_scratch_cnn(front_end, augment)
    keras.utils.set_random_seed(0)
    in_data = features_model(build_scratch_cnn(front_end, augment), front_end)
    for name, model, dataset in (
            ("features in the model", in_model, windows()),
            ("features in tf.data", in_data,
             windows().map(lambda clips, label, weight: (layer(clips), label, weight),
                           num_parallel_calls=tf.data.AUTOTUNE))):
        results[name] = train_epochs(model, dataset, args.epochs)
    print(f"{len(table)} recordings from {args.data_dir}, batch {args.batch_size}, "
          f"{args.epochs} epochs each, {tf.config.threading.get_intra_op_parallelism_threads() or 'auto'} threads")
    for name, seconds in results.items():
        later = np.mean(seconds[1:]) if len(seconds) > 1 else float("nan")
        print(f"{name:24s} first epoch {seconds[0]:6.1f} s, later epochs {later:6.1f} s "
              f"({' '.join(f'{s:.1f}' for s in seconds)})")
    model_side = np.mean(results["features in the model"][1:])
    data_side = np.mean(results["features in tf.data"][1:])
    print(f"later epochs, in the model / in tf.data: {model_side / data_side:.2f} "
          "(below 1: the model side is faster)")


if __name__ == "__main__":
    main()
