"""A batch of audio files -> conditioned recordings: decode, resample, remove the DC offset.

The one entry point from file bytes to the waveforms windows are cut from, used by the tf.data
pipeline and by the exported `classify_wav` alike.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from speakergender.config import FrontEndParams
from speakergender.frontend import wav
from speakergender.frontend.resample import resample_rows


def remove_dc_offsets(waveforms: tf.Tensor, lengths: tf.Tensor | None,
                      params: FrontEndParams) -> tf.Tensor:
    """Subtracts each recording's mean over its own samples (where params ask for it).

    The offset is a property of the recorder, not of the voice; removing it over the whole
    recording (not per window) keeps it from becoming a cue while leaving the signal intact.

    Args:
      waveforms: float32 [batch, samples], one whole recording per row.
      lengths: int32 [batch] samples of each row of a zero-padded batch; the padding is left
        out of the mean and stays zero. None: every sample counts.
      params: front-end parameters.

    Returns:
      float32 [batch, samples].
    """
    if not params.remove_dc_offset:
        return waveforms
    return _subtract_offsets(waveforms, lengths)


def _subtract_offsets(waveforms: tf.Tensor, lengths: tf.Tensor | None) -> tf.Tensor:
    if lengths is None:
        return waveforms - tf.reduce_mean(waveforms, axis=-1, keepdims=True)
    lengths = tf.cast(lengths, tf.int32)
    offsets = tf.reduce_sum(waveforms, axis=1) / tf.cast(tf.maximum(lengths, 1), tf.float32)
    valid = tf.sequence_mask(lengths, tf.shape(waveforms)[1])
    return tf.where(valid, waveforms - offsets[:, tf.newaxis], 0.0)


def decode_recordings(contents: tf.Tensor, params: FrontEndParams
                      ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes, resamples and conditions a batch of WAV files; never raises on bad bytes.

    Args:
      contents: string [batch] of WAV file bytes.
      params: front-end parameters (target rate, DC removal).

    Returns:
      float32 [batch, samples] at params.sample_rate, zero past each row's length; int32
      [batch] lengths; string [batch] errors, empty where the file decoded (a failed row has
      length 0).
    """
    return _decode(contents, params.sample_rate, params.remove_dc_offset)


def _decode(contents: tf.Tensor, sample_rate: int, remove_dc_offset: bool
            ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    waveforms, lengths, rates, errors = wav.try_decode_wav_batch(contents)
    waveforms, lengths = resample_rows(waveforms, lengths, rates, sample_rate)
    if remove_dc_offset:
        waveforms = _subtract_offsets(waveforms, lengths)
    return waveforms, lengths, errors


def recording_decoder(params: FrontEndParams):
    """`decode_recordings` for these params as one traced function, shared by every caller.

    The decoder and resampler make a large graph (seconds to trace); a tf.data map or a
    SavedModel signature that calls this function reuses one trace per process and target
    rate instead of tracing its own copy.

    Returns:
      A tf.function string [batch] -> (waveforms, lengths, errors), as `decode_recordings`.
    """
    return _decoder(params.sample_rate, params.remove_dc_offset)


@functools.lru_cache(maxsize=None)
def _decoder(sample_rate: int, remove_dc_offset: bool):
    # Keyed on the only params decoding reads: front ends that differ in features share it.
    return tf.function(lambda contents: _decode(contents, sample_rate, remove_dc_offset),
                       input_signature=[tf.TensorSpec([None], tf.string, name="contents")],
                       autograph=False)


def load_recording(path: tf.Tensor, params: FrontEndParams) -> tuple[tf.Tensor, tf.Tensor]:
    """Reads and conditions one file, as `decode_recordings` does.

    Args:
      path: string scalar.
      params: front-end parameters.

    Returns:
      float32 [samples] at params.sample_rate (empty on failure), and a string scalar error
      that is empty on success.
    """
    waveforms, lengths, errors = recording_decoder(params)(tf.io.read_file(path)[tf.newaxis])
    return waveforms[0, :lengths[0]], errors[0]
