"""python -m speakergender.train: train, evaluate by speaker and export a gender classifier.

Example:
  python -m speakergender.train --data-dir path/to/AudioMNIST --folds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from speakergender.conditions import HELD_OUT_CONDITIONS, parse_condition_list
from speakergender.config import (FEATURE_NORMALIZATIONS, AugmentParams, FrontEndParams,
                                  TrainParams)

DEFAULTS = TrainParams()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.train",
        description=(
            "Train a speaker-gender classifier on a folder of recordings, evaluate it on "
            "speakers it never heard (speaker-disjoint folds or a hold-out split), and export a "
            "SavedModel that takes raw audio. Results, figures and the model go to --output; "
            "TensorBoard logs to --logdir. An interrupted run continues where it stopped when "
            "started again with the same command."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", action="append", metavar="[NAME=]PATH", help=(
        "recordings to train on: AudioMNIST's layout (data/NN/D_NN_R.wav with "
        "audioMNIST_meta.txt or a metadata.txt CSV) or a manifest CSV with path,speaker,gender "
        "columns; the format is detected. Repeat it to train on several corpora at once: each "
        "is named after its folder (or NAME=PATH), its speaker ids become NAME:ID, folds are "
        "stratified by corpus and gender, and every corpus and gender weighs the same in "
        "training. Default: AudioMNIST, downloaded into --cache-dir on first use (about 1 GB)"))
    data.add_argument("--cache-dir", type=Path, help=(
        "where AudioMNIST is downloaded when --data-dir is not given (default: "
        "$SPEAKERGENDER_CACHE or ~/.cache/speakergender)"))
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULTS.model, choices=(
        "scratch", "yamnet", "yamnet-frozen", "vggish", "vggish-frozen"), help=(
        "scratch: small CNN trained from scratch; yamnet/vggish: pretrained AudioSet backbone, "
        "head first then top blocks fine-tuned; *-frozen: frozen backbone features + head"))
    model.add_argument("--features", default="log_mel", choices=("log_mel", "mfcc"), help=(
        "log_mel: 64-band log-mel (YAMNet's front end); mfcc: 12 liftered MFCCs from 40 bands "
        "with pre-emphasis 0.97 (the seed project's set-up). Backbones need log_mel"))
    model.add_argument("--feature-normalization", choices=FEATURE_NORMALIZATIONS, help=(
        "mean: subtract each window's mean log spectrum, band by band (cepstral mean "
        "subtraction), so a fixed microphone or line colour cancels; none: features as "
        "computed. Default: mean for the scratch CNN (it held up better on other corpora), "
        "none for pretrained backbones (their own front end)"))
    model.add_argument("--clip-seconds", type=float, default=FrontEndParams().clip_seconds,
                       help="window the model sees; longer recordings are scored window by "
                            "window and averaged")
    model.add_argument("--backbone-handle", help=(
        "where backbone weights come from: a TF Hub handle or URL, a local SavedModel folder, "
        "or (YAMNet) a .tflite file. Default: the official TF Hub handle"))
    model.add_argument("--backbone-layer", help=(
        "backbones: the layer whose output the head reads, as mean and standard deviation per "
        "channel; layers above it are dropped. Default: layer7 (YAMNet), conv4 (VGGish): "
        "mid-level features carry a voice better than the top embedding (YAMNet: embedding, "
        "VGGish: fc2)"))
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                          help="most epochs (for backbones: of the head-only stage)")
    training.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                          help="clips per training step")
    training.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate,
                          help="Adam learning rate (for backbones: of the head-only stage)")
    training.add_argument("--patience", type=int, default=DEFAULTS.early_stopping_patience,
                          help="stop after this many epochs without a lower validation loss")
    training.add_argument("--fine-tune-epochs", type=int, default=DEFAULTS.fine_tune_epochs,
                          help="backbones: epochs with the top blocks unfrozen (0: head only)")
    training.add_argument("--fine-tune-learning-rate", type=float,
                          default=DEFAULTS.fine_tune_learning_rate,
                          help="backbones: learning rate once the top blocks are unfrozen")
    training.add_argument("--fine-tune-blocks", type=int, default=DEFAULTS.fine_tune_blocks,
                          help="backbones: how many top blocks (below the layer the head "
                               "reads) to unfreeze")
    training.add_argument("--no-class-weights", action="store_true",
                          help="do not weight clips to balance the genders")
    training.add_argument("--seed", type=int, default=DEFAULTS.seed,
                          help="fixes speaker splits, shuffling, crops and initialisation")
    training.add_argument("--deterministic", action="store_true",
                          help="deterministic ops and data order: the same seed gives the same "
                               "metrics (slower)")
    training.add_argument("--strategy", default="auto",
                          choices=("auto", "default", "mirrored", "multi-worker"), help=(
        "auto: MirroredStrategy when more than one GPU is visible; multi-worker: train across "
        "the machines (or processes) that TF_CONFIG lists, e.g. TF_CONFIG='{\"cluster\": "
        "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": "
        "\"worker\", \"index\": 0}}' on the first and index 1 on the second, the same "
        "command on each. --batch-size is the global batch, split between the workers. The "
        "chief (worker 0) writes --output, which must be a folder every worker can read: the "
        "others follow its checkpoints and discard their own outputs. If a worker fails, "
        "restart every worker with the same command: the run goes on from the last epoch"))
    augment = parser.add_argument_group(
        "augmentation (nothing here shifts pitch or formants, the cues of the label)")
    augment.add_argument("--no-augment", action="store_true", help=(
        "train on the recordings as they are. By default each training window may pass "
        "through simulated recording conditions (telephone line, microphone colour, room "
        "reverberation, noise, level and clipping), each with its own probability and ranges "
        "(stored in config.json and the SavedModel): the recipe that held up best on corpora "
        "and conditions the model never heard"))
    augment.add_argument("--gain-db", type=float, default=0.0,
                         help="also: random gain within +-dB")
    augment.add_argument("--noise-snr-db", type=float, help="also: add white noise at this SNR")
    augment.add_argument("--time-shift", type=float, default=0.0,
                         help="also: random circular shift up to this many seconds")
    augment.add_argument("--spec-augment", action="store_true",
                         help="also: two time and two frequency masks per clip")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--folds", type=int, default=DEFAULTS.folds, help=(
        "K >= 2: speaker-disjoint K-fold cross-validation, then a final model on all speakers; "
        "0: one speaker-disjoint hold-out split"))
    evaluation.add_argument("--holdout-corpus", metavar="NAME", help=(
        "cross-corpus evaluation: train on every other --data-dir and test on all of NAME "
        "(instead of --folds); the exported model is the one trained without NAME"))
    evaluation.add_argument("--condition-tests", default=",".join(HELD_OUT_CONDITIONS),
                            metavar="LIST", help=(
        "also score each fold's held-out speakers with their recordings passed through these "
        "simulated conditions, implemented apart from the training augmentations: "
        f"{', '.join(HELD_OUT_CONDITIONS)}; 'all', or 'none' to skip"))
    evaluation.add_argument("--test-fraction", type=float, default=DEFAULTS.test_fraction,
                            help="hold-out share of speakers (with --folds 0)")
    evaluation.add_argument("--validation-fraction", type=float,
                            default=DEFAULTS.validation_fraction,
                            help="share of training speakers kept for early stopping and "
                                 "calibration")
    evaluation.add_argument("--leaky-split", action="store_true", help=(
        "split clips at random so speakers are on both sides. Inflates every score; exists "
        "only to show by how much"))
    output = parser.add_argument_group("output")
    output.add_argument("--name", help="run name (default: MODEL-FEATURES)")
    output.add_argument("--output", type=Path,
                        help="run folder (default: saved_models/NAME); the SavedModel goes in "
                             "numbered version folders inside it")
    output.add_argument("--logdir", type=Path,
                        help="TensorBoard logs (default: runs/NAME)")
    output.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue an interrupted run in --output; --no-resume starts over")
    output.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def params_from_args(args: argparse.Namespace) -> tuple[FrontEndParams, TrainParams]:
    """The run's frozen configuration from parsed arguments."""
    front_end = (FrontEndParams.seed_mfcc() if args.features == "mfcc" else FrontEndParams())
    normalization = args.feature_normalization or ("mean" if args.model == "scratch"
                                                   else "none")
    front_end = dataclasses.replace(front_end, clip_seconds=args.clip_seconds,
                                    feature_normalization=normalization)
    if args.holdout_corpus and args.folds:
        raise ValueError("--holdout-corpus tests on a whole corpus; it cannot be combined "
                         "with --folds")
    recipe = AugmentParams.none() if args.no_augment else AugmentParams()
    augment = dataclasses.replace(
        recipe, gain_db=args.gain_db or recipe.gain_db,
        noise_snr_db=args.noise_snr_db if args.noise_snr_db is not None else recipe.noise_snr_db,
        time_shift_seconds=args.time_shift or recipe.time_shift_seconds,
        time_masks=2 if args.spec_augment else recipe.time_masks,
        frequency_masks=2 if args.spec_augment else recipe.frequency_masks)
    params = TrainParams(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, folds=args.folds,
        test_fraction=args.test_fraction, validation_fraction=args.validation_fraction,
        holdout_corpus=args.holdout_corpus,
        early_stopping_patience=args.patience,
        class_balance="none" if args.no_class_weights else "weights",
        deterministic=args.deterministic, augment=augment,
        backbone_handle=args.backbone_handle, fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        fine_tune_blocks=args.fine_tune_blocks, backbone_layer=args.backbone_layer)
    return front_end, params


def data_description(corpus) -> dict:
    """Where the run's recordings came from, for config.json."""
    parts = corpus.parts or (corpus,)
    return {"corpora": [{"name": part.names[0], "source": str(part.source),
                         "format": part.format,
                         "speakers": int(part.table["speaker"].nunique()),
                         "clips": len(part.table)} for part in parts],
            "speakers": int(corpus.table["speaker"].nunique()), "clips": len(corpus.table)}


def choose_strategy(name: str):
    if name == "multi-worker":
        from speakergender import cluster
        return cluster.multi_worker_strategy()
    import tensorflow as tf
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _scratch_paths(paths, role):
    """A non-chief worker's run folders: the chief's work (saving may need every worker) goes
    into a scratch folder, removed at the end; progress is read from the chief's folder."""
    from speakergender import experiment
    scratch = Path(tempfile.mkdtemp(prefix=f"speakergender-worker{role.task_index}-"))
    return experiment.RunPaths(output=scratch, logs=None, chief_output=paths.output)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our own notes (corpus problems, split sizes) at INFO; TensorFlow's absl INFO chatter
    # ("Sharding callback duration ...") stays hidden.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("speakergender").setLevel(logging.INFO)
    try:
        front_end, params = params_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    role = None
    if args.strategy == "multi-worker":
        from speakergender import cluster
        try:
            role = cluster.role_from_tf_config()
        except cluster.ClusterConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        # Before TensorFlow runs anything: the strategy sets up the runtime's collective ops.
        strategy = choose_strategy(args.strategy)
        print(f"multi-worker training: {role.name} of {role.workers} workers"
              f"{' (chief)' if role.is_chief else ''}", flush=True)

    from speakergender import corpora
    from speakergender.archives import ArchiveError
    from speakergender.audiomnist import VerificationError, ensure_audiomnist
    from speakergender.downloads import DownloadError
    try:
        conditions = parse_condition_list(args.condition_tests)
        sources = args.data_dir or [str(ensure_audiomnist(args.cache_dir))]
        corpus = corpora.load_corpora(sources)
    except (DownloadError, ArchiveError, VerificationError, corpora.CorpusError,
            ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(corpora.summary(corpus), flush=True)

    import tensorflow as tf

    from speakergender import experiment, reports
    if params.deterministic:
        tf.config.experimental.enable_op_determinism()
    name = args.name or f"{params.model}-{front_end.feature_type.replace('_', '-')}"
    paths = experiment.RunPaths(output=args.output or Path("saved_models") / name,
                                logs=args.logdir or Path("runs") / name)
    if role is None:
        strategy = choose_strategy(args.strategy)
    elif not role.is_chief:
        paths = _scratch_paths(paths, role)
    try:
        result = experiment.run_experiment(
            corpus.table, front_end, params, paths,
            data_description(corpus), resume=args.resume, leaky_split=args.leaky_split,
            strategy=strategy, verbose=0 if args.quiet else 2, condition_tests=conditions)
    except (experiment.RunConflictError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError, tf.errors.CancelledError) as error:
        if role is None:
            raise
        # A worker died: collective ops abort on the others, which cannot take a new peer
        # into a running cluster.
        print(f"error: {role.name} lost the cluster ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:300]}). Restart every worker with the same "
              "command: training resumes from the chief's last checkpoint", file=sys.stderr)
        return 1
    finally:
        if paths.chief_output is not None:
            shutil.rmtree(paths.output, ignore_errors=True)
    if paths.chief_output is not None:
        print(f"{role.name} done; the chief writes the results to {paths.chief_output}")
        return 0
    print()
    print(f"{result['evaluation']}, {params.model} on {front_end.feature_type}:")
    print(reports.format_summary(result))
    print(f"\nSavedModel: {result['saved_model']}")
    print(f"metrics, figures, config: {paths.output}")
    if result["skipped_files"]:
        print(f"{result['skipped_files']} unreadable file(s) skipped; see "
              f"{paths.output / 'skipped_files.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
