"""Converts YAMNet's TFLite file into a SavedModel with TF Hub YAMNet's interface and names.

    python -m speakergender.convert_yamnet --tflite yamnet.tflite --output yamnet_savedmodel

The folder can be passed wherever a YAMNet handle is taken (`--backbone-handle FOLDER`): it is
the offline route for machines that cannot reach TF Hub. Like TF Hub's YAMNet, the SavedModel's
`__call__` takes a float32 waveform [samples] at 16 kHz in [-1, 1] and returns (scores [N, 521],
embeddings [N, 1024], log_mel_spectrogram [frames, 64]) for 0.96 s patches every 0.48 s, and
`class_map_path()` returns the class map CSV. The SavedModel is `yamnet_hub.YAMNetHub`: the
Keras `build_yamnet` model with the TFLite file's weights (dequantized) behind TF Hub's framing.
The output is written to a temporary folder beside it, reloaded and checked against the Keras
model, then renamed into place.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

CLASS_MAP_NAME = "yamnet_class_map.csv"
# Reloaded SavedModel vs the in-memory Keras model, on the check signal.
MAX_SCORE_DIFFERENCE = 1e-4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.convert_yamnet",
        description="Convert YAMNet's TFLite file into a TF Hub-style SavedModel folder.")
    parser.add_argument("--tflite", required=True, type=Path, help="YAMNet .tflite file")
    parser.add_argument("--output", required=True, type=Path, help="SavedModel folder to write")
    parser.add_argument("--class-map", type=Path, default=None,
                        help=f"class map CSV (default: {CLASS_MAP_NAME} beside the TFLite file)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser.parse_args(argv)


def _check_class_map(path: Path) -> None:
    from speakergender.models.yamnet import NUM_CLASSES
    lines = path.read_text().splitlines()
    rows = [line for line in lines[1:] if line.strip()]
    if len(rows) != NUM_CLASSES:
        raise ValueError(f"{path}: expected a header and {NUM_CLASSES} classes, "
                         f"found {len(rows)} rows")


def check_signal(sample_rate: int = 16000) -> np.ndarray:
    """2.2 s of a 440 Hz tone in white noise: several patches, a ragged end."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.2 * sample_rate)) / sample_rate
    waveform = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    return waveform.astype(np.float32)


def check_export(saved_model_dir: Path, keras_model) -> float:
    """Runs the reloaded SavedModel and the Keras model on `check_signal`, and reads its weights.

    Returns:
      The largest absolute score difference.

    Raises:
      ValueError: shapes differ, the difference exceeds MAX_SCORE_DIFFERENCE, or the weights
        `load_yamnet_weights_from_savedmodel` reads back differ from the Keras model's.
    """
    import tensorflow as tf

    from speakergender.config import FrontEndParams
    from speakergender.models.yamnet import build_yamnet
    from speakergender.models.yamnet_hub import waveform_to_patches
    from speakergender.models.yamnet_weights import (get_yamnet_weights,
                                                     load_yamnet_weights_from_savedmodel)

    waveform = check_signal()
    reloaded = tf.saved_model.load(str(saved_model_dir))
    scores, embeddings, log_mel = (t.numpy() for t in reloaded(tf.constant(waveform)))
    _, patches = waveform_to_patches(tf.constant(waveform), FrontEndParams())
    expected = keras_model(patches, training=False)
    expected_scores = tf.sigmoid(expected["logits"]).numpy()
    if scores.shape != expected_scores.shape or embeddings.shape != expected["embedding"].shape:
        raise ValueError(f"reloaded SavedModel returns scores {scores.shape} and embeddings "
                         f"{embeddings.shape}; the Keras model {expected_scores.shape} and "
                         f"{tuple(expected['embedding'].shape)}")
    difference = float(np.max(np.abs(scores - expected_scores)))
    if not difference <= MAX_SCORE_DIFFERENCE:
        raise ValueError(f"reloaded SavedModel's scores differ from the Keras model's by "
                         f"{difference:.3g} (> {MAX_SCORE_DIFFERENCE})")
    if not Path(reloaded.class_map_path().numpy().decode()).is_file():
        raise ValueError("reloaded SavedModel's class map asset is missing")
    read_back = build_yamnet()
    load_yamnet_weights_from_savedmodel(read_back, str(saved_model_dir))
    expected_weights = get_yamnet_weights(keras_model)
    differing = [name for name, value in get_yamnet_weights(read_back).items()
                 if not np.array_equal(value, expected_weights[name])]
    if differing:
        raise ValueError(f"weights read back from the SavedModel differ from the Keras model's: "
                         f"{', '.join(differing[:5])}")
    return difference


def convert(tflite_path: Path, output_dir: Path, class_map: Path, overwrite: bool = False) -> float:
    """Writes the SavedModel atomically; returns the checked score difference."""
    import tensorflow as tf

    from speakergender.config import FrontEndParams, save_json
    from speakergender.models.yamnet import build_yamnet
    from speakergender.models.yamnet_hub import YAMNetHub
    from speakergender.models.yamnet_weights import load_yamnet_weights_from_tflite

    if not tflite_path.is_file():
        raise FileNotFoundError(f"no TFLite file at {tflite_path}")
    if not class_map.is_file():
        raise FileNotFoundError(f"no class map CSV at {class_map}; pass --class-map")
    _check_class_map(class_map)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; pass --overwrite to replace it")

    keras_model = build_yamnet()
    load_yamnet_weights_from_tflite(keras_model, tflite_path)
    front_end = FrontEndParams()
    module = YAMNetHub(keras_model, class_map, front_end)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output should not be
    try:
        # A serving signature too, as TF Hub's YAMNet has (outputs output_0..output_2).
        tf.saved_model.save(module, str(staging),
                            signatures={"serving_default": module.__call__.get_concrete_function()})
        save_json(staging / "front_end.json", front_end=front_end)
        difference = check_export(staging, keras_model)
        replaced = None
        if output_dir.exists():
            replaced = output_dir.with_name(f"{staging.name}.replaced")
            output_dir.rename(replaced)
        staging.rename(output_dir)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return difference


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    class_map = args.class_map or args.tflite.parent / CLASS_MAP_NAME
    import tensorflow as tf

    try:
        difference = convert(args.tflite, args.output, class_map, args.overwrite)
    except (OSError, ValueError, KeyError, RuntimeError, tf.errors.OpError) as error:
        print(f"convert_yamnet: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} (reloaded scores within {difference:.2g} of the Keras model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
