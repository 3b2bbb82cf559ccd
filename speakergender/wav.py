"""RIFF/WAVE bytes -> float32 samples, on graph.

`tf.audio.decode_wav` reads only 16-bit PCM (and rejects 24-bit, float and EXTENSIBLE files),
so this module parses the RIFF chunk list itself with core TF ops. It runs inside `tf.data` maps
and exported SavedModel signatures, and scales samples exactly as libsndfile (soundfile) does,
so a model sees the same numbers whichever reader prepared its data.

`try_decode_wav` never raises: on bad input it returns an empty waveform, rate 0 and a message,
which lets a `tf.data` pipeline drop a bad file without ending the epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

# Error messages. Where a message carries numbers, the constant is its fixed prefix. No quotes:
# the graph-mode Assert would escape them.
ERR_NOT_RIFF_WAVE = "not a RIFF/WAVE file"
ERR_NO_FMT_CHUNK = "no fmt chunk"
ERR_SHORT_FMT_CHUNK = "fmt chunk too short"
ERR_NO_DATA_CHUNK = "no data chunk"
ERR_TRUNCATED_DATA = "truncated data chunk"
ERR_UNSUPPORTED_FORMAT = "unsupported WAV format tag"
ERR_UNSUPPORTED_BITS = "unsupported bit depth"
ERR_ZERO_CHANNELS = "zero channels"
ERR_ZERO_RATE = "zero sample rate"
ERR_ZERO_SAMPLES = "zero samples (empty data chunk)"

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

# Names for the tags users are most likely to meet, used in the unsupported-format message.
FORMAT_TAG_NAMES = {
    0x0000: "unknown",
    0x0002: "ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MPEG Layer 3",
    0x00FF: "AAC",
}

# Sample encodings, in the branch order of `_decode_samples`: (format tag, bits per sample).
_ENCODINGS = (
    (WAVE_FORMAT_PCM, 8),
    (WAVE_FORMAT_PCM, 16),
    (WAVE_FORMAT_PCM, 24),
    (WAVE_FORMAT_PCM, 32),
    (WAVE_FORMAT_IEEE_FLOAT, 32),
    (WAVE_FORMAT_IEEE_FLOAT, 64),
)

# Zero bytes appended before reading headers, so a fixed-size read never runs off the end.
_HEADER_PADDING = 64


class WavError(ValueError):
    """A WAV file that cannot be read; the message names the file and the problem."""


def _read_uint(padded: tf.Tensor, pos: tf.Tensor, num_bytes: int) -> tf.Tensor:
    """Little-endian unsigned integer of `num_bytes` bytes at byte `pos`, as int64."""
    raw = tf.io.decode_raw(tf.strings.substr(padded, pos, num_bytes), tf.uint8)
    raw = tf.cast(tf.reshape(raw, [num_bytes]), tf.int64)
    return tf.reduce_sum(raw * tf.constant([256**i for i in range(num_bytes)], tf.int64))


def _hex4(value: tf.Tensor) -> tf.Tensor:
    """'0x' and four upper-case hex digits of an int64 scalar in [0, 0xFFFF]."""
    shifts = tf.constant([12, 8, 4, 0], tf.int64)
    digits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, shifts), 15)
    return "0x" + tf.strings.reduce_join(tf.gather(tf.constant(list("0123456789ABCDEF")), digits))


def _format_tag_message(tag: tf.Tensor) -> tf.Tensor:
    """'unsupported WAV format tag 0x0002 (ADPCM)'; the name is left out for unnamed tags."""
    tags = tf.constant(list(FORMAT_TAG_NAMES), tf.int64)
    names = tf.constant(list(FORMAT_TAG_NAMES.values()))
    name = tf.strings.reduce_join(tf.boolean_mask(names, tf.equal(tags, tag)))
    suffix = tf.where(tf.strings.length(name) > 0, " (" + name + ")", "")
    return ERR_UNSUPPORTED_FORMAT + " " + _hex4(tag) + suffix


def _find_chunks(padded: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Walks the chunk headers after 'RIFF....WAVE' and locates 'fmt ' and 'data'.

    Args:
      padded: scalar tf.string, the file's bytes followed by `_HEADER_PADDING` zero bytes.
      size: int64 scalar, the file's length in bytes before padding.

    Returns:
      int64 scalars fmt_pos, fmt_size, data_pos, data_size (payload offset and declared size;
      -1 where the chunk was not found).
    """
    not_found = tf.constant(-1, tf.int64)

    def keep_walking(pos, fmt_pos, fmt_size, data_pos, data_size):
        found_both = tf.logical_and(fmt_pos >= 0, data_pos >= 0)
        return tf.logical_and(pos + 8 <= size, tf.logical_not(found_both))

    def next_chunk(pos, fmt_pos, fmt_size, data_pos, data_size):
        chunk_id = tf.strings.substr(padded, pos, 4)
        chunk_size = _read_uint(padded, pos + 4, 4)
        is_fmt = tf.logical_and(tf.equal(chunk_id, "fmt "), fmt_pos < 0)
        is_data = tf.logical_and(tf.equal(chunk_id, "data"), data_pos < 0)
        fmt_pos = tf.where(is_fmt, pos + 8, fmt_pos)
        fmt_size = tf.where(is_fmt, chunk_size, fmt_size)
        data_pos = tf.where(is_data, pos + 8, data_pos)
        data_size = tf.where(is_data, chunk_size, data_size)
        # RIFF pads odd-sized chunks with one byte that the size does not count.
        pos = pos + 8 + chunk_size + tf.bitwise.bitwise_and(chunk_size, 1)
        return pos, fmt_pos, fmt_size, data_pos, data_size

    start = tf.constant(12, tf.int64)
    _, fmt_pos, fmt_size, data_pos, data_size = tf.while_loop(
        keep_walking, next_chunk, [start, not_found, not_found, not_found, not_found])
    return fmt_pos, fmt_size, data_pos, data_size


def _decode_samples(data: tf.Tensor, encoding: tf.Tensor) -> tf.Tensor:
    """Raw sample bytes -> float32 [<# samples>], scaled as libsndfile scales them.

    Args:
      data: scalar tf.string of interleaved samples.
      encoding: int32 scalar, an index into `_ENCODINGS`.

    Returns:
      float32 [<# bytes / sample width>].
    """

    def whole_samples(width: int) -> tf.Tensor:
        # decode_raw fails unless the byte count is a multiple of the sample width.
        length = tf.strings.length(data) // width * width
        return tf.strings.substr(data, 0, length)

    def pcm8():
        raw = tf.io.decode_raw(whole_samples(1), tf.uint8)
        return (tf.cast(raw, tf.float32) - 128.0) / 128.0

    def pcm16():
        return tf.cast(tf.io.decode_raw(whole_samples(2), tf.int16), tf.float32) / 32768.0

    def pcm24():
        raw = tf.reshape(tf.io.decode_raw(whole_samples(3), tf.uint8), [-1, 3])
        low = tf.cast(raw[:, 0], tf.int32) + 256 * tf.cast(raw[:, 1], tf.int32)
        # Reading the top byte as int8 sign-extends the 24-bit value.
        high = tf.cast(tf.bitcast(raw[:, 2], tf.int8), tf.int32)
        return tf.cast(low + 65536 * high, tf.float32) / 2.0**23

    def pcm32():
        # Rounds to float32 first, then scales: libsndfile's order, so results match bit for bit.
        return tf.cast(tf.io.decode_raw(whole_samples(4), tf.int32), tf.float32) * 2.0**-31

    def float32():
        return tf.io.decode_raw(whole_samples(4), tf.float32)

    def float64():
        return tf.cast(tf.io.decode_raw(whole_samples(8), tf.float64), tf.float32)

    samples = tf.switch_case(encoding, [pcm8, pcm16, pcm24, pcm32, float32, float64])
    return tf.reshape(samples, [-1])


def _parse(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes WAV bytes without raising.

    Args:
      contents: scalar tf.string, a whole WAV file.

    Returns:
      float32 [<# samples>, <# channels>] ([0, 1] on error), int32 scalar sample rate (0 on
      error) and a scalar tf.string error message, empty on success.
    """
    contents = tf.convert_to_tensor(contents, tf.string)
    size = tf.cast(tf.strings.length(contents), tf.int64)
    padded = contents + tf.constant(b"\0" * _HEADER_PADDING)

    def header_at(pos: tf.Tensor, num_bytes: int) -> tf.Tensor:
        # Clamped, so substr's position is always in range; reads past `size` see zeros.
        return _read_uint(padded, tf.clip_by_value(pos, 0, size), num_bytes)

    is_riff_wave = tf.logical_and(
        tf.equal(tf.strings.substr(padded, 0, 4), "RIFF"),
        tf.equal(tf.strings.substr(padded, 8, 4), "WAVE"))
    fmt_pos, fmt_size, data_pos, data_size = _find_chunks(padded, size)

    tag = header_at(fmt_pos, 2)
    num_channels = header_at(fmt_pos + 2, 2)
    rate = header_at(fmt_pos + 4, 4)
    bits = header_at(fmt_pos + 14, 2)
    is_extensible = tf.logical_and(tf.equal(tag, WAVE_FORMAT_EXTENSIBLE), fmt_size >= 40)
    # The first two bytes of the SubFormat GUID are the actual format tag.
    tag = tf.where(is_extensible, header_at(fmt_pos + 24, 2), tag)

    encoding = tf.constant(-1, tf.int32)
    for index, (known_tag, known_bits) in enumerate(_ENCODINGS):
        encoding = tf.where(
            tf.logical_and(tf.equal(tag, known_tag), tf.equal(bits, known_bits)), index, encoding)
    is_known_tag = tf.logical_or(
        tf.equal(tag, WAVE_FORMAT_PCM), tf.equal(tag, WAVE_FORMAT_IEEE_FLOAT))

    frame_bytes = tf.maximum(num_channels * (bits // 8), 1)
    present = tf.maximum(size - data_pos, 0)
    num_frames = data_size // frame_bytes

    as_string = tf.strings.as_string
    checks = [
        (tf.logical_not(is_riff_wave), tf.constant(ERR_NOT_RIFF_WAVE)),
        (fmt_pos < 0, tf.constant(ERR_NO_FMT_CHUNK)),
        (fmt_size < 16, tf.strings.join(
            [ERR_SHORT_FMT_CHUNK, " (", as_string(fmt_size), " bytes, need 16)"])),
        (data_pos < 0, tf.constant(ERR_NO_DATA_CHUNK)),
        (tf.logical_not(is_known_tag), _format_tag_message(tag)),
        (encoding < 0, tf.strings.join([
            ERR_UNSUPPORTED_BITS, " ", as_string(bits), " bits for format tag ", _hex4(tag)])),
        (tf.equal(num_channels, 0), tf.constant(ERR_ZERO_CHANNELS)),
        (tf.equal(rate, 0), tf.constant(ERR_ZERO_RATE)),
        (data_size > present, tf.strings.join([
            ERR_TRUNCATED_DATA, " (declares ", as_string(data_size), " bytes, ",
            as_string(present), " present)"])),
        (tf.equal(num_frames, 0), tf.constant(ERR_ZERO_SAMPLES)),
    ]
    error = tf.constant("")
    # Walk backwards so the first failing check is the one reported.
    for failed, message in reversed(checks):
        error = tf.where(failed, message, error)
    ok = tf.equal(error, "")

    def decode():
        data = tf.strings.substr(contents, data_pos, num_frames * frame_bytes)
        samples = _decode_samples(data, encoding)
        return tf.reshape(samples, tf.stack([num_frames, num_channels]))

    def fail():
        return tf.zeros([0, 1], tf.float32)

    channels = tf.cond(ok, decode, fail)
    channels.set_shape([None, None])
    rate = tf.where(ok, tf.cast(tf.minimum(rate, tf.int32.max), tf.int32), 0)
    return channels, rate, error


def _raise_on_error(error: tf.Tensor) -> list[tf.Operation]:
    """Raises InvalidArgumentError carrying `error` unless it is empty; control deps in graphs."""
    if tf.executing_eagerly():
        message = error.numpy().decode("utf-8", "replace")
        if message:
            raise tf.errors.InvalidArgumentError(None, None, f"invalid WAV data: {message}")
        return []
    return [tf.debugging.Assert(tf.equal(error, ""), ["invalid WAV data:", error])]


def downmix_to_mono(channels: tf.Tensor) -> tf.Tensor:
    """Averages channels.

    Args:
      channels: float32 [<# samples>, <# channels>].

    Returns:
      float32 [<# samples>].
    """
    return tf.reduce_mean(channels, axis=1)


def decode_wav_channels(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to float32 samples in [-1, 1] per channel.

    Reads PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, plain or
    WAVE_FORMAT_EXTENSIBLE, any number of channels, chunks in any order.

    Args:
      contents: scalar tf.string, a whole WAV file.

    Returns:
      float32 [<# samples>, <# channels>] and the int32 scalar sample rate in Hz.

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a readable WAV file; the message names
        the problem (one of the ERR_* messages).
    """
    channels, rate, error = _parse(contents)
    with tf.control_dependencies(_raise_on_error(error)):
        return tf.identity(channels), tf.identity(rate)


def decode_wav(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to a mono float32 waveform (channels averaged).

    Args:
      contents: scalar tf.string, a whole WAV file.

    Returns:
      float32 [<# samples>] and the int32 scalar sample rate in Hz.

    Raises:
      tf.errors.InvalidArgumentError: the bytes are not a readable WAV file.
    """
    channels, rate = decode_wav_channels(contents)
    return downmix_to_mono(channels), rate


def try_decode_wav(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes a WAV file's bytes to a mono float32 waveform; never raises on bad bytes.

    Args:
      contents: scalar tf.string, any bytes.

    Returns:
      float32 [<# samples>], int32 scalar sample rate in Hz and a scalar tf.string error
      message. On success the message is empty; on failure the waveform is empty and the rate 0.
    """
    channels, rate, error = _parse(contents)
    return downmix_to_mono(channels), rate, error


_try_decode_wav_graph = tf.function(
    try_decode_wav, input_signature=[tf.TensorSpec([], tf.string)], autograph=False)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a WAV file eagerly into a mono float32 waveform.

    Args:
      path: the file to read.

    Returns:
      float32 numpy [<# samples>] and the sample rate in Hz.

    Raises:
      WavError: the file is missing, unreadable or not a readable WAV file; the message starts
        with the path.
    """
    try:
        contents = Path(path).read_bytes()
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except OSError as e:
        raise WavError(f"{path}: cannot read file ({e.strerror or e})") from None
    waveform, rate, error = _try_decode_wav_graph(tf.constant(contents))
    message = error.numpy().decode("utf-8", "replace")
    if message:
        raise WavError(f"{path}: {message}")
    return waveform.numpy(), int(rate)
