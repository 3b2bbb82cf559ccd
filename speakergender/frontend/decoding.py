"""A batch of audio files -> recordings at the model's rate: decode, mix to mono, resample.

The one entry point from file bytes to the waveforms windows are cut from, used by the tf.data
pipeline and by the exported `classify_wav` alike.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend import wav
from speakergender.frontend.resample import resample_rows


def decode_recordings(contents: tf.Tensor, params: FrontEndParams
                      ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes and resamples a batch of WAV files; never raises on bad bytes.

    The DC offset stays: windows remove it (`windows.cut_windows`), each its own, so that a
    window depends only on its own samples.

    Args:
      contents: string [batch] of WAV file bytes.
      params: front-end parameters (target rate).

    Returns:
      float32 [batch, samples] at params.sample_rate, zero past each row's length; int32
      [batch] lengths; string [batch] errors, empty where the file decoded (a failed row has
      length 0).
    """
    return _decode(contents, params.sample_rate)


def _decode(contents: tf.Tensor, sample_rate: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    waveforms, lengths, rates, errors = wav.try_decode_wav_batch(contents)
    waveforms, lengths = resample_rows(waveforms, lengths, rates, sample_rate)
    return waveforms, lengths, errors


def recording_decoder(params: FrontEndParams):
    """`decode_recordings` for these params as one traced function, shared by every caller.

    The decoder and resampler make a large graph (seconds to trace); a tf.data map or a
    SavedModel signature that calls this function reuses one trace per process and target
    rate instead of tracing its own copy.

    Returns:
      A tf.function string [batch] -> (waveforms, lengths, errors), as `decode_recordings`.
    """
    return _decoder(params.sample_rate)


@functools.lru_cache(maxsize=None)
def _decoder(sample_rate: int):
    # Keyed on the only param decoding reads: front ends that differ in features share it.
    return tf.function(lambda contents: _decode(contents, sample_rate),
                       input_signature=[tf.TensorSpec([None], tf.string, name="contents")],
                       autograph=False)


def load_recording(path: tf.Tensor, params: FrontEndParams) -> tuple[tf.Tensor, tf.Tensor]:
    """Reads and resamples one file, as `decode_recordings` does.

    Args:
      path: string scalar.
      params: front-end parameters.

    Returns:
      float32 [samples] at params.sample_rate (empty on failure), and a string scalar error
      that is empty on success.
    """
    waveforms, lengths, errors = recording_decoder(params)(tf.io.read_file(path)[tf.newaxis])
    return waveforms[0, :lengths[0]], errors[0]
