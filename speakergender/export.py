"""SavedModel export: raw audio in, gender out, the whole front end inside the graph.

The exported module needs nothing but TensorFlow: `tf.saved_model.load(path)` in any program
gives these signatures (see the README for their inputs and outputs):

- `serving_default(waveform)`: float32 [batch, samples] at the model's sample rate;
- `classify_wav(wav_bytes)`: string [batch] of WAV file contents, any format and rate;
- `window_features(wav_bytes)`: the features the classifier sees for every window of each file;
- `summarize_windows(window_logits, window_level_db, window_count)`: `classify_wav`'s outputs
  from windows scored in blocks (long recordings, `speakergender.streaming`);
- `metadata()`: the model's configuration as JSON, its sample rate, window length and
  model card (Markdown).

Exports are versioned as TF Serving expects (`NAME/1/`, `NAME/2/`, ...) and atomic: a version
folder appears only once it is complete and has passed a reload check.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend import decoding, windows
from speakergender.model_dirs import next_version_dir
from speakergender.models.inputs import front_end_layer

CONFIG_ASSET = "speakergender_config.json"
MODEL_CARD_ASSET = "model_card.md"
NO_SPEECH = "no speech"
# A recording's windows disagree when their female probabilities spread this much (standard
# deviation) across the decision threshold. Only windows this close to its loudest are
# compared: full of speech, like the windows the model trained on, not a tail of silence.
DISAGREEMENT_STD = 0.25
DISAGREEMENT_GATE_DB = 10.0


class ExportCheckError(RuntimeError):
    """The reloaded SavedModel disagrees with the in-memory model."""


class GenderClassifierModule(tf.Module):
    """Decoding + framing + classifier + window averaging + calibration, as one servable module.

    Args:
      classifier: Keras model [batch, clip_samples] -> logits [batch, 1], its front end inside.
      front_end: the parameters the classifier was trained with (rate, window, framing).
      temperature: logits are divided by it, then `bias` is added (calibration on
        validation speakers).
      bias: see `temperature`.
      threshold: female when the calibrated probability reaches it.
      config: JSON-ready description of the run, stored in the SavedModel.
    """

    def __init__(self, classifier: keras.Model, front_end: FrontEndParams,
                 temperature: float = 1.0, bias: float = 0.0, threshold: float = 0.5,
                 config: dict | None = None):
        super().__init__(name="speakergender")
        self.classifier = classifier
        self.front_end = front_end
        self.temperature = tf.Variable(temperature, trainable=False, dtype=tf.float32,
                                       name="temperature")
        self.bias = tf.Variable(bias, trainable=False, dtype=tf.float32,
                                name="calibration_bias")
        self.threshold = tf.Variable(threshold, trainable=False, dtype=tf.float32,
                                     name="threshold")
        self.config_json = json.dumps(config or {}, sort_keys=True)
        # Markdown written once the run's held-out figures are known (see `model_card`).
        self.model_card = ""

    def score_recordings(self, recordings: tf.Tensor, lengths: tf.Tensor) -> dict[str, tf.Tensor]:
        """Scores conditioned recordings window by window.

        Args:
          recordings: float32 [batch, samples] at the model's rate (`decoding.decode_recordings`),
            zero past each row's length.
          lengths: int32 [batch], each recording's own length in samples.

        Returns:
          female_probability [batch], label string [batch] ("female", "male" or "no speech"),
          logits [batch] (calibrated, averaged over sounding windows), window_logits
          [batch, windows], window_sounding bool [batch, windows], window_level_db float32
          [batch, windows] (RMS level, dBFS), window_count int32 [batch] (a row's windows
          beyond its count repeat its last one) and windows_disagree bool [batch].
        """
        params = self.front_end
        framed, levels_db, window_count = self._frame(recordings, lengths)
        batch, count = tf.shape(framed)[0], tf.shape(framed)[1]
        window_logits = tf.reshape(
            self.classifier(tf.reshape(framed, [-1, params.clip_samples]), training=False),
            [batch, count]) / self.temperature + self.bias
        return self._summarize(window_logits, levels_db, window_count)

    def _summarize(self, window_logits: tf.Tensor, levels_db: tf.Tensor,
                   window_count: tf.Tensor) -> dict[str, tf.Tensor]:
        """A recording's outputs from its windows' calibrated logits and levels: `score_recordings`
        after the classifier. Windows are independent (each its own DC offset), so the windows
        of a recording scored in blocks give what scoring it whole gives."""
        params = self.front_end
        own_window = tf.sequence_mask(window_count, tf.shape(window_logits)[1])
        sounding = windows.sounding_window_mask(
            levels_db, window_count, params.serving_gate_db, params.silence_floor_dbfs)
        has_sound = tf.reduce_any(sounding, axis=1)
        # A silent recording still gets a probability (from all its windows) but no gender.
        weights = tf.cast(sounding | (own_window & ~has_sound[:, tf.newaxis]), tf.float32)
        logits = tf.reduce_sum(window_logits * weights, axis=1) / tf.reduce_sum(weights, axis=1)
        probability = tf.sigmoid(logits)
        gender = tf.where(probability >= self.threshold, "female", "male")
        return {
            "female_probability": probability,
            "label": tf.where(has_sound, gender, NO_SPEECH),
            "logits": logits,
            "window_logits": window_logits,
            "window_sounding": sounding,
            "window_level_db": levels_db,
            "window_count": window_count,
            "windows_disagree": self._windows_disagree(
                tf.sigmoid(window_logits), sounding, levels_db),
        }

    def _frame(self, recordings: tf.Tensor, lengths: tf.Tensor
               ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Every window the model scores: float32 [batch, windows, clip_samples], their levels
        [batch, windows] and each recording's window count [batch]."""
        return windows.frame_windows(recordings, lengths, self.front_end.clip_samples,
                                     self.front_end.window_hop_samples,
                                     self.front_end.remove_dc_offset)

    def _windows_disagree(self, probabilities: tf.Tensor, sounding: tf.Tensor,
                          levels_db: tf.Tensor) -> tf.Tensor:
        """bool [batch]: the loud windows' probabilities spread widely across the threshold."""
        loudest = tf.reduce_max(tf.where(sounding, levels_db, -1e9), axis=1, keepdims=True)
        compared = sounding & (levels_db >= loudest - DISAGREEMENT_GATE_DB)
        weights = tf.cast(compared, tf.float32)
        count = tf.reduce_sum(weights, axis=1)
        mean = tf.reduce_sum(probabilities * weights, axis=1) / tf.maximum(count, 1.0)
        spread = tf.sqrt(tf.reduce_sum(tf.square(probabilities - mean[:, tf.newaxis]) * weights,
                                       axis=1) / tf.maximum(count, 1.0))
        lowest = tf.reduce_min(tf.where(compared, probabilities, 1.0), axis=1)
        highest = tf.reduce_max(tf.where(compared, probabilities, 0.0), axis=1)
        return ((count >= 2) & (spread >= DISAGREEMENT_STD) & (lowest < self.threshold)
                & (highest >= self.threshold))

    # autograph=False throughout: the front end uses explicit tf.cond / tf.while_loop, and
    # converting its source would add seconds to every export.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")],
                 autograph=False)
    def serve_waveform(self, waveform):
        """float32 [batch, samples] at the model's rate, in [-1, 1]."""
        lengths = tf.fill([tf.shape(waveform)[0]], tf.shape(waveform)[1])
        return self.score_recordings(waveform, lengths)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")],
                 autograph=False)
    def classify_wav(self, wav_bytes):
        """string [batch] of WAV file contents; a file that cannot be decoded gets an error."""
        waveforms, lengths, errors = decoding.recording_decoder(self.front_end)(wav_bytes)
        outputs = self.score_recordings(waveforms, lengths)
        failed = tf.strings.length(errors) > 0
        outputs["label"] = tf.where(failed, "", outputs["label"])
        outputs["error"] = errors
        outputs["duration_seconds"] = tf.cast(lengths, tf.float32) / self.front_end.sample_rate
        return outputs

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.float32, name="window_logits"),
        tf.TensorSpec([None, None], tf.float32, name="window_level_db"),
        tf.TensorSpec([None], tf.int32, name="window_count")], autograph=False)
    def summarize_windows(self, window_logits, window_level_db, window_count):
        """`classify_wav`'s outputs from the windows of recordings scored in blocks: the
        `window_logits` and `window_level_db` each block's `classify_wav` gave, joined in order
        (see `speakergender.streaming`)."""
        return self._summarize(window_logits, window_level_db, window_count)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="wav_bytes")],
                 autograph=False)
    def window_features(self, wav_bytes):
        """What the classifier sees of each file: its front end's features for every window.

        Returns:
          features float32 [batch, windows, frames, bins] and window_count int32 [batch].
        """
        waveforms, lengths, _ = decoding.recording_decoder(self.front_end)(wav_bytes)
        framed, _, window_count = self._frame(waveforms, lengths)
        front_end = front_end_layer(self.classifier)
        window_features = front_end(tf.reshape(framed, [-1, self.front_end.clip_samples]))
        shape = tf.concat([tf.shape(framed)[:2], tf.shape(window_features)[1:]], axis=0)
        return {"features": tf.reshape(window_features, shape), "window_count": window_count}

    @tf.function(input_signature=[], autograph=False)
    def metadata(self):
        """The model's configuration (JSON), sample rate, window length and model card."""
        return {
            "config_json": tf.constant(self.config_json),
            "sample_rate": tf.constant(self.front_end.sample_rate, tf.int32),
            "clip_samples": tf.constant(self.front_end.clip_samples, tf.int32),
            "threshold": tf.identity(self.threshold),
            "model_card": tf.constant(self.model_card),
        }


def probe_waveforms(params: FrontEndParams, seed: int = 0) -> np.ndarray:
    """Deterministic test inputs for export checks: noise bursts and tones, 2.5 windows long.

    Returns:
      float32 [3, samples].
    """
    rng = np.random.default_rng(seed)
    samples = int(params.clip_samples * 2.5)
    t = np.arange(samples) / params.sample_rate
    return np.stack([
        0.1 * rng.standard_normal(samples),
        0.3 * np.sin(2 * np.pi * 180.0 * t) + 0.05 * rng.standard_normal(samples),
        0.3 * np.sin(2 * np.pi * 260.0 * t) * (t < t[-1] / 2),
    ]).astype(np.float32)


def export_model(module: GenderClassifierModule, model_dir: str | Path,
                 atol: float = 1e-5) -> Path:
    """Saves `module` as the next version under `model_dir`, atomically, and checks it.

    The SavedModel is written to a temporary folder beside its destination, reloaded and
    compared with the in-memory module on probe inputs, and only then renamed into place.

    Args:
      module: what to export.
      model_dir: the model's folder; versions go in numbered subfolders.
      atol: largest tolerated difference in female probability after reloading.

    Returns:
      The version folder written, e.g. `model_dir/1`.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        signatures = {
            "serving_default": module.serve_waveform,
            "classify_wav": module.classify_wav,
            "window_features": module.window_features,
            "summarize_windows": module.summarize_windows,
            "metadata": module.metadata,
        }
        tf.saved_model.save(module, str(staging), signatures=signatures)
        # Written beside the SavedModel, not tracked as a tf.saved_model.Asset: an Asset needs a
        # source file for the module's lifetime, a temporary folder that a killed process
        # leaves behind.
        (staging / "assets").mkdir(exist_ok=True)
        (staging / "assets" / CONFIG_ASSET).write_text(module.config_json)
        if module.model_card:
            (staging / "assets" / MODEL_CARD_ASSET).write_text(module.model_card)
        check_export(module, staging, atol)
        destination = next_version_dir(model_dir)
        staging.chmod(0o755)  # mkdtemp made it private
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def check_export(module: GenderClassifierModule, saved_dir: str | Path, atol: float) -> None:
    """Raises ExportCheckError unless the reloaded model matches the in-memory one."""
    probes = tf.constant(probe_waveforms(module.front_end))
    expected = module.serve_waveform(probes)["female_probability"].numpy()
    reloaded = tf.saved_model.load(str(saved_dir))
    actual = reloaded.signatures["serving_default"](waveform=probes)["female_probability"]
    difference = float(np.max(np.abs(actual.numpy() - expected)))
    if not difference <= atol:
        raise ExportCheckError(
            f"{saved_dir}: reloaded SavedModel differs from the in-memory model by {difference:g} "
            f"(tolerance {atol:g})")
