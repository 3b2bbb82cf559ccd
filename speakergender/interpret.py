"""Grad-CAM on a model's log-mel features: where in time and frequency it looks, per gender.

    python -m speakergender.interpret saved_models/scratch-log-mel --data-dir DIR [--speakers ...]

Writes the mean Grad-CAM map per gender, the attention per mel band per gender, each held-out
speaker's attention centroid, and a JSON with the per-band numbers and per-speaker centroids, so a
claim such as "female clips draw attention to higher bands" can be judged with its spread across
speakers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

KERAS_MODEL_FILE = "model.keras"
GENDERS = ("female", "male")
GENDER_COLOURS = {"female": "tab:red", "male": "tab:blue"}

# Layers whose output is 4-D but not a feature map worth explaining: pooling after the last
# convolution (the scratch CNN's `time_pool`) would leave a map with a single time step.
_NOT_FEATURE_MAPS = (keras.layers.InputLayer, keras.layers.Reshape, keras.layers.Dropout,
                     keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                     keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called in a graph has no output
        return None


def _layer_path(model: keras.Model, layer_name: str | None) -> list[keras.layers.Layer] | None:
    """Models from `model` down to the chosen layer, the layer last; None if not found.

    With no name, the chosen layer is the last one with a 4-D output that is a feature map
    (a convolution, its batch norm or activation, or a whole nested block such as YAMNet's
    `layer14`); nested models with a flat output (a backbone ending in pooling) are searched.
    """
    for layer in reversed(model.layers):
        is_map = _output_rank(layer) == 4 and not isinstance(layer, _NOT_FEATURE_MAPS)
        if layer_name is None and is_map or layer.name == layer_name:
            return [model, layer]
        if isinstance(layer, keras.Model) and (layer_name is not None or not is_map):
            inner = _layer_path(layer, layer_name)
            if inner is not None:
                return [model, *inner]
    return None


def last_conv_layer(model: keras.Model, layer_name: str | None = None
                    ) -> tuple[keras.Model, str]:
    """The innermost model holding the layer to explain, and that layer's name.

    Args:
      model: a classifier [batch, frames, bins] -> logits [batch, 1].
      layer_name: a layer anywhere in the model (nested models included); default: the last
        convolutional feature map.

    Raises:
      ValueError: no such layer, or the model has no 4-D layer.
    """
    path = _layer_path(model, layer_name)
    if path is None:
        raise ValueError(f"{model.name}: " + (f"no layer named {layer_name!r}" if layer_name
                                               else "no convolutional (4-D) layer to explain"))
    return path[-2], path[-1].name


def _single_input(model: keras.Model):
    inputs = model.inputs
    if len(inputs) != 1:
        raise ValueError(f"{model.name}: Grad-CAM needs a model with one input, got {len(inputs)}")
    return inputs[0]


def _single_output(model: keras.Model):
    outputs = model.outputs
    if len(outputs) != 1:
        raise ValueError(f"{model.name}: Grad-CAM needs a model with one output (logits), got "
                         f"{len(outputs)}")
    return outputs[0]


def _explainer_along(path: list[keras.layers.Layer]) -> keras.Model:
    """inputs -> (activation of path[-1], output of path[0]) for a chain of nested models."""
    model, child = path[0], path[1]
    if len(path) == 2 and not isinstance(child, keras.Model):
        return keras.Model(_single_input(model), [child.output, _single_output(model)])
    # The layer is a nested model (a backbone; its own `output` lives in its own graph) or sits
    # inside one: run the outer model's layers in order, taking the activation where the nested
    # model runs. The outer models here are plain chains.
    inner = _explainer_along(path[1:]) if len(path) > 2 else None
    inputs = keras.Input(shape=_single_input(model).shape[1:], name="inputs")
    x, activation = inputs, None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer is child and inner is None:
            x = activation = layer(x)
        elif layer is child:
            activation, x = inner(x)
        else:
            x = layer(x)
    return keras.Model(inputs, [activation, x])


def grad_cam_model(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """The model's input -> (activation [batch, t, f, channels], logits [batch, 1]).

    Args:
      model: a classifier; the scratch CNN or a backbone model from `models.registry`.
      layer_name: the layer to explain (default: the last convolutional feature map; for the
        scratch CNN that is `block4_relu1`, 12 x 8 cells; for YAMNet cut at `layer7` (the
        default) the backbone's output, 6 x 4; for the whole YAMNet `layer14`, 3 x 2).
    """
    path = _layer_path(model, layer_name)
    if path is None:
        last_conv_layer(model, layer_name)  # raises with the reason
    return _explainer_along(path)


def grad_cam(explainer: keras.Model, inputs: np.ndarray, labels: np.ndarray,
             feature_shape: tuple[int, int]) -> np.ndarray:
    """Grad-CAM maps for the true class of each clip, upsampled to the feature grid.

    Args:
      explainer: from `grad_cam_model`.
      inputs: what the model takes: float32 [batch, clip_samples] windows.
      labels: [batch], 1 for female (the map explains the female logit), 0 for male (the
        negated logit).
      feature_shape: (frames, bins) of the model's features (`feature_shape(model)`).

    Returns:
      float32 [batch, frames, bins], each map scaled to a maximum of 1 (all zero if nothing
      speaks for the class).
    """
    inputs = tf.constant(np.asarray(inputs, dtype=np.float32))
    sign = tf.constant(np.where(np.asarray(labels) == 1, 1.0, -1.0), tf.float32)
    with tf.GradientTape() as tape:
        activation, logits = explainer(inputs, training=False)
        target = tf.reshape(logits, [-1]) * sign
    gradients = tape.gradient(target, activation)
    # activation and gradients have shape [batch, <time cells>, <frequency cells>, channels]
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * activation, axis=-1))[..., tf.newaxis]
    cam = tf.image.resize(cam, feature_shape, method="bilinear")[..., 0]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak).numpy()


def feature_shape(model: keras.Model) -> tuple[int, int]:
    """(frames, bins) of the features the model's front-end layer makes."""
    from speakergender.models.inputs import front_end_layer
    return tuple(front_end_layer(model).output.shape[1:3])


def band_attention(maps: np.ndarray) -> np.ndarray:
    """Attention per feature band (summed over time, normalised to sum 1), [batch, bins]."""
    per_band = maps.sum(axis=1)
    return per_band / np.maximum(per_band.sum(axis=1, keepdims=True), 1e-9)


def band_centroid(attention: np.ndarray) -> np.ndarray:
    """Centre of mass of attention over band index, [batch]; NaN where a map is all zero."""
    total = attention.sum(axis=1)
    centroid = attention @ np.arange(attention.shape[1])
    return np.where(total > 0, centroid / np.maximum(total, 1e-12), np.nan)


def mel_band_centres_hz(front_end) -> np.ndarray:
    """Centre frequency of each HTK mel band of `front_end` (as tf.signal's filters), [bands]."""
    def to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    edges = np.linspace(to_mel(front_end.mel_min_hz), to_mel(front_end.mel_max_hz),
                        front_end.mel_bands + 2)
    return 700.0 * np.expm1(edges[1:-1] / 1127.0)


def summarize(maps: np.ndarray, table: pd.DataFrame) -> dict:
    """Per-gender mean band attention and the spread of attention centroids across speakers.

    Args:
      maps: [clips, frames, bins] from `grad_cam`.
      table: one row per map, in the same order, with `speaker` and `gender`.

    Returns:
      A JSON-ready dict: per gender the clip and speaker counts, the mean attention per band
      and the band where it peaks, each speaker's centroid (band index, mean over the speaker's
      clips), their mean and standard deviation; the female-minus-male centroid difference in
      bands, its effect size (difference over the pooled per-speaker standard deviation), the
      share of female speakers whose centroid lies above the male speakers' median, and a
      one-line statement.
    """
    if len(maps) != len(table):
        raise ValueError(f"{len(maps)} maps but {len(table)} table rows")
    attention = band_attention(maps)
    frame = pd.DataFrame({"speaker": table["speaker"].astype(str).to_numpy(),
                          "gender": table["gender"].to_numpy(),
                          "centroid": band_centroid(attention)})
    per_speaker = frame.dropna().groupby(["gender", "speaker"])["centroid"].mean().reset_index()
    result = {"bands": int(maps.shape[2]), "genders": {}}
    for gender in GENDERS:
        mask = (frame["gender"] == gender).to_numpy()
        speakers = per_speaker[per_speaker["gender"] == gender]
        centroids = speakers["centroid"].to_numpy()
        result["genders"][gender] = {
            "clips": int(mask.sum()),
            "speakers": int(len(centroids)),
            "mean_band_attention": attention[mask].mean(axis=0).tolist() if mask.any() else [],
            # Where the strongest evidence sits; the centroid also weighs diffuse attention.
            "peak_band": (int(np.argmax(attention[mask].mean(axis=0)))
                          if mask.any() and attention[mask].max() > 0 else None),
            "speaker_centroids": dict(zip(speakers["speaker"], map(float, centroids))),
            "centroid_mean": float(centroids.mean()) if len(centroids) else math.nan,
            "centroid_std": float(centroids.std(ddof=0)) if len(centroids) else math.nan,
        }
    female, male = result["genders"]["female"], result["genders"]["male"]
    difference = female["centroid_mean"] - male["centroid_mean"]
    pooled = math.sqrt((female["centroid_std"] ** 2 + male["centroid_std"] ** 2) / 2)
    male_median = float(np.median(list(male["speaker_centroids"].values()))) \
        if male["speakers"] else math.nan
    above = [c > male_median for c in female["speaker_centroids"].values()]
    result["female_minus_male_centroid_bands"] = float(difference)
    result["effect_size"] = float(difference / pooled) if pooled > 0 else math.nan
    result["female_speakers_above_male_median"] = (
        float(np.mean(above)) if above and not math.isnan(male_median) else math.nan)
    if math.isnan(difference):
        direction = "cannot be compared (a gender has no explained clip)"
    else:
        direction = (f"draw attention {'higher' if difference > 0 else 'lower'} by "
                     f"{abs(difference):.1f} bands (effect size {result['effect_size']:.2f}; "
                     f"{sum(above)} of {len(above)} female speakers above the male median)")
    result["statement"] = (
        f"Attention centroid: female {female['centroid_mean']:.1f} +- "
        f"{female['centroid_std']:.1f} bands over {female['speakers']} speakers, male "
        f"{male['centroid_mean']:.1f} +- {male['centroid_std']:.1f} over {male['speakers']}; "
        f"female clips {direction}. Peak band: female {female['peak_band']}, "
        f"male {male['peak_band']}.")
    return result


def figures(maps: np.ndarray, table: pd.DataFrame, output: Path, title: str,
            prefix: str = "gradcam_", band_hz: np.ndarray | None = None) -> list[Path]:
    """Mean Grad-CAM map per gender, band attention per gender and per-speaker centroids.

    Args:
      maps: [clips, frames, bins] from `grad_cam`.
      table: one row per map with `speaker` and `gender`.
      output: folder the PNGs go to (created).
      title: names the model in the titles.
      prefix: file names are PREFIXmean_maps.png, PREFIXband_attention.png and
        PREFIXspeaker_centroids.png.
      band_hz: centre frequency of each band (`mel_band_centres_hz`), to label the axes in Hz.

    Returns:
      The paths written.
    """
    from speakergender import plots
    import matplotlib.pyplot as plt

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    genders = table["gender"].to_numpy()
    bands = maps.shape[2]

    def label_bands(axis, along_x: bool):
        if band_hz is None:
            return
        ticks = np.linspace(0, bands - 1, 5).round().astype(int)
        labels = [f"{band_hz[t]:.0f}" for t in ticks]
        if along_x:
            axis.set_xticks(ticks, labels)
        else:
            axis.set_yticks(ticks, labels)

    written = []
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for axis, gender in zip(axes, GENDERS):
        mask = genders == gender
        if mask.any():
            # Each gender on its own scale (a colour bar gives it): sharply located evidence
            # would vanish on the scale of a diffuse map.
            image = axis.imshow(maps[mask].mean(axis=0).T, origin="lower", aspect="auto",
                                cmap="magma", vmin=0)
            figure.colorbar(image, ax=axis, fraction=0.05, pad=0.02)
        axis.set_title(f"{gender} (n={int(mask.sum())})")
        axis.set_xlabel("frame (10 ms)")
    axes[0].set_ylabel("mel band" if band_hz is None else "mel band centre (Hz)")
    label_bands(axes[0], along_x=False)
    figure.suptitle(f"{title}: mean Grad-CAM")
    figure.tight_layout()
    written.append(plots.save(figure, output / f"{prefix}mean_maps.png"))

    attention = band_attention(maps)
    figure, axis = plt.subplots(figsize=(5, 3.4))
    for gender in GENDERS:
        mask = genders == gender
        if mask.any():
            axis.plot(attention[mask].mean(axis=0), color=GENDER_COLOURS[gender], label=gender)
    axis.set_xlabel("mel band (low to high)" if band_hz is None else "mel band centre (Hz)")
    label_bands(axis, along_x=True)
    axis.set_ylabel("share of attention")
    axis.set_title(f"{title}: attention per band")
    axis.legend()
    figure.tight_layout()
    written.append(plots.save(figure, output / f"{prefix}band_attention.png"))

    summary = summarize(maps, table)
    figure, axis = plt.subplots(figsize=(4.2, 3.4))
    for position, gender in enumerate(GENDERS):
        centroids = np.array(list(summary["genders"][gender]["speaker_centroids"].values()))
        jitter = np.random.default_rng(position).uniform(-0.12, 0.12, len(centroids))
        axis.scatter(position + jitter, centroids, color=GENDER_COLOURS[gender], alpha=0.8)
        if len(centroids):
            axis.hlines(centroids.mean(), position - 0.3, position + 0.3, color="black")
    axis.set_xticks(range(len(GENDERS)), GENDERS)
    axis.set_xlim(-0.6, len(GENDERS) - 0.4)
    axis.set_ylabel("attention centroid (band)")
    axis.set_title(f"{title}: one dot per speaker")
    figure.tight_layout()
    written.append(plots.save(figure, output / f"{prefix}speaker_centroids.png"))
    return written


def explain_table(model: keras.Model, table: pd.DataFrame, front_end, batch_size: int = 32,
                  layer_name: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """Grad-CAM maps for every decodable clip of `table` (the windows evaluation takes).

    Args:
      model: the Keras classifier (a run's model.keras), waveform windows in.
      table: recordings with `path`, `speaker` and `gender`.
      front_end: the FrontEndParams of the model's front-end layer.
      batch_size: clips per gradient computation.
      layer_name: see `grad_cam_model`.

    Returns:
      maps float32 [clips, frames, bins] and the table rows they belong to, in the same order
      (files that could not be decoded are left out of both).
    """
    from speakergender import pipeline
    dataset = pipeline.make_dataset(table, front_end, training=False, batch_size=batch_size,
                                    with_paths=True)
    explainer = grad_cam_model(model, layer_name)
    shape = feature_shape(model)
    maps, paths = [], []
    for clips, labels, batch_paths in dataset:
        maps.append(grad_cam(explainer, clips.numpy(), labels.numpy(), shape))
        paths.extend(p.decode() for p in batch_paths.numpy())
    if not maps:
        raise ValueError("no decodable clip to explain")
    kept = table.drop_duplicates("path").set_index("path").loc[paths].reset_index()
    return np.concatenate(maps), kept


def load_run_model(run: Path) -> tuple[keras.Model, object]:
    """The Keras classifier of a run folder written by train, and its front end's params.

    Raises:
      FileNotFoundError: the folder lacks model.keras.
      ValueError: the model predates waveform input (no front-end layer).
    """
    # Registers the custom layers model.keras refers to.
    from speakergender.models import inputs, pooling, scratch  # noqa: F401

    path = Path(run) / KERAS_MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; interpret needs a run folder written by "
                                "train")
    model = keras.models.load_model(path, compile=False)
    return model, inputs.front_end_layer(model).params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m speakergender.interpret",
        description="Grad-CAM figures and per-band attention numbers for a trained model, on "
                    "recordings it should not have trained on.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder written by train (holds "
                                               f"{KERAS_MODEL_FILE} and config.json)")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--speakers", help="comma-separated speaker ids (default: all)")
    parser.add_argument("--layer", help="layer to explain (default: the last convolutional one)")
    parser.add_argument("--output", type=Path, help="where figures and JSON go (default: RUN)")
    args = parser.parse_args(argv)

    from speakergender import corpora
    try:
        model, front_end = load_run_model(args.run)
        table = corpora.load_corpus(args.data_dir).table
    except (FileNotFoundError, ValueError, corpora.CorpusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if front_end.feature_type != "log_mel":
        print("note: this model uses MFCCs; maps are over cepstral coefficients, not mel bands",
              file=sys.stderr)
    if args.speakers:
        wanted = {s.strip() for s in args.speakers.split(",") if s.strip()}
        unknown = wanted - set(table["speaker"])
        if unknown:
            print(f"error: speakers not in {args.data_dir}: {', '.join(sorted(unknown))}",
                  file=sys.stderr)
            return 1
        table = table[table["speaker"].isin(wanted)]
    try:
        maps, kept = explain_table(model, table, front_end, layer_name=args.layer)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    output = args.output or args.run
    output.mkdir(parents=True, exist_ok=True)
    summary = summarize(maps, kept)
    (output / "gradcam_bands.json").write_text(json.dumps(summary, indent=2) + "\n")
    band_hz = mel_band_centres_hz(front_end) if front_end.feature_type == "log_mel" else None
    for path in figures(maps, kept, output, args.run.name, band_hz=band_hz):
        print(f"wrote {path}")
    print(summary["statement"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
