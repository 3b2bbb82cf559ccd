"""TF Hub YAMNet's interface around the Keras YAMNet: waveform -> (scores, embeddings, log-mel).

`YAMNetHub` is what `convert_yamnet` saves, as YAMNet's own export does (tensorflow/models,
research/audioset/yamnet/export.py): a thin `tf.Module` around a `build_yamnet` model with its
weights set. TF Hub's framing is here too: the waveform is padded to one 0.96 s patch plus whole
0.48 s hops, turned into one log-mel spectrogram, and cut into overlapping [96, 64] patches.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend.features import log_mel_spectrogram

# TF Hub's YAMNet emits a patch every 0.48 s.
PATCH_HOP_SECONDS = 0.48


def pad_waveform(waveform: tf.Tensor, front_end: FrontEndParams,
                 patch_hop_seconds: float = PATCH_HOP_SECONDS) -> tf.Tensor:
    """Zero-pads the end to at least one patch plus a whole number of patch hops, as YAMNet does.

    Args:
      waveform: float32 [samples].
      front_end: its clip_samples is one patch of waveform (15600 samples for 96 frames).
      patch_hop_seconds: hop between patches.

    Returns:
      float32 [padded samples].
    """
    patch_samples = front_end.clip_samples
    hop_samples = int(round(patch_hop_seconds * front_end.sample_rate))
    samples = tf.shape(waveform)[0]
    beyond_first = tf.maximum(samples, patch_samples) - patch_samples
    hops = (beyond_first + hop_samples - 1) // hop_samples
    return tf.pad(waveform, [[0, patch_samples + hops * hop_samples - samples]])


def waveform_to_patches(
        waveform: tf.Tensor, front_end: FrontEndParams,
        patch_hop_seconds: float = PATCH_HOP_SECONDS) -> tuple[tf.Tensor, tf.Tensor]:
    """TF Hub YAMNet's framing: pad, log-mel of the whole waveform, then overlapping patches.

    The waveform is used as given (no DC removal), as TF Hub's YAMNet does.

    Args:
      waveform: float32 [samples] at front_end.sample_rate.
      front_end: log-mel parameters; clip_frames is the patch length in frames.
      patch_hop_seconds: hop between patches.

    Returns:
      (log_mel float32 [frames, bands], patches float32 [patches, clip_frames, bands]).
    """
    padded = pad_waveform(waveform, front_end, patch_hop_seconds)
    log_mel = log_mel_spectrogram(padded, front_end)
    hop_frames = int(round(patch_hop_seconds / front_end.stft_hop_seconds))
    patches = tf.signal.frame(log_mel, front_end.clip_frames, hop_frames, axis=0)
    return log_mel, patches


class YAMNetHub(tf.Module):
    """A `build_yamnet(include_logits=True)` model behind TF Hub YAMNet's interface.

    `__call__(waveform)` takes float32 [samples] at 16 kHz in [-1, 1] and returns
    (scores [patches, 521], embeddings [patches, 1024], log_mel_spectrogram [frames, 64]);
    `class_map_path()` returns the class map CSV's path. Saved, its variables carry the Keras
    variable paths ("layer1/conv/kernel", "layer1/conv_bn/beta", "logits/kernel"), which
    `yamnet_weights.load_yamnet_weights_from_savedmodel` reads back.

    Args:
      model: from `build_yamnet(include_logits=True)`, weights set.
      class_map_csv: YAMNet's class map, saved as an asset.
      front_end: log-mel parameters (default: YAMNet's).
    """

    def __init__(self, model: keras.Model, class_map_csv: str | Path,
                 front_end: FrontEndParams | None = None):
        super().__init__(name="yamnet")
        self._yamnet = model
        self._front_end = front_end or FrontEndParams.yamnet()
        self._class_map_asset = tf.saved_model.Asset(str(class_map_csv))

    @tf.function(input_signature=[], autograph=False)
    def class_map_path(self) -> tf.Tensor:
        return self._class_map_asset.asset_path

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32)], autograph=False)
    def __call__(self, waveform):
        log_mel, patches = waveform_to_patches(waveform, self._front_end)
        outputs = self._yamnet(patches, training=False)
        return tf.sigmoid(outputs["logits"]), outputs["embedding"], log_mel
